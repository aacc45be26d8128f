"""The sections of the claims report, laid out like the paper's tables so that our numbers read beside the paper's
and every verdict can be checked against the numbers behind it. Each section appends its markdown to the report
and its numbers to the tables that claims.json carries; where the grid lacks a section's methods or axis, the
section says what to add to params.yaml rather than failing. The paper's numbers come from evaluation/report.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdpo_pipeline.core import stats
from mdpo_pipeline.core.eval.chair.matched import matched_recall_comparison
from mdpo_pipeline.core.eval.metrics import TABLE_COLUMNS
from mdpo_pipeline.core.methods import BASE
from mdpo_pipeline.evaluation.claims.grid import PROBE_FIELDS, SIZE_AXIS, STRATEGY_AXIS, Grid
from mdpo_pipeline.evaluation.claims.plots import bar_plot, curve_plot
from mdpo_pipeline.evaluation.claims.quantities import better_side, quantity
from mdpo_pipeline.evaluation.claims.verdicts import NOT_TESTED, VERDICT_RULE
from mdpo_pipeline.evaluation.report import PAPER_ABLATION_COLUMNS, PAPER_ABLATION_MODEL, PAPER_TABLE2, PAPER_TABLE3
from mdpo_pipeline.core.eval.settings import DESCRIPTION_BENCHMARKS

#: Paper Table 2's rows, in its order.
ABLATION_ROWS = ("mdpo", "mdpo_no_conditional", "mdpo_no_anchor", "dpo")
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


@dataclass
class Report:
    """The report as it is written: its markdown lines, the tables and claims claims.json carries, its figures
    and the matched-recall comparison."""

    grid: Grid
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
        benches = [b for b in DESCRIPTION_BENCHMARKS] + sorted(
            {k.partition(".")[2] for c in self.grid.cells for k in c.values if k.startswith("words.")}
            - set(DESCRIPTION_BENCHMARKS))
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

    def methods_table(self, table_keys: Sequence[str]) -> None:
        """Every method's mean with its 95 % interval over its cells (seeds × base models) — Table 1's columns, the
        matched-recall CHAIR and the probe's conditional margin — to read the methods side by side."""
        keys = [*table_keys, *(k for k in ("matched.chair_s", "matched.chair_i", "probe.conditional_margin")
                               if k not in table_keys and self.grid.present(k, self.fixed))]
        rows, md_rows = [], []
        for method in self.grid.methods(self.fixed):
            summaries = {k: self.grid.summary(method, k, self.fixed) for k in keys}
            rows.append({"method": method, "n_cells": len(self.grid.select(method, self.fixed)),
                         "values": {k: s.as_dict() for k, s in summaries.items()}})
            md_rows.append([method, rows[-1]["n_cells"], *(quantity(k).show_interval(summaries[k]) for k in keys)])
        self.tables["methods"] = rows
        self.md += ["## Methods with 95 % intervals", "",
                    "Mean [Student-t 95 % interval] over each method's cells (seeds × base models pooled); the "
                    "paired differences below say which gaps are real.", "",
                    _md_table(["method", "cells", *(quantity(k).heading for k in keys)], md_rows), ""]

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
                    "table units. *better*/*worse* when the interval excludes 0 (direction from the metric). The last "
                    "column, for Object HalBench's CHAIR, redraws the benchmark's items as well as the pairs (a "
                    "bootstrap, stats.item_bootstrap).", ""]
        # Every other method against both references, mDPO and DPO, after the paper's comparisons.
        others = [(m, ref) for m in self.grid.methods(self.fixed) for ref in ("mdpo", "dpo")
                  if m not in (BASE, "mdpo", "dpo") and (m, ref) not in COMPARISONS]
        for a, b in (*COMPARISONS, *others):
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
                items = self.grid.item_diff(a, b, key, self.fixed)
                with_items = None if items is None else dict(zip(("mean", "low", "high"), items))
                out.append({"a": a, "b": b, "key": key, "reading": reading, **s.as_dict(), "with_items": with_items})
                md_rows.append([q.heading, s.n, q.show_diff(s), reading, "–" if items is None else
                                f"[{q.show(items[1], sign=True)}, {q.show(items[2], sign=True)}]"])
            self.md += [f"### {a} − {b}", "", _md_table(
                ["quantity", "pairs", "Δ [95 % interval]", "reading", "with item sampling too"], md_rows), ""]
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
        key, side = "chair_s", better_side("chair_s")
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
        self.figures.append(curve_plot(self.out_dir / "data_size.png", f"{q.title} vs preference pairs", SIZE_AXIS,
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
                self.figures.append(curve_plot(self.out_dir / f"sweep_{_slug(axis)}.png",
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
    def claims_section(self) -> None:
        self.md += ["## Claims", "", VERDICT_RULE, ""]
        rows = [[c["id"], c["claim"], c["verdict"], c["numbers"] if c["verdict"] != NOT_TESTED else c["why"],
                 c["test"], c["paper"]] for c in self.claims]
        self.md += [_md_table(["", "claim", "verdict", "numbers (table units)", "test", "paper"], rows), ""]

    # figures ---------------------------------------------------------------------------------------------------
    def bars(self) -> None:
        keys = [k for k in ("chair_s", "chair_i", "recall", "probe.conditional_margin")
                if self.grid.present(k, self.fixed)]
        if not keys:
            return
        methods = self.grid.methods(self.fixed)
        panels = [(quantity(k).heading, {m: self.grid.summary(m, k, self.fixed) for m in methods
                                         if self.grid.has(m, k, self.fixed)}, quantity(k).scale) for k in keys]
        self.figures.append(bar_plot(self.out_dir / "claims_bars.png", panels))
