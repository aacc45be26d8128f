"""The tiny offline ShapeWorld LLaVA: a word-level tokenizer over ShapeWorld's vocabulary, a small CNN tower and a
2-layer Llama, built from configs. The default base model; real families live in ``families.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from mdpo_pipeline.shapeworld import (
    COLOURS,
    DEFAULT_SOURCE_MIX,
    OBJECT_HALBENCH_PROMPTS,
    RELATIONS,
    VOCABULARY,
)
from mdpo_pipeline.shapeworld.feedback import DESCRIBE_PROMPTS, STYLE_MARKERS
from mdpo_pipeline.shapeworld.preset import SHAPEWORLD_TINY  # noqa: F401  (what loads the model it builds)
from mdpo_pipeline.shapeworld.world import BACKGROUNDS, SIZES
from mdpo_pipeline.training.models import save_model
from mdpo_pipeline.shapeworld.vision import ShapeWorldVisionConfig  # also registers the tower with AutoModel

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

