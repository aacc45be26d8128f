"""AMBER's discriminative task: yes/no precision, recall, F1 and accuracy ("no" positive), overall, per
dimension and per annotation type; official mode adds inference.py's printed numbers and counters."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mdpo_pipeline.core.eval.amber.common import _official_start
from mdpo_pipeline.core.eval.common import check_mode, ratio
from mdpo_pipeline.core.eval.amber.data import DISCRIMINATIVE_TYPES, AmberData, _responses

DIMENSIONS: tuple[str, ...] = ("existence", "attribute", "relation")

_YES_NO = re.compile(r"^[^a-z0-9]*(yes|no)\b")
#: inference.py compares the raw response: nothing else is an answer (no stripping, no case folding)
_OFFICIAL_YES_NO = {"Yes": "yes", "No": "no"}


def parse_yes_no(text: str) -> str | None:
    """"yes" or "no" when the answer starts with that word (case, quotes and punctuation aside), else None."""
    m = _YES_NO.match(text.strip().lower())
    return m.group(1) if m else None


@dataclass(frozen=True)
class YesNoScores:
    """Yes/no counts of a set of items, "no" being the positive class, and the metrics they give."""

    n: int
    n_correct: int
    n_truth_no: int  #: items whose truth is "no" (positives)
    n_answer_no: int  #: items answered "no"
    n_true_no: int  #: answered "no" and truth "no"
    n_unparseable: int

    @property
    def accuracy(self) -> float:
        """Correct answers / items (unparseable answers are wrong)."""
        return ratio(self.n_correct, self.n)

    @property
    def precision(self) -> float:
        """Correct "no" / answered "no"."""
        return ratio(self.n_true_no, self.n_answer_no)

    @property
    def recall(self) -> float:
        """Correct "no" / truth "no"."""
        return ratio(self.n_true_no, self.n_truth_no)

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        """Counts and metrics."""
        return {**self.__dict__, "accuracy": self.accuracy, "precision": self.precision, "recall": self.recall,
                "f1": self.f1}


def _yes_no(pairs: Sequence[tuple[str, str | None]]) -> YesNoScores:
    return YesNoScores(
        n=len(pairs),
        n_correct=sum(t == a for t, a in pairs),
        n_truth_no=sum(t == "no" for t, _ in pairs),
        n_answer_no=sum(a == "no" for _, a in pairs),
        n_true_no=sum(t == a == "no" for t, a in pairs),
        n_unparseable=sum(a is None for _, a in pairs),
    )


@dataclass(frozen=True)
class AmberOfficialYesNo:
    """One yes/no answer as the official scorer counts it."""

    id: int
    type: str
    truth: str
    response: str
    correct: int  #: 1 when exactly "Yes" for truth yes or exactly "No" for truth no
    answer_is_no: int  #: 1 when exactly "No"
    counters: Mapping[str, int]  #: this answer's increments of the official counters

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {**self.__dict__, "counters": dict(self.counters)}


@dataclass(frozen=True)
class AmberDiscriminativeResult:
    """Yes/no metrics overall, per dimension (existence, attribute, relation) and per annotation type."""

    overall: YesNoScores
    by_dimension: Mapping[str, YesNoScores]
    by_type: Mapping[str, YesNoScores]
    unparseable_ids: tuple[int, ...]
    mode: str = "offline"
    #: official mode: what inference.py prints (Accuracy, Precision, Recall, F1: ×100, 1 decimal) overall and per
    #: existence / attribute / state / number / action / relation, and its counters
    official: Mapping | None = None
    per_item: tuple[AmberOfficialYesNo, ...] = ()  #: official mode only

    @property
    def f1(self) -> float:
        """Overall F1 ("no" positive)."""
        return self.overall.f1

    def as_dict(self, detail: bool = False) -> dict:
        """Flat metrics for logging: overall ones bare, per dimension prefixed ("existence_f1")."""
        out = self.overall.as_dict()
        for dim, scores in self.by_dimension.items():
            out |= {f"{dim}_{k}": v for k, v in scores.as_dict().items()}
        out["mode"] = self.mode
        if self.official is not None:
            out["official"] = self.official
        if detail:
            out["by_type"] = {t: s.as_dict() for t, s in self.by_type.items()}
            out["unparseable_ids"] = list(self.unparseable_ids)
            if self.per_item:
                out["per_item"] = [p.as_dict() for p in self.per_item]
        return out


#: the official counters' prefix per type; any other type (discriminative-relation, relation) is "asso"
_TYPE_PREFIX = {
    "discriminative-attribute-state": "as_",
    "discriminative-attribute-number": "an_",
    "discriminative-attribute-action": "aa_",
    "discriminative-hallucination": "ha_",
}
_DISCRIMINATIVE_COUNTERS = tuple(
    f"{prefix}qa_{name}"
    for prefix in ("", "as_", "an_", "aa_", "asso_", "ha_")
    for name in ("correct_score", "correct_num", "no_score", "no_num", "ans_no_score", "ans_no_num")
)


def _official_prf(correct: float, n: float, ans_no_true: float, ans_no: float, true_no: float, truth_no: float,
                  f1_eps: float = 0.0001) -> dict[str, float]:
    """inference.py's four printed numbers, same float operations: F1 from the rounded P and R."""
    accuracy = round(correct / n * 100, 1)
    precision = round(ans_no_true / ans_no * 100, 1)
    recall = round(true_no / truth_no * 100, 1)
    f1 = round(2 * (precision / 100) * (recall / 100) / ((precision / 100) + (recall / 100) + f1_eps) * 100, 1)
    return {"Accuracy": accuracy, "Precision": precision, "Recall": recall, "F1": f1}


def _official_discriminative(answers: Mapping[int, str], data: AmberData) -> tuple[list[AmberOfficialYesNo], dict]:
    m = _official_start(_DISCRIMINATIVE_COUNTERS)
    per_item = []
    for item_id, response in answers.items():  # given order, as the official loop
        ann = data.annotation(item_id)
        if ann["type"] == "generative":
            continue
        prefix = _TYPE_PREFIX.get(ann["type"], "asso_")
        counters: dict[str, int] = {}

        def bump(*names: str) -> None:
            for name in names:
                for key in (f"qa_{name}", f"{prefix}qa_{name}"):
                    counters[key] = counters.get(key, 0) + 1
                    m[key] += 1

        bump("correct_num")
        truth = ann["truth"]
        if truth == "yes":
            if response == "Yes":
                bump("correct_score")
        else:
            bump("no_num")
            if response == "No":
                bump("correct_score", "no_score")
        if response == "No":
            bump("ans_no_num")
            if truth == "no":
                bump("ans_no_score")
        correct = int(response == ("Yes" if truth == "yes" else "No"))
        per_item.append(AmberOfficialYesNo(item_id, ann["type"], truth, response, correct, int(response == "No"),
                                           counters))

    def prf(*prefixes: str, f1_eps: float = 0.0001) -> dict[str, float]:
        # Attribute pools three types: numerators and (0.001-started) denominators summed left to right, as
        # inference.py writes it (sum() adds to 0 first, which changes no float).
        def total(name: str) -> float:
            return sum(m[f"{p}qa_{name}"] for p in prefixes)

        return _official_prf(total("correct_score"), total("correct_num"), total("ans_no_score"),
                             total("ans_no_num"), total("no_score"), total("no_num"), f1_eps)

    official = {
        "overall": prf(""),
        "existence": prf("ha_", f1_eps=0.001),  # inference.py's Existence F1 uses +0.001, the others +0.0001
        "attribute": prf("as_", "an_", "aa_"),
        "state": prf("as_"),
        "number": prf("an_"),
        "action": prf("aa_"),
        "relation": prf("asso_"),
        "counts": {k: sum(p.counters.get(k, 0) for p in per_item) for k in _DISCRIMINATIVE_COUNTERS},
    }
    return per_item, official


def amber_discriminative(
    responses: Mapping[int, str] | Iterable[Mapping], data: AmberData, *, mode: str = "offline"
) -> AmberDiscriminativeResult:
    """Precision, recall, F1 and accuracy of the yes/no responses (other ids are ignored).

    ``mode="offline"`` reads a leading yes/no (``parse_yes_no``); ``mode="official"`` counts only exactly "Yes"
    / "No" and adds inference.py's printed numbers (``official``) and per-item counters (``per_item``)."""
    check_mode(mode, "AMBER")
    answers = _responses(responses)
    parse = parse_yes_no if mode == "offline" else _OFFICIAL_YES_NO.get
    rows: list[tuple[str, str, str | None]] = []
    unparseable = []
    for item_id in sorted(answers):
        ann = data.annotation(item_id)
        if ann["type"] == "generative":
            continue
        answer = parse(answers[item_id])
        if answer is None:
            unparseable.append(item_id)
        rows.append((ann["type"], ann["truth"], answer))
    by_dim = {
        dim: _yes_no([(t, a) for typ, t, a in rows if DISCRIMINATIVE_TYPES[typ] == dim])
        for dim in DIMENSIONS
        if any(DISCRIMINATIVE_TYPES[typ] == dim for typ, _, _ in rows)
    }
    by_type = {typ: _yes_no([(t, a) for ty, t, a in rows if ty == typ]) for typ in sorted({r[0] for r in rows})}
    overall = _yes_no([(t, a) for _, t, a in rows])
    if mode == "offline":
        return AmberDiscriminativeResult(overall, by_dim, by_type, tuple(unparseable))
    per_item, official = _official_discriminative(answers, data)
    return AmberDiscriminativeResult(overall, by_dim, by_type, tuple(unparseable), "official", official,
                                     tuple(per_item))
