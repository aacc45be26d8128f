"""The report's PNG figures: the same summaries as its tables, drawn so that a difference between methods or a trend
along an axis shows at a glance, each mean with its ± std over seeds. Matplotlib is loaded only when a figure is
drawn, so importing the report stays light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mdpo_pipeline.core import stats
from mdpo_pipeline.core.io import atomic_path
from mdpo_pipeline.evaluation.claims.grid import METHOD_ORDER, number


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


def bar_plot(out: Path, panels: Sequence[tuple[str, Mapping[str, stats.Summary], float]]) -> Path:
    """One panel per quantity: a bar per method at its mean, error bar its 95 % interval (display units; none below
    two cells)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for ax, (title, per_method, scale) in zip(axes[0], panels):
        names = list(per_method)
        means = [(per_method[m].mean or 0.0) * scale for m in names]
        errs = [[(s.mean - s.low) * scale if s.low is not None else 0.0 for s in map(per_method.get, names)],
                [(s.high - s.mean) * scale if s.high is not None else 0.0 for s in map(per_method.get, names)]]
        ax.bar(range(len(names)), means, yerr=errs, capsize=3,
               color=[colours[METHOD_ORDER.index(m) % 10 if m in METHOD_ORDER else 9] for m in names])
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("mean and 95 % interval over cells (seeds × base models)")
    fig.tight_layout()
    path = _save(fig, out)
    plt.close(fig)
    return path


def curve_plot(out: Path, title: str, axis: str,
               panels: Sequence[tuple[str, Mapping[str, Sequence[tuple[Any, stats.Summary]]], float]],
               log_x: bool = False) -> Path:
    """One panel per quantity: a line per method over the axis values, error bars ± std (display units)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (heading, series, scale) in zip(axes[0], panels):
        xs_all = [x for pts in series.values() for x, _ in pts]
        numeric = all(number(x) is not None for x in xs_all)
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
