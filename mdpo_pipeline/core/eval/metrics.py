"""Every benchmark metric the pipeline reports, defined once: its key in scores.json, display title, direction,
units and the official name. The report's columns, the promotion gate and the tracking metadata read it here."""

from __future__ import annotations

from dataclasses import dataclass

from mdpo_pipeline.core.errors import shown


@dataclass(frozen=True)
class Metric:
    """One reported number."""

    key: str  #: flat key in scores.json "scores" and the MLflow metric "eval/<key>"
    benchmark: str  #: the benchmark that produces it
    title: str  #: column title in tables and charts
    higher_is_better: bool | None  #: None: no better direction (e.g. POPE's yes ratio: 0.5 is ideal)
    percent: bool = False  #: stored as a fraction, shown ×100
    decimals: int = 1  #: decimals when shown
    official: str | None = None  #: the name the official scorer prints

    @property
    def heading(self) -> str:
        """Title with its direction arrow, as the paper's tables show it."""
        arrow = {True: " ↑", False: " ↓", None: ""}[self.higher_is_better]
        return f"{self.title}{arrow}"

    def display(self, value: float | None) -> float | None:
        """``value`` in display units (percent where the paper shows percent)."""
        return None if value is None else 100.0 * value if self.percent else float(value)


METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("mmhal_score", "mmhal", "MMHal", True, decimals=2, official="Average score"),
        Metric("mmhal_hallucination_rate", "mmhal", "HalRate", False, decimals=2, official="Hallucination rate"),
        Metric("chair_s", "object_halbench", "CHAIR_s", False, percent=True, official="CHAIRs"),
        Metric("chair_i", "object_halbench", "CHAIR_i", False, percent=True, official="CHAIRi"),
        Metric("recall", "object_halbench", "Obj. recall", True, percent=True, official="obj_rec"),
        Metric("amber_chair", "amber", "AMBER CHAIR", False, percent=True, official="CHAIR"),
        Metric("amber_cover", "amber", "Cover", True, percent=True, official="Cover"),
        Metric("amber_hal", "amber", "Hal", False, percent=True, official="Hal"),
        Metric("amber_cog", "amber", "Cog", False, percent=True, official="Cog"),
        Metric("amber_accuracy", "amber", "AMBER Acc.", True, percent=True, official="Accuracy"),
        Metric("amber_precision", "amber", "AMBER P", True, percent=True, official="Precision"),
        Metric("amber_recall", "amber", "AMBER R", True, percent=True, official="Recall"),
        Metric("amber_f1", "amber", "AMBER F1", True, percent=True, official="F1"),
        Metric("pope_accuracy", "pope", "POPE Acc.", True, percent=True, official="Accuracy"),
        Metric("pope_precision", "pope", "POPE P", True, percent=True, official="Precision"),
        Metric("pope_recall", "pope", "POPE R", True, percent=True, official="Recall"),
        Metric("pope_f1", "pope", "POPE F1", True, percent=True, official="F1 score"),
        Metric("pope_yes_ratio", "pope", "POPE yes", None, percent=True, official="Yes ratio"),
    )
}

#: The comparison report's columns: the paper's Table 1 in its order, then POPE (beyond the paper).
TABLE_COLUMNS: tuple[str, ...] = (
    "mmhal_score", "mmhal_hallucination_rate", "chair_s", "chair_i", "amber_chair", "amber_cover", "amber_hal",
    "amber_cog", "pope_f1", "pope_accuracy",
)
#: How many of TABLE_COLUMNS the paper's Table 1 reports (its rows are shorter).
PAPER_COLUMNS = 8


def metric(key: str) -> Metric:
    """The metric registered under ``key``, or an error listing the known ones."""
    try:
        return METRICS[key]
    except KeyError:
        raise KeyError(f"unknown metric {shown(key)}; known: {sorted(METRICS)}") from None


def lower_is_better(key: str) -> bool:
    """Whether a smaller value of ``key`` is better; an error for metrics without a direction."""
    direction = metric(key).higher_is_better
    if direction is None:
        raise ValueError(f"{key} has no better direction and cannot rank models")
    return not direction
