"""CHAIR at matched recall on a hand-worked example."""

from __future__ import annotations

import pytest

from mdpo_pipeline.core.eval.chair.matched import (
    chair_at_recall,
    matched_recall_comparison,
    recall_curve,
)
from mdpo_pipeline.core.eval.chair.scoring import chair_scores
from mdpo_pipeline.core.eval.chair.synonyms import SynonymTable

#: Three answers, 5 truth categories in all. A's first answer repeats "cat" and hallucinates "dog" second.
A = [
    {"mentioned": ["cat", "dog", "car", "cat"], "truth": ["cat", "car"]},
    {"mentioned": ["bus"], "truth": ["bus", "dog"]},
    {"mentioned": [], "truth": ["tree"]},
]
#: B says less: recall 2/5, and hallucinates "cow" after its last covered object.
B = [
    {"mentioned": ["cat", "cow"], "truth": ["cat", "car"]},
    {"mentioned": ["bus"], "truth": ["bus", "dog"]},
    {"mentioned": [], "truth": ["tree"]},
]


def test_curve_by_hand():
    """k=1: cat, bus → recall 2/5, clean. k=2: + dog (hallucinated) → CHAIR_i 1/3, CHAIR_s 1/3.
    k=3: + car → recall 3/5, CHAIR_i 1/4. k=4: + cat again → CHAIR_i 1/5 = the full answers' CHAIR."""
    curve = recall_curve(A)
    got = [x for p in curve for x in (p.k, p.recall, p.chair_i, p.chair_s)]
    assert got == pytest.approx([1, 0.4, 0.0, 0.0, 2, 0.4, 1 / 3, 1 / 3, 3, 0.6, 0.25, 1 / 3, 4, 0.6, 0.2, 1 / 3])
    assert (curve[-1].n_mentions, curve[-1].n_hallucinated_mentions, curve[-1].n_covered) == (5, 1, 3)


def test_full_answers_match_the_offline_chair_scorer():
    """At the largest k the curve is scoring.py's CHAIR of the whole answers (same counting rules)."""
    table = SynonymTable.from_lines(["cat", "dog", "car", "bus", "tree"])
    texts = ["a cat, a dog, a car and a cat", "a bus", "nothing"]
    full = chair_scores(texts, [r["truth"] for r in A], table)
    last = recall_curve(A)[-1]
    assert (last.recall, last.chair_i, last.chair_s) == pytest.approx((full.recall, full.chair_i, full.chair_s))


def test_interpolation():
    curve = recall_curve(A)
    # between k=2 (0.4; the last point of the 0.4 stretch) and k=3 (0.6), half-way
    mid = chair_at_recall(curve, 0.5)
    assert (mid["chair_i"], mid["chair_s"], mid["k"]) == pytest.approx((1 / 3 + 0.5 * (0.25 - 1 / 3), 1 / 3, 2.5))
    # on a flat stretch the last point stands: 0.4 → k=2, 0.6 → k=4 (the full answers)
    assert chair_at_recall(curve, 0.4)["chair_i"] == pytest.approx(1 / 3)
    assert chair_at_recall(curve, 0.6)["chair_i"] == pytest.approx(0.2)
    # below the first point: empty answers mixed in, CHAIR_s scales down, CHAIR_i stays at k=1's
    low = chair_at_recall(curve, 0.2)
    assert (low["chair_i"], low["chair_s"], low["k"]) == pytest.approx((0.0, 0.0, 0.5))
    assert chair_at_recall(curve, 0.61) is None


def test_matched_recall_comparison():
    """Common recall = min(3/5, 2/5) = 2/5. B there is its full answers (CHAIR_i 1/3); A at 2/5 is k=2, also 1/3:
    at matched recall A is no better than B although its full CHAIR_i (1/5) looks better."""
    out = matched_recall_comparison({"A": A, "B": B})
    assert out["recall"] == pytest.approx(0.4)
    a, b = out["models"]["A"], out["models"]["B"]
    assert (a["chair_i"], a["chair_s"]) == pytest.approx((1 / 3, 1 / 3))
    assert (b["chair_i"], b["chair_s"]) == pytest.approx((1 / 3, 1 / 3))
    assert a["full"] == pytest.approx({"recall": 0.6, "chair_i": 0.2, "chair_s": 1 / 3, "k": 4})
    explicit = matched_recall_comparison({"A": A, "B": B}, recall=0.5)
    assert explicit["models"]["B"]["chair_i"] is None and explicit["models"]["A"]["chair_i"] is not None


def test_no_mentions_and_bad_records():
    curve = recall_curve([{"mentioned": [], "truth": ["cat"]}])
    assert [(p.k, p.recall, p.chair_i, p.chair_s) for p in curve] == [(0, 0.0, 0.0, 0.0)]
    assert chair_at_recall(curve, 0.0)["chair_s"] == 0.0
    with pytest.raises(ValueError):
        recall_curve([{"mentioned": "cat", "truth": ["cat"]}])
