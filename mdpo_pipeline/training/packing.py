"""Padding-free batches: a preference batch's rows packed into one sequence, so no pad token is computed.

The collator pads every row of a three-view batch to the longest; answers run from a few tokens to hundreds, so
much of a padded step computes on pads. ``pack`` lays the rows' real tokens end to end in one row with each row's
own position ids (0, 1, ... again at every row start) and no attention mask: transformers then builds a
block-diagonal (document) mask from the position ids, so no token attends across rows (FlashAttention's varlen
kernels on CUDA, an exact SDPA/eager mask on CPU). The images stay as they are: image tokens keep their order, so
each row's image features land on its own placeholders. ``packed_completion_logps`` sums each row's answer log-probs
by its segment, equal to ``reference.completion_logps`` of the padded batch.

Every per-token tensor (token types, Qwen's multimodal rotary positions computed on the padded batch) is packed
with its tokens. A model type whose image inputs are laid out per batch row (Mllama's cross-attention mask) is
refused with the reason; ``packable`` says which. The trainer (policy and live reference) and the reference
cache pack by ``MDPOConfig.packed_rows``.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch

#: Model types whose packed log-probs equal the padded ones (tests/test_packing.py proves each, rows packed together
#: and each row alone).
PACKABLE = frozenset({"llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe",
                      "gemma3", "idefics3", "internvl", "aya_vision", "mistral3"})
#: Why a proven model type is not packed (its batches stay padded).
NOT_PACKABLE = {
    "mllama": "its cross-attention mask is laid out per row of the batch (rows, tokens, images, tiles): two rows in "
              "one packed row would each need the other's images",
}
_WARNED: set[str | None] = set()  # model types whose fallback was announced (once per process)
#: Batch entries that are not packed: the padding mask packing replaces, the cached reference log-probs (per row).
_NOT_PACKED = ("attention_mask", "ref_logps")


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


def pack(batch: dict[str, Any], width: int | None = None,
         rope: torch.Tensor | None = None) -> tuple[dict[str, Any], torch.Tensor]:
    """(the batch packed: its rows' real tokens laid end to end, in their order, into as few packed rows of at most
    ``width`` tokens as that allows (default: the longest row's length), every per-token tensor with them, each
    token with its own row's position id; the image tensors unchanged; for each packed position the batch row it
    came from, -1 for the filler at the end of a packed row).

    ``rope``: the model's own multimodal rotary positions of the padded batch, (axes, rows, tokens) (Qwen's M-RoPE);
    they are packed with the tokens and the position ids become (1 + axes, packed rows, width), the first axis the
    per-row text positions that transformers builds the packed attention mask from.

    Rows keep their order, so the images keep theirs whatever the model type's image tensors look like; one long
    packed row would cost attention over its whole length on a kernel without varlen (CPU), so a packed row is no
    longer than the longest padded one."""
    mask = batch["attention_mask"].bool()
    rows, length = mask.shape
    lengths = [int(n) for n in mask.sum(dim=1)]
    width = width or max(lengths)
    bins: list[list[int]] = [[]]
    for row, n in enumerate(lengths):  # next fit, in order
        if bins[-1] and sum(lengths[r] for r in bins[-1]) + n > width:
            bins.append([])
        bins[-1].append(row)
    # Every tensor laid out (rows, tokens, ...) travels with its tokens: input_ids, completion_mask, token types.
    per_token = {k: v for k, v in batch.items() if k not in _NOT_PACKED and torch.is_tensor(v) and v.dim() >= 2
                 and v.shape[:2] == (rows, length)}
    if rope is not None:
        per_token["rope"] = rope.permute(1, 2, 0)  # (rows, tokens, axes)
    device = mask.device
    packed = {k: v.new_zeros((len(bins), width, *v.shape[2:])) for k, v in per_token.items()}
    positions = torch.zeros(len(bins), width, dtype=torch.long, device=device)
    segments = torch.full((len(bins), width), -1, dtype=torch.long, device=device)
    for b, members in enumerate(bins):
        at = 0
        for row in members:
            n = lengths[row]
            for key, value in per_token.items():
                packed[key][b, at:at + n] = value[row][mask[row]]
            positions[b, at:at + n] = torch.arange(n, device=device)
            segments[b, at:at + n] = row
            at += n
        # The filler restarts its positions too: a document of its own that no row attends to.
        positions[b, at:] = torch.arange(width - at, device=device)
        if rope is not None:
            packed["rope"][b, at:] = positions[b, at:, None]
    if rope is not None:
        positions = torch.cat((positions[None], packed.pop("rope").permute(2, 0, 1)))
    packed["position_ids"] = positions
    extra = {k: v for k, v in batch.items() if k not in per_token and k not in _NOT_PACKED}
    return packed | extra, segments


def rope_positions(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor | None:
    """The multimodal rotary positions the model computes for the padded ``batch`` (axes, rows, tokens), for a
    model that has its own (``get_rope_index``: Qwen's M-RoPE); None for a model with plain positions."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = next((m for m in (base, getattr(base, "model", None)) if hasattr(m, "get_rope_index")), None)
    if inner is None:
        return None
    wanted = inspect.signature(inner.get_rope_index).parameters
    kwargs = {k: batch[k] for k in ("mm_token_type_ids", "image_grid_thw", "video_grid_thw") if k in batch
              and k in wanted}
    return inner.get_rope_index(batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)[0]


def packed_completion_logps(model: torch.nn.Module, batch: dict[str, Any], width: int | None = None) -> torch.Tensor:
    """Per-row summed log-probs of the answer tokens from one packed forward (``reference.completion_logps``'s
    result for the padded ``batch``)."""
    packed, segments = pack(batch, width, rope_positions(model, batch))
    completion = packed.pop("completion_mask")
    labels = packed["input_ids"].masked_fill(completion == 0, -100)
    # A row's first token is never an answer token, so the prediction across a row boundary is always masked out.
    outputs = model(**packed, labels=labels, fused_lm_head=True, use_cache=False)
    per_token = outputs.log_probs[:, -(completion.size(1) - 1):]
    target = segments[:, 1:].to(per_token.device)
    keep = target >= 0
    return torch.zeros(len(batch["attention_mask"]), dtype=per_token.dtype, device=per_token.device).index_add_(
        0, target[keep], per_token[keep])


def pad_share(batch: dict[str, Any]) -> float:
    """The share of a padded batch's token positions that are padding (what packing saves)."""
    mask = batch["attention_mask"]
    return 1.0 - float(mask.sum()) / mask.numel()
