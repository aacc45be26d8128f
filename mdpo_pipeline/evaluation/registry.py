"""The registry gate: does an adapter beat the base model (and the current champion), and move the aliases.

``decide`` is pure: the numbers in, a decision with its reasons out. ``integrations.tracking.apply_decision``
records every decision on the model version (tags) and moves the ``champion`` / ``previous`` aliases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mdpo_pipeline.core.eval.settings import GatePolicy


@dataclass(frozen=True)
class Decision:
    """One gate decision with the numbers it was made on."""

    candidate: str
    passed: bool
    promote: bool
    reasons: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for tags, metadata and JSON."""
        return asdict(self)


def decide(
    candidate: str,
    scores: dict[str, float],
    base: dict[str, float],
    policy: GatePolicy = GatePolicy(),
    champion: dict[str, float] | None = None,
    champion_name: str | None = None,
) -> Decision:
    """Pass when ``scores`` beat ``base`` on the primary metric without losing more coverage than allowed;
    promote when it passes and beats the current champion (or there is none)."""
    for name, table in (("candidate", scores), ("base", base)):
        for metric in (policy.primary, policy.coverage):
            if table.get(metric) is None:
                raise KeyError(f"{name} scores lack {metric!r}; have {sorted(table)}")
    p, c = policy.primary, policy.coverage
    numbers: dict[str, Any] = {
        "primary": p, "coverage": c, f"{p}": scores[p], f"base_{p}": base[p], f"{c}": scores[c], f"base_{c}": base[c],
        "max_coverage_drop": policy.max_coverage_drop,
    }
    reasons = []
    beats_base = policy.better(scores[p], base[p], policy.min_improvement)
    reasons.append(f"{p} {scores[p]:.4f} vs base {base[p]:.4f}: {'better' if beats_base else 'not better'}")
    drop = base[c] - scores[c]
    coverage_ok = drop <= policy.max_coverage_drop + 1e-12
    reasons.append(f"{c} {scores[c]:.4f} vs base {base[c]:.4f}: drop {drop:+.4f} "
                   f"{'within' if coverage_ok else 'beyond'} {policy.max_coverage_drop}")
    passed = beats_base and coverage_ok
    promote = passed
    if passed and champion is not None:
        numbers[f"champion_{p}"] = champion.get(p)
        numbers["champion"] = champion_name
        beats_champion = champion.get(p) is None or policy.better(scores[p], champion[p])
        reasons.append(f"{p} vs champion {champion_name} {champion.get(p)}: {'better' if beats_champion else 'not better'}")
        promote = beats_champion
    return Decision(candidate=candidate, passed=passed, promote=promote, reasons=reasons, numbers=numbers)
