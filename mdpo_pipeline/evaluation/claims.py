"""The claims report of an experiment grid: the paper's claims, each with a verdict from paired seeds.

Input: the grid's finished cell records (each cell's cell.json: method, training seed, axis values, scores, answer
lengths, per-answer CHAIR detail and the image-use probe). Output in ``out_dir``: ``claims.md`` for people,
``claims.json`` with every number, and PNG plots.

Cells of one training seed (and one set of axis values) share their data order, so every comparison is a
PAIRED difference: a seed's noise cancels, and the Student-t 95 % interval of the mean difference decides the
verdict. Metric titles, units and better directions come from core/eval/metrics.py; the paper's numbers from
report.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdpo_pipeline.core import stats
from mdpo_pipeline.core.eval.chair.matched import matched_recall_comparison
from mdpo_pipeline.core.eval.metrics import METRICS, PAPER_COLUMNS, TABLE_COLUMNS
from mdpo_pipeline.core.io import atomic_path, write_json
from mdpo_pipeline.core.methods import BASE, METHODS
from mdpo_pipeline.evaluation.report import (
    PAPER_ABLATION_COLUMNS,
    PAPER_ABLATION_MODEL,
    PAPER_ROWS,
    PAPER_TABLE2,
    PAPER_TABLE3,
)

STRATEGY_AXIS = "corrupted_images.strategy"
SIZE_AXIS = "preference_pairs.n"
#: The corruption the paper found best (Table 3) and core/corruption.py's default.
BEST_STRATEGY = "crop_1_20"
#: Table and plot order: the base model, the two main methods, then the ablations as core/methods.py lists them.
METHOD_ORDER = (BASE, "dpo", "mdpo", *(m for m in METHODS if m not in ("dpo", "mdpo")))
#: Paper Table 2's rows, in its order.
ABLATION_ROWS = ("mdpo", "mdpo_no_conditional", "mdpo_no_anchor", "dpo")
#: The probe's numbers (cell.json "probe"), in the probe table's order.
PROBE_FIELDS = ("conditional_margin", "image_gap", "image_gap_base", "reward_margin", "conditional_accuracy")
#: Answer statistics (cell.json "answers") and the benchmarks they are shown for, in order.
ANSWER_FIELDS = {"words": "words_mean", "objects": "objects_mean"}
ANSWER_BENCHMARKS = ("object_halbench", "amber")
#: The paired differences reported for every quantity: (minuend, subtrahend).
COMPARISONS = (
    ("mdpo", "dpo"),
    ("mdpo_no_conditional", "mdpo"),
    ("mdpo_no_anchor", "mdpo"),
    ("mdpo_anchor_all", "mdpo"),
    ("dpo_no_image", "dpo"),
    ("mdpo", BASE),
    ("dpo", BASE),
)
#: The quantities of the per-axis sweep tables and plots.
SWEEP_KEYS = ("chair_s", "chair_i", "recall", "probe.conditional_margin", "probe.image_gap")

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTED = "reproduced", "not reproduced", "inconclusive", "not tested"
VERDICT_RULE = (
    "A claim is **reproduced** when the Student-t 95 % interval of its paired difference (cells paired by training "
    "seed and axis values; n = the number of pairs) lies entirely on the claimed side of 0, **not reproduced** "
    "when it lies entirely on the other side, and **inconclusive** otherwise, also when fewer than 2 pairs exist. "
    "Claim (i) has an \"≈ 0\" part: DPO's conditional margin minus that of DPO without the image must not be "
    "above 0 (its interval contains 0 or lies below; an interval entirely above 0 refutes it); absence of a "
    "difference is weak evidence with few seeds, so (i) is only as strong as its second part, mDPO − DPO > 0. "
    "A claim whose methods or metrics the grid lacks is **not tested**."
)

_NO_AXIS = "the grid did not vary `{axis}` (add it to params.yaml `experiment.axes`)"

PairKey = tuple[Any, tuple[tuple[str, Any], ...]]


# --- quantities: what a cell reports, with its display units ---------------------------------------------------


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


def _better_side(key: str) -> int:
    """+1 when a larger value of ``key`` is better, −1 when a smaller one is (from METRICS)."""
    direction = quantity(key).higher_is_better
    if direction is None:
        raise ValueError(f"{key} has no better direction")
    return 1 if direction else -1


# --- the grid: cells, axes, pairing ----------------------------------------------------------------------------


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
            out[key] = _number(value)
    for bench, info in (record.get("answers") or {}).items():
        for prefix, name in ANSWER_FIELDS.items():
            if isinstance(info, Mapping) and name in info:
                out[f"{prefix}.{bench}"] = _number(info[name])
    for name, value in (record.get("probe") or {}).items():
        if name in PROBE_FIELDS:
            out[f"probe.{name}"] = _number(value)
    return out


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class _Grid:
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
        self.defaults = {axis: values[0] for axis, values in self.axes.items()} | dict(defaults or {})
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

    def has(self, method: str, key: str, fixed: Mapping[str, Any]) -> bool:
        """Whether some cell of ``method`` under ``fixed`` has a value of ``key``."""
        return any(stats.finite([c.values.get(key)]) for c in self.select(method, fixed))

    def present(self, key: str, fixed: Mapping[str, Any]) -> bool:
        """Whether any cell under ``fixed`` has a value of ``key``."""
        return any(self.has(m, key, fixed) for m in self.methods(fixed))


def _verdict(s: stats.Summary, side: int) -> str:
    """The verdict rule (VERDICT_RULE) for a claimed sign ``side`` of a paired difference."""
    if s.n < 2 or s.low is None or s.high is None:
        return INCONCLUSIVE
    low, high = (s.low, s.high) if side > 0 else (-s.high, -s.low)
    return REPRODUCED if low > 0 else NOT_REPRODUCED if high < 0 else INCONCLUSIVE


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _beside_paper(ours: Mapping[str, stats.Summary], paper: Mapping[str, float]) -> list[str]:
    """Table cells of the paper's ablation columns: ours (mean ± std), then the paper's number ("–" if none)."""
    cells = []
    for k in PAPER_ABLATION_COLUMNS:
        q = quantity(k)
        cells += [q.show_summary(ours[k]), "–" if k not in paper else f"{paper[k]:.{q.decimals}f}"]
    return cells


def _md_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


# --- the report -------------------------------------------------------------------------------------------------


@dataclass
class _Report:
    grid: _Grid
    out_dir: Path
    md: list[str] = field(default_factory=list)
    tables: dict[str, Any] = field(default_factory=dict)
    claims: list[dict] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    matched: dict[str, Any] = field(default_factory=dict)

    @property
    def fixed(self) -> dict[str, Any]:
        return self.grid.defaults

    # Table 1 ---------------------------------------------------------------------------------------------------
    def table1_keys(self) -> list[str]:
        keys = []
        for k in TABLE_COLUMNS:
            if self.grid.present(k, self.fixed):
                keys.append(k)
            if k == "chair_i" and self.grid.present("recall", self.fixed):
                keys.append("recall")
        if "recall" not in keys and self.grid.present("recall", self.fixed):
            keys.append("recall")
        benches = [b for b in ANSWER_BENCHMARKS] + sorted(
            {k.partition(".")[2] for c in self.grid.cells for k in c.values if k.startswith("words.")}
            - set(ANSWER_BENCHMARKS))
        for bench in benches:
            keys += [k for k in (f"words.{bench}", f"objects.{bench}") if self.grid.present(k, self.fixed)]
        return keys

    def summary_rows(self, name: str, methods: Sequence[str], keys: Sequence[str], fixed: Mapping[str, Any],
                     heading: str, note: str = "") -> None:
        rows, md_rows = [], []
        for method in methods:
            summaries = {k: self.grid.summary(method, k, fixed) for k in keys}
            n = len(self.grid.select(method, fixed))
            rows.append({"method": method, "n_cells": n, "values": {k: s.as_dict() for k, s in summaries.items()}})
            md_rows.append([method, n, *(quantity(k).show_summary(summaries[k]) for k in keys)])
        self.tables[name] = rows
        self.md += [heading, ""] + ([note, ""] if note else [])
        self.md += [_md_table(["method", "cells", *(quantity(k).heading for k in keys)], md_rows), ""]

    def table1(self) -> list[str]:
        keys = self.table1_keys()
        where = (" at the default axis values " + ", ".join(f"`{a}={v}`" for a, v in self.fixed.items())
                 if self.fixed else "")
        self.summary_rows(
            "table1", self.grid.methods(self.fixed), keys, self.fixed, "## Table 1: methods × metrics",
            f"Mean ± sample std over training seeds{where} (the base model: its single value). Percent metrics ×100, "
            "as in the paper.")
        return keys

    # paired differences ----------------------------------------------------------------------------------------
    def all_keys(self, table_keys: Sequence[str]) -> list[str]:
        # image_gap_base is the base model's, the same for every method: no difference to report
        extra = [f"probe.{f}" for f in PROBE_FIELDS if f != "image_gap_base"] + ["matched.chair_i", "matched.chair_s"]
        return [*table_keys, *(k for k in extra if self.grid.present(k, self.fixed))]

    def diffs(self, keys: Sequence[str]) -> None:
        methods = set(self.grid.methods(self.fixed))
        out = []
        self.md += ["## Paired differences", "",
                    "Each row: mean of a − b over cells paired by (seed, axes), with its Student-t 95 % interval, in "
                    "table units. *better*/*worse* when the interval excludes 0 (direction from the metric).", ""]
        for a, b in COMPARISONS:
            if a not in methods or b not in methods:
                continue
            md_rows = []
            for key in keys:
                s = self.grid.diff(a, b, key, self.fixed)
                if s.n == 0:
                    continue
                q = quantity(key)
                reading = "contains 0"
                if s.low is not None and (s.low > 0 or s.high < 0):
                    up = s.low > 0
                    reading = ("above 0" if up else "below 0") if q.higher_is_better is None else (
                        f"{a} better" if up == q.higher_is_better else f"{a} worse")
                out.append({"a": a, "b": b, "key": key, "reading": reading, **s.as_dict()})
                md_rows.append([q.heading, s.n, q.show_diff(s), reading])
            self.md += [f"### {a} − {b}", "", _md_table(["quantity", "pairs", "Δ [95 % interval]", "reading"],
                                                         md_rows), ""]
        self.tables["paired_differences"] = out

    # Table 2 ---------------------------------------------------------------------------------------------------
    def table2(self) -> None:
        methods = [m for m in ABLATION_ROWS if self.grid.select(m, self.fixed)]
        self.md += ["## Table 2: ablations", ""]
        if not methods:
            self.md += ["No ablation method is in the grid (add mdpo_no_conditional / mdpo_no_anchor to params.yaml "
                        "`experiment.methods`).", ""]
            self.tables["table2"] = []
            return
        rows, md_rows = [], []
        for m in methods:
            ours = {k: self.grid.summary(m, k, self.fixed) for k in PAPER_ABLATION_COLUMNS}
            paper = dict(zip(PAPER_ABLATION_COLUMNS, PAPER_TABLE2.get(m, ())))
            rows.append({"method": m, "ours": {k: s.as_dict() for k, s in ours.items()}, "paper": paper})
            md_rows.append([m, *_beside_paper(ours, paper)])
        head = ["method"] + [h for k in PAPER_ABLATION_COLUMNS for h in (quantity(k).heading, "paper")]
        self.md += [f"Ours: mean ± std over seeds; paper: {PAPER_ABLATION_MODEL} (its Table 2).", "",
                    _md_table(head, md_rows), ""]
        self.tables["table2"] = rows

    # axes --------------------------------------------------------------------------------------------------
    def _missing_axis(self, axis: str, what: str, example: str) -> None:
        self.md += [f"The grid did not vary `{axis}`, so {what} is not reported. To add it, list the axis in "
                    f"params.yaml `experiment.axes`, e.g. `{axis}: {example}` (the first value is the default).", ""]

    def table3(self) -> None:
        self.md += ["## Table 3: corruption strategies", ""]
        if STRATEGY_AXIS not in self.grid.axes:
            self._missing_axis(STRATEGY_AXIS, "Table 3", "[crop_1_20, crop_20_50, random_image, moco_v2]")
            self.tables["table3"] = []
            return
        rows, md_rows = [], []
        for value in self.grid.axes[STRATEGY_AXIS]:
            fixed = self.fixed | {STRATEGY_AXIS: value}
            ours = {k: self.grid.summary("mdpo", k, fixed) for k in PAPER_ABLATION_COLUMNS}
            paper = dict(zip(PAPER_ABLATION_COLUMNS, PAPER_TABLE3.get(value, ())))
            rows.append({"strategy": value, "ours": {k: s.as_dict() for k, s in ours.items()}, "paper": paper})
            md_rows.append([value, *_beside_paper(ours, paper)])
        head = ["mDPO corruption"] + [h for k in PAPER_ABLATION_COLUMNS for h in (quantity(k).heading, "paper")]
        self.md += [f"mDPO cells per strategy (other axes at their defaults); paper: {PAPER_ABLATION_MODEL}, "
                    "Table 3.", "", _md_table(head, md_rows), ""]
        self.tables["table3"] = rows

    def data_size(self) -> None:
        self.md += ["## Data size", ""]
        if SIZE_AXIS not in self.grid.axes:
            self._missing_axis(SIZE_AXIS, "the data-size trend", "[375, 750, 1500]")
            self.tables["data_size"] = []
            return
        key, side = "chair_s", _better_side("chair_s")
        q = quantity(key)
        rows, md_rows = [], []
        series: dict[str, list[tuple[Any, stats.Summary]]] = {"dpo": [], "mdpo": []}
        for n in self.grid.axes[SIZE_AXIS]:
            fixed = self.fixed | {SIZE_AXIS: n}
            per = {m: self.grid.summary(m, key, fixed) for m in series}
            # mDPO's gain in the better direction: DPO's CHAIR_s minus mDPO's
            gain = self.grid.diff("mdpo", "dpo", key, fixed).scaled(side)
            rows.append({"n": n, **{m: s.as_dict() for m, s in per.items()}, "gain": gain.as_dict()})
            md_rows.append([n, q.show_summary(per["dpo"]), q.show_summary(per["mdpo"]), q.show_diff(gain)])
            for m, s in per.items():
                series[m].append((n, s))
        self.md += [f"{q.heading} per number of preference pairs (other axes at their defaults); gain = mDPO's "
                    "improvement over DPO (paired, 95 % interval).", "",
                    _md_table([SIZE_AXIS, "DPO", "mDPO", "mDPO gain"], md_rows), ""]
        self.tables["data_size"] = rows
        self.figures.append(_curve_plot(self.out_dir / "data_size.png", f"{q.title} vs preference pairs", SIZE_AXIS,
                                        [(q.heading, series, q.scale)], log_x=True))

    def sweeps(self) -> None:
        others = [a for a in self.grid.axes if a not in (STRATEGY_AXIS, SIZE_AXIS)]
        self.tables["sweeps"] = {}
        if not others:
            return
        for axis in others:
            fixed_other = {a: v for a, v in self.fixed.items() if a != axis}
            methods = [m for m in self.grid.methods(fixed_other) if m != BASE]
            keys = [k for k in SWEEP_KEYS if self.grid.present(k, fixed_other)]
            rows, md_rows = [], []
            series: dict[str, dict[str, list[tuple[Any, stats.Summary]]]] = {k: {m: [] for m in methods}
                                                                             for k in keys}
            for value in self.grid.axes[axis]:
                fixed = fixed_other | {axis: value}
                for m in methods:
                    s = {k: self.grid.summary(m, k, fixed) for k in keys}
                    rows.append({"value": value, "method": m, "values": {k: v.as_dict() for k, v in s.items()}})
                    md_rows.append([value, m, *(quantity(k).show_summary(s[k]) for k in keys)])
                    for k in keys:
                        series[k][m].append((value, s[k]))
            self.tables["sweeps"][axis] = rows
            self.md += [f"## Mechanism sweep: `{axis}`", "",
                        "Mean ± std over seeds per value (other axes at their defaults).", "",
                        _md_table([axis, "method", *(quantity(k).heading for k in keys)], md_rows), ""]
            panels = [(quantity(k).heading, series[k], quantity(k).scale)
                      for k in ("chair_s", "probe.conditional_margin") if k in keys]
            if panels:
                self.figures.append(_curve_plot(self.out_dir / f"sweep_{_slug(axis)}.png",
                                                f"mechanism sweep: {axis}", axis, panels))

    # matched recall --------------------------------------------------------------------------------------------
    def compute_matched(self) -> None:
        """CHAIR at the common recall for every default cell with Object HalBench detail, stored as the cells'
        matched.* values (before any table or claim reads them)."""
        cells = [c for m in self.grid.methods(self.fixed) for c in self.grid.select(m, self.fixed)
                 if c.per_answer.get("object_halbench")]
        if not cells:
            self.matched = {}
            return
        detail = {c.name: c.per_answer["object_halbench"] for c in cells}
        # The recall is set by the claim's pair, mDPO and DPO, when both are there: an ablation or the base model
        # with a lower recall would otherwise drag the comparison towards recall 0, where every CHAIR vanishes.
        setters = [c.name for c in cells if c.method in ("mdpo", "dpo")]
        if {c.method for c in cells} >= {"mdpo", "dpo"}:
            recall = matched_recall_comparison({n: detail[n] for n in setters})["recall"]
            set_by = "mdpo and dpo"
        else:
            recall, set_by = None, "all cells"
        comparison = matched_recall_comparison(detail, recall=recall)
        for c in cells:
            got = comparison["models"][c.name]
            c.values["matched.chair_i"], c.values["matched.chair_s"] = got["chair_i"], got["chair_s"]
        self.matched = {"recall": comparison["recall"], "set_by": set_by,
                        "item_counts": sorted({len(c.per_answer["object_halbench"]) for c in cells}),
                        "cells": comparison["models"]}

    def matched_section(self) -> None:
        self.md += ["## CHAIR at matched recall", ""]
        if not self.matched:
            self.md += ["No cell carries Object HalBench per-answer detail (`per_answer.object_halbench`): not "
                        "computed.", ""]
            return
        sizes = self.matched["item_counts"]
        r = self.matched["recall"]
        note = ("" if len(sizes) == 1 else
                f" Warning: the cells' answer lists differ in length ({sizes}), so they are not one item set.")
        if r <= 0:
            note += " Warning: the common recall is 0 (some answers mention nothing true): the comparison is empty."
        self.md += [f"Every answer truncated to its first k object mentions until the recall equals the lowest full "
                    f"recall among the {self.matched['set_by']} cells, r = {100 * r:.1f} % (interpolated between "
                    f"k's; a cell whose full recall is lower shows –): a model that mentions fewer objects cannot "
                    f"look grounded merely by saying less.{note}", ""]
        keys = [k for k in ("recall", "chair_i", "matched.chair_i", "chair_s", "matched.chair_s")
                if self.grid.present(k, self.fixed)]
        rows, md_rows = [], []
        for m in self.grid.methods(self.fixed):
            s = {k: self.grid.summary(m, k, self.fixed) for k in keys}
            rows.append({"method": m, "values": {k: v.as_dict() for k, v in s.items()}})
            md_rows.append([m, *(quantity(k).show_summary(s[k]) for k in keys)])
        self.md += [_md_table(["method", *(quantity(k).heading for k in keys)], md_rows), ""]
        self.matched["methods"] = rows

    # probe -----------------------------------------------------------------------------------------------------
    def probe(self) -> None:
        self.md += ["## Does DPO ignore the image? (probe)", ""]
        methods = [m for m in self.grid.methods(self.fixed) if m != BASE
                   and any(self.grid.has(m, f"probe.{f}", self.fixed) for f in PROBE_FIELDS)]
        if not methods:
            self.md += ["No cell carries a probe: not computed.", ""]
            self.tables["probe"] = []
            return
        keys = ["probe.conditional_margin", "probe.image_gap", "probe.reward_margin", "probe.conditional_accuracy"]
        rows, md_rows = [], []
        base_gap = stats.summarize(c.values.get("probe.image_gap_base") for m in methods
                                   for c in self.grid.select(m, self.fixed))
        if base_gap.n:
            rows.append({"method": BASE, "values": {"probe.image_gap": base_gap.as_dict()}})
            md_rows.append([f"{BASE} (image_gap_base)", "–", quantity("probe.image_gap").show_summary(base_gap),
                            "–", "–"])
        for m in methods:
            s = {k: self.grid.summary(m, k, self.fixed) for k in keys}
            rows.append({"method": m, "values": {k: v.as_dict() for k, v in s.items()}})
            md_rows.append([m, *(quantity(k).show_summary(s[k]) for k in keys)])
        self.md += ["Held-out pairs. conditional_margin = mean [r(y_w|m) − r(y_w|m_l)] with r = β·(log π − log π_ref) "
                    "(how much more the adapter than the reference prefers the chosen answer WITH the real image); "
                    "image_gap = mean log π(y_w|m) − log π(y_w|m_l) under the adapter (base: under the base model). "
                    "Mean ± std over seeds.", "",
                    _md_table(["method", "conditional_margin", "image_gap", "reward_margin", "conditional_accuracy"],
                              md_rows), ""]
        self.tables["probe"] = rows

    # claims ----------------------------------------------------------------------------------------------------
    def _missing(self, methods: Sequence[str], keys: Sequence[str], fixed: Mapping[str, Any] | None = None
                 ) -> str | None:
        fixed = self.fixed if fixed is None else fixed
        absent = [m for m in methods if not self.grid.select(m, fixed)]
        if absent:
            return f"method(s) {', '.join(absent)} not in the grid"
        for key in keys:
            lacking = [m for m in methods if not self.grid.has(m, key, fixed)]
            if lacking:
                return f"no {quantity(key).title} for {', '.join(lacking)} (benchmark or probe not run)"
        return None

    def _add(self, cid: str, claim: str, paper: str, test: str, summary: stats.Summary | None, side: int,
             key: str | None, why: str | None = None, verdict: str | None = None, extra: dict | None = None) -> None:
        if why is not None:
            self.claims.append({"id": cid, "claim": claim, "paper": paper, "test": test, "verdict": NOT_TESTED,
                                "why": why, "n": 0, "mean": None, "low": None, "high": None, "numbers": "–"})
            return
        assert summary is not None
        q = quantity(key) if key else Quantity("slope", "slope", decimals=3)
        shown = summary.scaled(q.scale)
        self.claims.append({
            "id": cid, "claim": claim, "paper": paper, "test": test,
            "verdict": verdict or _verdict(summary, side), "why": None,
            "n": summary.n, "mean": shown.mean, "low": shown.low, "high": shown.high,
            "numbers": f"Δ {q.show_diff(summary)} (n={summary.n})", **(extra or {}),
        })

    def _pair_claim(self, cid: str, claim: str, paper: str, a: str, b: str, key: str, side: int,
                    require: Sequence[str] = ()) -> None:
        sign = "<" if side < 0 else ">"
        test = f"{a} − {b} on {quantity(key).title} {sign} 0"
        why = self._missing([a, b, *require], [key])
        summary = None if why else self.grid.diff(a, b, key, self.fixed, require=require)
        self._add(cid, claim, paper, test, summary, side, key, why)

    def build_claims(self) -> None:
        bunny, llava = PAPER_ROWS["bunny-v1.0-3b"], PAPER_ROWS["llava-1.5-7b"]

        def t1(key: str, a: str, b: str) -> str:
            i = TABLE_COLUMNS.index(key)
            assert i < PAPER_COLUMNS
            return f"Table 1: {a} {bunny[a][i]} → {b} {bunny[b][i]} (Bunny), {llava[a][i]} → {llava[b][i]} (LLaVA)"

        def t2(key: str, m: str) -> str:
            i = PAPER_ABLATION_COLUMNS.index(key)
            return f"Table 2 (Bunny): mdpo {PAPER_TABLE2['mdpo'][i]}, {m} {PAPER_TABLE2[m][i]}"

        # side: the claimed sign of a − b; "a is better" is the metric's better direction (METRICS)
        self._pair_claim("a", "mDPO hallucinates less than DPO (CHAIR_s)", t1("chair_s", "dpo", "mdpo"),
                         "mdpo", "dpo", "chair_s", _better_side("chair_s"))
        self._pair_claim("b", "mDPO hallucinates less than DPO (CHAIR_i)", t1("chair_i", "dpo", "mdpo"),
                         "mdpo", "dpo", "chair_i", _better_side("chair_i"))
        self._pair_claim("c", "mDPO hallucinates less than DPO (AMBER CHAIR)", t1("amber_chair", "dpo", "mdpo"),
                         "mdpo", "dpo", "amber_chair", _better_side("amber_chair"))
        self._pair_claim("d", "mDPO's gain over DPO holds at matched recall (CHAIR_i at the common recall)",
                         "not in the paper (a length effect could pass for grounding)",
                         "mdpo", "dpo", "matched.chair_i", _better_side("matched.chair_i"))
        self._pair_claim("e1", "Coverage tends to drop with mDPO (Object HalBench recall vs base)",
                         "review's summary; the paper reports no Object HalBench recall",
                         "mdpo", BASE, "recall", -_better_side("recall"))
        self._pair_claim("e2", "Coverage tends to drop with mDPO (AMBER Cover vs base)",
                         t1("amber_cover", "base", "mdpo"), "mdpo", BASE, "amber_cover", -_better_side("amber_cover"))
        self._pair_claim("f", "The conditional term matters (removing it raises CHAIR_s)",
                         t2("chair_s", "mdpo_no_conditional"), "mdpo_no_conditional", "mdpo", "chair_s",
                         -_better_side("chair_s"))
        self._pair_claim("g", "The anchor term matters (removing it raises CHAIR_s)",
                         t2("chair_s", "mdpo_no_anchor"), "mdpo_no_anchor", "mdpo", "chair_s",
                         -_better_side("chair_s"))
        i = PAPER_ABLATION_COLUMNS.index("chair_s")
        self._pair_claim(
            "h", "The conditional term matters more than the anchor: (no_conditional − mdpo) − (no_anchor − mdpo) "
            "on CHAIR_s, i.e. no_conditional − no_anchor, paired where mdpo exists",
            f"Table 2 (Bunny): w/o conditional {PAPER_TABLE2['mdpo_no_conditional'][i]} vs w/o anchor "
            f"{PAPER_TABLE2['mdpo_no_anchor'][i]}",
            "mdpo_no_conditional", "mdpo_no_anchor", "chair_s", -_better_side("chair_s"), require=("mdpo",))
        self._claim_ignores_image()
        self._claim_strategy()
        self._claim_data_size()

    def _claim_ignores_image(self) -> None:
        key = "probe.conditional_margin"
        claim = ("DPO ignores the image: DPO's conditional margin is not above that of DPO without the image, while "
                 "mDPO − DPO > 0")
        paper = "the paper's motivation (Sec. 3); not a table"
        test = "dpo − dpo_no_image ≤ 0 (interval not above 0) and mdpo − dpo > 0 on conditional_margin"
        why = self._missing(["dpo", "dpo_no_image", "mdpo"], [key])
        if why:
            self._add("i", claim, paper, test, None, 1, key, why)
            return
        ignore = self.grid.diff("dpo", "dpo_no_image", key, self.fixed)
        gain = self.grid.diff("mdpo", "dpo", key, self.fixed)
        second = _verdict(gain, 1)
        first_refuted = ignore.low is not None and ignore.low > 0
        if ignore.n < 2 or gain.n < 2:
            verdict = INCONCLUSIVE
        elif first_refuted or second == NOT_REPRODUCED:
            verdict = NOT_REPRODUCED
        else:
            verdict = second
        q = quantity(key)
        self._add("i", claim, paper, test, gain, 1, key, verdict=verdict, extra={
            "numbers": f"dpo − dpo_no_image Δ {q.show_diff(ignore)} (n={ignore.n}); mdpo − dpo Δ {q.show_diff(gain)} "
                       f"(n={gain.n})",
            "parts": {"dpo_minus_dpo_no_image": ignore.as_dict(), "mdpo_minus_dpo": gain.as_dict()}})

    def _claim_strategy(self) -> None:
        key = "chair_s"
        claim = f"{BEST_STRATEGY} beats the other corruption strategies (mDPO CHAIR_s)"
        i = PAPER_ABLATION_COLUMNS.index(key)
        paper = "Table 3 (Bunny): " + ", ".join(f"{s} {v[i]}" for s, v in PAPER_TABLE3.items())
        test = f"mdpo(other) − mdpo({BEST_STRATEGY}) > 0 for every other strategy"
        if STRATEGY_AXIS not in self.grid.axes:
            self._add("j1", claim, paper, test, None, 1, key, _NO_AXIS.format(axis=STRATEGY_AXIS))
            return
        values = self.grid.axes[STRATEGY_AXIS]
        others = [v for v in values if v != BEST_STRATEGY]
        if BEST_STRATEGY not in values or not others:
            self._add("j1", claim, paper, test, None, 1, key, f"the grid's strategies {values} lack {BEST_STRATEGY} "
                      "or any other")
            return
        best = self.grid.values("mdpo", key, self.fixed | {STRATEGY_AXIS: BEST_STRATEGY}, drop=STRATEGY_AXIS)
        side = -_better_side(key)
        parts = {}
        for other in others:
            vo = self.grid.values("mdpo", key, self.fixed | {STRATEGY_AXIS: other}, drop=STRATEGY_AXIS)
            parts[other] = stats.paired_difference(vo, best)
        verdicts = [_verdict(s, side) for s in parts.values()]
        verdict = (NOT_REPRODUCED if NOT_REPRODUCED in verdicts else
                   REPRODUCED if all(v == REPRODUCED for v in verdicts) else INCONCLUSIVE)
        q = quantity(key)
        worst = min(parts.values(), key=lambda s: -math.inf if s.mean is None else side * s.mean)
        self._add("j1", claim, paper, test, worst, side, key, verdict=verdict, extra={
            "numbers": "; ".join(f"{o} − {BEST_STRATEGY} Δ {q.show_diff(s)} (n={s.n})" for o, s in parts.items()),
            "parts": {o: s.as_dict() for o, s in parts.items()}})

    def _claim_data_size(self) -> None:
        claim = "More preference data → a larger mDPO gain over DPO (CHAIR_s)"
        paper = "the review's summary: gains grow with more preference data"
        test = "per seed, least-squares slope of (DPO − mDPO CHAIR_s) on log10 n; mean slope > 0"
        if SIZE_AXIS not in self.grid.axes:
            self._add("j2", claim, paper, test, None, 1, None, _NO_AXIS.format(axis=SIZE_AXIS))
            return
        key = "chair_s"
        sizes = [n for n in self.grid.axes[SIZE_AXIS] if _number(n) is not None and n > 0]
        why = self._missing(["mdpo", "dpo"], [key], {a: v for a, v in self.fixed.items() if a != SIZE_AXIS})
        if len(sizes) < 2:
            why = f"{SIZE_AXIS} needs two or more positive sizes, got {self.grid.axes[SIZE_AXIS]}"
        if why:
            self._add("j2", claim, paper, test, None, 1, None, why)
            return
        side = _better_side(key)
        gains: dict[PairKey, list[tuple[float, float]]] = {}
        for n in sizes:
            fixed = self.fixed | {SIZE_AXIS: n}
            diffs = stats.paired_values(self.grid.values("dpo", key, fixed, drop=SIZE_AXIS),
                                        self.grid.values("mdpo", key, fixed, drop=SIZE_AXIS))
            for pk, d in diffs.items():
                gains.setdefault(pk, []).append((math.log10(n), -side * d))
        slopes = [stats.slope([x for x, _ in pts], [y for _, y in pts]) for pts in gains.values()]
        summary = stats.summarize(slopes)
        # the slope is in CHAIR_s fractions per decade of n: shown ×100 like the metric
        q = Quantity("slope", "slope", quantity(key).scale, 2)
        self.claims.append({
            "id": "j2", "claim": claim, "paper": paper, "test": test, "verdict": _verdict(summary, 1), "why": None,
            "n": summary.n, **{k: v for k, v in summary.scaled(q.scale).as_dict().items() if k in ("mean", "low",
                                                                                                  "high")},
            "numbers": f"slope {q.show_diff(summary)} CHAIR_s points per ×10 pairs (n={summary.n} seeds)"})

    def claims_section(self) -> None:
        self.md += ["## Claims", "", VERDICT_RULE, ""]
        rows = [[c["id"], c["claim"], c["verdict"], c["numbers"] if c["verdict"] != NOT_TESTED else c["why"],
                 c["test"], c["paper"]] for c in self.claims]
        self.md += [_md_table(["", "claim", "verdict", "numbers (table units)", "test", "paper"], rows), ""]

    def bars(self) -> None:
        keys = [k for k in ("chair_s", "chair_i", "recall", "probe.conditional_margin")
                if self.grid.present(k, self.fixed)]
        if not keys:
            return
        methods = self.grid.methods(self.fixed)
        panels = [(quantity(k).heading, {m: self.grid.summary(m, k, self.fixed) for m in methods
                                         if self.grid.has(m, k, self.fixed)}, quantity(k).scale) for k in keys]
        self.figures.append(_bar_plot(self.out_dir / "claims_bars.png", panels))


# --- plots ---------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib  # heavy: imported only when drawing, with the headless backend set before pyplot

    matplotlib.use("Agg")  # headless: the grid runs in containers and CI
    import matplotlib.pyplot as plt  # after the backend is set (above)

    return plt


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return out


def _bar_plot(out: Path, panels: Sequence[tuple[str, Mapping[str, stats.Summary], float]]) -> Path:
    """One panel per quantity: a bar per method at its mean, error bar ± std (display units)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for ax, (title, per_method, scale) in zip(axes[0], panels):
        names = list(per_method)
        means = [(per_method[m].mean or 0.0) * scale for m in names]
        errs = [(per_method[m].std or 0.0) * scale for m in names]
        ax.bar(range(len(names)), means, yerr=errs, capsize=3,
               color=[colours[METHOD_ORDER.index(m) % 10 if m in METHOD_ORDER else 9] for m in names])
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("mean ± std over seeds")
    fig.tight_layout()
    path = _save(fig, out)
    plt.close(fig)
    return path


def _curve_plot(out: Path, title: str, axis: str,
                panels: Sequence[tuple[str, Mapping[str, Sequence[tuple[Any, stats.Summary]]], float]],
                log_x: bool = False) -> Path:
    """One panel per quantity: a line per method over the axis values, error bars ± std (display units)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (heading, series, scale) in zip(axes[0], panels):
        xs_all = [x for pts in series.values() for x, _ in pts]
        numeric = all(_number(x) is not None for x in xs_all)
        labels = list(dict.fromkeys(xs_all))
        for method, pts in series.items():
            pts = [(x, s) for x, s in pts if s.mean is not None]
            if not pts:
                continue
            xs = [x if numeric else labels.index(x) for x, _ in pts]
            ax.errorbar(xs, [s.mean * scale for _, s in pts], yerr=[(s.std or 0.0) * scale for _, s in pts],
                        marker="o", capsize=3, label=method)
        if not numeric:
            ax.set_xticks(range(len(labels)), [str(v) for v in labels])
        elif log_x:
            ax.set_xscale("log")
            # the grid's own sizes as ticks: log-scale minor labels (8×10², 9×10²) say nothing about the grid
            ax.minorticks_off()
            ax.set_xticks(labels, [str(v) for v in labels])
        ax.set_xlabel(axis)
        ax.set_title(heading, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = _save(fig, out)
    plt.close(fig)
    return path


# --- entry point -------------------------------------------------------------------------------------------


def claims_report(cells: Sequence[Mapping[str, Any]], out_dir: str | Path,
                  title: str = "mDPO reproduction: the paper's claims", defaults: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Write claims.md, claims.json and PNG plots for a grid's cell records into ``out_dir``; return
    {"markdown", "claims", "tables", "figures", "path"}. ``defaults``: each axis's value for Table 1 and the
    claims (default: the first value each axis shows in the records)."""
    if not cells:
        raise ValueError("claims_report needs at least one cell record")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = _Grid(cells, defaults)
    report = _Report(grid, out_dir)
    seeds = sorted({c.seed for c in grid.cells if c.seed is not None}, key=repr)
    report.md += [f"# {title}", "",
                  f"{len(grid.cells)} cells: methods {', '.join(grid.methods({}))}; seeds {seeds}; axes "
                  + (", ".join(f"`{a}` {v} (default {grid.defaults[a]!r})" for a, v in grid.axes.items())
                     or "none") + ".", ""]
    # the matched-recall values feed the differences and claim (d): computed before any section
    report.compute_matched()
    keys = report.table1()
    report.build_claims()
    report.claims_section()
    report.diffs(report.all_keys(keys))
    report.table2()
    report.table3()
    report.data_size()
    report.sweeps()
    report.matched_section()
    report.probe()
    report.bars()
    if report.figures:
        report.md += ["## Figures", "", *(f"![{p.stem}]({p.name})" for p in report.figures), ""]
    markdown = "\n".join(report.md).rstrip() + "\n"
    md_path = out_dir / "claims.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    payload = {
        "title": title,
        "axes": grid.axes,
        "defaults": grid.defaults,
        "cells": [{"cell": c.name, "method": c.method, "seed": c.seed, "axes": c.axes} for c in grid.cells],
        "verdict_rule": VERDICT_RULE,
        "claims": report.claims,
        "tables": report.tables,
        "matched_recall": report.matched,
        "figures": [p.name for p in report.figures],
    }
    write_json(payload, out_dir / "claims.json")
    return {"markdown": markdown, "claims": report.claims, "tables": report.tables | {"matched_recall": report.matched},
            "figures": report.figures, "path": md_path}
