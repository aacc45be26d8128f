"""The real VLM families the pipeline trains, and how to build each one's tiny random-initialised checkpoint.

A family is data: the transformers model and processor classes, the chat template and special tokens of the
hub release, and what its processor needs to load without torchvision. Everything that differs between
families is here, so the collator, the reference cache and generation run one code path for all of them.

``build_checkpoint`` writes what the hub would give (config.json, safetensors, processor and tokenizer files,
generation_config.json) for a random-initialised model of the real class: the offline stand-in for real
weights, used by the tests, the benchmarks and ``mdpo checkpoint``. No ShapeWorld here.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3Processor,
    LlamaConfig,
    LlavaConfig,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    SiglipVisionConfig,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from mdpo_pipeline.core.errors import ConfigError

#: Files a loadable checkpoint directory must hold besides the weights (what `processor.save_pretrained` writes).
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json")


class CheckpointError(ConfigError):
    """A model directory or processor that cannot be used, naming the file or setting and what to do (a
    configuration error: the entry points print its message, not a traceback)."""


# --- chat templates as the hub releases ship them -------------------------------------------------

#: llava-hf/llava-1.5-7b-hf's template: USER/ASSISTANT turns, images first; the answer ends with a space and no
#: end-of-sequence token, so the collator has to append one (see ``end_of_answer``).
LLAVA_15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

#: Qwen/Qwen2.5-VL-*-Instruct's template (ChatML with a default system turn and vision markers).
QWEN25_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: google/gemma-3-*-it's template: the template itself writes <bos>; turns end with <end_of_turn>.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}"
    "{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}{%- endfor -%}"
    "{%- else -%}{{ raise_exception(\"Invalid content type\") }}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)


@dataclass(frozen=True)
class Family:
    """One VLM family: its transformers classes, tokens and template, and its tiny/mid architecture sizes."""

    name: str
    model_class: str  #: transformers model class
    processor_class: str  #: transformers processor class
    image_processor_class: str  #: the PIL-backend image processor (no torchvision needed)
    special_tokens: tuple[str, ...]  #: added tokens, in id order after the byte-level vocabulary
    tokens: dict[str, str]  #: bos/eos/pad/unk roles → token (missing role: the family has none)
    named_tokens: dict[str, str]  #: the tokenizer's extra named tokens its processor looks up (image_token, ...)
    stop_tokens: tuple[str, ...]  #: generation_config.eos_token_id of the release (end of an answer)
    add_bos: bool  #: whether the tokenizer prepends <bos> on its own (Llama/Gemma yes, Qwen no)
    chat_template: str


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "llava-1.5", "LlavaForConditionalGeneration", "LlavaProcessor", "CLIPImageProcessorPil",
            special_tokens=("<unk>", "<s>", "</s>", "<pad>", "<image>"),
            tokens={"bos": "<s>", "eos": "</s>", "unk": "<unk>", "pad": "<pad>"},
            named_tokens={"image_token": "<image>"},
            stop_tokens=("</s>",), add_bos=True, chat_template=LLAVA_15_TEMPLATE,
        ),
        Family(
            "qwen2.5-vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "Qwen2VLImageProcessorPil",
            special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                            "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"),
            tokens={"eos": "<|im_end|>", "pad": "<|endoftext|>"},
            named_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                          "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
            stop_tokens=("<|im_end|>", "<|endoftext|>"), add_bos=False, chat_template=QWEN25_VL_TEMPLATE,
        ),
        Family(
            "gemma-3", "Gemma3ForConditionalGeneration", "Gemma3Processor", "Gemma3ImageProcessorPil",
            special_tokens=("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
                            "<start_of_image>", "<end_of_image>", "<image_soft_token>"),
            tokens={"bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pad": "<pad>"},
            named_tokens={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                          "eoi_token": "<end_of_image>"},
            stop_tokens=("<eos>", "<end_of_turn>"), add_bos=True, chat_template=GEMMA3_TEMPLATE,
        ),
    )
}


def get_family(name: str) -> Family:
    """The family registered under ``name``, or an error listing the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise CheckpointError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}") from None


# --- the tokenizer ---------------------------------------------------------------------------------

#: Generic English the byte-level BPE learns its merges from when no corpus is given.
_DEFAULT_CORPUS = (
    "The image shows a small red circle on the left and a large blue square on the right of the picture.",
    "Describe this image in detail. What objects are there, and where are they relative to each other?",
    "There is a person standing next to a table with a cup, a plate and a bottle on it.",
    "Yes, there is a dog in the image. No, there is no cat. The colours are green, yellow and white.",
    "Provide a thorough description of the given image, including the background and the objects.",
)


def build_tokenizer(family: Family, corpus: Iterable[str] = (), vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (merges learnt from ``corpus``) with the family's special tokens and roles."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(family.special_tokens), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([*_DEFAULT_CORPUS, *corpus], trainer=trainer)
    bos = family.tokens.get("bos")
    if family.add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    roles = {f"{role}_token": token for role, token in family.tokens.items()}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, extra_special_tokens=dict(family.named_tokens), model_max_length=4096,
        clean_up_tokenization_spaces=False, **roles,
    )


# --- architectures ---------------------------------------------------------------------------------

#: Architecture sizes: "tiny" for tests (seconds on CPU), "mid" for the CPU benchmarks, "full" for the release's own
#: dimensions (LLaVA-1.5-7B, Qwen2.5-VL-7B, Gemma-3-4B; a GPU's job).
SIZES = ("tiny", "mid", "full")

_SMALL_TEXT = {
    "tiny": {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "kv_heads": 2},
    "mid": {"hidden": 512, "intermediate": 1376, "layers": 8, "heads": 8, "kv_heads": 8},
}
#: The releases' language models: Vicuna-7B, Qwen2.5-VL-7B's Qwen2.5-7B, Gemma-3-4B.
_FULL_TEXT = {
    "llava-1.5": {"hidden": 4096, "intermediate": 11008, "layers": 32, "heads": 32, "kv_heads": 32},
    "qwen2.5-vl": {"hidden": 3584, "intermediate": 18944, "layers": 28, "heads": 28, "kv_heads": 4},
    "gemma-3": {"hidden": 2560, "intermediate": 10240, "layers": 34, "heads": 8, "kv_heads": 4, "head_dim": 256},
}
#: Vision towers (hidden, layers, heads, intermediate): CLIP ViT-L/14-336, Qwen2.5-VL's ViT, SigLIP-So400m.
_FULL_VISION = {"llava-1.5": (1024, 24, 16, 4096), "qwen2.5-vl": (1280, 32, 16, 3420), "gemma-3": (1152, 27, 16, 4304)}
_SMALL_VISION = {"tiny": (32, 2, 2, 64), "mid": (256, 4, 4, 1024)}


def _text_dims(family: str, size: str) -> dict[str, int]:
    return _FULL_TEXT[family] if size == "full" else _SMALL_TEXT[size]


def _vision_dims(family: str, size: str) -> tuple[int, int, int, int]:
    return _FULL_VISION[family] if size == "full" else _SMALL_VISION[size]


def _llava(tokenizer, size: str, image_size: int | None):

    t = _text_dims("llava-1.5", size)
    vis = _vision_dims("llava-1.5", size)
    image_size = image_size or {"tiny": 56, "mid": 112, "full": 336}[size]
    vision = CLIPVisionConfig(hidden_size=vis[0], num_hidden_layers=vis[1], num_attention_heads=vis[2],
                              intermediate_size=vis[3], image_size=image_size, patch_size=14, projection_dim=vis[0])
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=t["hidden"], intermediate_size=t["intermediate"],
                       num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
                       num_key_value_heads=t["kv_heads"], max_position_embeddings=4096,
                       rms_norm_eps=1e-5,  # Vicuna's
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    # feature layer -2 and the CLS token dropped ("default"), as llava-hf/llava-1.5-7b-hf.
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         image_seq_length=(image_size // 14) ** 2, projector_hidden_act="gelu")
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=FAMILIES["llava-1.5"].chat_template)
    return config, processor


def _qwen25_vl(tokenizer, size: str, image_size: int | None):

    t = _text_dims("qwen2.5-vl", size)
    vis = _vision_dims("qwen2.5-vl", size)
    head_dim = t["hidden"] // t["heads"]
    # M-RoPE splits each head's rotary half into (temporal, height, width) sections; Qwen2.5-VL-7B: 16, 24, 24.
    half = head_dim // 2
    section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in FAMILIES["qwen2.5-vl"].special_tokens}
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": t["hidden"], "intermediate_size": t["intermediate"],
                     "num_hidden_layers": t["layers"], "num_attention_heads": t["heads"],
                     "num_key_value_heads": t["kv_heads"], "max_position_embeddings": 4096,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": section},
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"]},
        vision_config={"depth": vis[1], "hidden_size": vis[0], "num_heads": vis[2], "intermediate_size": vis[3],
                       "out_hidden_size": t["hidden"], "patch_size": 14, "spatial_merge_size": 2,
                       "temporal_patch_size": 2, "window_size": 112,
                       # Every 8th block attends over the whole image, the others within 112-px windows.
                       "fullatt_block_indexes": list(range(7, vis[1], 8)) or [vis[1] - 1]},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    # Qwen resizes each image to a multiple of 28 px within [min, max] pixels (dynamic resolution); the release
    # allows up to 12.8M pixels, the tiny model keeps images small so a step takes milliseconds.
    side = image_size or {"tiny": 56, "mid": 112, "full": 448}[size]
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 28 * 28, "longest_edge": (side * 2) ** 2}, patch_size=14, merge_size=2,
        temporal_patch_size=2,
    )
    processor = processor_class(FAMILIES["qwen2.5-vl"])(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=FAMILIES["qwen2.5-vl"].chat_template
    )
    return config, processor


def _gemma3(tokenizer, size: str, image_size: int | None):

    t = _text_dims("gemma-3", size)
    vis = _vision_dims("gemma-3", size)
    image_size = image_size or {"tiny": 56, "mid": 112, "full": 896}[size]
    patch = 14
    tokens_per_side = {"tiny": 2, "mid": 4, "full": 16}[size]  # the release pools 64×64 patches to 16×16 = 256 tokens
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in FAMILIES["gemma-3"].special_tokens}
    head_dim = t.get("head_dim", t["hidden"] // t["heads"])
    config = Gemma3Config(
        text_config={"vocab_size": len(tokenizer), "hidden_size": t["hidden"], "intermediate_size": t["intermediate"],
                     "num_hidden_layers": t["layers"], "num_attention_heads": t["heads"],
                     "num_key_value_heads": t["kv_heads"], "head_dim": head_dim, "query_pre_attn_scalar": head_dim,
                     "max_position_embeddings": 4096, "sliding_window": 512,
                     "pad_token_id": ids["<pad>"], "bos_token_id": ids["<bos>"], "eos_token_id": ids["<eos>"]},
        vision_config=SiglipVisionConfig(hidden_size=vis[0], num_hidden_layers=vis[1], num_attention_heads=vis[2],
                                         intermediate_size=vis[3], image_size=image_size, patch_size=patch,
                                         vision_use_head=False),
        mm_tokens_per_image=tokens_per_side**2, boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
    )
    image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=FAMILIES["gemma-3"].chat_template, image_seq_length=tokens_per_side**2)
    return config, processor


_BUILDERS = {"llava-1.5": _llava, "qwen2.5-vl": _qwen25_vl, "gemma-3": _gemma3}


def reinit_zeros(model: torch.nn.Module, std: float = 0.02, gates: bool = False) -> list[str]:
    """Re-initialise (normal, ``std``) every all-zero weight matrix, so that every input reaches the output.

    transformers zero-initialises some projections (Gemma 3's mm_input_projection_weight): on a random checkpoint
    images would then change nothing. With ``gates``, all-zero scalar gates (Mllama's tanh gates on cross-attention)
    are opened to 1, since a gate of ~std would let images through only faintly. Call under the caller's seed.
    Returns the names re-initialised."""
    names = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.is_meta or param.any():  # a meta tensor (a model sized, never run) holds no values
                continue
            if param.dim() >= 2:
                param.normal_(0.0, std)
            elif gates and param.numel() == 1:
                param.fill_(1.0)
            else:
                continue
            names.append(name)
    return names


def build_checkpoint(
    family: str,
    out_dir: str | os.PathLike | None = None,
    *,
    size: str = "tiny",
    seed: int = 0,
    corpus: Iterable[str] = (),
    image_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
):
    """A seeded random-initialised model of ``family``'s real class and its real processor; saved in the hub's
    layout when ``out_dir`` is given. Returns (model, processor)."""
    if size not in SIZES:
        raise CheckpointError(f"size must be one of {SIZES}, got {size!r}")
    fam = get_family(family)
    tokenizer = build_tokenizer(fam, corpus)
    config, processor = _BUILDERS[fam.name](tokenizer, size, image_size)
    with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
        torch.manual_seed(seed)
        model = getattr(transformers, fam.model_class)(config).to(dtype)
        reinit_zeros(model, getattr(config, "initializer_range", None) or 0.02)
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.eos_token_id = [tokenizer.convert_tokens_to_ids(t) for t in fam.stop_tokens]
    if out_dir is not None:
        out = Path(out_dir)
        model.save_pretrained(out, safe_serialization=True)
        processor.save_pretrained(out)
        (out / "mdpo_family.json").write_text(json.dumps({"family": fam.name, "size": size, "seed": seed}) + "\n")
    return model, processor


def _torchvision_available() -> bool:

    return importlib.util.find_spec("torchvision") is not None


def _pixtral_processor_without_torchvision() -> None:
    """Let transformers' PixtralProcessor (Mistral 3) import where torchvision is missing.

    transformers 5.24's ``processing_pixtral`` imports one helper, ``get_resize_output_image_size``, from the
    torchvision image processor module, which fails at import without torchvision, although the PIL module
    defines the same function. Where torchvision is missing, that module name resolves to a module holding the
    PIL module's helpers only: the processor then loads and uses the PIL image processor, as every family here
    does, and nothing changes where torchvision is installed."""
    name = "transformers.models.pixtral.image_processing_pixtral"
    if _torchvision_available() or name in sys.modules:
        return
    from transformers.models.pixtral import image_processing_pil_pixtral as pil

    helpers = types.ModuleType(name, "PIL stand-in for the torchvision module (families._pixtral_processor_...)")
    helpers.get_resize_output_image_size = pil.get_resize_output_image_size
    sys.modules[name] = helpers


def transformers_class(name: str) -> Any:
    """transformers' class ``name``, imported from its own module where the top-level name is a backend placeholder.

    transformers replaces a class whose declared backends are missing (PixtralProcessor declares torchvision)
    with a placeholder that raises on use; a class that imports without that backend (see
    ``_pixtral_processor_without_torchvision``) is taken from its module instead. Anything else that really needs
    the missing backend still raises its ImportError there, naming it."""
    cls = getattr(transformers, name, None)
    module = getattr(transformers, "_class_to_module", {}).get(name)
    if getattr(cls, "is_dummy", False) and module:
        cls = getattr(importlib.import_module(f"transformers.{module}"), name)
    return cls


def processor_class(family: Family) -> type:
    """The family's processor class, image-only where torchvision is missing (``image_only``)."""
    return image_only(transformers_class(family.processor_class))


def image_only(cls: type) -> type:
    """A processor class without its video processor when torchvision is missing, else ``cls`` itself.

    Qwen-style processors declare a video processor that needs torchvision, which has no CPU build here and is
    not needed for images: the image-only class keeps the real class's name, so what it saves is what the real
    class would save and loads back with it wherever torchvision is installed."""
    if "video_processor" not in cls.get_attributes() or _torchvision_available():
        return cls
    kept = [p for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in ("self", "video_processor") and p.kind is p.POSITIONAL_OR_KEYWORD]
    # transformers matches a processor's saved settings against its __init__'s own argument names (its code
    # object's, not a signature), so the image-only __init__ is written out with the class's names, minus the
    # video part.
    names = ", ".join(p.name for p in kept)
    namespace: dict[str, Any] = {"base": cls}
    exec(f"def __init__(self, {names}, **kwargs):\n"
         "    kwargs['video_processor'] = None\n"
         f"    base.__init__(self, {', '.join(f'{n}={n}' for n in [p.name for p in kept])}, **kwargs)\n", namespace)
    init = namespace["__init__"]
    init.__defaults__ = tuple(None if p.default is p.empty else p.default for p in kept)
    return type(cls.__name__, (cls,), {"__init__": init, "__module__": __name__, "__doc__": cls.__doc__})


def family_of(model_dir: str | os.PathLike) -> str | None:
    """The family of a checkpoint directory, from its config.json's model class (None when not a known family)."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return None
    architectures = json.loads(config.read_text()).get("architectures") or []
    for fam in FAMILIES.values():
        if fam.model_class in architectures:
            return fam.name
    return None


def describe(model) -> dict[str, Any]:
    """The parameter count of a model (what `mdpo checkpoint` prints)."""
    total = sum(p.numel() for p in model.parameters())
    return {"parameters": total}


# At import, before anything resolves a processor class by name (builder, models.load_model_and_processor).
_pixtral_processor_without_torchvision()
