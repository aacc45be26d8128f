"""What every scorer shares: the scoring modes and the share of two counts.

``offline`` scores with this project's rules (offline data only, the ShapeWorld default); ``official`` reproduces
the benchmark's own scorer exactly, so its numbers compare with published ones (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["offline", "official"]
MODES: tuple[str, ...] = get_args(Mode)


def ratio(num: float, den: float) -> float:
    """``num / den``, and 0 when nothing was counted (an empty answer set scores 0, not a ZeroDivisionError)."""
    return num / den if den else 0.0


def check_mode(mode: str, benchmark: str) -> None:
    """A ValueError naming ``benchmark`` unless ``mode`` is one of MODES."""
    if mode not in MODES:
        raise ValueError(f"{benchmark} scoring mode must be one of {MODES}, got {mode!r}")
