"""The preference methods by name: which mDPO loss terms each one weights (core/losses.py computes them), and the
key of the base model beside them. Plain data without torch, so the Dagster definitions, the settings checks and
the report load it for free."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

TERMS = ("dpo", "conditional", "anchor", "anchor_rejected", "anchor_corrupted")


@dataclass(frozen=True)
class LossWeights:
    """Weight of each loss term; a weight-0 term is skipped (dpo is still reported, outside the loss)."""

    dpo: float = 1.0  # chosen vs rejected answer, same image
    conditional: float = 0.0  # chosen answer: real vs corrupted image (CoPO)
    anchor: float = 0.0  # chosen reward kept above δ (AncPO)
    anchor_rejected: float = 0.0  # rejected reward pushed below δ (Table 4)
    anchor_corrupted: float = 0.0  # chosen-with-corrupted-image reward pushed below δ (Table 4)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"LossWeights.{f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"LossWeights.{f.name} must be finite and >= 0, got {value!r}")
            # Store floats so asdict()/JSON of a config logs 1.0 whether the caller wrote 1 or 1.0.
            object.__setattr__(self, f.name, float(value))
        if not any(getattr(self, name) > 0 for name in TERMS):
            raise ValueError("LossWeights: at least one weight must be > 0")

    @property
    def needs_corrupted(self) -> bool:
        """Whether some weighted term reads log-probs of the chosen answer given the corrupted image."""
        return self.conditional > 0 or self.anchor_corrupted > 0


#: The method whose prompts carry no image (policy and reference): DPO without the visual condition, the control
#: that shows whether DPO uses the image at all. Its reference log-probs cannot come from the image-conditioned cache.
TEXT_ONLY_METHOD = "dpo_no_image"

#: The model key of the base model itself (no adapter, no loss): a row of every comparison, a Dagster partition.
BASE = "base"

METHODS: dict[str, LossWeights] = {
    "dpo": LossWeights(1, 0, 0),
    "mdpo": LossWeights(1, 1, 1),
    "mdpo_no_conditional": LossWeights(1, 0, 1),
    "mdpo_no_anchor": LossWeights(1, 1, 0),
    "mdpo_anchor_all": LossWeights(1, 1, 1, 1, 1),
    TEXT_ONLY_METHOD: LossWeights(1, 0, 0),  # same loss as DPO; the trainer withholds the image
}
