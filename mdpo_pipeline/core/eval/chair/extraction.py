"""LLM object extraction (the published numbers' setup): ask a model which objects an answer names."""

from __future__ import annotations

import re
from collections.abc import Callable

from mdpo_pipeline.core.eval.chair.scoring import Extractor

_EXTRACTION_INSTRUCTIONS = (
    "Read the image description below and list every physical object it says is in the image, one per line, "
    "as a short noun phrase in singular form. Leave out objects the description says are absent, and "
    "attributes, actions and places that are not objects. If there are none, answer NONE.\n\nDescription:\n"
)


def object_extraction_prompt(answer: str) -> str:
    """The prompt asking an LLM for the objects an answer claims are present (one per line)."""
    return _EXTRACTION_INSTRUCTIONS + answer.strip()


def parse_object_list(text: str) -> list[str]:
    """Object phrases from an LLM's one-per-line reply; bullets and numbering are stripped, NONE means none."""
    phrases = []
    for line in text.splitlines():
        phrase = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip(".").strip()
        if phrase and phrase.upper() != "NONE":
            phrases.append(phrase)
    return phrases


def llm_extractor(complete: Callable[[str], str]) -> Extractor:
    """An ``extract`` for ``chair_scores`` that asks ``complete`` (e.g. a cached judge call) for the objects."""
    return lambda answer: parse_object_list(complete(object_extraction_prompt(answer)))
