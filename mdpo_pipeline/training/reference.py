"""Summed answer log-probs of a collated batch, and the cached reference log-probs built from them.

``completion_logps`` is the one forward the trainer runs for the policy and for the live reference, and the
one ``compute_reference_logprobs`` runs to fill the cache, so a cached reference equals a live one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from accelerate.utils import is_peft_model
from torch.utils.data import DataLoader
from tqdm import tqdm
from transformers import PreTrainedModel, ProcessorMixin
from trl.trainer.utils import add_fused_lm_head, use_adapter

from mdpo_pipeline.core.io import atomic_path, canonical_json
from mdpo_pipeline.training.packing import packed_completion_logps, use_packing
from mdpo_pipeline.training.data import CACHED_VIEWS, REFERENCE_COLUMNS, DataCollatorForMDPO

#: Cache column -> the view whose reference log-prob it holds (docs/method.md, "Objective": summed over answer tokens).
CACHE_COLUMNS = {"ref_chosen": "chosen", "ref_rejected": "rejected", "ref_chosen_corrupted": "chosen_corrupted"}
CACHE_SCHEMA = pa.schema([("pair_id", pa.string())] + [(name, pa.float64()) for name in CACHE_COLUMNS])
#: Parquet key-value metadata key holding the cache's summary (fingerprints, max_length, timing).
SUMMARY_KEY = b"mdpo_reference"
#: Batch entries that are not model inputs.
_NON_MODEL_KEYS = frozenset({"completion_mask", "ref_logps"})
_DATA_COLUMNS = ["pair_id", "prompt", "chosen", "rejected", "image", "corrupted_image"]


def completion_logps(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """Per-row log-prob of the completion tokens, summed (not averaged), from one fused-LM-head forward."""
    completion_mask = inputs["completion_mask"]
    labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
    model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
    outputs = model(**model_kwargs, labels=labels, fused_lm_head=True, use_cache=False)
    # The fused head zeroes every position whose label is -100, so a plain sum covers exactly the completion.
    # Prompt-learning PEFT prepends virtual tokens: keep only the positions of the real sequence.
    return outputs.log_probs[:, -(completion_mask.size(1) - 1) :].sum(dim=1)


@contextlib.contextmanager
def reference_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` as the reference: a PEFT model with adapters disabled (or TRL's frozen "ref" adapter copy)."""
    if not is_peft_model(model):
        yield
        return
    # TRL adds a "ref" copy when handed an already-trained adapter; a fresh adapter's reference is the base model.
    with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
        yield


def ensure_fused_lm_head(model: torch.nn.Module) -> None:
    """Give ``model`` TRL's fused LM head (``fused_lm_head=True`` forwards) unless it already has one."""
    target = model.get_base_model() if is_peft_model(model) else model
    code = getattr(target.forward, "__code__", None)  # None for accelerate's hooked (partial) forwards
    if code is None or "fused_lm_head" not in code.co_varnames:
        add_fused_lm_head(target)


def _hash_tensors(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of the base model's weights; a PEFT model's adapters are left out, so it hashes like its base."""
    if not is_peft_model(model):
        return _hash_tensors(model.state_dict())
    adapters = tuple(f".{name}." for name in model.peft_config)
    state = {
        name.replace(".base_layer.", "."): tensor
        for name, tensor in model.get_base_model().state_dict().items()
        if not any(adapter in name for adapter in adapters)
    }
    return _hash_tensors(state)


def processor_sha256(processor: ProcessorMixin) -> str:
    """sha256 of the processor's saved files (tokenizer, chat template, image processor settings)."""
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        processor.save_pretrained(tmp)
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                h.update(f"{path.relative_to(tmp).as_posix()}\n".encode())
                h.update(_processor_file_bytes(path))
    return h.hexdigest()


#: How a processor was loaded, not what it computes: saved into tokenizer_config.json by from_pretrained's kwargs
#: (``local_files_only`` follows HF_HUB_OFFLINE, which differs between the orchestrator and the training process).
_LOADING_KEYS = ("local_files_only", "cache_dir", "revision", "token", "_commit_hash", "force_download")


def _processor_file_bytes(path: Path) -> bytes:
    if path.name == "tokenizer_config.json":
        config = json.loads(path.read_text())
        for key in _LOADING_KEYS:
            config.pop(key, None)
        return canonical_json(config).encode()
    if path.name != "tokenizer.json":
        return path.read_bytes()
    # The Rust tokenizer keeps the padding/truncation of its last call (a left-padded generation, a collator's
    # max_length) and would save it: that is call state, not what the processor computes, so it is left out.
    tokenizer = json.loads(path.read_text())
    tokenizer.pop("padding", None)
    tokenizer.pop("truncation", None)
    return canonical_json(tokenizer).encode()


def _image_bytes(image: dict[str, Any]) -> bytes:
    return image["bytes"] if image["bytes"] is not None else Path(image["path"]).read_bytes()


def data_sha256(dataset: datasets.Dataset) -> dict[str, str]:
    """sha256 of the pairs (ids, messages, image bytes) and, separately, of the corrupted images' bytes."""
    raw = dataset.select_columns(_DATA_COLUMNS)
    for column in ("image", "corrupted_image"):
        raw = raw.cast_column(column, datasets.Image(decode=False))
    pairs, corrupted = hashlib.sha256(), hashlib.sha256()
    for row in raw:
        text = canonical_json({k: row[k] for k in ("pair_id", "prompt", "chosen", "rejected")})
        pairs.update(f"{text}\n".encode())
        pairs.update(hashlib.sha256(_image_bytes(row["image"])).digest())
        corrupted.update(f"{row['pair_id']}\n".encode())
        corrupted.update(hashlib.sha256(_image_bytes(row["corrupted_image"])).digest())
    return {"pairs": pairs.hexdigest(), "corrupted_images": corrupted.hexdigest()}


def reference_fingerprint(
    model: torch.nn.Module, processor: ProcessorMixin, dataset: datasets.Dataset, max_length: int | None
) -> dict[str, str]:
    """What reference log-probs depend on, hashed: base weights, processor, pairs, corrupted images, max_length."""
    parts = {"model": weights_sha256(model), "processor": processor_sha256(processor), **data_sha256(dataset)}
    combined = hashlib.sha256(canonical_json({**parts, "max_length": max_length}).encode()).hexdigest()
    return {"combined": combined, **parts}


def compute_reference_logprobs(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    dataset: datasets.Dataset,
    batch_size: int,
    out_path: str | os.PathLike,
    progress: bool = False,
    *,
    max_length: int | None = 1024,
    packed_rows: bool = True,
) -> dict[str, Any]:
    """Write the reference's summed log-probs of (chosen, image), (rejected, image), (chosen, corrupted image).

    The parquet (pair_id + CACHE_COLUMNS, float64) replaces ``out_path`` atomically; its metadata holds the
    returned summary. ``max_length`` must equal the training config's, since it truncates the same way;
``packed_rows`` packs the batches where the model type allows (training/packing.py), as training does. A PEFT
    model is evaluated as the trainer's reference (``reference_mode``). The model runs in its own dtype and
    device; a trainer that autocasts differently sees reference values that differ by that rounding.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    ensure_fused_lm_head(model)
    fingerprint_start = time.perf_counter()
    fingerprints = reference_fingerprint(model, processor, dataset, max_length)
    fingerprint_seconds = time.perf_counter() - fingerprint_start

    data = dataset.select_columns(_DATA_COLUMNS[1:])
    collator = DataCollatorForMDPO(processor, views=CACHED_VIEWS, max_length=max_length)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collator)
    device = next(model.parameters()).device
    forward = packed_completion_logps if use_packing(model, packed_rows) else completion_logps
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    chunks = []
    try:
        with torch.no_grad(), reference_mode(model):
            for batch in tqdm(loader, desc="reference log-probs", disable=not progress):
                batch = {k: v.to(device) for k, v in batch.items()}
                chunks.append(forward(model, batch).double().cpu().view(len(CACHED_VIEWS), -1))
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start

    logps = torch.cat(chunks, dim=1)  # (views, n)
    # Timings are returned, not stored: the cache is a pure function of its inputs (byte-identical on a rerun).
    summary = {
        "n": logps.size(1),
        "batch_size": batch_size,
        "max_length": max_length,
        "fingerprint": fingerprints["combined"],
        "fingerprints": fingerprints,
    }
    columns = {"pair_id": pa.array(list(dataset["pair_id"]), pa.string())}
    view_index = {view: i for i, view in enumerate(CACHED_VIEWS)}
    for name, view in CACHE_COLUMNS.items():
        columns[name] = pa.array(logps[view_index[view]].numpy(), pa.float64())
    table = pa.table(columns, schema=CACHE_SCHEMA.with_metadata({SUMMARY_KEY: canonical_json(summary)}))
    with atomic_path(out_path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return summary | {"timing": {"seconds": round(seconds, 3), "fingerprint_seconds": round(fingerprint_seconds, 3)}}


def read_reference_summary(path: str | os.PathLike) -> dict[str, Any]:
    """The summary stored in a reference cache's parquet metadata."""
    metadata = pq.read_schema(path).metadata or {}
    if SUMMARY_KEY not in metadata:
        raise ValueError(f"{path} is not a reference cache: its parquet metadata lacks {SUMMARY_KEY.decode()!r}")
    return json.loads(metadata[SUMMARY_KEY])


class StaleReferenceCache(ValueError):
    """The reference cache was computed for another base model, processor, pair set, crop set or max_length."""


def verify_reference_cache(
    path: str | os.PathLike,
    model: torch.nn.Module,
    processor: ProcessorMixin,
    dataset: datasets.Dataset,
    max_length: int | None,
) -> dict[str, Any]:
    """Check that the cache at ``path`` belongs to exactly these inputs; return its summary or raise naming what differs.

    Training against a stale cache would silently optimise against the wrong reference, so this runs before
    every cached training run (hashing is seconds even for 10K pairs)."""
    summary = read_reference_summary(path)
    current = reference_fingerprint(model, processor, dataset, max_length)
    if summary.get("fingerprint") == current["combined"]:
        return summary
    recorded = summary.get("fingerprints", {})
    changed = [part for part in ("model", "processor", "pairs", "corrupted_images") if recorded.get(part) != current[part]]
    if summary.get("max_length") != max_length:
        changed.append(f"max_length (cache {summary.get('max_length')}, run {max_length})")
    raise StaleReferenceCache(
        f"{path} does not match this run: {', '.join(changed) or 'fingerprint'} changed since it was computed. "
        "Rematerialize reference_logprobs (or set reference_cache to null for a live reference)"
    )


def load_reference_cache(path: str | os.PathLike) -> dict[str, tuple[float, float, float]]:
    """pair_id -> (ref_chosen, ref_rejected, ref_chosen_corrupted) of a cache from compute_reference_logprobs."""
    table = pq.read_table(path)
    missing = [name for name in CACHE_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{path} lacks reference cache columns {missing}")
    data = table.select(CACHE_SCHEMA.names).to_pydict()
    cache = {pid: tuple(values) for pid, *values in zip(*data.values())}
    if len(cache) != table.num_rows:
        raise ValueError(f"{path} has duplicate pair ids")
    return cache


def with_reference_logps(
    dataset: datasets.Dataset, cache: dict[str, tuple[float, float, float]]
) -> datasets.Dataset:
    """``dataset`` plus the cached reference log-prob columns the collator passes on, looked up by pair_id."""
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"a reference cache needs a map-style datasets.Dataset, got {type(dataset).__name__}")
    pair_ids = list(dataset["pair_id"])
    missing = [pid for pid in pair_ids if pid not in cache]
    if missing:
        shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
        raise ValueError(f"the reference cache lacks {len(missing)} of {len(pair_ids)} pair ids: {shown}")
    for i, view in enumerate(CACHE_COLUMNS.values()):
        dataset = dataset.add_column(REFERENCE_COLUMNS[view], [cache[pid][i] for pid in pair_ids])
    return dataset
