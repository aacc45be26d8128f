"""SFTSettings: the supervised fine-tune that builds the tiny ShapeWorld base model (params.yaml:base_model.sft).

Plain data, no torch: params.yaml is checked without loading the model code (``sft.py`` runs the fine-tune).
These defaults are the only ones: params.yaml may restate them, never replace them with others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mdpo_pipeline.core.errors import shown


def _help(text: str, **bounds) -> dict:
    return {"help": text, **bounds}


@dataclass(frozen=True)
class SFTSettings:
    """Settings of the tiny base model's supervised fine-tune (captions and short answers on ShapeWorld)."""

    steps: int = field(default=800, metadata=_help("optimizer steps of the caption/answer fine-tune", ge=1))
    batch_size: int = field(default=32, metadata=_help("examples per step", ge=1))
    learning_rate: float = field(default=2e-3, metadata=_help("peak learning rate (linear warm-up, cosine decay)",
                                                              gt=0))
    seed: int = field(default=0, metadata=_help("seeds the weights, the example order and the captions"))
    max_len: int = field(default=160, metadata=_help(
        "tokens per example, image tokens included; longer examples are cut at the end", ge=1))
    cooccurrence_bias: float = field(default=0.5, metadata=_help(
        "chance a caption names the absent partner B after a shown A (the planted language prior)", ge=0, le=1))
    describe_share: float = field(default=0.7, metadata=_help(
        "share of examples that are captions; the rest answer the row's question", ge=0, le=1))
    detailed: bool = field(default=True, metadata=_help(
        "captions in the preference data's own words (\"a small red star at the top left\") rather than short ones, "
        "so preference training acts on the style the model answers in"))
    warmup_share: float = field(default=0.05, metadata=_help("share of the steps spent warming up the learning rate",
                                                             ge=0, le=1))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay", ge=0))
    eval_images: int = field(default=50, metadata=_help(
        "held-out images (the truth file's last rows) for the greedy evaluation after training", ge=0))
    vision_aux_weight: float = field(default=1.0, metadata=_help(
        "weight of the vision tower's per-cell object/colour loss (0 turns it off)", ge=0))
    vision_pretrain_steps: int = field(default=1500, metadata=_help(
        "steps of that loss alone before the fine-tune, as a real VLM's encoder is pretrained", ge=0))
    vision_pretrain_batch_size: int = field(default=64, metadata=_help("images per vision pretraining step", ge=1))
    threads: int | None = field(default=None, metadata=_help("torch CPU threads; null keeps torch's default", ge=1))

    def __post_init__(self):
        if self.vision_pretrain_steps < 0 or self.vision_pretrain_batch_size < 1:
            raise ValueError("vision_pretrain_steps must be >= 0 and vision_pretrain_batch_size >= 1")
        for name in ("steps", "batch_size", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {shown(getattr(self, name))}")
        for name in ("cooccurrence_bias", "describe_share", "warmup_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {shown(getattr(self, name))}")
        if self.learning_rate <= 0 or self.eval_images < 0 or self.vision_aux_weight < 0:
            raise ValueError("learning_rate must be > 0, eval_images >= 0 and vision_aux_weight >= 0")
