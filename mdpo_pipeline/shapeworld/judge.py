"""A rule-based MMHal-Bench judge for the synthetic ShapeWorld split.

It reads each record's truth from its image_content labels and gt_answer (which ShapeWorld writes
from the scene) and applies MMHal's 0–6 rating scale mechanically. It only makes sense for
ShapeWorld records and its numbers are NOT comparable with LLM-judged MMHal-Bench scores.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import ClassVar

from mdpo_pipeline.core.eval.mmhal import HALLUCINATION_BELOW, MMHalRecord, record_field
from mdpo_pipeline.shapeworld.world import (
    BACKGROUNDS,
    COLOURS,
    OPPOSITE,
    RELATIONS,
    VOCABULARY,
)

#: Every name the vocabulary knows (canonical, synonyms, their plurals) -> canonical category.
_NAMES: dict[tuple[str, ...], str] = {
    tuple(word.split(" ")): cat
    for cat, entry in VOCABULARY.items()
    for singular, pl in entry["plurals"].items()
    for word in (singular, pl)
}
# Colour words an answer may use beyond ShapeWorld's palette: naming one is still a colour claim.
_COLOUR_WORDS = frozenset(COLOURS) | {
    "black", "pink", "brown", "grey", "violet", "magenta", "gold", "golden", "silver", "teal",
    "turquoise", "navy", "lime", "maroon", "indigo", "lavender", "beige", "tan",
}
_BACKGROUND_NAMES: dict[tuple[str, ...], str] = {tuple(b.split(" ")): b for b in BACKGROUNDS}
_BACKGROUND_WORDS = frozenset({"background", "backdrop", "surface", "texture", "textured", "canvas"})
_SIZE_WORDS = frozenset({"small", "medium", "large", "big", "tiny", "little", "huge", "faint", "pale", "bright",
                         "light", "solid", "flat", "sized", "filled", "dark"})
_NEGATIONS = frozenset({"no", "not", "none", "never", "without", "neither", "nor", "cannot", "absent", "missing"})
# A negated clause with one of these is uncertainty ("I'm not sure"), not a denial.
_UNSURE = frozenset({"sure", "know", "certain", "tell", "determine", "clear", "unclear"})
_NUMBERS = {w: n for n, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))} | {"single": 1}
_DIRECTIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "left": (("left", "of"), ("to", "the", "left")),
    "right": (("right", "of"), ("to", "the", "right")),
    "above": (("above",), ("over",), ("on", "top", "of"), ("higher", "than")),
    "below": (("below",), ("beneath",), ("under",), ("underneath",), ("lower", "than")),
}
_RELATION_DIRECTION = dict(zip(RELATIONS, ("left", "right", "above", "below")))
_OPPOSITE_DIRECTION = {
    _RELATION_DIRECTION[a]: _RELATION_DIRECTION[b] for a, b in OPPOSITE.items()
}
_LARGER = frozenset({"larger", "bigger", "greater", "largest", "biggest"})
_SMALLER = frozenset({"smaller", "tinier", "less", "smallest", "littler"})
_SAME = frozenset({"same", "similar", "equal", "equally", "identical"})
_CLAUSE_SPLIT = re.compile(r"[.;:!?,\n]|\bbut\b|\bwhile\b|\bwhereas\b|\bhowever\b")
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+")


@dataclass(frozen=True)
class _Mention:
    category: str
    index: int  # token index in its clause
    negated: bool
    colour: str | None  # the colour word right before it ("a small red star" -> red)


@dataclass(frozen=True)
class _Clause:
    tokens: tuple[str, ...]
    mentions: tuple[_Mention, ...]
    negated: bool  # holds a negation cue anywhere: its values (colours, numbers, ...) are not claims

    @property
    def categories(self) -> set[str]:
        return {m.category for m in self.mentions}


def _is_negation(token: str) -> bool:
    return token in _NEGATIONS or token.endswith("n't")


def _clauses(text: str) -> list[_Clause]:
    """Split into clauses and find the object mentions, two-word names before one-word ones."""
    out = []
    for part in _CLAUSE_SPLIT.split(text.lower().replace("-", " ").replace("gray", "grey")):
        tokens = tuple(_TOKEN.findall(part))
        found: list[tuple[str, int]] = []
        i = 0
        while i < len(tokens):
            if i + 1 < len(tokens) and (cat := _NAMES.get(tokens[i:i + 2])):
                found.append((cat, i))
                i += 2
            elif cat := _NAMES.get(tokens[i:i + 1]):
                found.append((cat, i))
                i += 1
            else:
                i += 1
        cues = [j for j, t in enumerate(tokens) if _is_negation(t)]
        mentions = []
        for cat, i in found:
            # "no star" negates what follows the cue; "the star is not there" negates a lone mention.
            negated = any(j < i for j in cues) or (len(found) == 1 and bool(cues))
            j = i - 1
            while j >= 0 and tokens[j] in _SIZE_WORDS:
                j -= 1
            colour = tokens[j] if j >= 0 and tokens[j] in _COLOUR_WORDS else None
            mentions.append(_Mention(cat, i, negated, colour))
        out.append(_Clause(tokens, tuple(mentions), bool(cues)))
    return out


def _affirmed(clauses: list[_Clause]) -> list[str]:
    """Categories mentioned without negation, in order of first mention."""
    return list(dict.fromkeys(m.category for c in clauses for m in c.mentions if not m.negated))


def _values(clauses: list[_Clause], subject: str | None, pick) -> set:
    """Values ``pick`` finds in affirmative clauses about ``subject``, else in clauses naming no object."""
    about = [c for c in clauses if not c.negated and subject in c.categories]
    if not about:
        about = [c for c in clauses if not c.negated and not c.mentions]
    return {v for c in about for v in pick(c)}


def _colours(clause: _Clause) -> list[str]:
    return [t for t in clause.tokens if t in _COLOUR_WORDS]


def _numbers(clause: _Clause) -> list[int]:
    return [int(t) if t.isdigit() else _NUMBERS[t] for t in clause.tokens if t.isdigit() or t in _NUMBERS]


def _find(tokens: tuple[str, ...], phrase: tuple[str, ...]) -> int:
    n = len(phrase)
    return next((i for i in range(len(tokens) - n + 1) if tokens[i:i + n] == phrase), -1)


def _directions(clause: _Clause, a: str, b: str) -> list[str]:
    """Where ``a`` is relative to ``b`` by this clause: the subject is the last object named before the phrase."""
    out = []
    for direction, phrases in _DIRECTIONS.items():
        for phrase in phrases:
            at = _find(clause.tokens, phrase)
            if at < 0:
                continue
            before = [m.category for m in clause.mentions if m.index < at]
            subject = before[-1] if before else a
            if subject == a:
                out.append(direction)
            elif subject == b:
                out.append(_OPPOSITE_DIRECTION[direction])
            break
    return out


def _larger(clause: _Clause, a: str, b: str) -> list[str]:
    """Which of ``a`` and ``b`` this clause says is larger ("same" for equal sizes)."""
    if any(t in _SAME for t in clause.tokens):
        return ["same"]
    for k, t in enumerate(clause.tokens):
        if t in _LARGER or t in _SMALLER:
            before = [m.category for m in clause.mentions if m.index < k and m.category in (a, b)]
            after = [m.category for m in clause.mentions if m.index > k and m.category in (a, b)]
            if before:
                subject, bigger = before[-1], t in _LARGER
            elif after:  # "the larger one is the circle"
                subject, bigger = after[0], t in _LARGER
            else:
                return []
            other = b if subject == a else a
            return [subject if bigger else other]
    return []


def _backgrounds(clause: _Clause) -> list[str]:
    found, i, toks = [], 0, clause.tokens
    while i < len(toks):
        if i + 1 < len(toks) and (name := _BACKGROUND_NAMES.get(toks[i:i + 2])):
            found.append(name)
            i += 2
        elif name := _BACKGROUND_NAMES.get(toks[i:i + 1]):
            found.append(name)
            i += 1
        else:
            i += 1
    if not found and not clause.mentions and _BACKGROUND_WORDS & set(toks):
        found = [t for t in toks if t in _COLOUR_WORDS]
    return found


@dataclass(frozen=True)
class ShapeWorldVerdict:
    """The rule judge's reading of one answer and the rating it gives."""

    rating: int
    key: str  #: the answer's main claim: "correct", "partial", "wrong" or "missing"
    grounded: bool  #: correct and complete: it names the object(s) asked about (and their colours)
    hallucinated_objects: tuple[str, ...]  #: affirmed categories that are not in the image
    wrong_details: tuple[str, ...]  #: details the reference contradicts: "red ellipse", "white background"
    reason: str

    @property
    def hallucinates(self) -> bool:
        """True for ratings 0–2."""
        return self.rating < HALLUCINATION_BELOW

    def as_dict(self) -> dict:
        """JSON form."""
        return {**asdict(self), "hallucinates": self.hallucinates}


@dataclass(frozen=True)
class ShapeWorldJudge:
    """Rule-based MMHal judge for ShapeWorld records, reading the truth from image_content and gt_answer.

    It applies the MMHal rating scale mechanically (an absent object or a contradicted main claim
    means hallucination, 0–2; otherwise 6–3 by how complete the answer is). It is NOT a stand-in
    for GPT-4: its numbers are not comparable with GPT-4-judged MMHal-Bench scores.
    """

    name: str = "shapeworld-rules-v1"
    comparable_with_gpt4: ClassVar[bool] = False
    #: what scores record as their judge prompt: rules, no prompt text (so no prompt sha256)
    prompt_kind: ClassVar[str] = "shapeworld-rule"
    note: ClassVar[str] = (
        "rule-based ShapeWorld judge; its MMHal scores are NOT comparable with GPT-4-judged MMHal-Bench numbers"
    )

    @property
    def model(self) -> str:
        """Its identity where a judge model name is recorded (e.g. next to scores)."""
        return self.name

    def judge(self, record: MMHalRecord | Mapping, answer: str) -> str:
        """A judge output for ``answer``: a one-line explanation, then "Rating: s"."""
        v = self.verdict(record, answer)
        return f"Explanation: {v.reason}\nRating: {v.rating}"

    __call__ = judge

    def verdict(self, record: MMHalRecord | Mapping, answer: str) -> ShapeWorldVerdict:
        """Rate ``answer`` to ``record``'s question against the record's ground truth."""
        qtype = record_field(record, "question_type")
        labels = record_field(record, "image_content")
        present = set()
        for label in labels:
            cat = _NAMES.get(tuple(label.lower().split(" ")))
            if cat is None:
                raise ValueError(f"not a ShapeWorld record: image_content label {label!r} is not a ShapeWorld object")
            present.add(cat)
        question = _clauses(record_field(record, "question"))
        asked = [m.category for c in question for m in c.mentions]
        gt = _clauses(record_field(record, "gt_answer"))
        ans = _clauses(answer or "")

        affirmed = _affirmed(ans)
        hallucinated = tuple(c for c in affirmed if c not in present)
        truth_colours: dict[str, set[str]] = {}
        for c in gt:
            for m in c.mentions:
                if m.colour and not m.negated:
                    truth_colours.setdefault(m.category, set()).add(m.colour)
        if qtype == "attribute" and asked:
            truth_colours.setdefault(asked[0], set()).update(_values(gt, asked[0], _colours))
        answer_pairs = [(m.colour, m.category) for c in ans for m in c.mentions if m.colour and not m.negated]
        wrong = [f"{col} {cat}" for col, cat in answer_pairs if cat in truth_colours and col not in truth_colours[cat]]
        if qtype == "holistic":
            # The reference description names the background too; a different one is a false detail.
            truth_bg = {b for c in gt for b in _backgrounds(c)}
            said_bg = {b for c in ans if not c.negated for b in _backgrounds(c)}
            if truth_bg and said_bg and not truth_bg & said_bg:
                wrong += [f"{b} background" for b in sorted(said_bg)]
        wrong_details = tuple(dict.fromkeys(wrong))

        key, grounded, what = self._key(qtype, asked, present, gt, ans, answer_pairs)
        hallucinates = bool(hallucinated or wrong_details) or key == "wrong"
        if hallucinates:
            rating = {"correct": 2, "partial": 1}.get(key, 0)
        else:
            rating = {"correct": 6 if grounded else 5, "partial": 4}.get(key, 3)
        bits = [f"{qtype} question: {what} is {key}"]
        if hallucinated:
            bits.append("names absent object(s): " + ", ".join(hallucinated))
        if wrong_details:
            bits.append("contradicts the reference: " + ", ".join(wrong_details))
        if not hallucinates and key == "correct":
            bits.append("complete" if grounded else "terse")
        return ShapeWorldVerdict(rating, key, grounded, hallucinated, wrong_details, "; ".join(bits))

    @staticmethod
    def _key(qtype, asked, present, gt, ans, answer_pairs) -> tuple[str, bool, str]:
        """(correct|partial|wrong|missing, grounded, what was checked) for the question's main claim."""
        affirmed = _affirmed(ans)

        def compare(truth: set, claimed: set) -> str:
            if not claimed:
                return "missing"
            return "correct" if truth & claimed else "wrong"

        if qtype == "adversarial":
            absent = [c for c in asked if c not in present]
            if not absent:
                return "missing", False, "the denial"
            target = absent[0]
            if target in affirmed:
                return "wrong", False, f"the denial of the {target}"
            denied = any(m.category == target and m.negated for c in ans for m in c.mentions) or any(
                c.negated and not c.mentions and not _UNSURE & set(c.tokens) for c in ans
            )
            named_present = any(c in present for c in affirmed)
            if denied:
                return "correct", named_present, f"the denial of the {target}"
            # A colour given without denying the object answers as though it were there.
            if any(_colours(c) for c in ans if not c.negated and not (c.categories & present)):
                return "wrong", False, f"the denial of the {target}"
            return "missing", False, f"the denial of the {target}"
        if qtype == "holistic":
            covered = [c for c in affirmed if c in present]
            coloured = {cat for _, cat in answer_pairs}
            if not covered:
                return "missing", False, "the description"
            if set(covered) == present:
                return "correct", coloured >= present, "the description"
            return "partial", False, f"the description ({len(covered)} of {len(present)} objects)"
        if qtype == "other":
            truth = _affirmed(gt)[:1]
            if not truth:
                return "missing", False, "the top object"
            top = truth[0]
            tc = {m.colour for c in gt for m in c.mentions if m.category == top and m.colour}
            key = "missing" if not affirmed else ("correct" if affirmed[0] == top else "wrong")
            grounded = any(cat == top and col in tc for col, cat in answer_pairs)
            return key, grounded, "the top object"
        if qtype == "environment":
            truth = {b for c in gt for b in _backgrounds(c)}
            claimed = {b for c in ans if not c.negated for b in _backgrounds(c)}
            key = compare(truth, claimed)
            if key == "wrong" and {b.split(" ")[-1] for b in truth} & {b.split(" ")[-1] for b in claimed}:
                key = "partial"  # "grey" for "dark grey"
            grounded = any(_BACKGROUND_WORDS & set(c.tokens) for c in ans)
            return key, grounded, "the background"
        if qtype in ("relation", "comparison"):
            if len(asked) < 2:
                return "missing", False, f"the {qtype}"
            a, b = asked[0], asked[1]
            pick = _directions if qtype == "relation" else _larger
            truth = {v for c in gt if not c.negated for v in pick(c, a, b)}
            claimed = {v for c in ans if not c.negated for v in pick(c, a, b)}
            named = {a, b} <= set(affirmed)
            return compare(truth, claimed), named, f"the {qtype} of the {a} and the {b}"
        subject = asked[0] if asked else None
        pick = _numbers if qtype == "counting" else _colours
        what = f"the {'count' if qtype == 'counting' else 'colour'} of the {subject}"
        key = compare(_values(gt, subject, pick), _values(ans, subject, pick))
        return key, subject in affirmed, what
