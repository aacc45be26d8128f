"""CHAIR at matched recall: a model that says less hallucinates less, so a lower CHAIR can be a length effect
rather than better grounding. Truncating every answer to its first k object mentions traces a curve of
(recall, CHAIR) per model; comparing models at one common recall takes the length effect out.

Input records are the per-answer detail of a CHAIR scoring, reduced to ``{"mentioned": [...], "truth": [...]}``:
the canonical categories in mention order (repeats kept) and the image's truth categories. The counting rules
are scoring.py's: recall = distinct truth categories covered / truth categories, summed over answers; CHAIR_i =
hallucinated mentions / mentions; CHAIR_s = share of answers with a hallucinated mention (an answer without a
mention counts as not hallucinated). At the largest k the curve equals the full-answer CHAIR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from mdpo_pipeline.core.eval.common import ratio


@dataclass(frozen=True)
class CurvePoint:
    """CHAIR of the answers truncated to their first ``k`` mentions, with the counts behind it."""

    k: int
    recall: float
    chair_i: float
    chair_s: float
    n_mentions: int
    n_hallucinated_mentions: int
    n_hallucinated_answers: int
    n_covered: int

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


#: Recalls closer than this are equal (a model's full recall, recomputed, must meet itself).
_TOL = 1e-12


def _truncated(answers: Sequence[tuple[list[str], set[str]]], k: int, n_truth: int) -> CurvePoint:
    mentions = hallucinated = bad = covered = 0
    for mentioned, truth in answers:
        head = mentioned[:k]
        wrong = sum(c not in truth for c in head)
        mentions += len(head)
        hallucinated += wrong
        bad += wrong > 0
        covered += len(truth.intersection(head))
    return CurvePoint(k=k, recall=ratio(covered, n_truth), chair_i=ratio(hallucinated, mentions),
                      chair_s=ratio(bad, len(answers)), n_mentions=mentions, n_hallucinated_mentions=hallucinated,
                      n_hallucinated_answers=bad, n_covered=covered)


def _parse(records: Sequence[Mapping]) -> list[tuple[list[str], set[str]]]:
    out = []
    for i, rec in enumerate(records):
        mentioned, truth = rec.get("mentioned"), rec.get("truth")
        if mentioned is None or truth is None or isinstance(mentioned, str) or isinstance(truth, str):
            raise ValueError(f"per-answer record {i} needs lists 'mentioned' and 'truth', got {dict(rec)!r}")
        out.append((list(mentioned), set(truth)))
    return out


def recall_curve(records: Sequence[Mapping]) -> list[CurvePoint]:
    """(k, recall, CHAIR_i, CHAIR_s) for k = 1 .. the longest answer's mention count (one k = 0 point when no
    answer mentions anything, so the curve is never empty)."""
    answers = _parse(records)
    n_truth = sum(len(truth) for _, truth in answers)
    longest = max((len(m) for m, _ in answers), default=0)
    return [_truncated(answers, k, n_truth) for k in range(min(1, longest), longest + 1)]


def chair_at_recall(curve: Sequence[CurvePoint], recall: float) -> dict | None:
    """CHAIR_i and CHAIR_s at ``recall``, linearly interpolated along the curve; None above its largest recall.

    Recall never falls as k grows; where it stays flat the LAST point of the flat stretch stands for it (the
    answer up to just before it covers something new), so a model read at its own full recall gets its full
    CHAIR. Below the first point the curve runs on to recall 0 by mixing in empty answers: CHAIR_s falls in
    proportion and CHAIR_i, a ratio of mentions, stays put.
    """
    if not curve or recall > curve[-1].recall + _TOL:
        return None
    first = curve[0]
    below = [p for p in curve if p.recall <= recall + _TOL]
    if not below:
        share = recall / first.recall if first.recall > 0 else 0.0
        return {"recall": recall, "chair_i": first.chair_i, "chair_s": share * first.chair_s, "k": share * first.k}
    lower = below[-1]
    if abs(lower.recall - recall) <= _TOL:
        return {"recall": recall, "chair_i": lower.chair_i, "chair_s": lower.chair_s, "k": float(lower.k)}
    upper = curve[curve.index(lower) + 1]
    w = (recall - lower.recall) / (upper.recall - lower.recall)
    return {
        "recall": recall,
        "chair_i": lower.chair_i + w * (upper.chair_i - lower.chair_i),
        "chair_s": lower.chair_s + w * (upper.chair_s - lower.chair_s),
        "k": lower.k + w * (upper.k - lower.k),
    }


def matched_recall_comparison(models: Mapping[str, Sequence[Mapping]], recall: float | None = None) -> dict:
    """Each model's CHAIR_i / CHAIR_s at one common recall (default: the lowest full-answer recall among them).

    Returns ``{"recall": r, "models": {name: {"chair_i", "chair_s", "k", "full": {recall, chair_i, chair_s}}}}``;
    a model whose full recall is below an explicit ``recall`` gets None values.
    """
    curves = {name: recall_curve(records) for name, records in models.items()}
    if recall is None:
        recall = min((c[-1].recall for c in curves.values()), default=0.0)
    out: dict = {"recall": recall, "models": {}}
    for name, curve in curves.items():
        full = curve[-1]
        at = chair_at_recall(curve, recall) or {"chair_i": None, "chair_s": None, "k": None}
        out["models"][name] = {
            "chair_i": at["chair_i"], "chair_s": at["chair_s"], "k": at["k"],
            "full": {"recall": full.recall, "chair_i": full.chair_i, "chair_s": full.chair_s, "k": full.k},
        }
    return out
