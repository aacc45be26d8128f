"""Model presets with real loading code, LoRA over the language model, and the tiny offline ShapeWorld LLaVA.

Nothing here downloads: real checkpoints come from an explicit local path, ``$MDPO_MODEL_DIR/<name>`` or
an already-populated Hugging Face cache, and the tiny model is built from configs and a word-level vocabulary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from mdpo_pipeline.core.shapeworld import (
    COLOURS,
    DEFAULT_SOURCE_MIX,
    OBJECT_HALBENCH_PROMPTS,
    RELATIONS,
    VOCABULARY,
)
from mdpo_pipeline.core.shapeworld.feedback import DESCRIBE_PROMPTS, STYLE_MARKERS
from mdpo_pipeline.core.shapeworld.world import BACKGROUNDS, SIZES
from mdpo_pipeline.training.vision import ShapeWorldVisionConfig  # also registers the tower with AutoModel

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
IMAGE_TOKEN = "<image>"

#: Words of ShapeWorld's question, answer and caption templates that no public constant carries.
FUNCTION_WORDS = """
a about above account against all also am an and answer are around arrangement as at backdrop background
balanced basic be below brief but can caption center clean closest colour colours completely composition
contains contents could covering describe description detail detailed directly do does drawing drawn empty
every everything explain faint feels flat following for from geometric give given great hard here how i image
images in is it larger left like look many might next no not object objects of often on only or overall paper
photo picture plain please plenty position provide recognition relative right same see shape shapes short
shown shows simple size smaller softly space sure surface tell test texture textured than the there think
this thorough thoroughly to top bottom used user assistant system visual what where which with write yes you
zero one two three four five six seven
"""
PUNCTUATION = tuple(".,;:!?'\"-()")

#: USER/ASSISTANT turns as in LLaVA-1.5 ("USER: <image>\n{question} ASSISTANT: {answer}</s>"), for string
#: contents and for TRL's content lists of {"type": "image"} / {"type": "text", "text": ...} blocks.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ 'USER: ' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT: ' }}{%- endif -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for block in message['content'] -%}"
    "{%- if block['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif block['type'] == 'text' -%}{{ block['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{ '</s>' }}{%- else -%}{{ ' ' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def shapeworld_words(extra: Iterable[str] = ()) -> list[str]:
    """The sorted word vocabulary of ShapeWorld text: object names, synonyms, plurals, attributes, templates."""
    words = set(FUNCTION_WORDS.split()) | set(PUNCTUATION)
    for name, entry in VOCABULARY.items():
        for phrase in (name, *entry["synonyms"], *entry["plurals"].values()):
            words.update(_words(phrase))
    for text in (*COLOURS, *BACKGROUNDS, *SIZES, *RELATIONS, *STYLE_MARKERS, *DESCRIBE_PROMPTS,
                 *OBJECT_HALBENCH_PROMPTS, *DEFAULT_SOURCE_MIX):
        words.update(_words(text))
    for text in extra:
        words.update(_words(text))
    return sorted(words)


def build_tokenizer(words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A lowercasing word-level tokenizer over the ShapeWorld vocabulary (plus ``words``) and the special tokens."""
    vocab = {t: i for i, t in enumerate((*SPECIAL_TOKENS, *shapeworld_words(words)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    # Punctuation is split off one character at a time, so "moon." and "?)" never become unknown words.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=512,
        clean_up_tokenization_spaces=True,
    )


def build_tiny_llava(
    out_dir: str | Path | None = None,
    *,
    image_size: int = 64,
    vision_channels: tuple[int, ...] = (64, 96),
    seed: int = 0,
    words: Iterable[str] | None = None,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A seeded tiny LLaVA (CNN tower + 2-layer Llama) and its processor, built offline; saved if ``out_dir``."""
    vision = ShapeWorldVisionConfig(image_size=image_size, channels=vision_channels, hidden_size=128)
    tokenizer = build_tokenizer(words or ())
    # Named explicitly: the default CLIPImageProcessor needs torchvision, which has no CPU build here.
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision.patch_size,
        vision_feature_select_strategy="full",  # a CNN has no CLS token to drop
        num_additional_image_tokens=0,
        chat_template=CHAT_TEMPLATE,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=processor.image_token_id,
        image_seq_length=vision.num_tokens, vision_feature_layer=-1, vision_feature_select_strategy="full",
    )
    # A forked RNG keeps the init a pure function of ``seed`` without disturbing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    gen = model.generation_config
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = (
        tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id,
    )
    if out_dir is not None:
        save_model(model, processor, out_dir)
    return model, processor


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
#: families (LLaVA, Qwen2.5-VL, Bunny) and the output head, which LoRA must leave alone (FACTS §2).
NON_LANGUAGE_PARTS = frozenset(
    {"vision_tower", "vision_model", "visual", "multi_modal_projector", "mm_projector", "lm_head"}
)


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
    model_class: str  #: transformers class name
    processor_class: str = "AutoProcessor"
    dtype: str = "bfloat16"  #: weights dtype on GPU; CPU loads use float32
    requires_remote_code: bool = False
    image_backend: str | None = None  #: force an image-processor backend ("pil") for identical pixels everywhere
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    training: TrainingDefaults = field(default_factory=lambda: PAPER_TRAINING)
    note: str = ""


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            "shapeworld-tiny", None, "LlavaForConditionalGeneration", dtype="float32", image_backend="pil",
            lora_r=8, lora_alpha=16, training=TINY_TRAINING,
            note="the tiny LLaVA after ShapeWorld SFT, written by mdpo_pipeline.training.sft.train_base_model",
        ),
        ModelPreset(
            "llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", "LlavaForConditionalGeneration",
            note="CLIP ViT-L/336 + Vicuna-7B, the Hugging Face port of LLaVA-v1.5-7B",
        ),
        ModelPreset(
            "bunny-v1.0-3b", "BAAI/Bunny-v1_0-3B", "AutoModelForCausalLM", processor_class="AutoTokenizer",
            requires_remote_code=True,
            note="SigLIP-384 + Phi-2; images go through model.process_images (its remote code), not a processor",
        ),
        ModelPreset(
            "qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen2_5_VLForConditionalGeneration",
            note="not in the paper: a current 3B VLM with native transformers support",
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
    bnb = _quantization_config(quantization)
    dtype = getattr(torch, preset.dtype) if torch.cuda.is_available() else torch.float32
    remote = {"trust_remote_code": True} if preset.requires_remote_code else {}
    model = getattr(transformers, preset.model_class).from_pretrained(
        source,
        dtype=dtype,
        use_safetensors=True,
        quantization_config=bnb,
        device_map=device_map if device_map is not None or bnb is None else "auto",
        **remote,
    )
    backend = {"backend": preset.image_backend} if preset.image_backend else {}
    processor = getattr(transformers, preset.processor_class).from_pretrained(source, **remote, **backend)
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
