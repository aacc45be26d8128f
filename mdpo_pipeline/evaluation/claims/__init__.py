"""The claims report of an experiment grid: the paper's claims, each with a verdict from paired seeds.

Input: the grid's finished cell records (each cell's cell.json: method, training seed, axis values, scores, answer
lengths, per-answer CHAIR detail and the image-use probe). Output in ``out_dir``: ``claims.md`` for people,
``claims.json`` with every number, and PNG plots.

Cells of one training seed (and one set of axis values) share their data order, so every comparison is a
PAIRED difference: a seed's noise cancels, and the Student-t 95 % interval of the mean difference decides the
verdict. Metric titles, units and better directions come from core/eval/metrics.py; the paper's numbers from
evaluation/report.py.

The package, by job: ``quantities`` (what a cell reports, in display units), ``grid`` (the cells, their axes and
pairing), ``verdicts`` (the claims and the verdict rule), ``report`` (the report's sections and tables) and
``plots`` (its figures); this module writes the report in its section order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mdpo_pipeline.core.io import atomic_path, write_json
from mdpo_pipeline.evaluation.claims.grid import Grid
from mdpo_pipeline.evaluation.claims.report import Report
from mdpo_pipeline.evaluation.claims.verdicts import VERDICT_RULE, judge_claims


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
    grid = Grid(cells, defaults)
    report = Report(grid, out_dir)
    seeds = sorted({c.seed for c in grid.cells if c.seed is not None}, key=repr)
    report.md += [f"# {title}", "",
                  f"{len(grid.cells)} cells: methods {', '.join(grid.methods({}))}; seeds {seeds}; axes "
                  + (", ".join(f"`{a}` {v} " + (f"(default {grid.defaults[a]!r})" if a in grid.defaults else
                                                   "(base models: pooled)") for a, v in grid.axes.items())
                     or "none") + ".", ""]
    # the matched-recall values feed the differences and claim (d): computed before any section
    report.compute_matched()
    keys = report.table1()
    report.methods_table(keys)
    report.claims = judge_claims(grid)
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
