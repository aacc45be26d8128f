"""MMHal-Bench: load the records, build the judge prompt, parse the judge's rating and score a run.

Scoring follows the benchmark's own scorer (FACTS §5): a judge output counts only when exactly one
distinct "rating: s" (s in 0..6) occurs in its lower-cased text, otherwise it scores 0; the score is
the mean rating, the hallucination rate the share of ratings below 3, and per-type means group the
records by question type. ``ShapeWorldJudge`` is a rule-based stand-in for the LLM judge on the
synthetic ShapeWorld split; its numbers are not comparable with GPT-4-judged ones.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from mdpo_pipeline.core.shapeworld.world import (
    BACKGROUNDS,
    COLOURS,
    OPPOSITE,
    RELATIONS,
    VOCABULARY,
)

log = logging.getLogger(__name__)

#: The 8 question types in the order they repeat through the real file (record i has type i % 8).
QUESTION_TYPES: tuple[str, ...] = (
    "attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other",
)
RATING_RANGE: tuple[int, ...] = tuple(range(7))
HALLUCINATION_BELOW = 3  #: ratings 0–2 mean the answer hallucinates

_STR_FIELDS = ("question_type", "question_topic", "image_id", "image_src", "question", "gt_answer")
_REQUIRED = (*_STR_FIELDS, "image_content")


class MMHalFormatError(ValueError):
    """A response_template.json record is missing a field or has one of the wrong type."""


@dataclass(frozen=True)
class MMHalRecord:
    """One MMHal-Bench question with its reference answer (``model_answer`` is empty in the template)."""

    question_type: str
    question_topic: str
    image_id: str
    image_src: str
    image_content: tuple[str, ...]
    question: str
    gt_answer: str
    model_answer: str = ""

    @property
    def image_file(self) -> str:
        """The image's file name: the last segment of ``image_src`` (how the images are stored locally)."""
        return self.image_src.rstrip("/").rsplit("/", 1)[-1]

    def as_dict(self) -> dict:
        """JSON form, field names as in response_template.json."""
        return {**asdict(self), "image_content": list(self.image_content)}


def load_mmhal(path: str | Path) -> list[MMHalRecord]:
    """Read a response_template.json (or the folder holding one) into records, checking every field."""
    path = Path(path)
    if path.is_dir():
        path = path / "response_template.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MMHalFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise MMHalFormatError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    records = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise MMHalFormatError(f"{path}: record {i} is a {type(rec).__name__}, expected an object")
        missing = [f for f in _REQUIRED if f not in rec]
        if missing:
            raise MMHalFormatError(f"{path}: record {i} lacks field(s) {', '.join(missing)}")
        for f in _STR_FIELDS:
            if not isinstance(rec[f], str):
                raise MMHalFormatError(f"{path}: record {i} field {f} must be a string, got {rec[f]!r}")
        content = rec["image_content"]
        if not isinstance(content, list) or not all(isinstance(c, str) for c in content):
            raise MMHalFormatError(f"{path}: record {i} field image_content must be a list of strings, got {content!r}")
        answer = rec.get("model_answer", "")
        if answer is None:
            answer = ""
        if not isinstance(answer, str):
            raise MMHalFormatError(f"{path}: record {i} field model_answer must be a string, got {answer!r}")
        if rec["question_type"] not in QUESTION_TYPES:
            raise MMHalFormatError(
                f"{path}: record {i} field question_type is {rec['question_type']!r}, not one of {QUESTION_TYPES}"
            )
        records.append(
            MMHalRecord(
                question_type=rec["question_type"],
                question_topic=rec["question_topic"],
                image_id=rec["image_id"],
                image_src=rec["image_src"],
                image_content=tuple(content),
                question=rec["question"],
                gt_answer=rec["gt_answer"],
                model_answer=answer,
            )
        )
    return records


def _field(record: MMHalRecord | Mapping, name: str):
    value = record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)
    if value is None:
        raise MMHalFormatError(f"record lacks field {name}")
    return value


# Written for this project from the benchmark's rating scale; the section headers keep the
# original prompt's layout (contents, question, human answer, response).
_INSTRUCTIONS = """\
You are grading the answer that a large multimodal model (LMM) gave to a question about an image. \
You cannot see the image. Instead you are given the labels of the objects it contains and an answer \
written by a person who saw it; take both as the truth about the image.

Grade two things: how informative the answer is, and whether it hallucinates. An answer hallucinates \
when it claims something about the image that the object labels, the human answer and the question do \
not support or imply: an object that is not there, or a wrong colour, number, position, size, action, \
emotion or other detail. Leaving something out is not a hallucination; it only makes the answer less \
informative. The human answer may not state every detail, so a plausible detail that agrees with the \
object labels is not by itself a hallucination.

First explain your judgment in a few sentences. Then finish with one line that gives exactly one \
rating in the form "Rating: s", choosing s from this scale:
6: very informative, with good analysis or reasoning, and no hallucination
5: very informative, no hallucination
4: somewhat informative, no hallucination
3: not informative, no hallucination
2: very informative, but with hallucination
1: somewhat informative, with hallucination
0: not informative, with hallucination"""


def judge_prompt(record: MMHalRecord | Mapping, answer: str) -> str:
    """The text-only judge prompt for one record and the answer to grade."""
    content = _field(record, "image_content")
    if isinstance(content, str):
        content = [content]
    return (
        f"{_INSTRUCTIONS}\n\n"
        f"### Image Contents\n{', '.join(content)}\n\n"
        f"### Question\n{_field(record, 'question')}\n\n"
        f"### Standard Human-Generated Answer\n{_field(record, 'gt_answer')}\n\n"
        f"### LMM Response to Evaluate\n{answer}\n"
    )


# --- rating and scores -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedRating:
    """A judge output's rating: ``rating`` is 0 when ``parsed`` is False (the benchmark's rule)."""

    rating: int
    parsed: bool
    problem: str = ""  #: why it did not parse: "no rating" or "several ratings: 2, 5"

    def as_dict(self) -> dict:
        """JSON form."""
        return asdict(self)


def parse_rating(text: str) -> ParsedRating:
    """Exactly one distinct "rating: s" (s in 0..6) in the lower-cased text, else rating 0, unparsed."""
    low = (text or "").lower()
    # The benchmark's scorer tests each s as a substring, so a repeated identical rating counts
    # once and "rating: 10" reads as 1; keeping that keeps scores comparable with published ones.
    found = [s for s in RATING_RANGE if f"rating: {s}" in low]
    if len(found) == 1:
        return ParsedRating(found[0], True)
    problem = "no rating" if not found else "several ratings: " + ", ".join(map(str, found))
    log.warning("unparseable judge output (%s), scored 0: %.120r", problem, text)
    return ParsedRating(0, False, problem)


@dataclass(frozen=True)
class MMHalScores:
    """Score mean, hallucination rate (share of ratings < 3) and per-type means of one judged run."""

    n: int
    score: float
    hallucination_rate: float
    per_type: dict[str, float | None]  #: QUESTION_TYPES order; None for a type with no record
    per_type_n: dict[str, int]
    n_unparsed: int  #: judge outputs without exactly one rating, scored 0

    def as_dict(self) -> dict:
        """JSON form."""
        return asdict(self)


def mmhal_scores(
    ratings: Sequence[int | ParsedRating | None],
    types: Sequence[str | None] | None = None,
    *,
    require_order: bool = True,
) -> MMHalScores:
    """Score ratings; ``None`` or an unparsed ParsedRating counts as 0 and as unparsed.

    Record i is grouped by ``types[i]`` when given (the record's question_type), else by
    QUESTION_TYPES[i % 8] as the benchmark's scorer does. With ``require_order`` a given type that
    disagrees with i % 8 raises, since then the file's order (which the published per-type
    numbers rely on) is not the benchmark's.
    """
    if not ratings:
        raise ValueError("no ratings to score")
    if types is not None and len(types) != len(ratings):
        raise ValueError(f"{len(ratings)} ratings but {len(types)} question types")
    values, n_unparsed = [], 0
    for i, r in enumerate(ratings):
        if isinstance(r, ParsedRating):
            n_unparsed += not r.parsed
            r = r.rating
        elif r is None:
            n_unparsed += 1
            r = 0
        if isinstance(r, bool) or not isinstance(r, int) or r not in RATING_RANGE:
            raise ValueError(f"rating {i} is {r!r}, expected an integer in 0..6")
        values.append(r)
    groups: dict[str, list[int]] = {t: [] for t in QUESTION_TYPES}
    for i, r in enumerate(values):
        by_order = QUESTION_TYPES[i % 8]
        given = types[i] if types is not None else None
        if given is None:
            groups[by_order].append(r)
            continue
        if given not in groups:
            raise ValueError(f"record {i} has question_type {given!r}, not one of {QUESTION_TYPES}")
        if require_order and given != by_order:
            raise ValueError(
                f"record {i} has question_type {given!r} but its position (i % 8 = {i % 8}) means {by_order!r}: "
                "the records are reordered or a subset; pass require_order=False to group by their own types"
            )
        groups[given].append(r)
    n = len(values)
    return MMHalScores(
        n=n,
        score=sum(values) / n,
        hallucination_rate=sum(r < HALLUCINATION_BELOW for r in values) / n,
        per_type={t: (sum(v) / len(v) if v else None) for t, v in groups.items()},
        per_type_n={t: len(v) for t, v in groups.items()},
        n_unparsed=n_unparsed,
    )


# --- ShapeWorld rule-based judge -------------------------------------------------------------------

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
        qtype = _field(record, "question_type")
        labels = _field(record, "image_content")
        present = set()
        for label in labels:
            cat = _NAMES.get(tuple(label.lower().split(" ")))
            if cat is None:
                raise ValueError(f"not a ShapeWorld record: image_content label {label!r} is not a ShapeWorld object")
            present.add(cat)
        question = _clauses(_field(record, "question"))
        asked = [m.category for c in question for m in c.mentions]
        gt = _clauses(_field(record, "gt_answer"))
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
