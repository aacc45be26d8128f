"""The grid's statistics, checked against values worked by hand."""

from __future__ import annotations

import math

import pytest

from mdpo_pipeline.core.stats import (
    MAX_PAIRS,
    Summary,
    finite,
    mean,
    paired_difference,
    paired_values,
    pairs_to_decide,
    slope,
    std,
    summarize,
    t_interval,
    t_quantile,
)


def test_mean_std_and_t_interval_of_1_2_3():
    """1, 2, 3: mean 2, std 1; t(0.975, 2 df) = 4.302652729911275, so the half-width is 4.3027/√3 = 2.4841."""
    assert mean([1, 2, 3]) == 2.0 and std([1, 2, 3]) == 1.0
    assert t_quantile(3) == pytest.approx(4.302652729911275, abs=1e-9)
    s = summarize([1, 2, 3])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    assert s.half_width == pytest.approx(4.302652729911275 / math.sqrt(3)) == pytest.approx(2.4841, abs=1e-4)
    assert (s.low, s.high) == pytest.approx((2 - 2.48413771, 2 + 2.48413771))
    assert t_interval([1, 2, 3]) == pytest.approx((s.low, s.high))


def test_missing_values_are_dropped_not_zeroed():
    """None and NaN are missing: mean of (4, None, nan, 6) is 5 over n = 2; std needs two values."""
    assert finite([4, None, float("nan"), 6, float("inf")]) == [4.0, 6.0]
    s = summarize([4, None, float("nan"), 6])
    assert (s.n, s.mean, s.std) == (2, 5.0, pytest.approx(math.sqrt(2)))
    # two values: t(0.975, 1 df) = 12.706204736174698; half-width 12.7062 · √2 / √2
    assert s.half_width == pytest.approx(12.706204736174698)
    assert mean([]) is None and std([7]) is None and std([None, 7]) is None
    one = summarize([7.0])
    assert one == Summary(1, 7.0, None, None, None) and one.half_width is None and t_interval([7.0]) is None
    assert summarize([]) == Summary(0, None, None, None, None)


def test_paired_difference_pairs_by_key():
    """Seeds 1, 2, 3 pair; seed 4 has no partner and seed 5's None drops: diffs 1, 2, 3 → mean 2, std 1."""
    a = {1: 11.0, 2: 22.0, 3: 33.0, 4: 44.0, 5: None}
    b = {3: 30.0, 1: 10.0, 2: 20.0, 5: 50.0}
    assert paired_values(a, b) == {1: 1.0, 2: 2.0, 3: 3.0}
    d = paired_difference(a, b)
    assert (d.n, d.mean, d.std) == (3, 2.0, 1.0)
    assert d.half_width == pytest.approx(2.4841, abs=1e-4)
    # identical differences: an interval of zero width, on one side of 0
    same = paired_difference({1: 2.0, 2: 3.0}, {1: 1.0, 2: 2.0})
    assert (same.mean, same.std, same.low, same.high) == (1.0, 0.0, 1.0, 1.0)


def test_summary_scaling_and_dict():
    s = summarize([0.1, 0.2, 0.3]).scaled(100)
    assert s.mean == pytest.approx(20.0) and s.std == pytest.approx(10.0)
    flipped = summarize([1, 2, 3]).scaled(-1)
    assert flipped.low < flipped.high and flipped.mean == -2.0 and flipped.std == 1.0
    assert set(summarize([1, 2]).as_dict()) == {"n", "mean", "std", "low", "high", "half_width"}


def test_slope():
    assert slope([1, 2, 3], [2, 4, 6]) == pytest.approx(2.0)
    assert slope([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert slope([5, 5], [1, 2]) is None
    with pytest.raises(ValueError):
        slope([1, 2], [1])


def test_power_line_is_the_fewest_pairs_whose_interval_would_exclude_zero():
    # mean 1, std 1: t_{n−1}/√n < 1 first at n = 7 (t_5/√6 = 2.571/2.449 = 1.049; t_6/√7 = 2.447/2.646 = 0.925).
    assert pairs_to_decide(Summary(3, 1.0, 1.0, None, None)) == 7
    assert pairs_to_decide(Summary(3, -1.0, 1.0, None, None)) == 7, "the sign does not matter"
    assert pairs_to_decide(Summary(3, 0.5, 0.0, None, None)) == 2, "no spread: any two pairs decide"
    assert pairs_to_decide(Summary(3, 0.0, 1.0, None, None)) is None, "no effect to decide"
    assert pairs_to_decide(Summary(1, 1.0, None, None, None)) is None
    assert pairs_to_decide(Summary(3, 1e-4, 1.0, None, None)) is None and MAX_PAIRS == 10_000


def test_item_bootstrap_counts_items_and_pairs():
    from mdpo_pipeline.core.stats import item_bootstrap

    ones, zeros, half = [1.0] * 100, [0.0] * 100, [1.0, 0.0] * 50
    # Every resample of identical cells differs by 0; a cell that always hallucinates vs one that never: by 1.
    assert item_bootstrap([(half, ones, half, ones)] * 3) == (0.0, 0.0, 0.0)
    assert item_bootstrap([(ones, ones, zeros, ones)] * 2) == (1.0, 1.0, 1.0)
    # Items alone: a share of 0.5 over 100 items has standard error √(.25/100) = 0.05, so the 95 % interval is
    # about 0.5 ± 0.098 (identical pairs add nothing).
    point, low, high = item_bootstrap([(half, ones, zeros, ones)] * 3)
    assert point == 0.5 and low == pytest.approx(0.402, abs=0.02) and high == pytest.approx(0.598, abs=0.02)
    # Pairs that disagree widen it: differences 0.3 and 0.7 on item-free cells (every item alike).
    three, seven = [0.3] * 100, [0.7] * 100
    point, low, high = item_bootstrap([(three, ones, zeros, ones), (seven, ones, zeros, ones)])
    assert point == pytest.approx(0.5) and low == pytest.approx(0.3) and high == pytest.approx(0.7)
    # A ratio with a denominator per item (CHAIR_i: hallucinated mentions / mentions), and what cannot be paired.
    assert item_bootstrap([([1.0, 0.0], [2.0, 2.0], [0.0, 0.0], [1.0, 3.0])] * 2) == (0.25, 0.0, 0.5)
    assert item_bootstrap([]) is None and item_bootstrap([(ones, ones, [1.0], [1.0])]) is None
