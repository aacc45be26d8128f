"""What a cell reports, with its display units: every table, difference and claim of the report shows its numbers
through the spec of its quantity key, so a metric reads the same (×100 or not, its decimals, its better direction)
wherever it appears. Metric titles, units and better directions come from core/eval/metrics.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdpo_pipeline.core import stats
from mdpo_pipeline.core.eval.metrics import METRICS


@dataclass(frozen=True)
class Quantity:
    """One number a cell reports, with how to show it."""

    key: str
    title: str
    scale: float = 1.0  #: ×100 for percent metrics
    decimals: int = 2
    higher_is_better: bool | None = None

    @property
    def heading(self) -> str:
        """Title with the better direction's arrow."""
        return self.title + {True: " ↑", False: " ↓", None: ""}[self.higher_is_better]

    def show(self, value: float | None, sign: bool = False) -> str:
        """``value`` in display units, rounded; – when missing."""
        if value is None:
            return "–"
        # + 0.0 turns a rounding −0 (a float-noise difference) into 0
        shown = round(value * self.scale, self.decimals) + 0.0
        return f"{shown:{'+' if sign else ''}.{self.decimals}f}"

    def show_summary(self, s: stats.Summary) -> str:
        """"mean ± std" in display units (the mean alone from one value)."""
        if s.mean is None:
            return "–"
        return self.show(s.mean) if s.std is None else f"{self.show(s.mean)} ± {self.show(s.std)}"

    def show_interval(self, s: stats.Summary) -> str:
        """"mean [low, high]" (the Student-t 95 % interval of the mean) in display units; the mean alone below two
        values."""
        if s.mean is None:
            return "–"
        if s.low is None:
            return self.show(s.mean)
        return f"{self.show(s.mean)} [{self.show(s.low)}, {self.show(s.high)}]"

    def show_diff(self, s: stats.Summary) -> str:
        """"Δ [low, high]" in display units."""
        if s.mean is None:
            return "–"
        if s.low is None:
            return self.show(s.mean, sign=True)
        return f"{self.show(s.mean, sign=True)} [{self.show(s.low, sign=True)}, {self.show(s.high, sign=True)}]"


_BENCH_TITLE = {"object_halbench": "HalBench", "amber": "AMBER", "mmhal": "MMHal"}


def quantity(key: str) -> Quantity:
    """The display spec of a quantity key: a METRICS key, words.<bench>, objects.<bench>, probe.<field> or
    matched.<chair metric>."""
    if key in METRICS:
        m = METRICS[key]
        return Quantity(key, m.title, 100.0 if m.percent else 1.0, m.decimals, m.higher_is_better)
    kind, _, rest = key.partition(".")
    if kind == "words":
        return Quantity(key, f"Words ({_BENCH_TITLE.get(rest, rest)})", decimals=1)
    if kind == "objects":
        return Quantity(key, f"Objects/ans. ({_BENCH_TITLE.get(rest, rest)})", decimals=2)
    if kind == "probe":
        return Quantity(key, rest, decimals=2)
    if kind == "matched" and rest in METRICS:
        m = METRICS[rest]
        return Quantity(key, f"{m.title} @ matched recall", 100.0 if m.percent else 1.0, m.decimals,
                        m.higher_is_better)
    raise KeyError(f"unknown quantity {key!r}")


def better_side(key: str) -> int:
    """+1 when a larger value of ``key`` is better, −1 when a smaller one is (from METRICS)."""
    direction = quantity(key).higher_is_better
    if direction is None:
        raise ValueError(f"{key} has no better direction")
    return 1 if direction else -1
