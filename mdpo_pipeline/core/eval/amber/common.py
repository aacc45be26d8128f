"""What both AMBER tasks share: the scoring modes, the metric ratio and the official counters' start."""

from __future__ import annotations

from collections.abc import Iterable

MODES: tuple[str, ...] = ("offline", "official")


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"AMBER scoring mode must be one of {MODES}, got {mode!r}")


def _official_start(names: Iterable[str]) -> dict[str, float]:
    return {k: 0.001 if k.endswith("_num") else 0 for k in names}
