"""Image placeholders written as plain text: the strings a VLM processor expands into image tokens.

A preference row whose prompt or answer holds one ("<image>" typed into the question, an answer quoting "[IMG]")
gets image tokens with no image behind them: the processor stops the whole batch ("3 image tokens and 1 image"),
so one such row stops every training run. Ingest quarantines rows holding any of ``IMAGE_PLACEHOLDERS``; training
also drops rows holding the base model's own image tokens (``training/data.py``), which this list may not know.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

#: The common spellings of the image (and video) placeholders of current VLM families.
IMAGE_PLACEHOLDERS: tuple[str, ...] = (
    # LLaVA 1.5 / NeXT / OneVision, PaliGemma, Idefics3 and SmolVLM, Aya Vision: what their templates write
    "<image>",
    "<video>",  # LLaVA-OneVision, InternVL, Qwen's older templates
    # Qwen2-VL, Qwen2.5-VL, Qwen3-VL: the pad the processor expands, between the vision start and end markers
    "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>",
    "<start_of_image>", "<end_of_image>", "<image_soft_token>",  # Gemma 3
    "<|image|>",  # Llama 3.2 Vision (mllama)
    "<IMG_CONTEXT>", "<img>", "</img>",  # InternVL: context tokens wrapped in <img>...</img>
    "<fake_token_around_image>", "<global-img>",  # Idefics3, SmolVLM
    "[IMG]", "[IMG_BREAK]", "[IMG_END]",  # Pixtral and Mistral Small 3.1 (mistral3)
    "<|IMG_PATCH|>", "<|START_OF_IMG|>", "<|END_OF_IMG|>",  # Aya Vision
)


@lru_cache(maxsize=64)
def _pattern(placeholders: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first: where one placeholder starts another, the longer one is the token a tokenizer would match.
    return re.compile("|".join(re.escape(p) for p in sorted(placeholders, key=len, reverse=True)))


def placeholders_in(text: str, placeholders: Iterable[str] = IMAGE_PLACEHOLDERS) -> dict[str, int]:
    """Each of ``placeholders`` that ``text`` holds and how many times, in order of first appearance."""
    wanted = tuple(sorted({p for p in placeholders if p}))
    if not wanted:
        return {}
    return dict(Counter(m.group() for m in _pattern(wanted).finditer(text)))


def describe_placeholders(found: dict[str, int]) -> str:
    """"'<image>' (2 times), '[IMG]'": what ``placeholders_in`` found, for an error or quarantine detail."""
    return ", ".join(f"{p!r}" + (f" ({n} times)" if n > 1 else "") for p, n in found.items())
