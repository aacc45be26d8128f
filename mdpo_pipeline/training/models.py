"""Model presets with real loading code, and LoRA over the language model.

Nothing here downloads: real checkpoints come from an explicit local path, ``$MDPO_MODEL_DIR/<name>`` or
an already-populated Hugging Face cache. No ShapeWorld here: the tiny ShapeWorld model is built, and its preset
registered, by ``mdpo_pipeline.shapeworld``; loading calls the preset's own ``setup``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import transformers
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from PIL import Image
from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as IMAGE_TEXT
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

from mdpo_pipeline.core.errors import ConfigError
from mdpo_pipeline.training.builder import narrow_config
from mdpo_pipeline.training.chat import check_chat_template, generation_prompt
from mdpo_pipeline.training.families import (
    FAMILIES,
    CheckpointError,
    family_of,
    get_family,
    image_only,
    processor_class,
    transformers_class,
)
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


#: Model types transformers loads as image-text-to-text that would train wrongly here, and why (the sweep of
#: every type, ``evaluation/model_sweep.py``, finds them).
UNTRAINABLE: dict[str, str] = {
    "paligemma": "a prefix-LM: its answer tokens must be marked as the suffix (token_type_ids 1) to attend "
    "causally, which the preference collator does not write; trained as it is, each answer token would see the "
    "ones after it",
}


class ModelUnavailable(ConfigError, RuntimeError):
    """The model's weights are not on this machine and cannot be fetched (offline)."""


class RemoteCodeNotAllowed(ConfigError, PermissionError):
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
    if preset.generic:
        raise ModelUnavailable(
            f"base_model.preset {preset.name!r} trains the checkpoint at base_model.path, and none is set: set "
            "base_model.path to the directory of a downloaded hub snapshot (config.json, *.safetensors, processor "
            "and tokenizer files)"
        )
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


def _read_config(path: Path) -> dict:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}/config.json cannot be read as JSON: {str(e)[:200]}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}/config.json is not a JSON object")
    return config


def checkpoint_model_type(path: str | os.PathLike) -> str | None:
    """The ``model_type`` of the checkpoint at ``path`` (None for a hub id not yet downloaded)."""
    return _read_config(Path(path)).get("model_type") if (Path(path) / "config.json").is_file() else None


def checkpoint_classes(path: str | os.PathLike) -> tuple[str, type]:
    """(model class name, processor class) of the checkpoint at ``path``, read from its own files: the class its
    config.json's ``architectures`` names when transformers maps its model type to image-text-to-text, else the
    one ``AutoModelForImageTextToText`` picks; the processor class its processor files name, else the model type's.
    Only transformers' own classes load this way (never the checkpoint's code). A checkpoint that cannot be trained
    this way is a CheckpointError naming the file and the reason."""
    path = Path(path)
    config = _read_config(path)
    model_type = config.get("model_type")
    where = f"{path}/config.json"
    if config.get("auto_map") and model_type not in IMAGE_TEXT:
        raise CheckpointError(
            f"{where}: model_type {str(model_type)[:80]!r} exists only as the checkpoint's own Python code "
            "(auto_map); base_model.preset auto loads transformers' own classes only. Review that code and add a "
            "preset with requires_remote_code=True for it"
        )
    if not isinstance(model_type, str) or model_type not in IMAGE_TEXT:
        raise CheckpointError(
            f"{where}: model_type {str(model_type)[:80]!r} is not an image-text-to-text model type of transformers "
            f"{transformers.__version__} (AutoModelForImageTextToText cannot load it); mDPO needs a model that "
            "answers in text about an image"
        )
    if model_type in UNTRAINABLE:
        raise CheckpointError(f"{where}: model_type {model_type!r} is not trained here: {UNTRAINABLE[model_type]}")
    if config.get("is_encoder_decoder"):
        raise CheckpointError(
            f"{where}: model_type {model_type!r} is an encoder-decoder model; the preference loss here scores a "
            "decoder-only model's answer tokens"
        )
    named = [a for a in config.get("architectures") or [] if a in set(IMAGE_TEXT.values())]
    model_class = named[0] if named else IMAGE_TEXT[model_type]
    processor_name = None
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        if (path / name).is_file():
            try:
                processor_name = json.loads((path / name).read_text()).get("processor_class")
            except (OSError, ValueError, AttributeError):
                processor_name = None
            if processor_name:
                break
    processor_name = processor_name or PROCESSOR_MAPPING_NAMES.get(model_type)
    cls = transformers_class(processor_name) if isinstance(processor_name, str) else None
    if cls is None:
        raise CheckpointError(
            f"{path}: no processor class for model_type {model_type!r} (its processor files name none that "
            f"transformers {transformers.__version__} has); an image needs a processor to become model inputs"
        )
    return model_class, image_only(cls)


def _check_processor_files(path: Path, preset: ModelPreset) -> None:
    source = f"hub snapshot of {preset.hf_id}" if preset.hf_id else "hub snapshot of the model"
    tokenizer_files = ("tokenizer.json", "tokenizer.model")
    if not any((path / name).is_file() for name in tokenizer_files):
        raise CheckpointError(
            f"{preset.name}: {path} has no tokenizer ({' or '.join(tokenizer_files)}): copy the whole {source}, "
            "processor files included, not only the weights"
        )
    image_files = ("preprocessor_config.json", "processor_config.json")
    if not any((path / name).is_file() for name in image_files):
        raise CheckpointError(
            f"{preset.name}: {path} has no image processor settings ({' or '.join(image_files)}): copy the whole "
            f"{source}"
        )


def check_checkpoint_dir(path: Path, preset: ModelPreset) -> None:
    """Stop before loading when ``path`` lacks a processor file, holds another family than ``preset``'s, or (for
    ``auto``) holds a model that cannot be trained here."""
    if preset.generic:
        _check_processor_files(path, preset)
        checkpoint_classes(path)
        found = _read_config(path).get("model_type")
        if preset.model_type is not None and found != preset.model_type:
            raise CheckpointError(
                f"base_model.preset {preset.name!r} expects a {preset.model_type} checkpoint, but {path}/config.json "
                f"says model_type {str(found)[:80]!r}; set base_model.preset: auto to load it by its own config"
            )
        return
    if preset.family not in FAMILIES:
        return  # a model built outside the families: its builder wrote it
    _check_processor_files(path, preset)
    found = family_of(path)
    if found != preset.family:
        model_type = str(_read_config(path).get("model_type"))[:80]
        what = f"a {found} checkpoint" if found else f"a checkpoint (model_type {model_type!r}) of no supported family"
        raise CheckpointError(
            f"base_model.preset {preset.name!r} expects a {preset.family} checkpoint, but {path}/config.json "
            f"describes {what}; supported families: {sorted(FAMILIES)} "
            f"(presets: {sorted(p.name for p in PRESETS.values() if p.family in FAMILIES)}), or set "
            "base_model.preset: auto to load it by its own config"
        )


def load_processor(preset: str | ModelPreset, source: str | os.PathLike, **kwargs):
    """The preset's processor from ``source`` with PIL image processing (identical pixels everywhere, no
    torchvision), its chat template checked to render an image turn."""
    preset = get_preset(preset)
    if preset.setup is not None:
        preset.setup()
    if preset.generic:
        cls = checkpoint_classes(source)[1]
    elif preset.classes:
        cls = getattr(transformers, preset.classes[1])
    else:
        cls = processor_class(get_family(preset.family))
    processor = cls.from_pretrained(source, backend="pil", **kwargs)
    check_chat_template(processor, where=f"{preset.name} at {source}")
    return processor


def check_base_model(preset: str | ModelPreset, path: str | os.PathLike | None = None, *,
                     allow_remote_code: bool = False) -> str:
    """Where ``preset``'s weights are (``resolve_model_path``), after every check that needs no weights: the
    directory's files, the family or model type, remote code, the processor and its chat template. The
    ``base_model`` stage calls it, so a checkpoint that cannot train stops there, not at the first forward."""
    preset = get_preset(preset)
    _check_remote_code(preset, allow_remote_code)
    source = resolve_model_path(preset, path)
    if Path(source).is_dir():
        check_checkpoint_dir(Path(source), preset)
        processor = load_processor(preset, source, **_remote(preset))
        if not preset.requires_remote_code:  # its classes are the repository's code, not run before it is loaded
            model_class = checkpoint_classes(source)[0] if preset.generic else preset.model_class
            check_image_tokens(source, processor, model_class, where=f"{preset.name} at {source}")
    return source


def check_image_tokens(source: str | os.PathLike, processor, model_class: str, where: str) -> None:
    """Stop with a message naming ``where`` unless the processor's image tokens fit the model's image features.

    A processor of another release (another patch or merge size, another image-token count) gives a prompt whose
    image tokens disagree with the features the model makes of the image. The check runs, without the weights,
    a copy of the model with tiny widths but the release's layers, vocabulary and image geometry
    (``builder.narrow_config``) on the processor's inputs for one non-square image turn: transformers' own
    tokens-versus-features check (or the merge's shapes) then fails here, at ``base_model``, rather than in
    training."""
    config = AutoConfig.from_pretrained(source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers_class(model_class)(narrow_config(config)).float().eval()
    image = Image.fromarray(np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (64, 1))).convert("RGB")
    inputs = processor(text=[generation_prompt(processor, "Describe the image.")], images=[[image]],
                       return_tensors="pt", add_special_tokens=False)
    try:
        with torch.no_grad():
            model(**inputs)
    except (ValueError, RuntimeError, IndexError) as e:
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{where}: the processor's image tokens do not fit the model's image features ({reason}); the "
            "processor files (preprocessor_config.json, processor_config.json) must be the same release's as "
            "config.json"
        ) from e


def _check_remote_code(preset: ModelPreset, allow_remote_code: bool) -> None:
    if preset.requires_remote_code and not allow_remote_code:
        raise RemoteCodeNotAllowed(
            f"{preset.name} ({preset.hf_id}) runs Python code from its hub repository (trust_remote_code). "
            "Review that code, then pass allow_remote_code=True to load it"
        )


def _remote(preset: ModelPreset) -> dict:
    """trust_remote_code only for a preset that opts in (``_check_remote_code`` has checked the user allowed it)."""
    return {"trust_remote_code": True} if preset.requires_remote_code else {}


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
    _check_remote_code(preset, allow_remote_code)
    source = resolve_model_path(preset, path)
    if Path(source).is_dir():
        check_checkpoint_dir(Path(source), preset)
    remote = _remote(preset)
    # The processor first: a checkpoint without usable processor files fails before gigabytes of weights load.
    processor = load_processor(preset, source, **remote)
    bnb = _quantization_config(quantization)
    dtype = getattr(torch, preset.dtype) if torch.cuda.is_available() else torch.float32
    model_class = checkpoint_classes(source)[0] if preset.generic else preset.model_class
    model = getattr(transformers, model_class).from_pretrained(
        source,
        dtype=dtype,
        use_safetensors=True,
        quantization_config=bnb,
        device_map=device_map if device_map is not None or bnb is None else "auto",
        **remote,
    )
    return model, processor


def language_model_linear_names(model: torch.nn.Module) -> list[str]:
    """Full names of the language model's linear layers: no vision tower, projector or lm_head (LoRA targets).

    The language model is the model's own decoder (``get_decoder()``, which every transformers VLM answers), found
    in the module tree, so no list of vision-part names has to know a new model type; a model without one (the
    tiny ShapeWorld model) falls back to leaving out NON_LANGUAGE_PARTS."""
    decoder = _decoder(model)
    if decoder is not None:
        prefix = next(name for name, module in model.named_modules() if module is decoder)
        return [f"{prefix}.{name}" if prefix else name
                for name, module in decoder.named_modules() if isinstance(module, torch.nn.Linear)]
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not NON_LANGUAGE_PARTS.intersection(name.split("."))
    ]


def _decoder(model: torch.nn.Module) -> torch.nn.Module | None:
    """The language model inside ``model`` when it names one that is a proper part of it, else None."""
    get_decoder = getattr(model, "get_decoder", None)
    try:
        decoder = get_decoder() if callable(get_decoder) else None
    except (AttributeError, NotImplementedError):
        return None
    if not isinstance(decoder, torch.nn.Module) or decoder is model:
        return None
    return decoder if any(module is decoder for _, module in model.named_modules()) else None


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
