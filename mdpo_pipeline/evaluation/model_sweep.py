"""Every model type transformers maps to image-text-to-text, tried the way a user's checkpoint would be.

For each type: the pipeline's verdict from the type alone (refused: encoder-decoder, a type that would train
wrongly); else a tiny checkpoint from ``builder.build_tiny`` (or why none can be built here), checked as a user's
``base_model: {path}`` would be (``check_base_model``), loaded, and put through the quick guarantees: the three
views in one forward equal separate forwards (and packed rows equal padded ones where packing is allowed), another
image moves the answers, batched greedy generation equals one at a time, LoRA finds language-model layers. The full guarantees of the types that work are
``tests/test_model_types.py``. ``mdpo models`` prints the table (``--write`` puts it in ``docs/model_types.md``).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from PIL import Image
from transformers import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as IMAGE_TEXT

from mdpo_pipeline.evaluation.answers import GenerationSettings, Prompt
from mdpo_pipeline.evaluation.generation import generate_answers
from mdpo_pipeline.training.builder import MODEL_TYPES, NOT_BUILT, build_tiny
from mdpo_pipeline.training.data import DataCollatorForMDPO
from mdpo_pipeline.training.families import CheckpointError
from mdpo_pipeline.training.models import (
    UNTRAINABLE,
    check_base_model,
    language_model_linear_names,
    load_model_and_processor,
)
from mdpo_pipeline.training.packing import packable, packed_completion_logps
from mdpo_pipeline.training.presets import GENERIC
from mdpo_pipeline.training.reference import completion_logps, ensure_fused_lm_head

#: Verdicts, in the order the table lists them.
WORKS, REFUSED, NOT_HERE, BUG = "works", "refused", "not built here", "bug"
#: Summed log-probs of a float32 tiny model: batching changes only rounding.
ATOL = 1e-4
_MESSAGE = 300  # characters of an exception kept in the table


@dataclass(frozen=True)
class Verdict:
    """One model type's row: its verdict, the model class, and the reason (or what was proven)."""

    model_type: str
    verdict: str
    model_class: str
    detail: str


def _examples() -> list[dict]:
    def turn(role, text, image=False):
        return [{"role": role, "content": ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]}]

    def image(w, h, seed):
        g = torch.Generator().manual_seed(seed)
        return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy())

    return [{"prompt": turn("user", "What is shown?", image=True), "chosen": turn("assistant", "A red circle."),
             "rejected": turn("assistant", "Two blue squares."), "image": image(64, 64, 0),
             "corrupted_image": image(64, 64, 1)},
            {"prompt": turn("user", "Describe it.", image=True), "chosen": turn("assistant", "A cross."),
             "rejected": turn("assistant", "Nothing at all."), "image": image(96, 56, 2),
             "corrupted_image": image(40, 72, 3)}]


def _prove(path: Path) -> str:
    """The quick guarantees on the checkpoint at ``path``; an AssertionError names the one that fails."""
    model, processor = load_model_and_processor(GENERIC, path)
    model.eval()
    ensure_fused_lm_head(model)
    examples = _examples()
    with torch.no_grad():
        together = completion_logps(model, DataCollatorForMDPO(processor)(examples))
        separate = torch.cat([completion_logps(model, DataCollatorForMDPO(processor, views=(v,))([e]))
                              for v in ("chosen", "rejected", "chosen_corrupted") for e in examples])
        swapped = [dict(e, image=e["corrupted_image"]) for e in examples]
        moved = (together - completion_logps(model, DataCollatorForMDPO(processor)(swapped))).abs()[:4]
        model_type = model.config.model_type
        ok, why = packable(model_type)
        batch = DataCollatorForMDPO(processor)(examples)
        packed_gap = float((packed_completion_logps(model, batch, int(batch["attention_mask"].sum()))
                            - together).abs().max()) if ok else None
    gap = float((together - separate).abs().max())
    assert gap <= ATOL, f"three views in one forward differ from separate forwards by {gap:.2g}"
    assert packed_gap is None or packed_gap <= ATOL, f"packed rows differ from padded ones by {packed_gap:.2g}"
    assert float(moved.max()) > 1e-2, f"another image moves the answers' log-probs by {float(moved.max()):.2g} only"
    with tempfile.TemporaryDirectory() as tmp:
        prompts = []
        for i, e in enumerate(examples):
            e["image"].save(f"{tmp}/{i}.png")
            prompts.append(Prompt(str(i), f"{tmp}/{i}.png", "Describe this image."))
        batched = generate_answers(model, processor, prompts, GenerationSettings(batch_size=2, max_new_tokens=4))
        single = [generate_answers(model, processor, [p], GenerationSettings(batch_size=1, max_new_tokens=4))[0]
                  for p in prompts]
    assert batched == single, "batched greedy generation differs from one at a time"
    targets = language_model_linear_names(model)
    assert targets, "no language-model linear layers for LoRA"
    packing = f"packed == padded (max gap {packed_gap:.1e})" if ok else f"not packed: {why}"
    return (f"three views == separate (max gap {gap:.1e}); {packing}; another image moves log-probs by up to "
            f"{float(moved.max()):.2f}; batched generation == single; {len(targets)} LoRA targets")


def _from_type_alone(model_type: str) -> str | None:
    """Why the pipeline refuses ``model_type`` whatever the checkpoint, or None."""
    if model_type in UNTRAINABLE:
        return UNTRAINABLE[model_type]
    try:
        config = CONFIG_MAPPING[model_type]()
    except Exception:  # noqa: BLE001 - a config that needs arguments says nothing about the type
        return None
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder: the preference loss scores a decoder-only model's answer tokens"
    return None


def sweep_type(model_type: str, root: Path) -> Verdict:
    """The verdict on one model type (its tiny checkpoint written under ``root``)."""
    model_class = IMAGE_TEXT.get(model_type, "?")
    if (reason := _from_type_alone(model_type)) is not None:
        return Verdict(model_type, REFUSED, model_class, reason)
    if model_type not in MODEL_TYPES:
        why = NOT_BUILT.get(model_type, "the builder has no entry for it (its chat format and image placeholder)")
        return Verdict(model_type, NOT_HERE, model_class, why)
    path = root / model_type
    try:
        build_tiny(model_type, path)
        check_base_model(GENERIC, path)
    except CheckpointError as e:
        return Verdict(model_type, REFUSED, model_class, str(e).replace(str(path), "<dir>")[:_MESSAGE])
    try:
        return Verdict(model_type, WORKS, model_class, _prove(path))
    except Exception as e:  # noqa: BLE001 - the sweep's job is to list whatever breaks, as a bug to fix
        return Verdict(model_type, BUG, model_class, f"{type(e).__name__}: {str(e)[:_MESSAGE]}")


def sweep(model_types: list[str] | None = None, progress=None) -> list[Verdict]:
    """Verdicts on ``model_types`` (default: every image-text-to-text type of this transformers)."""
    types = sorted(model_types or IMAGE_TEXT)
    with tempfile.TemporaryDirectory() as tmp:
        verdicts = []
        for i, t in enumerate(types):
            verdicts.append(sweep_type(t, Path(tmp)))
            if progress:
                progress(f"[{i + 1}/{len(types)}] {t}: {verdicts[-1].verdict}")
    return verdicts


def table(verdicts: list[Verdict]) -> str:
    """The verdicts as the markdown page ``docs/model_types.md``: counts, then one row per type."""
    counts = Counter(v.verdict for v in verdicts)
    order = {v: i for i, v in enumerate((WORKS, REFUSED, NOT_HERE, BUG))}
    rows = sorted(verdicts, key=lambda v: (order[v.verdict], v.model_type))
    lines = [
        "# Model types",
        "",
        f"Every model type transformers {transformers.__version__} maps to `AutoModelForImageTextToText`, tried as a "
        "user's `base_model: {path}` checkpoint (preset `auto`) on a tiny random-initialised checkpoint of its real "
        "classes. Regenerate with `.venv/bin/mdpo models --write docs/model_types.md` (`mdpo_pipeline/evaluation/"
        "model_sweep.py`).",
        "",
        " · ".join(f"**{v}**: {counts.get(v, 0)}" for v in order) + f" · of {len(verdicts)}",
        "",
        "| model type | verdict | model class | detail |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{v.model_type}` | {v.verdict} | `{v.model_class}` | {v.detail.replace('|', '/')} |" for v in rows]
    return "\n".join(lines) + "\n"
