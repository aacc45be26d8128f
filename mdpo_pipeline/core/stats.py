"""Small-sample statistics for an experiment grid: means, sample standard deviations, Student-t 95 % intervals and
paired differences between methods trained on the same seeds.

A grid has a handful of seeds per method (3 by default), so the intervals are Student-t, not normal, and a
missing value (None or NaN: a benchmark not run, a cell that failed) is dropped rather than counted as 0.
Pure Python, numpy for the bootstrap and scipy's t quantile: no torch, no Dagster, no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import t as student_t

#: The confidence of every interval the claims report states.
CONFIDENCE = 0.95


def finite(values: Iterable[float | None]) -> list[float]:
    """The values that are numbers: None, NaN and ±inf dropped (a missing score is not a zero)."""
    out = []
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        v = float(v)
        if math.isfinite(v):
            out.append(v)
    return out


def mean(values: Iterable[float | None]) -> float | None:
    """Arithmetic mean of the finite values; None when there are none."""
    xs = finite(values)
    return math.fsum(xs) / len(xs) if xs else None


def std(values: Iterable[float | None]) -> float | None:
    """Sample standard deviation (ddof=1) of the finite values; None below two values."""
    xs = finite(values)
    if len(xs) < 2:
        return None
    m = math.fsum(xs) / len(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float | None:
    """The two-sided Student-t critical value for a mean of ``n`` values (n − 1 degrees of freedom); None below 2."""
    if n < 2:
        return None
    return float(student_t.ppf(0.5 + confidence / 2, n - 1))


@dataclass(frozen=True)
class Summary:
    """Mean, sample std and the Student-t interval of the mean of ``n`` values (None where undefined)."""

    n: int
    mean: float | None
    std: float | None
    low: float | None
    high: float | None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (the ± of "mean ± half-width")."""
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def as_dict(self) -> dict:
        """JSON-ready form, the half-width included."""
        return asdict(self) | {"half_width": self.half_width}

    def scaled(self, factor: float) -> Summary:
        """The same summary in other units (e.g. ×100 for percent); a negative factor swaps the interval's ends."""
        def mul(v: float | None) -> float | None:
            return None if v is None else v * factor

        low, high = mul(self.low), mul(self.high)
        if factor < 0:
            low, high = high, low
        return Summary(self.n, mul(self.mean), None if self.std is None else self.std * abs(factor), low, high)


def summarize(values: Iterable[float | None], confidence: float = CONFIDENCE) -> Summary:
    """n, mean, sample std and Student-t interval of the mean of the finite ``values``."""
    xs = finite(values)
    m, s, q = mean(xs), std(xs), t_quantile(len(xs), confidence)
    if s is None or q is None:
        return Summary(len(xs), m, s, None, None)
    half = q * s / math.sqrt(len(xs))
    return Summary(len(xs), m, s, m - half, m + half)


def t_interval(values: Iterable[float | None], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Student-t interval of the mean of the finite ``values``; None below two values."""
    s = summarize(values, confidence)
    return None if s.low is None or s.high is None else (s.low, s.high)


def paired_values(a: Mapping[Hashable, float | None], b: Mapping[Hashable, float | None]) -> dict[Hashable, float]:
    """{key: a[key] − b[key]} over the keys both have a finite value for, in ``a``'s key order."""
    out = {}
    for key, va in a.items():
        xa, xb = finite([va]), finite([b.get(key)])
        if xa and xb:
            out[key] = xa[0] - xb[0]
    return out


def paired_difference(
    a: Mapping[Hashable, float | None], b: Mapping[Hashable, float | None], confidence: float = CONFIDENCE
) -> Summary:
    """Summary of a − b paired by key (e.g. the training seed): only keys with a finite value on both sides count."""
    return summarize(paired_values(a, b).values(), confidence)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ys on xs; None with fewer than two distinct xs."""
    if len(xs) != len(ys):
        raise ValueError(f"slope needs as many xs as ys ({len(xs)} vs {len(ys)})")
    if len(set(xs)) < 2:
        return None
    mx, my = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
    return math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys)) / math.fsum((x - mx) ** 2 for x in xs)


#: The most pairs ``pairs_to_decide`` looks for: beyond it the effect is, for a grid, too small to decide.
MAX_PAIRS = 10_000


def pairs_to_decide(s: Summary, confidence: float = CONFIDENCE) -> int | None:
    """A power line for an undecided paired difference: the fewest pairs n whose Student-t interval would exclude 0
    if the observed mean and spread held (t_{n−1}·std/√n < |mean|). None when undefined (fewer than 2 pairs, no
    spread, mean 0) or beyond MAX_PAIRS. At the observed effect this is the planning estimate, not a guarantee:
    about half of such grids would land on the decided side."""
    if s.n < 2 or s.mean is None or s.std is None or s.mean == 0:
        return None
    if s.std == 0:
        return 2
    for n in range(2, MAX_PAIRS + 1):
        if t_quantile(n, confidence) * s.std / math.sqrt(n) < abs(s.mean):
            return n
    return None


#: Resamples of ``item_bootstrap``: enough that the 2.5 % and 97.5 % percentiles move by well under a table digit.
BOOTSTRAP_RESAMPLES = 4000


def item_bootstrap(pairs: Sequence[tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]],
                   confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                   ) -> tuple[float, float, float] | None:
    """Mean paired difference of a ratio metric with an interval that counts both sources of chance: the pairs
    (seeds × base models) and the benchmark's items.

    Each pair is (num_a, den_a, num_b, den_b), per item of one shared item list: the metric of a cell over items I
    is Σ_I num / Σ_I den (CHAIR_s: num = 1 for an answer with a hallucination, den = 1; CHAIR_i: num =
    hallucinated mentions, den = mentions). Every resample draws the pairs with replacement and, independently,
    the items with replacement, the same items for every cell (they answered the same prompts: a paired
    bootstrap over items), and averages a − b over the drawn pairs; the interval is the percentile one. None
    without pairs, or when the cells' item lists differ in length."""
    if not pairs:
        return None
    n = {len(x) for pair in pairs for x in pair}
    if len(n) != 1 or 0 in n:
        return None
    items = n.pop()
    arrays = np.asarray(pairs, dtype=np.float64)  # (pairs, 4, items)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, items, size=(resamples, items))
    sums = arrays[:, :, idx].sum(axis=-1)  # (pairs, 4, resamples)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = sums[:, 0] / sums[:, 1] - sums[:, 2] / sums[:, 3]  # (pairs, resamples); NaN where no mention drawn
    drawn = rng.integers(0, len(pairs), size=(resamples, len(pairs)))
    means = np.nanmean(np.take_along_axis(diff.T, drawn, axis=1), axis=1)
    point = float(np.mean([sum(p[0]) / sum(p[1]) - sum(p[2]) / sum(p[3]) for p in arrays]))
    low, high = np.nanpercentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    return point, float(low), float(high)
