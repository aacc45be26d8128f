"""Model presets with real loading code, and LoRA over the language model.

Nothing here downloads: real checkpoints come from an explicit local path, ``$MDPO_MODEL_DIR/<name>`` or
an already-populated Hugging Face cache. No ShapeWorld here: the tiny ShapeWorld model is built in ``tiny.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers

from mdpo_pipeline.training.chat import check_chat_template
from mdpo_pipeline.training.families import FAMILIES, CheckpointError, family_of, get_family, processor_class

def save_model(model, processor, out_dir: str | Path) -> Path:
    """Save model weights (safetensors) and processor into ``out_dir``."""
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    # A call with padding_side="left" (batched generation) leaves that padding in the Rust tokenizer, and
    # tokenizer.json would persist it: a reloaded processor would then left-pad calls that did not ask for it.
    processor.tokenizer.backend_tokenizer.no_padding()
    processor.tokenizer.backend_tokenizer.no_truncation()
    processor.save_pretrained(out)
    return out


# --- presets ------------------------------------------------------------------------------------

MODEL_DIR_ENV = "MDPO_MODEL_DIR"

#: Module-path components that are NOT the language model: vision towers and projectors of the supported
#: families (LLaVA, Qwen2.5-VL, Gemma 3) and the output head, which LoRA must leave alone (FACTS §2).
NON_LANGUAGE_PARTS = frozenset({"vision_tower", "vision_model", "visual", "multi_modal_projector", "lm_head"})


class ModelUnavailable(RuntimeError):
    """The model's weights are not on this machine and cannot be fetched (offline)."""


class RemoteCodeNotAllowed(PermissionError):
    """The model needs code from its hub repository and the caller did not opt in."""


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

    @property
    def model_class(self) -> str:
        """The transformers class the weights load into."""
        return "LlavaForConditionalGeneration" if self.family == SHAPEWORLD_FAMILY else get_family(self.family).model_class


SHAPEWORLD_FAMILY = "shapeworld"

#: Presets whose family has a tiny offline checkpoint test (tests/test_families.py) proving every pipeline step.
PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            "shapeworld-tiny", None, SHAPEWORLD_FAMILY, dtype="float32", lora_r=8, lora_alpha=16,
            training=TINY_TRAINING,
            note="the tiny LLaVA after ShapeWorld SFT, written by mdpo_pipeline.training.sft.train_base_model",
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


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def _check_local(path: Path, preset: ModelPreset) -> Path:
    if not (path / "config.json").is_file():
        raise ModelUnavailable(f"{preset.name}: {path} is not a model directory (no config.json)")
    if not any(path.glob("*.safetensors")):
        raise ModelUnavailable(
            f"{preset.name}: {path} has no *.safetensors weights; only safetensors are loaded (pickled .bin "
            "checkpoints can execute code)"
        )
    return path


def resolve_model_path(preset: str | ModelPreset, path: str | os.PathLike | None = None) -> str:
    """Where to load ``preset`` from: ``path``, else ``$MDPO_MODEL_DIR/<name>``, else the offline HF cache."""
    preset = get_preset(preset)
    if path is not None:
        return str(_check_local(Path(path).expanduser(), preset))
    if (root := os.environ.get(MODEL_DIR_ENV)) and (Path(root) / preset.name).is_dir():
        return str(_check_local(Path(root).expanduser() / preset.name, preset))
    if preset.hf_id is None:
        raise ModelUnavailable(
            f"{preset.name}: no local copy; {preset.note}. Pass its output directory as path, or put it at "
            f"${MODEL_DIR_ENV}/{preset.name}"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return str(_check_local(Path(snapshot_download(preset.hf_id, local_files_only=True)), preset))
    except LocalEntryNotFoundError:
        if not _offline():
            return preset.hf_id  # online: from_pretrained downloads it
    raise ModelUnavailable(
        f"{preset.name}: model {preset.hf_id!r} is not on this machine and the hub is offline (HF_HUB_OFFLINE=1). "
        f"On a machine with network run `huggingface-cli download {preset.hf_id} --local-dir <dir>`, copy <dir> "
        f"here, then pass path=<dir> or set {MODEL_DIR_ENV} so that ${MODEL_DIR_ENV}/{preset.name} is that copy"
    )


def _quantization_config(quantization: str | None):
    if quantization is None:
        return None
    if quantization != "4bit":
        raise ValueError(f"quantization must be None or '4bit', got {quantization!r}")
    if not torch.cuda.is_available():
        raise RuntimeError("4-bit (QLoRA) loading needs a CUDA GPU; none is available")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise RuntimeError("4-bit (QLoRA) loading needs bitsandbytes: pip install bitsandbytes") from e
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
        # The vision side and head stay in bf16: LoRA does not train them and 4-bit hurts them most.
        llm_int8_skip_modules=sorted(NON_LANGUAGE_PARTS),
    )


def check_checkpoint_dir(path: Path, preset: ModelPreset) -> None:
    """Stop before loading when ``path`` lacks a processor file or holds another family than ``preset``'s."""
    if preset.family == SHAPEWORLD_FAMILY:
        return
    tokenizer_files = ("tokenizer.json", "tokenizer.model")
    if not any((path / name).is_file() for name in tokenizer_files):
        raise CheckpointError(
            f"{preset.name}: {path} has no tokenizer ({' or '.join(tokenizer_files)}): copy the whole hub snapshot "
            f"of {preset.hf_id}, processor files included, not only the weights"
        )
    image_files = ("preprocessor_config.json", "processor_config.json")
    if not any((path / name).is_file() for name in image_files):
        raise CheckpointError(
            f"{preset.name}: {path} has no image processor settings ({' or '.join(image_files)}): copy the whole "
            f"hub snapshot of {preset.hf_id}"
        )
    found = family_of(path)
    if found != preset.family:
        what = f"a {found} checkpoint" if found else "a checkpoint of no supported family"
        raise CheckpointError(
            f"base_model.preset {preset.name!r} expects a {preset.family} checkpoint, but {path}/config.json "
            f"describes {what}; supported families: {sorted(FAMILIES)} (presets: "
            f"{sorted(p.name for p in PRESETS.values() if p.family != SHAPEWORLD_FAMILY)})"
        )


def load_processor(preset: str | ModelPreset, source: str | os.PathLike, **kwargs):
    """The preset's processor from ``source`` with PIL image processing (identical pixels everywhere, no
    torchvision), its chat template checked to render an image turn."""
    preset = get_preset(preset)
    if preset.family == SHAPEWORLD_FAMILY:
        import mdpo_pipeline.training.vision  # noqa: F401  registers the CNN tower with the Auto classes

        cls = transformers.LlavaProcessor
    else:
        cls = processor_class(get_family(preset.family))
    processor = cls.from_pretrained(source, backend="pil", **kwargs)
    check_chat_template(processor, where=f"{preset.name} at {source}")
    return processor


def load_model_and_processor(
    preset: str | ModelPreset,
    path: str | os.PathLike | None = None,
    *,
    allow_remote_code: bool = False,
    quantization: str | None = None,
    device_map=None,
):
    """Load a preset's model (safetensors only) and processor from local files; return (model, processor)."""
    preset = get_preset(preset)
    if preset.requires_remote_code and not allow_remote_code:
        raise RemoteCodeNotAllowed(
            f"{preset.name} ({preset.hf_id}) runs Python code from its hub repository (trust_remote_code). "
            "Review that code, then pass allow_remote_code=True to load it"
        )
    source = resolve_model_path(preset, path)
    if Path(source).is_dir():
        check_checkpoint_dir(Path(source), preset)
    remote = {"trust_remote_code": True} if preset.requires_remote_code else {}
    # The processor first: a checkpoint without usable processor files fails before gigabytes of weights load.
    processor = load_processor(preset, source, **remote)
    if preset.family == SHAPEWORLD_FAMILY:
        import mdpo_pipeline.training.vision  # noqa: F401  registers the CNN tower with the Auto classes
    bnb = _quantization_config(quantization)
    dtype = getattr(torch, preset.dtype) if torch.cuda.is_available() else torch.float32
    model = getattr(transformers, preset.model_class).from_pretrained(
        source,
        dtype=dtype,
        use_safetensors=True,
        quantization_config=bnb,
        device_map=device_map if device_map is not None or bnb is None else "auto",
        **remote,
    )
    return model, processor


def language_model_linear_names(model: torch.nn.Module) -> list[str]:
    """Full names of the language model's linear layers: no vision tower, projector or lm_head (LoRA targets)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not NON_LANGUAGE_PARTS.intersection(name.split("."))
    ]


def lora_config(model, preset: str | ModelPreset, r: int | None = None, alpha: int | None = None):
    """The paper's LoRA over ``model``'s language-model linear layers (preset r/α unless given)."""
    from peft import LoraConfig

    preset = get_preset(preset)
    targets = language_model_linear_names(model)
    if not targets:
        raise ValueError(f"{type(model).__name__} has no language-model linear layers to adapt")
    return LoraConfig(
        r=r or preset.lora_r,
        lora_alpha=alpha or preset.lora_alpha,
        lora_dropout=preset.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def apply_lora(model, preset: str | ModelPreset, r: int | None = None, alpha: int | None = None):
    """Wrap ``model`` in a PEFT LoRA model over its language model's linear layers; everything else frozen."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    preset = get_preset(preset)
    config = lora_config(model, preset, r, alpha)
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=preset.training.gradient_checkpointing
        )
    peft_model = get_peft_model(model, config)
    for name, param in peft_model.named_parameters():
        param.requires_grad = "lora_" in name
    return peft_model
