"""What both AMBER tasks share: the official counters' start."""

from __future__ import annotations

from collections.abc import Iterable


def _official_start(names: Iterable[str]) -> dict[str, float]:
    return {k: 0.001 if k.endswith("_num") else 0 for k in names}
