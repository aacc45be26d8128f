"""Model presets with real loading code, and LoRA over the language model.

Nothing here downloads: real checkpoints come from an explicit local path, ``$MDPO_MODEL_DIR/<name>`` or
an already-populated Hugging Face cache. No ShapeWorld here: the tiny ShapeWorld model is built, and its preset
registered, by ``mdpo_pipeline.shapeworld``; loading calls the preset's own ``setup``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import transformers
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

from mdpo_pipeline.training.chat import check_chat_template
from mdpo_pipeline.training.families import FAMILIES, CheckpointError, family_of, get_family, processor_class
from mdpo_pipeline.training.presets import PRESETS, ModelPreset, get_preset


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
#: families (LLaVA, Qwen2.5-VL, Gemma 3) and the output head, which LoRA must leave alone (docs/method.md,
#: "Training setup in the paper").
NON_LANGUAGE_PARTS = frozenset({"vision_tower", "vision_model", "visual", "multi_modal_projector", "lm_head"})


class ModelUnavailable(RuntimeError):
    """The model's weights are not on this machine and cannot be fetched (offline)."""


class RemoteCodeNotAllowed(PermissionError):
    """The model needs code from its hub repository and the caller did not opt in."""


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
    if preset.family not in FAMILIES:
        return  # a model built outside the families: its builder wrote it
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
            f"{sorted(p.name for p in PRESETS.values() if p.family in FAMILIES)})"
        )


def load_processor(preset: str | ModelPreset, source: str | os.PathLike, **kwargs):
    """The preset's processor from ``source`` with PIL image processing (identical pixels everywhere, no
    torchvision), its chat template checked to render an image turn."""
    preset = get_preset(preset)
    if preset.setup is not None:
        preset.setup()
    if preset.classes:
        cls = getattr(transformers, preset.classes[1])
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
