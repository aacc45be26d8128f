"""Row checks: each raw row becomes a ``_Row`` (an Instruction whose image is still unchecked, and its
dedupe keys) or raises ``_Reject`` with the quarantine reason, the detail and the row id. Checks run in a
fixed order and a row gets the first reason that applies."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from mdpo_pipeline.core.errors import shown
from mdpo_pipeline.core.ingest.config import IMAGES_DIR
from mdpo_pipeline.core.placeholders import describe_placeholders, placeholders_in
from mdpo_pipeline.core.schemas import ASPECTS, Completion, Instruction, QuarantineReason, same_answer

R = QuarantineReason
RATING_RANGE = (1.0, 5.0)  # GPT-4V's scale in VLFeedback
UNKNOWN = "unknown"
_REASON_ORDER = {r: i for i, r in enumerate(QuarantineReason)}


class _Reject(Exception):
    def __init__(self, reason: QuarantineReason, detail: str, id: str | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.id = reason, detail, id


@dataclass(frozen=True)
class _Row:
    """A row that passed the text checks: the instruction (image unchecked) and its dedupe keys."""

    ins: Instruction
    keys: tuple[tuple[str, str], ...]  # ("id", value) / ("content", digest): a repeat is a duplicate
    dropped: Counter = field(default_factory=Counter)


def _type_name(v: object) -> str:
    return "null" if v is None else type(v).__name__


def _require(obj: dict, names: Iterable[str], rid: str | None) -> None:
    for name in names:
        if obj.get(name) is None:
            raise _Reject(R.MISSING_FIELD, f"required field '{name}' is missing", rid)
        if not isinstance(obj[name], str):
            got = _type_name(obj[name])
            raise _Reject(R.BAD_FIELD_TYPE, f"field '{name}' is {got}, expected string", rid)


def _placeholder_defect(text: str, what: str) -> str | None:
    """Why ``text`` (``what``: "field 'prompt'", ...) cannot be used as it holds an image placeholder, or None."""
    found = placeholders_in(text)
    if not found:
        return None
    return (f"{what} holds the image placeholder {describe_placeholders(found)} as text: the processor would "
            "expand it into image tokens with no image behind them")


def _check_placeholders(rid: str | None, **texts: str) -> None:
    for name, text in texts.items():
        if detail := _placeholder_defect(text, f"field '{name}'"):
            raise _Reject(R.IMAGE_PLACEHOLDER_IN_TEXT, detail, rid)


def _parse_rating(value: object) -> tuple[float | None, QuarantineReason | None]:
    """VLFeedback ratings are strings ("4", " 5 ", "4.0") and sometimes "N/A"."""
    if isinstance(value, dict):
        value = value.get("Rating")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, R.MISSING_RATING
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None, R.NON_NUMERIC_RATING
    try:
        x = float(value)
    except ValueError:
        return None, R.NON_NUMERIC_RATING
    if not math.isfinite(x):
        return None, R.NON_NUMERIC_RATING
    if not RATING_RANGE[0] <= x <= RATING_RANGE[1]:
        return None, R.RATING_OUT_OF_RANGE
    return x, None


def _parse_completion(
    c: object, i: int, fallback_model: str, rid: str
) -> tuple[Completion, list[tuple[QuarantineReason, str]]]:
    """Parse one completion; return it with its defects (empty = usable)."""
    if not isinstance(c, dict):
        raise _Reject(R.BAD_FIELD_TYPE, f"completions[{i}] is {_type_name(c)}, expected object", rid)
    model = c.get("model") if isinstance(c.get("model"), str) else fallback_model
    response = c.get("response")
    if response is not None and not isinstance(response, str):
        got = _type_name(response)
        raise _Reject(R.BAD_FIELD_TYPE, f"completions[{i}].response is {got}, expected string", rid)
    where = f"completions[{i}] ({model})"
    response = (response or "").strip()
    defects = [] if response else [(R.EMPTY_RESPONSE, f"{where}: empty response")]
    if detail := _placeholder_defect(response, f"{where}: the response"):
        defects.append((R.IMAGE_PLACEHOLDER_IN_TEXT, detail))
    annotations = c.get("annotations") if isinstance(c.get("annotations"), dict) else {}
    ratings: dict[str, float | None] = {}
    for aspect in ASPECTS:
        raw = annotations.get(aspect)
        ratings[aspect], defect = _parse_rating(raw)
        if defect is not None:
            value = raw.get("Rating") if isinstance(raw, dict) else raw
            what = "missing" if defect is R.MISSING_RATING else f"{shown(value)} is not a number in 1-5"
            defects.append((defect, f"{where}: '{aspect}' rating {what}"))
    return Completion(model, response, ratings), defects


class _Ragged(ValueError):
    """Column-wise completions whose columns have different lengths."""


def _as_column(value: object) -> list | None:
    """A list as is, or a struct of equal-length lists (nested ones too) transposed to a list of structs."""
    if isinstance(value, list):
        return value
    if not isinstance(value, dict) or not value:
        return None
    # A null column (pyarrow writes one for a struct field absent from the row) is simply absent.
    columns = {k: _as_column(v) for k, v in value.items() if v is not None}
    if not columns or any(c is None for c in columns.values()):
        return None
    lengths = {k: len(c) for k, c in columns.items()}
    if len(set(lengths.values())) > 1:
        raise _Ragged(", ".join(f"{k} {n}" for k, n in lengths.items()))
    n = next(iter(lengths.values()))
    return [{k: c[i] for k, c in columns.items()} for i in range(n)]


def _completion_rows(value: object, rid: str) -> list:
    """``completions`` in the row layout, from either the row layout or the ``datasets`` column-wise one."""
    try:
        rows = _as_column(value)
    except _Ragged as e:
        raise _Reject(R.BAD_FIELD_TYPE, f"field 'completions' is column-wise with unequal lengths ({e})", rid)
    if rows is None:
        got = _type_name(value)
        detail = f"field 'completions' is {got}, expected list (or a struct of equal-length lists)"
        raise _Reject(R.BAD_FIELD_TYPE, detail, rid)
    return rows


def _parse_vlfeedback(obj: object, ordinal: int, sources: dict[str, str]) -> _Row:
    """Validate one VLFeedback row; unusable completions are dropped, and counted."""
    if not isinstance(obj, dict):
        raise _Reject(R.BAD_FIELD_TYPE, f"row is {_type_name(obj)}, expected a JSON object")
    rid = obj.get("id") if isinstance(obj.get("id"), str) else None
    _require(obj, ("id", "prompt"), rid)
    if obj.get("completions") is None:
        raise _Reject(R.MISSING_FIELD, "required field 'completions' is missing", rid)
    if not rid.strip():
        raise _Reject(R.MISSING_FIELD, "field 'id' is empty", rid)
    comps_in = _completion_rows(obj["completions"], rid)
    img = obj.get("img_path")
    if img is not None and not isinstance(img, str):
        raise _Reject(R.BAD_FIELD_TYPE, f"field 'img_path' is {_type_name(img)}, expected string", rid)
    prompt = obj["prompt"].strip()
    if not prompt:
        raise _Reject(R.EMPTY_PROMPT, f"field 'prompt' is empty or whitespace ({shown(obj['prompt'])})", rid)
    _check_placeholders(rid, prompt=prompt)
    models = obj.get("models") if isinstance(obj.get("models"), list) else []
    usable: list[Completion] = []
    dropped: Counter = Counter()
    details: list[str] = []
    for i, c in enumerate(comps_in):
        fallback = models[i] if i < len(models) and isinstance(models[i], str) else UNKNOWN
        comp, defects = _parse_completion(c, i, fallback, rid)
        if defects:
            dropped[min((d for d, _ in defects), key=_REASON_ORDER.__getitem__)] += 1
            details += [msg for _, msg in defects]
        else:
            usable.append(comp)
    if len(usable) < 2:
        # Name the defect that removed most completions (ties: enum order); none means there were too few.
        if dropped:
            reason = min(dropped, key=lambda r: (-dropped[r], _REASON_ORDER[r]))
        else:
            reason = R.TOO_FEW_COMPLETIONS
        listed = "".join(f"; {d}" for d in details[:6]) + ("; ..." if len(details) > 6 else "")
        raise _Reject(reason, f"{len(usable)} of {len(comps_in)} completions usable, need 2{listed}", rid)
    scores = sorted({round(c.score, 9) for c in usable})  # type: ignore[arg-type]
    if len(scores) == 1:
        detail = f"all {len(usable)} usable completions have mean rating {scores[0]:g}: no pair"
        raise _Reject(R.RATINGS_TIED, detail, rid)
    image = _posix(img).as_posix() if img and img.strip() else f"{IMAGES_DIR}/{rid}.jpg"
    ins = Instruction(
        id=rid, source=sources.get(rid, UNKNOWN), prompt=prompt, image=image, completions=tuple(usable),
    )
    return _Row(ins, (("id", rid),), dropped)


# LLaVA-1.5 / Vicuna v1 chat template used by the released mDPO file, optionally with its system line.
_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_PROMPT_TEMPLATES = (
    re.compile(
        rf"^\s*(?:{re.escape(_VICUNA_SYSTEM)})?\s*USER:\s*<image>\s*(?P<q>.*?)\s*ASSISTANT:\s*$", re.S
    ),
    re.compile(r"^\s*<image>\s*\n(?P<q>.*)$", re.S),
    # LLaVA's instruction data puts the image after the question as often as before it.
    re.compile(r"^(?P<q>.*?)\n\s*<image>\s*$", re.S),
)


def _posix(p: str) -> PurePosixPath:
    return PurePosixPath(p.replace("\\", "/"))


def strip_prompt_template(prompt: str) -> str:
    """Recover the raw question from a templated prompt; the model's processor re-templates it later."""
    for pattern in _PROMPT_TEMPLATES:
        if m := pattern.match(prompt):
            return m["q"].strip()
    return prompt.strip()


def _parse_mdpo(obj: object, ordinal: int, default_source: str) -> _Row:
    """Validate one released-mDPO row {img_path, prompt, chosen, rejected} into a fixed-pair Instruction.

    The pair is fixed by the file, not by ratings: completions are (chosen, rejected) with no ratings
    (so ``Completion.usable`` is False) and ``preferred=(0, 1)``. Downstream must take the pair from
    ``preferred`` whenever it is set, never from ratings. ``img_path`` is relative to the image root, by
    default the json's own folder (the release puts ``images/`` next to it). Without an ``id`` the id is
    "{image stem}#{ordinal}" (ordinal = 1-based position in the input), stable for the same file.
    """
    if not isinstance(obj, dict):
        raise _Reject(R.BAD_FIELD_TYPE, f"row is {_type_name(obj)}, expected a JSON object")
    given_id = obj.get("id")
    if given_id is not None and (not isinstance(given_id, str) or not given_id.strip()):
        raise _Reject(R.BAD_FIELD_TYPE, f"field 'id' is {shown(given_id)}, expected a non-empty string")
    img = obj.get("img_path")
    rid = given_id or (f"{_posix(img).stem}#{ordinal}" if isinstance(img, str) else None)
    _require(obj, ("img_path", "prompt", "chosen", "rejected"), rid)
    prompt = strip_prompt_template(obj["prompt"])
    if not prompt:
        detail = f"field 'prompt' has no question once the template is stripped ({shown(obj['prompt'])})"
        raise _Reject(R.EMPTY_PROMPT, detail, rid)
    chosen, rejected = obj["chosen"].strip(), obj["rejected"].strip()
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text:
            raise _Reject(R.EMPTY_RESPONSE, f"field '{name}' is empty or whitespace only", rid)
    # The template's own "<image>" is gone with the template: one left in the question is the row's text.
    _check_placeholders(rid, prompt=prompt, chosen=chosen, rejected=rejected)
    if chosen == rejected:
        raise _Reject(R.IDENTICAL_PAIR, "fields 'chosen' and 'rejected' are the same text", rid)
    if same_answer(chosen, rejected):
        detail = "fields 'chosen' and 'rejected' are the same text once spacing and Unicode form are normalised"
        raise _Reject(R.IDENTICAL_PAIR, detail, rid)
    source = obj.get("source")
    source = source.strip().lower() if isinstance(source, str) and source.strip() else default_source
    image = _posix(img).as_posix()
    content = json.dumps([img, obj["prompt"], obj["chosen"], obj["rejected"]], ensure_ascii=False)
    keys = (("content", hashlib.blake2b(content.encode(), digest_size=16).hexdigest()),)
    if given_id:
        keys += (("id", given_id),)
    completions = (Completion(UNKNOWN, chosen, {}), Completion(UNKNOWN, rejected, {}))
    return _Row(Instruction(rid, source, prompt, image, completions, preferred=(0, 1)), keys)
