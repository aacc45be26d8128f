"""Padding-free batches: a preference batch's rows packed into one sequence, so no pad token is computed.

The collator pads every row of a three-view batch to the longest; answers run from a few tokens to hundreds, so
much of a padded step computes on pads. ``pack`` lays the rows' real tokens end to end in one row with each row's
own position ids (0, 1, ... again at every row start) and no attention mask: transformers then builds a
block-diagonal (document) mask from the position ids, so no token attends across rows (FlashAttention's varlen
kernels on CUDA, an exact SDPA/eager mask on CPU). The images stay as they are: image tokens keep their order, so
each row's image features land on its own placeholders. ``packed_completion_logps`` sums each row's answer log-probs
by its segment, equal to ``reference.completion_logps`` of the padded batch.

Packing holds only where the position ids are the only thing a row's start resets. Model types whose image
positions or masks are computed over the whole batch row (Qwen's M-RoPE index, Mllama's cross-attention mask) are
refused with the reason; ``packable`` says which. The trainer (policy and live reference) and the reference
cache pack by ``MDPOConfig.packed_rows``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

#: Model types whose packed log-probs equal the padded ones (tests/test_packing.py proves each).
PACKABLE = frozenset({"llava", "llava_next", "llava_onevision", "internvl", "aya_vision", "idefics3", "gemma3"})
#: Why a proven model type is not packed (the collator falls back to padding for it).
NOT_PACKABLE = {
    "qwen2_vl": "M-RoPE: the rotary index of image tokens is computed over the whole row, not per packed sequence",
    "qwen2_5_vl": "M-RoPE: the rotary index of image tokens is computed over the whole row, not per packed sequence",
    "qwen3_vl": "M-RoPE: the rotary index of image tokens is computed over the whole row, not per packed sequence",
    "qwen3_vl_moe": "M-RoPE: the rotary index of image tokens is computed over the whole row, not per packed "
                    "sequence",
    "mllama": "its cross-attention mask is per row of the batch (rows, tokens, images, tiles)",
}
_WARNED: set[str | None] = set()  # model types whose fallback was announced (once per process)
#: Batch entries that are laid out per token and must be packed with the tokens.
_PER_TOKEN = ("input_ids", "completion_mask")
#: Batch entries that are not model inputs.
_NOT_INPUTS = ("completion_mask", "ref_logps", "attention_mask")


def packable(model_type: str | None) -> tuple[bool, str]:
    """(whether rows of ``model_type`` may be packed, why not)."""
    if model_type in PACKABLE:
        return True, ""
    return False, NOT_PACKABLE.get(model_type or "", f"model type {model_type!r} has no packed == padded proof")


def use_packing(model: torch.nn.Module, requested: bool) -> bool:
    """Whether ``model``'s batches are packed: when ``requested`` and its model type is proven; a requested type
    that is not proven falls back to padding with one warning naming it and why."""
    if not requested:
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    ok, why = packable(model_type)
    if not ok and model_type not in _WARNED:
        _WARNED.add(model_type)
        warnings.warn(f"packed_rows: {model_type} batches stay padded: {why}", stacklevel=2)
    return ok


def pack(batch: dict[str, Any], width: int | None = None) -> tuple[dict[str, Any], torch.Tensor]:
    """(the batch packed: its rows' real tokens laid end to end, in their order, into as few packed rows of at most
    ``width`` tokens as that allows (default: the longest row's length), each token with its own row's position id;
    the image tensors unchanged; for each packed position the batch row it came from, -1 for the filler at the end
    of a packed row).

    Rows keep their order, so the images keep theirs whatever the model type's image tensors look like; one long
    packed row would cost attention over its whole length on a kernel without varlen (CPU), so a packed row is no
    longer than the longest padded one."""
    mask = batch["attention_mask"].bool()
    lengths = [int(n) for n in mask.sum(dim=1)]
    width = width or max(lengths)
    bins: list[list[int]] = [[]]
    for row, n in enumerate(lengths):  # next fit, in order
        if bins[-1] and sum(lengths[r] for r in bins[-1]) + n > width:
            bins.append([])
        bins[-1].append(row)
    device = mask.device
    packed = {key: torch.zeros(len(bins), width, dtype=batch[key].dtype, device=device) for key in _PER_TOKEN}
    packed["position_ids"] = torch.zeros(len(bins), width, dtype=torch.long, device=device)
    segments = torch.full((len(bins), width), -1, dtype=torch.long, device=device)
    for b, rows in enumerate(bins):
        at = 0
        for row in rows:
            n = lengths[row]
            for key in _PER_TOKEN:
                packed[key][b, at:at + n] = batch[key][row][mask[row]]
            packed["position_ids"][b, at:at + n] = torch.arange(n, device=device)
            segments[b, at:at + n] = row
            at += n
        # The filler restarts its positions too: a document of its own that no row attends to.
        packed["position_ids"][b, at:] = torch.arange(width - at, device=device)
    extra = {k: v for k, v in batch.items() if k not in (*_PER_TOKEN, *_NOT_INPUTS)}
    return packed | extra, segments


def packed_completion_logps(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """Per-row summed log-probs of the answer tokens from one packed forward (``reference.completion_logps``'s
    result for the padded ``batch``)."""
    packed, segments = pack(batch)
    completion = packed.pop("completion_mask")
    labels = packed["input_ids"].masked_fill(completion == 0, -100)
    # A row's first token is never an answer token, so the prediction across a row boundary is always masked out.
    outputs = model(**packed, labels=labels, fused_lm_head=True, use_cache=False)
    per_token = outputs.log_probs[:, -(completion.size(1) - 1):]
    target = segments[:, 1:].to(per_token.device)
    rows = batch["attention_mask"].shape[0]
    keep = target >= 0
    return torch.zeros(rows, dtype=per_token.dtype, device=per_token.device).index_add_(
        0, target[keep], per_token[keep])


def pad_share(batch: dict[str, Any]) -> float:
    """The share of a padded batch's token positions that are padding (what packing saves)."""
    mask = batch["attention_mask"]
    return 1.0 - float(mask.sum()) / mask.numel()
