"""What a benchmark asks and what a model answered: prompts, generation settings, and the answer files scoring reads.

Answers are stored with a fingerprint of what produced them (model, prompts, settings), so scoring can be
redone or changed without regenerating, and a changed model never reuses stale answers. No torch here: reading
and checking these is cheap (``generation.py`` is what runs a model).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mdpo_pipeline.core.io import atomic_path, canonical_json
from mdpo_pipeline.core.eval.settings import GenerationSettings


@dataclass(frozen=True)
class Prompt:
    """One benchmark item to answer: its id, image file and question."""

    id: str
    image: str
    question: str


def prompts_sha256(prompts: Sequence[Prompt]) -> str:
    """sha256 of the prompts (ids, questions and image bytes)."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(canonical_json({"id": p.id, "question": p.question}).encode())
        h.update(hashlib.sha256(Path(p.image).read_bytes()).digest())
    return h.hexdigest()


def write_generations(path: str | os.PathLike, prompts: Sequence[Prompt], answers: Sequence[str],
                      fingerprint: dict[str, Any]) -> Path:
    """Write answers as JSONL (a header line with the fingerprint, then one line per item), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(canonical_json({"fingerprint": fingerprint}) + "\n")
            for p, a in zip(prompts, answers, strict=True):
                f.write(canonical_json({"id": p.id, "question": p.question, "answer": a}) + "\n")
    return path


def read_generations(path: str | os.PathLike, fingerprint: dict[str, Any] | None = None) -> dict[str, str] | None:
    """id → answer from a generations file; None when absent or made by something else than ``fingerprint``."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path) as f:
        header = json.loads(f.readline())
        if fingerprint is not None and header.get("fingerprint") != json.loads(canonical_json(fingerprint)):
            return None
        return {row["id"]: row["answer"] for row in map(json.loads, f)}


def generation_fingerprint(model_sha: str, prompts: Sequence[Prompt], settings: GenerationSettings) -> dict[str, Any]:
    """What a stored answer file depends on: the model's weights, the prompts and the generation settings."""
    return {"model": model_sha, "prompts": prompts_sha256(prompts), "settings": asdict(settings)}
