"""SymMPO's contrasting image and answer per instruction, rendered from ShapeWorld (strategy counterfactual).

SymMPO (NeurIPS 2025, arXiv 2506.11712) trains a symmetric preference over two contrasting images: the
instruction's image m with its answer y, and m' -- the same scene with one object swapped for a look-alike -- with
its own correct answer y'. On m, y is preferred to y'; on m', y' to y. Since the same two texts sit on both sides,
nothing but the image can separate them.

ShapeWorld already draws such a pair for every "describe" and "existence" instruction: feedback._contrast picks a
slot j and two categories of which the image shows one (``shown``) and the other is an absent look-alike (``absent``);
the truth sidecar keeps that record. Here m' is ``scene.with_category(j, absent)`` drawn by the same renderer with
the same texture and noise seed, at the world's size and JPEG settings, so m and m' differ in that object alone. y'
is the instruction's chosen answer with the swap made in words:

- describe: every form of the shown category (plural, singular, and for two-word names the head noun) is replaced,
  at word boundaries, by the same form of the absent one, with "a"/"an" fixed where it stands right before the noun;
  the colour, size, position and everything else stay;
- existence: the question asks about one of the two categories, so on m' its answer flips ("Yes, there is a red
  circle in the image." <-> "No, there is no red circle in the image."); renaming the object would answer another
  question.

An instruction without a contrast record (count, colour and relation questions), or whose chosen answer does not
state the swapped object (or already names the absent one, so y' would be ambiguous), has no counterfactual: the
corruption stage quarantines it as ``no_counterfactual``.

The truth sidecar keeps each scene rounded and without its texture seed, so it cannot be re-rendered from the file;
the provider redraws the instruction from ``ShapeWorldConfig`` exactly as ``generate_vlfeedback`` drew it and checks
the redrawn truth against the sidecar's row, so a world made with other settings is an error, never a wrong m'.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mdpo_pipeline.core.corruption import CounterfactualError, NoCounterfactual
from mdpo_pipeline.core.errors import shown
from mdpo_pipeline.core.io import canonical_json
from mdpo_pipeline.shapeworld.config import ShapeWorldConfig
from mdpo_pipeline.shapeworld.feedback import Task, lower_first
from mdpo_pipeline.shapeworld.generate import JPEG_QUALITY, draw_instruction, save_jpeg
from mdpo_pipeline.shapeworld.world import Scene, article, head_noun, plural, render_scene

_ID = re.compile(r"sw-(\d+)")


# --- the contrasting answer ---------------------------------------------------------------------


def _forms(category: str) -> list[str]:
    """The words an answer names ``category`` with, in the order they are matched: plural, singular, then the head
    noun's plural and singular (the same words again for one-word names)."""
    head = head_noun(category)
    return [plural(category), category, plural(head), head]


def _pattern(words: Iterable[str]) -> re.Pattern:
    # Longest first, so "half moons" wins over "half moon" and "moon"; an article right before the noun is captured
    # to be fixed ("a circle" -> "an ellipse").
    alternatives = "|".join(re.escape(w) for w in sorted(set(words), key=lambda w: (-len(w), w)))
    return re.compile(rf"\b(?:(an?)(\s+))?({alternatives})\b", re.IGNORECASE)


def mentions(text: str, category: str) -> int:
    """How often ``text`` names ``category`` in any of its forms, at word boundaries, case aside."""
    return sum(1 for _ in _pattern(_forms(category)).finditer(text))


def _capitalised(model: str, word: str) -> str:
    return word[:1].upper() + word[1:] if model[:1].isupper() else word


def swap_category(text: str, shown: str, absent: str) -> tuple[str, int]:
    """``text`` with every form of ``shown`` replaced by the same form of ``absent`` (word boundaries, a leading
    capital kept, "a"/"an" right before the noun fixed), and how many replacements were made."""
    mapping: dict[str, str] = {}
    for old, new in zip(_forms(shown), _forms(absent)):
        mapping.setdefault(old, new)  # a one-word name repeats its forms: the first (full-name) mapping wins

    def sub(m: re.Match) -> str:
        noun = _capitalised(m.group(3), mapping[m.group(3).lower()])
        if m.group(1) is None:
            return noun
        return _capitalised(m.group(1), article(noun.lower())) + m.group(2) + noun

    return _pattern(mapping).subn(sub, text)


def contrast_answer(chosen: str, truth: Mapping[str, Any]) -> str:
    """y': the correct answer for the contrasting image, made from ``chosen`` (the answer for the shown image) and
    the instruction's truth row; NoCounterfactual when it cannot be made unambiguously."""
    contrast = truth.get("contrast")
    if not contrast:
        raise NoCounterfactual(f"a {truth.get('kind')!r} instruction has no contrast record: ShapeWorld swaps an "
                               "object only in describe and existence instructions")
    slot, was, now = contrast["slot"], contrast["shown"], contrast["absent"]
    objects = truth["objects"]
    if sum(o["category"] == was for o in objects) != 1:
        raise NoCounterfactual(f"the scene holds {sum(o['category'] == was for o in objects)} {plural(was)}: the "
                               f"answer's words for the {was} at slot {slot} are ambiguous")
    if truth["kind"] == "existence":
        return _flip_existence(chosen, truth, slot, was, now)
    if mentions(chosen, now):
        raise NoCounterfactual(f"the chosen answer already names the {now} (the object the {was} is swapped for), "
                               "so its answer for the swapped image would be ambiguous")
    out, n = swap_category(chosen, was, now)
    if not n:
        raise NoCounterfactual(f"the chosen answer does not mention the {was} (the object swapped for the {now})")
    return out


def _flip_existence(chosen: str, truth: Mapping[str, Any], slot: int, was: str, now: str) -> str:
    """The chosen answer with its yes/no statement flipped: on the contrasting image the asked object's presence is
    the opposite of the original's (the asked category is the shown one exactly when the original answer is yes)."""
    value = bool(truth["answer"])
    obj = truth["objects"][slot]
    asked = was if value else now
    # The generator's own sentence (feedback.Task.say): only the fields it reads matter, not the scene.
    subject = _Subject(colour=obj["colour"], category=asked)
    task = Task("existence", truth["question"], None, value, subject)  # type: ignore[arg-type]
    old, new = task.say(value), task.say(not value)
    for before, after in ((old, new), (lower_first(old), lower_first(new))):
        if before in chosen:
            rest = chosen.replace(before, "", 1)
            if mentions(rest, was) or mentions(rest, now):
                raise NoCounterfactual(f"besides {before!r} the chosen answer names the {was} or the {now}, so its "
                                       "answer for the swapped image would be ambiguous")
            return chosen.replace(before, after, 1)
    raise NoCounterfactual(f"the chosen answer does not state {old!r}, the answer about the {asked} that the swap "
                           "turns around")


@dataclass(frozen=True)
class _Subject:
    """What Task.say reads of an existence question's subject."""

    colour: str
    category: str


# --- the contrasting image ----------------------------------------------------------------------


def instruction_index(instruction_id: str) -> int:
    """``sw-000123`` -> 123, the index generate_vlfeedback drew the instruction with."""
    m = _ID.fullmatch(instruction_id)
    if not m:
        raise CounterfactualError(f"instruction id {shown(instruction_id)} is not a ShapeWorld id (sw-NNNNNN)")
    return int(m.group(1))


def world_instruction(cfg: ShapeWorldConfig, instruction_id: str) -> dict:
    """The instruction exactly as generate_vlfeedback drew it (its Scene, texture seed and unrounded boxes included),
    plus ``truth``: the sidecar row it wrote for it."""
    source, inst = draw_instruction(cfg, instruction_index(instruction_id))
    inst["truth"] = json.loads(canonical_json({"id": instruction_id, "source": source, **inst["truth"]}))
    return inst


def contrast_scene(scene: Scene, contrast: Mapping[str, Any]) -> Scene:
    """m''s scene: object ``slot`` redrawn as the absent category, in the same cell, colour, size and flags."""
    slot = contrast["slot"]
    if scene.objects[slot].category != contrast["shown"]:
        raise CounterfactualError(f"slot {slot} holds a {scene.objects[slot].category}, not the contrast record's "
                                  f"{contrast['shown']}")
    return scene.with_category(slot, contrast["absent"])


def render_world_image(scene: Scene, size: int) -> Image.Image:
    """``scene`` as the world's images are: rendered at ``size``, then through the world's JPEG settings (the
    original went through them too, so m and m' carry the same kind of compression)."""
    buf = io.BytesIO()
    save_jpeg(render_scene(scene, size), buf)  # type: ignore[arg-type]
    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert("RGB")


# --- the provider -------------------------------------------------------------------------------


def best_chosen(pairs: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """instruction id -> (pair_id, chosen answer) of its best-rated chosen answer (highest chosen_score, unrated
    last, then the first pair_id): y is one answer per instruction, as m' is one image per instruction."""
    best: dict[str, tuple[tuple[float, str], str]] = {}
    for p in pairs:
        score = p.get("chosen_score")
        key = (-score if score is not None else math.inf, p["pair_id"])
        iid = p["instruction_id"]
        if iid not in best or key < best[iid][0]:
            best[iid] = (key, p["chosen"])
    return {iid: (key[1], chosen) for iid, (key, chosen) in best.items()}


@dataclass(frozen=True)
class ShapeWorldCounterfactual:
    """strategy counterfactual's provider on ShapeWorld (core.corruption.CounterfactualProvider): instruction id ->
    (m', y', params). Plain data, so it pickles to the corruption workers; every call is a pure function of it."""

    cfg: ShapeWorldConfig
    truth_path: str  # shapeworld_truth.jsonl, named in errors
    truths: dict[str, dict]  # instruction id -> its sidecar row, for the sampled instructions
    answers: dict[str, tuple[str, str]]  # instruction id -> (pair_id, chosen answer)

    @classmethod
    def from_files(
        cls, cfg: ShapeWorldConfig, truth_path: str | Path, pairs: Iterable[Mapping[str, Any]]
    ) -> ShapeWorldCounterfactual:
        """The provider for the instructions of ``pairs`` (pairs.parquet rows), their truths read from
        ``truth_path``; a CounterfactualError when the sidecar lacks one of them."""
        answers = best_chosen(pairs)
        truths: dict[str, dict] = {}
        path = Path(truth_path)
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    iid = row["id"]
                except (json.JSONDecodeError, TypeError, KeyError) as e:
                    raise CounterfactualError(f"{path}:{n}: not a truth row ({type(e).__name__}): "
                                              f"{shown(line.strip())}") from None
                if iid in answers:
                    truths[iid] = row
        if missing := sorted(set(answers) - set(truths)):
            raise CounterfactualError(f"{path} has no truth for {len(missing)} sampled instructions, e.g. "
                                      f"{shown(missing[0])}: the pairs were not built from this world")
        return cls(cfg, str(path), truths, answers)

    def __call__(self, instruction_id: str) -> tuple[Image.Image, str, dict[str, Any]]:
        """(m', y', params) of one sampled instruction; NoCounterfactual when it has none."""
        truth = self.truths[instruction_id]
        pair_id, chosen = self.answers[instruction_id]
        answer = contrast_answer(chosen, truth)  # first: a quarantined instruction costs no redraw
        contrast = truth["contrast"]
        inst = world_instruction(self.cfg, instruction_id)
        if inst["truth"] != truth:
            raise CounterfactualError(
                f"{self.truth_path}: {instruction_id}'s truth is not what params.yaml:shapeworld draws for it: the "
                "world was generated with other settings; regenerate it (the shapeworld stage) before corrupting")
        image = render_world_image(contrast_scene(inst["scene"], contrast), self.cfg.image_size)
        params = {
            "source": "shapeworld",
            "kind": truth["kind"],
            "slot": contrast["slot"],
            "shown": contrast["shown"],
            "absent": contrast["absent"],
            "pair_id": pair_id,
            "image_size": self.cfg.image_size,
            "jpeg_quality": JPEG_QUALITY,
        }
        return image, answer, params


__all__ = [
    "ShapeWorldCounterfactual",
    "best_chosen",
    "contrast_answer",
    "contrast_scene",
    "instruction_index",
    "mentions",
    "render_world_image",
    "swap_category",
    "world_instruction",
]

