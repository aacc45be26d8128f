"""The preference methods by name: which mDPO loss terms each one weights (core/losses.py computes them), and the
key of the base model beside them. Plain data without torch, so the Dagster definitions, the settings checks and
the report load it for free."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

TERMS = ("dpo", "conditional", "anchor", "anchor_rejected", "anchor_corrupted")
#: Terms beside mDPO's (core/objectives.py): MPO's quality and generation terms (bco_pair_loss, sft_loss) and
#: SymMPO's symmetric preference over a contrasting image and answer, its anchor and its margin consistency.
EXTRA_TERMS = ("quality", "sft", "symmetric", "symmetric_anchor", "margin_consistency")
#: SymMPO's terms: they read the contrasting answer y' under both images (the "contrast" views).
CONTRAST_TERMS = ("symmetric", "symmetric_anchor", "margin_consistency")
#: The base preference terms a method may put in the "dpo" slot, named like TRL's DPOConfig.loss_type
#: (core/objectives.PAIR_LOSSES computes them; a test keeps the two lists equal).
PAIR_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "apo_zero", "apo_down", "bco_pair")


@dataclass(frozen=True)
class LossWeights:
    """Weight of each loss term; a weight-0 term is skipped (dpo is still reported, outside the loss)."""

    dpo: float = 1.0  # chosen vs rejected answer, same image (the pair term: pair_loss)
    conditional: float = 0.0  # chosen answer: real vs corrupted image (CoPO)
    anchor: float = 0.0  # chosen reward kept above δ (AncPO)
    anchor_rejected: float = 0.0  # rejected reward pushed below δ (Table 4)
    anchor_corrupted: float = 0.0  # chosen-with-corrupted-image reward pushed below δ (Table 4)
    quality: float = 0.0  # MPO's quality term: BCO on each answer's reward against a running mean
    sft: float = 0.0  # MPO's generation term: the chosen answer's mean per-token negative log-prob
    symmetric: float = 0.0  # SymMPO: y ≻ y' under m and y' ≻ y under the contrasting image m'
    symmetric_anchor: float = 0.0  # SymMPO: the contrasting answer's reward under its own image kept above 0
    margin_consistency: float = 0.0  # SymMPO: the two symmetric margins kept equal, (h1 − h2)²
    pair_loss: str = "sigmoid"  # which PAIR_LOSS_TYPES term fills the dpo slot (sigmoid = DPO)

    def __post_init__(self) -> None:
        if self.pair_loss not in PAIR_LOSS_TYPES:
            raise ValueError(f"LossWeights.pair_loss must be one of {PAIR_LOSS_TYPES}, got {str(self.pair_loss)[:80]!r}")
        for f in fields(self):
            if f.name == "pair_loss":
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"LossWeights.{f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"LossWeights.{f.name} must be finite and >= 0, got {value!r}")
            # Store floats so asdict()/JSON of a config logs 1.0 whether the caller wrote 1 or 1.0.
            object.__setattr__(self, f.name, float(value))
        if not any(getattr(self, name) > 0 for name in (*TERMS, *EXTRA_TERMS)):
            raise ValueError("LossWeights: at least one weight must be > 0")

    @property
    def beyond_mdpo(self) -> bool:
        """Whether a term outside the mDPO family is in play: another pair term than DPO's, quality or SFT."""
        return self.pair_loss != "sigmoid" or any(getattr(self, t) > 0 for t in EXTRA_TERMS)

    @property
    def needs_corrupted(self) -> bool:
        """Whether some weighted term reads log-probs of the chosen answer given the corrupted image."""
        return self.conditional > 0 or self.anchor_corrupted > 0 or self.needs_contrast

    @property
    def needs_contrast(self) -> bool:
        """Whether some weighted term reads the contrasting answer y' (SymMPO), under the image and under m'."""
        return any(getattr(self, t) > 0 for t in CONTRAST_TERMS)


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
    # TRL's base preference losses in the pair slot, no image term: the text-preference baselines beside DPO.
    "ipo": LossWeights(pair_loss="ipo"),
    "hinge": LossWeights(pair_loss="hinge"),
    "apo_zero": LossWeights(pair_loss="apo_zero"),
    # MPO (InternVL 2.5, arXiv 2411.10442 §3): DPO 0.8 + BCO quality 0.2 + SFT generation 1.0, the authors' released
    # scripts' ``--sigmoid_loss_weight 0.8 --bco_pair_loss_weight 0.2 --rpo_alpha 1`` (TRL's docs give the same
    # ``loss_weights=[0.8, 0.2, 1.0]`` "as used in the MPO paper").
    "mpo": LossWeights(dpo=0.8, quality=0.2, sft=1.0),
    # mDPO's image terms over MPO's: does the conditional term add to a method that already has an SFT term?
    "mdpo_mpo": LossWeights(dpo=0.8, conditional=1.0, anchor=1.0, quality=0.2, sft=1.0),
    # CHiP (ICLR 2025, arXiv 2501.16629 §3): response-level DPO + the visual preference of the chosen answer under
    # the image over a diffusion-noised copy (objectives.chip_visual_loss: mDPO's conditional term over that
    # image, METHOD_CORRUPTION). CHiP's segment and token levels need answer-diff masks and full-vocabulary
    # logits and are not in this method; the authors' trainer sums the levels inside one −log σ (see there).
    "chip": LossWeights(dpo=1.0, conditional=1.0),
    # SymMPO (NeurIPS 2025, arXiv 2506.11712): DPO on (y_w, y_l | m), the symmetric preference over the contrasting
    # image m' and its answer y' at λ = 0.5, the anchors on r(y|m) and r(y'|m'), margin consistency 1e-4 — the
    # authors' released trainer's weights (objectives.symmpo_symmetric_loss).
    "symmpo": LossWeights(dpo=1.0, anchor=1.0, symmetric=0.5, symmetric_anchor=1.0, margin_consistency=1e-4),
}

#: The corrupted_images strategy a method's image term is defined over, where it is not the pipeline's own
#: (params.yaml:corrupted_images.strategy): the experiment grid makes that data for the method's cells.
METHOD_CORRUPTION: dict[str, str] = {"chip": "diffusion_noise", "symmpo": "counterfactual"}
