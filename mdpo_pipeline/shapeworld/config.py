"""ShapeWorld's settings: what the synthetic world holds and how much of it the generator writes.

Kept apart from the code that reads them (world.py, feedback.py, generate.py), which all take a ShapeWorldConfig.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from mdpo_pipeline.core.errors import shown

#: The kinds of instruction the generator writes (feedback.make_task), the keys ``kind_mix`` may weight.
KINDS: tuple[str, ...] = ("describe", "existence", "count", "colour", "relation")

#: VLFeedback's instruction counts per source (docs/data.md, "Instruction sources"), used as sampling weights.
DEFAULT_SOURCE_MIX: dict[str, float] = {
    "llava": 19614,
    "svit": 22823,
    "llavar": 13770,
    "lrv": 12357,
    "llava-med": 5861,
    "comvint": 2384,
    "pmc-vqa": 2364,
    "m3it": 687,
    "pca-eval": 398,
}
DEFAULT_KIND_MIX: dict[str, float] = {"describe": 0.5, "existence": 0.15, "count": 0.1, "colour": 0.15, "relation": 0.1}
MAX_OBJECTS = 6  # more would not fit at 64 px without the shapes turning into specks


def _share(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {shown(value)}")


def _count(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {shown(value)}")


def _mix(name: str, mix: object, allowed: Iterable[str] | None = None) -> None:
    if not isinstance(mix, dict) or not mix:
        raise ValueError(f"{name} must be a non-empty mapping of name -> weight, got {shown(mix)}")
    for key, weight in mix.items():
        if not isinstance(key, str) or (allowed is not None and key not in allowed):
            raise ValueError(f"{name}: unknown key {shown(key)}" + (f"; allowed: {sorted(allowed)}" if allowed else ""))
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{name}[{shown(key)}] must be a finite weight >= 0, got {shown(weight)}")
    if sum(mix.values()) <= 0:
        raise ValueError(f"{name}: weights must not all be zero")


@dataclass(frozen=True)
class ShapeWorldConfig:
    """Settings of the synthetic world; the generated files are a pure function of them."""

    seed: int = 0  #: master seed of every random stream
    n_instructions: int = 6400  #: VLFeedback instructions (rows); ~24 % LLaVA-sourced: enough for a 1,500-pair sample
    image_size: int = 64  #: side of every image in pixels
    min_objects: int = 1  #: fewest objects per image
    max_objects: int = 4  #: most objects per image
    unconditional_share: float = 0.5  #: share of instructions whose worse answers also carry a text-only cue
    weak_evidence_share: float = 0.2  #: share of objects drawn small, low-contrast or partly hidden
    cooccurrence_prob: float = 0.8  #: chance a hallucination names the co-occurrence partner when one is absent
    bad_rating_share: float = 0.02  #: share of ratings written as "N/A", as the real release has (exercises the quarantine)
    source_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SOURCE_MIX))  #: source -> weight
    kind_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_KIND_MIX))  #: instruction kind -> weight
    amber_generative: int = 200  #: AMBER images, each with one "Describe this image." query
    amber_discriminative: int = 600  #: AMBER yes/no items over those images
    object_halbench: int = 150  #: Object HalBench images
    mmhal: int = 96  #: MMHal-Bench records (a multiple of its 8 question types)
    pope: int = 100  #: POPE images; each gets yes and no questions in each of its three splits

    def __post_init__(self):
        _count("seed", self.seed, 0)
        _count("n_instructions", self.n_instructions, 1)
        _count("image_size", self.image_size, 16, 1024)
        _count("min_objects", self.min_objects, 1, MAX_OBJECTS)
        _count("max_objects", self.max_objects, 1, MAX_OBJECTS)
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects ({self.min_objects}) must not exceed max_objects ({self.max_objects})")
        for name in ("unconditional_share", "weak_evidence_share", "cooccurrence_prob", "bad_rating_share"):
            _share(name, getattr(self, name))
        _mix("source_mix", self.source_mix)
        if any(k != k.strip().lower() or not k for k in self.source_mix):
            raise ValueError(f"source_mix keys must be lowercase source ids, got {shown(sorted(self.source_mix))}")
        if self.source_mix.get("llava", 0) <= 0:
            raise ValueError("source_mix must give 'llava' a positive weight: mDPO trains on LLaVA-sourced rows")
        _mix("kind_mix", self.kind_mix, KINDS)
        if self.kind_mix.get("relation", 0) > 0 and self.max_objects < 2:
            raise ValueError("kind_mix has 'relation' questions, which need max_objects >= 2")
        _count("amber_generative", self.amber_generative, 1)
        _count("amber_discriminative", self.amber_discriminative, 0)
        _count("object_halbench", self.object_halbench, 1)
        _count("mmhal", self.mmhal, 8)
        _count("pope", self.pope, 1)
        if self.mmhal % 8:
            raise ValueError(
                f"mmhal must be a multiple of 8 (its 8 question types repeat in order), got {shown(self.mmhal)}")
