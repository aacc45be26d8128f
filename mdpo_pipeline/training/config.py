"""MDPOConfig: TRL's DPOConfig plus the mDPO method, its loss weights, the anchor δ and the reference cache."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from trl import DPOConfig

from mdpo_pipeline.core.methods import METHODS, PAIR_LOSS_TYPES, TEXT_ONLY_METHOD, LossWeights
#: mDPO computes its own loss, so TRL's loss knobs must stay at the plain-DPO values (TRL field -> required value).
_TRL_LOSS_DEFAULTS = {
    "loss_type": ["sigmoid"],
    "loss_weights": None,
    "ld_alpha": None,
    "f_divergence_type": "reverse_kl",
    "use_weighting": False,
}
#: Weight override field -> LossWeights attribute.
_WEIGHT_OVERRIDES = {
    "dpo_weight": "dpo",
    "conditional_weight": "conditional",
    "anchor_weight": "anchor",
    "anchor_rejected_weight": "anchor_rejected",
    "anchor_corrupted_weight": "anchor_corrupted",
    "quality_weight": "quality",
    "sft_weight": "sft",
    "symmetric_weight": "symmetric",
    "symmetric_anchor_weight": "symmetric_anchor",
    "margin_consistency_weight": "margin_consistency",
}


def _override_help(term: str) -> str:
    return f"Weight of the {term}, overriding the method's preset; None keeps the preset."


@dataclass
class MDPOConfig(DPOConfig):
    """DPOConfig for MDPOTrainer: the mDPO loss, chosen by ``method`` and tuned by the fields below.

    The loss and its defaults: docs/method.md, "Objective".
    """

    method: str = field(
        default="mdpo",
        metadata={
            "help": "Preference objective: one of the presets of mdpo_pipeline.core.methods.METHODS (mdpo = DPO + "
            "conditional + anchor; dpo; the ablations mdpo_no_conditional, mdpo_no_anchor, mdpo_anchor_all; "
            "dpo_no_image = DPO with the image withheld; TRL's ipo, hinge, apo_zero; mpo = DPO + BCO quality + "
            "SFT; mdpo_mpo = mpo + mDPO's image terms; chip = DPO + CHiP's visual term; symmpo = SymMPO's terms).",
            "choices": list(METHODS),
        },
    )
    delta: float = field(
        default=0.0,
        metadata={"help": "Anchor offset δ in −log σ(β·r(y_w|m,q) − δ); the paper uses 0."},
    )
    pair_loss: str | None = field(
        default=None,
        metadata={"help": "The pair term in DPO's place, one of TRL's pair loss_types (core/methods.PAIR_LOSS_TYPES: "
                          "sigmoid = DPO, ipo, hinge, robust, apo_zero, apo_down, bco_pair); None keeps the method's.",
                  "choices": list(PAIR_LOSS_TYPES)},
    )
    dpo_weight: float | None = field(
        default=None, metadata={"help": _override_help("pair term (DPO, or the method's pair loss in its place)")}
    )
    conditional_weight: float | None = field(
        default=None, metadata={"help": _override_help("conditional term (chosen answer, real vs corrupted image)")}
    )
    anchor_weight: float | None = field(
        default=None, metadata={"help": _override_help("anchor on the chosen reward")}
    )
    anchor_rejected_weight: float | None = field(
        default=None, metadata={"help": _override_help("extra anchor on the rejected reward (paper Table 4)")}
    )
    anchor_corrupted_weight: float | None = field(
        default=None,
        metadata={"help": _override_help("extra anchor on the chosen-with-corrupted-image reward (paper Table 4)")},
    )
    quality_weight: float | None = field(
        default=None, metadata={"help": _override_help("MPO's BCO quality term")}
    )
    sft_weight: float | None = field(
        default=None, metadata={"help": _override_help("MPO's generation (SFT) term on the chosen answer")}
    )
    symmetric_weight: float | None = field(
        default=None, metadata={"help": _override_help("SymMPO's symmetric preference over the contrasting image")}
    )
    symmetric_anchor_weight: float | None = field(
        default=None, metadata={"help": _override_help("SymMPO's anchor on the contrasting answer under its image")}
    )
    margin_consistency_weight: float | None = field(
        default=None, metadata={"help": _override_help("SymMPO's margin-consistency regulariser")}
    )
    reference_cache: str | None = field(
        default=None,
        metadata={
            "help": "Parquet of the base model's summed log-probs per pair_id (written by "
            "mdpo_pipeline.training.reference.compute_reference_logprobs). When set, no reference forward runs "
            "during training; None computes the reference live every step."
        },
    )
    packed_rows: bool = field(
        default=True,
        metadata={
            "help": "Pack each batch's rows into padding-free sequences (training/packing.py) for the policy and the "
            "live reference, wherever the model type is proven (packing.PACKABLE); other types stay padded, with "
            "one warning. False pads every batch to its longest row."
        },
    )
    withhold_image: bool | None = field(
        default=None,
        metadata={
            "help": "Remove the image from every prompt, for policy and reference (no image token, no pixel "
            f"values). None: True exactly for method {TEXT_ONLY_METHOD!r}."
        },
    )

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float) or not 0 < self.beta < math.inf:
            raise ValueError(f"beta must be a positive number, got {self.beta!r}")
        if isinstance(self.delta, bool) or not isinstance(self.delta, int | float) or not math.isfinite(self.delta):
            raise ValueError(f"delta must be a finite number, got {self.delta!r}")
        for name in _WEIGHT_OVERRIDES:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf
            ):
                raise ValueError(f"{name} must be None or a finite number >= 0, got {value!r}")
        if self.pair_loss is not None and self.pair_loss not in PAIR_LOSS_TYPES:
            raise ValueError(f"pair_loss must be None or one of {PAIR_LOSS_TYPES}, got {str(self.pair_loss)[:80]!r}")
        if self.withhold_image is None:
            self.withhold_image = self.method == TEXT_ONLY_METHOD
        elif self.method == TEXT_ONLY_METHOD and not self.withhold_image:
            raise ValueError(f"method {TEXT_ONLY_METHOD!r} withholds the image: withhold_image cannot be False")
        if self.withhold_image and self.mdpo_weights.needs_corrupted:
            raise ValueError(
                f"withhold_image=True leaves no image to corrupt, but method {self.method!r} with these weights "
                "uses the corrupted image (conditional or anchor_corrupted weight > 0)"
            )
        if self.reference_cache is not None:
            self.reference_cache = os.fspath(self.reference_cache)
            if self.withhold_image:
                # The cache holds image-conditioned log-probs; a text-only reference is not cached.
                raise ValueError("reference_cache cannot be used with withhold_image=True: use the live reference")
            if self.sync_ref_model:
                raise ValueError("reference_cache assumes a fixed reference: it cannot be used with sync_ref_model")
        if self.precompute_ref_log_probs:
            raise ValueError("precompute_ref_log_probs is unsupported (TRL refuses it for images): use reference_cache")
        super().__post_init__()
        for name, required in _TRL_LOSS_DEFAULTS.items():
            if getattr(self, name) != required:
                raise ValueError(
                    f"MDPOConfig computes the mDPO loss itself: TRL's {name} must stay {required!r}, "
                    f"got {getattr(self, name)!r}"
                )

    def objective(self) -> dict[str, Any]:
        """The loss this config trains with, as ``mdpo params`` shows it: β, δ and the resolved loss weights."""
        return {"beta": self.beta, "delta": self.delta, "loss_weights": dataclasses.asdict(self.mdpo_weights)}

    @property
    def mdpo_weights(self) -> LossWeights:
        """The loss weights: the method's preset with the explicit overrides applied."""
        overrides = {
            attr: getattr(self, name) for name, attr in _WEIGHT_OVERRIDES.items() if getattr(self, name) is not None
        }
        if self.pair_loss is not None:
            overrides["pair_loss"] = self.pair_loss
        return dataclasses.replace(METHODS[self.method], **overrides)
