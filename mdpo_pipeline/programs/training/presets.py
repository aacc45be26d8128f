"""The base models the pipeline can align (presets) and their training defaults: plain data, cheap to import, so
params.yaml can be checked without loading torch. Loading lives in ``models.py``, families in ``families.py``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrainingDefaults:
    """Preference-training hyper-parameters that depend on the model's size."""

    epochs: int
    per_device_batch_size: int
    grad_accum: int
    learning_rate: float
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.05
    adam_beta2: float = 0.98
    bf16: bool = True
    gradient_checkpointing: bool = True
    max_length: int = 2048

    @property
    def batch_size(self) -> int:
        """Effective batch size per device: per-device batch × gradient accumulation."""
        return self.per_device_batch_size * self.grad_accum


#: The paper's Bunny/LLaVA run (FACTS §2): batch 32 = 4 × 8, lr 1e-5, 3 epochs.
PAPER_TRAINING = TrainingDefaults(epochs=3, per_device_batch_size=4, grad_accum=8, learning_rate=1e-5)
#: The tiny ShapeWorld model learns in minutes on CPU: larger lr and batch, one epoch, no memory savers.
#: lr 5e-4 because its rank-8 LoRA barely moves at 5e-5 in one epoch (1,500 pairs: reward margin 0.03 vs 0.28).
TINY_TRAINING = TrainingDefaults(
    epochs=1, per_device_batch_size=16, grad_accum=1, learning_rate=5e-4, bf16=False,
    gradient_checkpointing=False, max_length=256,
)


@dataclass(frozen=True)
class ModelPreset:
    """A base model the pipeline can align: where it comes from, how to load it and how to train it."""

    name: str
    hf_id: str | None  #: hub id; None for models the pipeline builds itself
    family: str  #: a VLM family of ``families.FAMILIES``, or "shapeworld" for the tiny model built here
    dtype: str = "bfloat16"  #: weights dtype on GPU; CPU loads use float32
    requires_remote_code: bool = False  #: loading runs the checkpoint's own Python code (trust_remote_code)
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    training: TrainingDefaults = field(default_factory=lambda: PAPER_TRAINING)
    note: str = ""
    #: modules of this package imported before loading: they register custom classes with transformers' Auto
    #: classes (named, not imported here, so real-model code never depends on the world that defines them)
    extensions: tuple[str, ...] = ()

    @property
    def model_class(self) -> str:
        """The transformers class the weights load into."""
        if self.family == SHAPEWORLD_FAMILY:
            return "LlavaForConditionalGeneration"
        from mdpo_pipeline.programs.training.families import get_family  # imports transformers: only when loading

        return get_family(self.family).model_class


SHAPEWORLD_FAMILY = "shapeworld"

#: Presets whose family has a tiny offline checkpoint test (tests/test_families.py) proving every pipeline step.
PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            "shapeworld-tiny", None, SHAPEWORLD_FAMILY, dtype="float32", lora_r=8, lora_alpha=16,
            training=TINY_TRAINING, extensions=("mdpo_pipeline.shapeworld.vision",),
            note="the tiny LLaVA after ShapeWorld SFT, written by mdpo_pipeline.shapeworld.sft.train_base_model",
        ),
        ModelPreset(
            "llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", "llava-1.5",
            note="CLIP ViT-L/336 + Vicuna-7B, the Hugging Face port of LLaVA-v1.5-7B (the paper's model)",
        ),
        ModelPreset(
            "qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2.5-vl",
            note="not in the paper: a current 3B VLM with dynamic image resolution",
        ),
        ModelPreset(
            "qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl",
            note="not in the paper: Qwen2.5-VL at the paper's LLaVA size",
        ),
        ModelPreset(
            "gemma-3-4b", "google/gemma-3-4b-it", "gemma-3",
            note="not in the paper: Gemma 3 (SigLIP tower, bidirectional attention over image tokens)",
        ),
    )
}


def get_preset(preset: str | ModelPreset) -> ModelPreset:
    """The preset itself, or the one registered under that name."""
    if isinstance(preset, ModelPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise KeyError(f"unknown model preset {preset!r}; known: {sorted(PRESETS)}") from None


@dataclass(frozen=True)
class SFTSettings:
    """Settings of the base model's supervised fine-tune."""

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0
    max_len: int = 160  #: tokens per example, image tokens included; longer examples are cut at the end
    cooccurrence_bias: float = 0.5  #: chance a caption names the absent partner B after a shown A
    describe_share: float = 0.7  #: share of examples that are captions; the rest answer the row's question
    detailed: bool = False  #: captions in VLFeedback's words ("a small red star at the top left") or short
    warmup_share: float = 0.05
    weight_decay: float = 0.01
    eval_images: int = 50  #: held-out images (the truth file's last rows) for the greedy eval
    vision_aux_weight: float = 1.0  #: weight of the tower's per-cell object/colour loss (0 turns it off)
    vision_pretrain_steps: int = 1500  #: steps of that loss alone before the SFT, as a real VLM's encoder is pretrained
    vision_pretrain_batch_size: int = 64  #: images per vision pretraining step
    threads: int | None = None  #: torch CPU threads; None keeps torch's default

    def __post_init__(self):
        if self.vision_pretrain_steps < 0 or self.vision_pretrain_batch_size < 1:
            raise ValueError("vision_pretrain_steps must be >= 0 and vision_pretrain_batch_size >= 1")
        for name in ("steps", "batch_size", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("cooccurrence_bias", "describe_share", "warmup_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.eval_images < 0 or self.vision_aux_weight < 0:
            raise ValueError("learning_rate must be > 0, eval_images >= 0 and vision_aux_weight >= 0")
