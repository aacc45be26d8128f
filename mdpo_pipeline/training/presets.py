"""The base models the pipeline can align (presets) and their training defaults: plain data, cheap to import, so
params.yaml can be checked without loading torch. Loading lives in ``models.py``, families in ``families.py``.

``PRESETS`` holds the hub models. A model that a higher layer builds itself (the project's tiny ShapeWorld model)
adds its preset with ``register_preset``; this layer knows nothing of it beyond what the preset says."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mdpo_pipeline.core.errors import shown


@dataclass(frozen=True)
class TrainingDefaults:
    """Preference-training hyper-parameters that depend on the model's size: the MDPOConfig values a run of this
    preset gets unless its run config (params.yaml:training) sets them (``mdpo_config`` names them as MDPOConfig
    does)."""

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

    def mdpo_config(self, cuda: bool) -> dict[str, Any]:
        """These defaults as MDPOConfig keyword arguments; bf16 and gradient checkpointing only on a CUDA device."""
        return {
            "num_train_epochs": self.epochs,
            "per_device_train_batch_size": self.per_device_batch_size,
            "gradient_accumulation_steps": self.grad_accum,
            "learning_rate": self.learning_rate,
            "lr_scheduler_type": self.lr_scheduler,
            "warmup_steps": self.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
            "weight_decay": self.weight_decay,
            "adam_beta2": self.adam_beta2,
            "bf16": cuda and self.bf16,
            "activation_checkpointing": cuda and self.gradient_checkpointing,  # transformers 5 name
            "max_length": self.max_length,
        }


#: The paper's Bunny/LLaVA run (docs/method.md, "Training setup in the paper"): batch 32 = 4 × 8, lr 1e-5, 3 epochs.
PAPER_TRAINING = TrainingDefaults(epochs=3, per_device_batch_size=4, grad_accum=8, learning_rate=1e-5)


@dataclass(frozen=True)
class ModelPreset:
    """A base model the pipeline can align: where it comes from, how to load it and how to train it."""

    name: str
    hf_id: str | None  #: hub id; None for models the pipeline builds itself and for ``auto``
    #: a VLM family of ``families.FAMILIES``; GENERIC: whatever the checkpoint's own files say; or the name of a
    #: model built outside them
    family: str
    dtype: str = "bfloat16"  #: weights dtype on GPU; CPU loads use float32
    requires_remote_code: bool = False  #: loading runs the checkpoint's own Python code (trust_remote_code)
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    training: TrainingDefaults = field(default_factory=lambda: PAPER_TRAINING)
    note: str = ""
    #: a model built outside ``families.FAMILIES``: its transformers model and processor classes
    classes: tuple[str, str] | None = None
    #: called before loading: registers the model's own classes with transformers' Auto classes
    setup: Callable[[], None] | None = field(default=None, compare=False)
    #: a generic preset's transformers model type (its checkpoint's config.json must say it); None: any (``auto``)
    model_type: str | None = None

    @property
    def generic(self) -> bool:
        """Whether the classes and tokens come from the checkpoint's own files (``auto``), not from this preset."""
        return self.family == GENERIC

    @property
    def built_here(self) -> bool:
        """Whether the pipeline builds this model itself (no hub id, not a checkpoint the user points at)."""
        return self.hf_id is None and not self.generic

    @property
    def model_class(self) -> str:
        """The transformers class the weights load into (a generic preset's is read from its checkpoint)."""
        if self.generic:
            raise ValueError(f"{self.name}: the model class is read from the checkpoint (models.checkpoint_classes)")
        if self.classes:
            return self.classes[0]
        from mdpo_pipeline.training.families import get_family  # imports transformers: only when loading

        return get_family(self.family).model_class


#: The family of the preset that trains any image-text-to-text checkpoint transformers loads.
GENERIC = "auto"

#: Presets whose family has a tiny offline checkpoint test (tests/test_families.py) proving every pipeline step.
PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
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


#: Not a hub model but any checkpoint the user points at: everything model-specific is read from its own files.
AUTO = ModelPreset(
    GENERIC, None, GENERIC,
    note="any image-text-to-text checkpoint at base_model.path: its model and processor classes, image tokens and "
    "stop tokens are read from its own config and processor files (the paper's LoRA and training defaults)",
)


#: Hub models of the model types proven on the generic path (tests/test_model_types.py): a hub id, the paper's
#: training defaults, nothing model-specific; each loads as ``auto`` does and checks its checkpoint's model type.
MODEL_TYPE_PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset("qwen3-vl-8b", "Qwen/Qwen3-VL-8B-Instruct", GENERIC, model_type="qwen3_vl",
                    note="not in the paper: Qwen3-VL (DeepStack visual features, interleaved M-RoPE)"),
        ModelPreset("qwen2-vl-7b", "Qwen/Qwen2-VL-7B-Instruct", GENERIC, model_type="qwen2_vl",
                    note="not in the paper: Qwen2-VL, dynamic resolution with M-RoPE"),
        ModelPreset("internvl3.5-8b", "OpenGVLab/InternVL3_5-8B-HF", GENERIC, model_type="internvl",
                    note="not in the paper: InternVL3.5 in transformers' own format (the -HF release)"),
        ModelPreset("llava-onevision-7b", "llava-hf/llava-onevision-qwen2-7b-ov-hf", GENERIC,
                    model_type="llava_onevision", note="not in the paper: LLaVA-OneVision, any-resolution tiles"),
        ModelPreset("idefics3-8b", "HuggingFaceM4/Idefics3-8B-Llama3", GENERIC, model_type="idefics3",
                    note="not in the paper: Idefics3, image splitting with a pixel-shuffle connector"),
        ModelPreset("llama-3.2-11b-vision", "meta-llama/Llama-3.2-11B-Vision-Instruct", GENERIC,
                    model_type="mllama", note="not in the paper: Llama 3.2 Vision, cross-attention to the image "
                    "(a gated hub repository: accept its licence before downloading)"),
        ModelPreset("mistral-small-3.1-24b", "mistralai/Mistral-Small-3.1-24B-Instruct-2503", GENERIC,
                    model_type="mistral3", note="not in the paper: Mistral Small 3.1, Pixtral vision tower at each "
                    "image's own aspect ratio"),
        ModelPreset("aya-vision-8b", "CohereLabs/aya-vision-8b", GENERIC, model_type="aya_vision",
                    note="not in the paper: Aya Vision, multilingual (CC-BY-NC licence)"),
    )
}


def register_preset(preset: ModelPreset) -> ModelPreset:
    """Add a preset built outside this layer to ``PRESETS`` (again with the same preset: nothing happens)."""
    if PRESETS.setdefault(preset.name, preset) != preset:
        raise ValueError(f"model preset {preset.name!r} is registered already, as another model")
    return preset


def get_preset(preset: str | ModelPreset) -> ModelPreset:
    """The preset itself, or the one registered under that name."""
    if isinstance(preset, ModelPreset):
        return preset
    if preset == GENERIC:
        return AUTO
    found = PRESETS.get(preset) or MODEL_TYPE_PRESETS.get(preset)
    if found is None:
        known = sorted([*PRESETS, *MODEL_TYPE_PRESETS, GENERIC])
        raise KeyError(f"unknown model preset {shown(preset)}; known: {known}")
    return found

