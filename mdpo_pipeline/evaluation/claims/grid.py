"""The grid's cells, axes and pairing, kept in one place so that every table and claim selects and pairs cells the
same way: which cells agree with fixed axis values, which base cell belongs to a cell's data variant, and which
cells pair across methods (the same training seed and axis values) so that a seed's noise cancels in a paired
difference.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mdpo_pipeline.core import stats
from mdpo_pipeline.core.eval.metrics import METRICS
from mdpo_pipeline.core.methods import BASE, METHODS

#: The two axes with sections and claims of their own (Table 3 and the data-size trend).
STRATEGY_AXIS = "corrupted_images.strategy"
SIZE_AXIS = "preference_pairs.n"
#: Axes whose values are replicates, not conditions: another ShapeWorld seed is another world and another base model
#: trained on it. Tables and claims pool their cells (each paired within its own value) instead of fixing a default.
REPLICATE_AXES = ("shapeworld.seed",)
#: Table and plot order: the base model, the two main methods, then the ablations as core/methods.py lists them.
METHOD_ORDER = (BASE, "dpo", "mdpo", *(m for m in METHODS if m not in ("dpo", "mdpo")))
#: The probe's numbers (cell.json "probe"), in the probe table's order.
PROBE_FIELDS = ("conditional_margin", "image_gap", "image_gap_base", "reward_margin", "conditional_accuracy")
#: Answer statistics (cell.json "answers"), by the prefix of their quantity keys.
ANSWER_FIELDS = {"words": "words_mean", "objects": "objects_mean"}

PairKey = tuple[Any, tuple[tuple[str, Any], ...]]


def _chair_s_items(answers: Sequence[Mapping]) -> tuple[list[float], list[float]]:
    # One answer, one item: 1 when it mentions an object the image lacks (core/eval/chair/matched.py's counting).
    return [float(any(m not in set(a["truth"]) for m in a["mentioned"])) for a in answers], [1.0] * len(answers)


def _chair_i_items(answers: Sequence[Mapping]) -> tuple[list[float], list[float]]:
    return ([float(sum(m not in set(a["truth"]) for m in a["mentioned"])) for a in answers],
            [float(len(a["mentioned"])) for a in answers])


#: The quantities whose intervals can include the benchmark's item sampling: per item (numerator, denominator)
#: from a cell's Object HalBench per-answer detail.
ITEM_KEYS = {"chair_s": _chair_s_items, "chair_i": _chair_i_items}


@dataclass
class _Cell:
    name: str
    method: str
    seed: Any
    axes: dict[str, Any]
    values: dict[str, float | None]
    per_answer: dict[str, list]


def _flat_values(record: Mapping[str, Any]) -> dict[str, float | None]:
    """Every quantity of one record under its quantity key (scores as they are; missing ones absent)."""
    out: dict[str, float | None] = {}
    for key, value in (record.get("scores") or {}).items():
        if key in METRICS:
            out[key] = number(value)
    for bench, info in (record.get("answers") or {}).items():
        for prefix, name in ANSWER_FIELDS.items():
            if isinstance(info, Mapping) and name in info:
                out[f"{prefix}.{bench}"] = number(info[name])
    for name, value in (record.get("probe") or {}).items():
        if name in PROBE_FIELDS:
            out[f"probe.{name}"] = number(value)
    return out


def number(value: Any) -> float | None:
    """``value`` as a finite float; None for anything else (missing, a bool, a string, NaN, ±inf)."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class Grid:
    """The records, their axes (values in the order they first appear) and the default of each axis."""

    def __init__(self, records: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any] | None):
        self.cells: list[_Cell] = []
        self.axes: dict[str, list[Any]] = {}
        seen: set[Hashable] = set()
        for i, rec in enumerate(records):
            for required in ("cell", "method"):
                if required not in rec:
                    raise ValueError(f"cell record {i} has no {required!r}: {sorted(rec)}")
            axes = dict(rec.get("axes") or {})
            method, seed = rec["method"], (None if rec["method"] == BASE else rec.get("seed"))
            identity = (method, seed, tuple(sorted((k, repr(v)) for k, v in axes.items())))
            if rec["cell"] in seen or identity in seen:
                raise ValueError(f"cell record {rec['cell']!r} repeats a cell (name or method/seed/axes)")
            seen |= {rec["cell"], identity}
            for axis, value in axes.items():
                values = self.axes.setdefault(axis, [])
                if value not in values:
                    values.append(value)
            self.cells.append(_Cell(rec["cell"], method, seed, axes, _flat_values(rec),
                                    dict(rec.get("per_answer") or {})))
        unknown = sorted(set(defaults or {}) - set(self.axes))
        if unknown:
            raise ValueError(f"defaults name axes the grid does not have: {unknown}; axes: {sorted(self.axes)}")
        self.defaults = {axis: values[0] for axis, values in self.axes.items() if axis not in REPLICATE_AXES} | {
            axis: value for axis, value in (defaults or {}).items() if axis not in REPLICATE_AXES}
        for axis, value in self.defaults.items():
            if value not in self.axes[axis]:
                raise ValueError(f"default {axis}={value!r} is not one of the grid's values {self.axes[axis]}")

    @staticmethod
    def _agrees(cell: _Cell, fixed: Mapping[str, Any]) -> bool:
        return all(cell.axes[a] == v for a, v in fixed.items() if a in cell.axes)

    def select(self, method: str, fixed: Mapping[str, Any]) -> list[_Cell]:
        """Cells of ``method`` agreeing with ``fixed`` on every axis they have (base cells lack training axes)."""
        return [c for c in self.cells if c.method == method and self._agrees(c, fixed)]

    def methods(self, fixed: Mapping[str, Any]) -> list[str]:
        """The methods with cells under ``fixed``, in table order."""
        have = {c.method for c in self.cells if self._agrees(c, fixed)}
        return [m for m in METHOD_ORDER if m in have] + sorted(have - set(METHOD_ORDER))

    def pair_key(self, cell: _Cell, drop: str | None = None) -> PairKey:
        """What pairs cells across methods: the training seed and the axis values (``drop``: the one compared)."""
        return cell.seed, tuple((a, cell.axes[a]) for a in self.axes if a in cell.axes and a != drop)

    def base_for(self, cell: _Cell) -> _Cell | None:
        """The base cell of ``cell``'s data variant (the one agreeing on every axis the base cell has)."""
        for c in self.cells:
            if c.method == BASE and all(cell.axes.get(a) == v for a, v in c.axes.items()):
                return c
        return None

    def values(self, method: str, key: str, fixed: Mapping[str, Any], drop: str | None = None
               ) -> dict[PairKey, float | None]:
        """{pair key: value} of ``method``'s cells under ``fixed``."""
        return {self.pair_key(c, drop): c.values.get(key) for c in self.select(method, fixed)}

    def summary(self, method: str, key: str, fixed: Mapping[str, Any]) -> stats.Summary:
        """Mean, std and interval of ``key`` over ``method``'s cells under ``fixed`` (its seeds)."""
        return stats.summarize(c.values.get(key) for c in self.select(method, fixed))

    def diff(self, a: str, b: str, key: str, fixed: Mapping[str, Any], require: Sequence[str] = ()
             ) -> stats.Summary:
        """Paired a − b of ``key`` (b may be the base model: each cell against its own data variant's base);
        ``require``: only pairs where these methods have a cell too."""
        va = self.values(a, key, fixed)
        if b == BASE:
            vb = {}
            for c in self.select(a, fixed):
                base = self.base_for(c)
                vb[self.pair_key(c)] = None if base is None else base.values.get(key)
        else:
            vb = self.values(b, key, fixed)
        for other in require:
            keep = set(self.values(other, key, fixed))
            va = {k: v for k, v in va.items() if k in keep}
        return stats.paired_difference(va, vb)

    def item_diff(self, a: str, b: str, key: str, fixed: Mapping[str, Any]) -> tuple[float, float, float] | None:
        """Paired a − b of an Object HalBench CHAIR (``ITEM_KEYS``) with an interval over pairs and items together
        (``stats.item_bootstrap``), from the cells' per-answer detail; None where a cell lacks it."""
        if key not in ITEM_KEYS:
            return None
        cells = {m: {self.pair_key(c): c.per_answer.get("object_halbench") for c in self.select(m, fixed)}
                 for m in (a, b)}
        pairs = []
        for pk, answers_a in cells[a].items():
            answers_b = cells[b].get(pk)
            if not answers_a or not answers_b:
                continue
            pairs.append((*ITEM_KEYS[key](answers_a), *ITEM_KEYS[key](answers_b)))
        return stats.item_bootstrap(pairs) if len(pairs) >= 2 else None

    def has(self, method: str, key: str, fixed: Mapping[str, Any]) -> bool:
        """Whether some cell of ``method`` under ``fixed`` has a value of ``key``."""
        return any(stats.finite([c.values.get(key)]) for c in self.select(method, fixed))

    def present(self, key: str, fixed: Mapping[str, Any]) -> bool:
        """Whether any cell under ``fixed`` has a value of ``key``."""
        return any(self.has(m, key, fixed) for m in self.methods(fixed))
