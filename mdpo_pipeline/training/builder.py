"""Tiny random-initialised checkpoints of any transformers vision-language model type, in the hub's layout, offline.

``build_tiny(model_type)`` takes the real config class of a ``model_type`` (a key of transformers'
image-text-to-text mapping), shrinks every size in it and its sub-configs generically (widths, layers, heads,
experts, vocabulary, image size) while keeping its mechanisms (GQA, M-RoPE, sliding/full layer patterns, token
merging, tiling), and pairs the real model class with the real processor class, a byte-level BPE tokenizer and a
short chat template. It is what tests use instead of hub weights, which are not reachable here.

What cannot be read off transformers' classes (which tokens a processor looks up, how a release writes a chat
turn) is one declarative table, ``_TYPES``; the types it cannot build are in ``NOT_BUILT`` with the reason.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import CONFIG_MAPPING
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

from mdpo_pipeline.training.families import (
    CheckpointError,
    Family,
    build_tokenizer,
    image_only,
    reinit_zeros,
    transformers_class,
)

WIDTH, HEADS, HEAD_DIM, LAYERS, EXPERTS = 64, 4, 16, 2, 4
#: Patches per image side by default: divisible by every 2x token merge/pooling the types use.
PATCHES_PER_SIDE = 4
MAX_PATCH = 16  #: px; larger patches (Idefics3's 32) shrink to this, so that images stay <= 64 px


# --- chat formats -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chat:
    """How a release writes a turn: role prefixes, the end-of-turn token, and its tokenizer's roles."""

    tokens: dict[str, str]  #: bos/eos/pad/unk → token
    user: str  #: prefix of a non-assistant turn (jinja: may print the role)
    assistant: str  #: prefix of an assistant turn, and the generation prompt
    end: str  #: end-of-turn token written after an answer (what generation stops at)
    sep: str = "\n"
    user_end: str | None = None  #: after a user turn, when it differs from ``end``
    add_bos: bool = False  #: the tokenizer prepends <bos> itself
    writes_bos: bool = False  #: the template writes <bos> itself


_ROLE = "{{ m['role'] }}"
CHATS = {
    # llava-hf's Vicuna format: USER:/ASSISTANT:, answers end with </s>.
    "vicuna": Chat({"bos": "<s>", "eos": "</s>", "unk": "<unk>", "pad": "<pad>"}, "{{ m['role'].upper() }}: ",
                   "ASSISTANT: ", "</s>", sep=" ", user_end="", add_bos=True),
    "chatml": Chat({"eos": "<|im_end|>", "pad": "<|endoftext|>"}, f"<|im_start|>{_ROLE}\n",
                   "<|im_start|>assistant\n", "<|im_end|>"),
    "gemma": Chat({"bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pad": "<pad>"},
                  f"<start_of_turn>{_ROLE}\n", "<start_of_turn>model\n", "<end_of_turn>", add_bos=True,
                  writes_bos=True),
    # SmolVLM / Idefics3: the template opens with <|im_start|>, turns end with <end_of_utterance>.
    "idefics": Chat({"bos": "<|im_start|>", "eos": "<end_of_utterance>", "pad": "<|im_end|>", "unk": "<|endoftext|>"},
                    "{{ m['role'] | capitalize }}:", "Assistant:", "<end_of_utterance>", writes_bos=True),
    "llama3": Chat({"bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": "<|finetune_right_pad_id|>"},
                   f"<|start_header_id|>{_ROLE}<|end_header_id|>\n\n",
                   "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", sep="", add_bos=True,
                   writes_bos=True),
    "cohere": Chat({"bos": "<BOS_TOKEN>", "eos": "<|END_OF_TURN_TOKEN|>", "pad": "<PAD>", "unk": "<UNK>"},
                   "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>", "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
                   "<|END_OF_TURN_TOKEN|>", sep="", add_bos=True, writes_bos=True),
    # Mistral's [INST] format: no assistant prefix, answers end with </s>.
    "mistral": Chat({"bos": "<s>", "eos": "</s>", "unk": "<unk>", "pad": "<pad>"}, "[INST]", "", "</s>", sep="",
                    user_end="[/INST]", add_bos=True, writes_bos=True),
    # PaliGemma has no chat format: its processor puts <bos> after the image and "\n" after the prompt.
    "paligemma": Chat({"bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pad": "<pad>"}, "", "", "<eos>", sep="",
                      user_end="", add_bos=True),
}


def chat_template(chat: Chat, image: str) -> str:
    """A jinja chat template in ``chat``'s format, images written as ``image``, answers in generation blocks."""
    body = ("{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
            f"{{% if c['type'] == 'image' %}}{image}{{% elif c['type'] == 'text' %}}{{{{ c['text'] }}}}"
            "{% endif %}{% endfor %}{% endif %}")
    user_end = chat.end if chat.user_end is None else chat.user_end
    return ("{{ bos_token }}" * chat.writes_bos + "{% for m in messages %}{% if m['role'] == 'assistant' %}"
            f"{chat.assistant}{{% generation %}}{body}{chat.end}{{% endgeneration %}}{chat.sep}"
            f"{{% else %}}{chat.user}{body}{user_end}{chat.sep}{{% endif %}}{{% endfor %}}"
            f"{{% if add_generation_prompt %}}{chat.assistant}{{% endif %}}")


# --- what each type needs that transformers' classes do not say ------------------------------------------------


@dataclass(frozen=True)
class _Type:
    """What one model type needs that its transformers classes do not say."""

    chat: str  #: key of CHATS
    image: str  #: what the template writes for an image (the placeholder the processor expands)
    named: dict[str, str] = field(default_factory=dict)  #: tokenizer attributes the processor reads
    extra: tuple[str, ...] = ()  #: further tokens the processor converts to ids
    processor: dict[str, Any] = field(default_factory=dict)  #: processor arguments no config value gives
    ids: dict[str, str] = field(default_factory=dict)  #: config token-id stems not in ``named`` → token
    tiles: int = 2  #: a longest-edge image processor's image side in tiles (Idefics3 splits 2x2; Pixtral takes 1)


_QWEN = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
         "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
_IDEFICS_EXTRA = ("<fake_token_around_image>", "<image>", "<global-img>",
                  *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)))

_TYPES: dict[str, _Type] = {
    # CLIP's class token is one vision position more than its patches: the processor must count it.
    "llava": _Type("vicuna", "<image>\n", {"image_token": "<image>"}, processor={"num_additional_image_tokens": 1}),
    # As llava, with each image also cut into tiles of the config's grid pinpoints.
    "llava_next": _Type("vicuna", "<image>\n", {"image_token": "<image>"},
                        processor={"num_additional_image_tokens": 1}),
    # A Qwen2 language model: ChatML turns around LLaVA's <image> placeholder.
    "llava_onevision": _Type("chatml", "<image>\n", {"image_token": "<image>", "video_token": "<video>"}),
    # The processor reads the image/video pads and vision start/end markers off the tokenizer.
    "qwen2_vl": _Type("chatml", _QWEN_IMAGE, _QWEN),
    "qwen2_5_vl": _Type("chatml", _QWEN_IMAGE, _QWEN),
    "qwen3_vl": _Type("chatml", _QWEN_IMAGE, _QWEN),
    "qwen3_vl_moe": _Type("chatml", _QWEN_IMAGE, _QWEN),
    # The template writes <start_of_image>; the processor expands it to soft tokens between boi and eoi.
    "gemma3": _Type("gemma", "<start_of_image>", {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                                                  "eoi_token": "<end_of_image>"}),
    # The processor converts <fake_token_around_image>, <global-img> and the tiles' row/col tags to ids.
    "idefics3": _Type("idefics", "<image>", extra=_IDEFICS_EXTRA, ids={"image_token": "<image>"}),
    # The processor wraps <IMG_CONTEXT> tokens (the config's image token) in <img>...</img>.
    "internvl": _Type("chatml", "<IMG_CONTEXT>\n", {"start_image_token": "<img>", "end_image_token": "</img>",
                                                    "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
                        ids={"image_token": "<IMG_CONTEXT>"}),
    # One <|image|> per image, which the cross-attention layers read.
    "mllama": _Type("llama3", "<|image|>", {"image_token": "<|image|>"}),
    # Pixtral's tower: the processor expands [IMG] into rows of [IMG] ending in [IMG_BREAK], the last [IMG_END];
    # images keep their aspect ratio and are sent with their image_sizes.
    "mistral3": _Type("mistral", "[IMG]", extra=("[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"),
                      ids={"image_token": "[IMG]"}, tiles=1),
    # No chat format: the processor puts the image tokens first, then <bos>, the prompt and "\n".
    "paligemma": _Type("paligemma", "<image>", {"image_token": "<image>"}),
    # The processor expands <image> into <|IMG_PATCH|> tokens (the config's image token) between tile tags.
    "aya_vision": _Type("cohere", "<image>", extra=("<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>",
                                                    "<|IMG_LINE_BREAK|>", "TILE", "TILE_GLOBAL"),
                        ids={"image_token": "<|IMG_PATCH|>"}),
}

#: The model types ``build_tiny`` makes.
MODEL_TYPES: tuple[str, ...] = tuple(_TYPES)

#: Model types of the image-text-to-text mapping this builder cannot make, and why.
NOT_BUILT: dict[str, str] = {
    "smolvlm": "SmolVLMProcessor.apply_chat_template reads its video processor's frame settings even for an "
               "image-only chat, and that video processor needs torchvision (not installed); it also needs the "
               "num2words package",
    "gemma3n": "its vision tower is timm's MobileNetV5 (TimmWrapperModel), and timm is not installed",
    "gemma4": "its default config has no vision tower (vision_config=None) and per-layer overrides keyed by the "
              "release's 30 layer indices, which the generic shrinking cannot rescale yet",
}


# --- shrinking a config ---------------------------------------------------------------------------------------------

_WIDTHS = {"hidden_size", "embed_dim", "out_hidden_size", "projection_dim", "text_hidden_size"}
_LAYERS = {"num_hidden_layers", "depth", "num_layers"}
_HEADS = {"num_attention_heads", "num_heads", "attention_heads"}
_LAYER_INDEXES = {"fullatt_block_indexes", "deepstack_visual_indexes", "intermediate_layers_indices",
                  "cross_attention_layers"}


def _patch(vision: dict) -> int:
    p = vision.get("patch_size", 14)
    return p[0] if isinstance(p, list) else p


def _rescale_indexes(indexes: list[int], old: int, new: int) -> list[int]:
    # Keep the special layers' share and late position: 8 cross-attention layers of 40 become the last of 2.
    scaled = sorted({min(new - 1, i * new // max(old, 1)) for i in indexes})
    return scaled[-max(1, round(len(indexes) * new / max(old, 1))):]


_GEOMETRY = {*_LAYERS, *_LAYER_INDEXES, "mlp_only_layers", "layer_types", "num_global_layers", "image_size",
             "patch_size", "num_position_embeddings", "mm_tokens_per_image", "image_grid_pinpoints"}


def _shrink(d: dict, role: str, side: int | None, patch: int | None) -> dict:
    """``d`` (a config's to_dict) with tiny sizes; images of ``side`` px in ``patch`` px patches (``side`` None:
    only the widths shrink, and the layers and the image geometry stay the release's)."""
    out = dict(d)
    old_layers = next((d[k] for k in _LAYERS if isinstance(d.get(k), int)), None)
    old_heads = next((d[k] for k in _HEADS if isinstance(d.get(k), int)), None)
    for key, value in d.items():
        if side is None and key in _GEOMETRY:
            continue
        if isinstance(value, dict) and key.endswith("_config"):
            out[key] = _shrink(value, "vision" if "vision" in key else "text" if "text" in key else key, side, patch)
        elif isinstance(value, bool) or value is None:
            continue
        elif key in _WIDTHS and isinstance(value, int):
            out[key] = WIDTH
        elif key in ("intermediate_size", "ffn_dim") and isinstance(value, int):
            out[key] = 2 * WIDTH
        elif key in ("moe_intermediate_size", "shared_expert_intermediate_size"):
            out[key] = WIDTH // 2
        elif key in _LAYERS and isinstance(value, int):
            out[key] = LAYERS
        elif key in _HEADS:
            out[key] = HEADS
        elif key == "num_key_value_heads":  # keep MQA as MQA and GQA as GQA
            out[key] = 1 if value == 1 else HEADS if value == old_heads else HEADS // 2
        elif key in ("head_dim", "query_pre_attn_scalar"):
            out[key] = HEAD_DIM
        elif key in ("num_experts", "num_local_experts", "n_routed_experts"):
            out[key] = EXPERTS
        elif key == "num_experts_per_tok":
            out[key] = 2
        elif key == "num_global_layers":
            out[key] = 1
        elif key in _LAYER_INDEXES and isinstance(value, list):
            out[key] = _rescale_indexes(value, old_layers, LAYERS)
        elif key == "mlp_only_layers":
            out[key] = []
        elif key == "layer_types":  # one layer of each kind (sliding/full), in the release's order
            kinds = list(dict.fromkeys(value))
            out[key] = (kinds + kinds[-1:] * LAYERS)[: max(LAYERS, len(kinds))]
        elif key == "image_size" and role == "vision":
            out[key] = [side, side] if isinstance(value, list) else side
        elif key == "patch_size" and role == "vision":
            out[key] = [patch, patch] if isinstance(value, list) else patch
        elif key == "num_position_embeddings":  # a learnt grid of position embeddings, one per patch
            out[key] = (side // patch) ** 2
        elif key == "mm_tokens_per_image":  # Gemma 3 pools the patch grid 2x2
            out[key] = (side // patch // 2) ** 2
        elif key == "image_grid_pinpoints":
            base = min(min(p) for p in value)
            out[key] = [[a * side // base, b * side // base] for a, b in value[:3]]
    config_class = CONFIG_MAPPING[d["model_type"]] if d.get("model_type") in CONFIG_MAPPING else object
    if isinstance(out.get("rope_parameters"), dict) and "mrope_section" in getattr(
            config_class, "ignore_keys_at_rope_validation", ()):  # the model splits rotary dims by position axis
        half = out.get("head_dim", out.get("hidden_size", WIDTH) // out.get("num_attention_heads", HEADS)) // 2
        hw = half * 3 // 8  # (temporal, height, width) split of the rotary half, 16:24:24 as Qwen2-VL's
        out["rope_parameters"] = {**out["rope_parameters"], "mrope_section": [half - 2 * hw, hw, hw]}
    if "vision_output_dim" in out:  # Mllama concatenates the last and the intermediate layers' outputs
        out["vision_output_dim"] = WIDTH * (len(out.get("intermediate_layers_indices", ())) + 1)
    if "layer_types" in out and any(k in out for k in _LAYERS):
        out[next(k for k in _LAYERS if k in out)] = len(out["layer_types"])
    return out


def narrow_config(config):
    """``config`` with every width tiny but its layers, vocabulary, token ids and image geometry kept: a model of it
    turns an image into as many features as the release does, in milliseconds and without its weights."""
    return type(config).from_dict(_shrink(config.to_dict(), "top", None, None))


def _tokens_per_image(config, side: int) -> int:
    """Image tokens of one image (or tile) in the language model: patches after the type's merge/pooling."""
    n = (side // _patch(config.vision_config.to_dict())) ** 2
    for name, merge in (("scale_factor", lambda f: n // f**2), ("downsample_factor", lambda f: n // f**2),
                        ("downsample_ratio", lambda r: int(n * r**2)), ("mm_tokens_per_image", lambda m: m)):
        if isinstance(getattr(config, name, None), (int, float)):
            return merge(getattr(config, name))
    merge = getattr(getattr(config, "vision_config", None), "spatial_merge_size", None)
    return n // merge**2 if merge else n


# --- image processor and processor -------------------------------------------------------------------------------


def _pil_image_processor_class(model_type: str) -> type:
    # A type without its own entry (qwen3_vl_moe) uses the image processor of the type that owns its processor.
    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type) or next(
        (IMAGE_PROCESSOR_MAPPING_NAMES[t] for t, p in PROCESSOR_MAPPING_NAMES.items()
         if p == PROCESSOR_MAPPING_NAMES[model_type] and IMAGE_PROCESSOR_MAPPING_NAMES.get(t)), None)
    if not names or not names.get("pil"):
        raise CheckpointError(f"{model_type}: transformers has no PIL-backend image processor for it")
    return getattr(transformers, names["pil"])


def _image_processor(model_type: str, spec: _Type, config, side: int):
    cls = _pil_image_processor_class(model_type)
    defaults = cls().to_dict()
    vision = config.vision_config
    kwargs: dict[str, Any] = {}
    size = defaults.get("size") or {}
    if "merge_size" in defaults:  # Qwen-style: size bounds the pixel count; pin it to side x side
        kwargs["size"] = {"shortest_edge": side * side, "longest_edge": side * side}
    elif "height" in size:
        kwargs["size"] = {"height": side, "width": side}
    elif "shortest_edge" in size:
        kwargs["size"] = {"shortest_edge": side}
    elif "longest_edge" in size:  # a tiling processor: 2x2 tiles of ``side`` plus the whole image
        kwargs["size"] = {"longest_edge": spec.tiles * side}
    if "crop_size" in defaults:
        kwargs["crop_size"] = {"height": side, "width": side}
    if "max_image_size" in defaults:
        kwargs["max_image_size"] = {"longest_edge": side}
    for name, source in (("patch_size", "patch_size"), ("merge_size", "spatial_merge_size"),
                         ("temporal_patch_size", "temporal_patch_size")):
        if name in defaults and getattr(vision, source, None) is not None:
            kwargs[name] = _patch(vision.to_dict()) if name == "patch_size" else getattr(vision, source)
    if "image_grid_pinpoints" in defaults:
        kwargs["image_grid_pinpoints"] = config.image_grid_pinpoints
    return cls(**kwargs)


def _processor(model_type: str, spec: _Type, config, tokenizer, side: int):
    real = transformers_class(PROCESSOR_MAPPING_NAMES[model_type])
    tokens = _tokens_per_image(config, side)
    image_processor = _image_processor(model_type, spec, config, side)
    image_processor.image_seq_length = tokens  # PaliGemma's processor reads it from the image processor
    # Processor arguments named like a config value (or derived from one) take that value.
    known = {"patch_size": _patch(config.vision_config.to_dict()), "img_size": side,
             "image_seq_length": tokens, "image_seq_len": tokens, "num_image_tokens": tokens,
             "vision_feature_select_strategy": getattr(config, "vision_feature_select_strategy", None),
             "downsample_factor": getattr(config, "downsample_factor", None),
             "spatial_merge_size": getattr(config, "spatial_merge_size", None)}
    params = inspect.signature(real.__init__).parameters
    kwargs = {k: v for k, v in known.items() if k in params and v is not None} | spec.processor
    return image_only(real)(image_processor=image_processor, tokenizer=tokenizer,
                            chat_template=chat_template(CHATS[spec.chat], spec.image), **kwargs)


# --- the builder ---------------------------------------------------------------------------------------------------


def _family(model_type: str, spec: _Type) -> Family:
    chat = CHATS[spec.chat]
    text = chat.user + chat.assistant + chat.end + spec.image
    specials = [*chat.tokens.values(), *re.findall(r"<[^<>\s{}]+>", text), *spec.named.values(), *spec.extra]
    return Family(model_type, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type],
                  PROCESSOR_MAPPING_NAMES[model_type], _pil_image_processor_class(model_type).__name__,
                  special_tokens=tuple(dict.fromkeys(specials)),
                  tokens=chat.tokens, named_tokens=spec.named, stop_tokens=tuple(dict.fromkeys((chat.end,
                  chat.tokens["eos"]))), add_bos=chat.add_bos, chat_template=chat_template(chat, spec.image))


def _spec(model_type: str) -> _Type:
    if model_type in NOT_BUILT:
        raise CheckpointError(f"cannot build a tiny {model_type!r} checkpoint: {NOT_BUILT[model_type]}")
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise CheckpointError(f"{model_type!r} is not an image-text-to-text model type of transformers "
                              f"{transformers.__version__}")
    if model_type not in _TYPES:
        raise CheckpointError(f"cannot build a tiny {model_type!r} checkpoint: no entry in builder._TYPES "
                              "(its processor's tokens and chat format are unknown)")
    return _TYPES[model_type]


def _set_token_ids(d: dict, tokenizer, tokens: dict[str, str]) -> None:
    # The config's token ids must be the tokenizer's: the <image> ids in the text are what the model replaces.
    ids = {stem: tokenizer.convert_tokens_to_ids(tok) for stem, tok in tokens.items()}
    ids |= {f"{role}_token": getattr(tokenizer, f"{role}_token_id") for role in ("bos", "eos", "pad")}
    for key, value in d.items():
        stem = re.sub(r"_(id|index)$", "", key.lstrip("_"))  # Idefics3 keeps its pad id as _pad_token_id
        if isinstance(value, dict) and key.endswith("_config"):
            _set_token_ids(value, tokenizer, tokens)
        elif stem != key and stem in ids:
            d[key] = ids[stem]
        elif key == "vocab_size" and "vocab_offset" not in d:  # vocab_offset: a modality's own id range
            d[key] = len(tokenizer)


def build_tiny(model_type: str, out_dir: str | os.PathLike | None = None, *, seed: int = 0,
               image_size: int | None = None):
    """A seeded tiny random model of ``model_type``'s real class and its real processor; saved when ``out_dir``."""
    spec = _spec(model_type)
    family = _family(model_type, spec)
    tokenizer = build_tokenizer(family)
    config_class = CONFIG_MAPPING[model_type]
    defaults = config_class().to_dict()
    patch = min(_patch(defaults.get("vision_config") or {}), MAX_PATCH)
    side = image_size or PATCHES_PER_SIDE * patch
    if side % (2 * patch):
        raise CheckpointError(f"{model_type}: image_size must be a multiple of {2 * patch} px (2x2 patches of "
                              f"{patch} px, which the token merging needs), got {side}")
    shrunk = _shrink(defaults, "top", side, patch)
    try:
        draft = config_class.from_dict(shrunk)
        processor = _processor(model_type, spec, draft, tokenizer, side)
        _set_token_ids(shrunk, processor.tokenizer, spec.named | spec.ids)
        if "image_seq_length" in shrunk:  # LLaVA's and InternVL's configs state it; keep it true
            shrunk["image_seq_length"] = _tokens_per_image(draft, side)
        config = config_class.from_dict(shrunk)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = getattr(transformers, family.model_class)(config).float()
            reinit_zeros(model, getattr(config, "initializer_range", None) or 0.02, gates=True)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, ImportError) as e:
        raise CheckpointError(f"cannot build a tiny {model_type!r} checkpoint: {type(e).__name__}: {e}") from e
    gen = model.generation_config
    tok = processor.tokenizer
    gen.bos_token_id, gen.pad_token_id = tok.bos_token_id, tok.pad_token_id
    gen.eos_token_id = [tok.convert_tokens_to_ids(t) for t in family.stop_tokens]
    if out_dir is not None:
        out = Path(out_dir)
        model.save_pretrained(out, safe_serialization=True)
        processor.save_pretrained(out)
        (out / "mdpo_builder.json").write_text(json.dumps({"model_type": model_type, "seed": seed}) + "\n")
    return model, processor
