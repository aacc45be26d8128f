"""The mDPO training set from the pipeline's artifacts, and the collator that turns it into one 3B-row batch.

Rows of a batch are view-major: [chosen | rejected | chosen with the corrupted image], B rows each, so the
trainer splits the policy and the reference log-probs with one ``chunk``, as TRL does for [chosen; rejected].
SymMPO adds two views of the contrasting answer y' (under the image, and under the contrasting image m', which
corrupted_images' ``counterfactual`` strategy stores as the corrupted image): 5B rows.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import torch
from transformers import ProcessorMixin
from transformers.data.data_collator import DataCollatorMixin
from trl.data_utils import prepare_multimodal_messages

from mdpo_pipeline.core.images import as_rgb
from mdpo_pipeline.core.placeholders import describe_placeholders, placeholders_in
from mdpo_pipeline.training.chat import preference_texts

log = logging.getLogger(__name__)

#: view -> (completion column, image column) of the dataset.
VIEWS: dict[str, tuple[str, str]] = {
    "chosen": ("chosen", "image"),
    "rejected": ("rejected", "image"),
    "chosen_corrupted": ("chosen", "corrupted_image"),
    "contrast": ("contrast_answer", "image"),
    "contrast_corrupted": ("contrast_answer", "corrupted_image"),
}
#: The views of the mDPO family, which the reference cache holds (reference.py) and the collator makes by default.
CACHED_VIEWS: tuple[str, ...] = ("chosen", "rejected", "chosen_corrupted")
#: view -> dataset column holding its cached reference log-prob (added by reference.with_reference_logps). The
#: cache holds the first three; SymMPO's contrast views take the live reference.
REFERENCE_COLUMNS: dict[str, str] = {
    "chosen": "ref_chosen_logps",
    "rejected": "ref_rejected_logps",
    "chosen_corrupted": "ref_chosen_corrupted_logps",
    "contrast": "ref_contrast_logps",
    "contrast_corrupted": "ref_contrast_corrupted_logps",
}
#: The token tensors the collator builds itself; every other processor output shaped (rows, tokens, ...) is a
#: per-token output of the model type (Gemma's token_type_ids, Qwen's mm_token_type_ids, Mllama's
#: cross_attention_mask) and travels with its tokens.
_OWN_KEYS = ("input_ids", "attention_mask")
_MAX_LISTED = 10


def _listed(items: list[str]) -> str:
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def load_preference_dataset(
    pairs_dir: str | os.PathLike, image_root: str | os.PathLike, corrupted_dir: str | os.PathLike
) -> datasets.Dataset:
    """TRL conversational vision-preference rows (pair_id, prompt, chosen, rejected, image, corrupted_image, and
    contrast_answer when the corrupted images are SymMPO's contrasting images with their answers).

    Images are ``datasets.Image`` columns over file paths, so they are decoded to PIL only when a row is read.
    """
    pairs_dir, image_root, corrupted_dir = Path(pairs_dir), Path(image_root), Path(corrupted_dir)
    records = [json.loads(line) for line in (pairs_dir / "pairs_trl.jsonl").read_text().splitlines() if line]
    if not records:
        raise ValueError(f"{pairs_dir / 'pairs_trl.jsonl'} holds no pairs")
    # The TRL records carry no instruction id; pairs.parquet maps each pair to the instruction it was built from.
    index = pq.read_table(pairs_dir / "pairs.parquet", columns=["pair_id", "instruction_id"]).to_pydict()
    instruction_of = dict(zip(index["pair_id"], index["instruction_id"]))
    manifest_path = corrupted_dir / "manifest.parquet"
    wanted = ["sample_id", "corrupted_image", "contrast_answer"]
    present = set(pq.read_schema(manifest_path).names)  # manifests written before contrast_answer lack it
    manifest = pq.read_table(manifest_path, columns=[c for c in wanted if c in present]).to_pydict()
    corrupted_of = dict(zip(manifest["sample_id"], manifest["corrupted_image"]))
    answers = manifest.get("contrast_answer") or []
    contrast_of = {sid: a for sid, a in zip(manifest["sample_id"], answers) if a is not None}
    # corrupted_images writes quarantine.parquet only when it quarantined a sample (unreadable image, or one too
    # small for the crop range): those instructions have no corrupted image, so their pairs leave the set.
    quarantine_file = corrupted_dir / "quarantine.parquet"
    quarantined = (
        set(pq.read_table(quarantine_file, columns=["sample_id"])["sample_id"].to_pylist())
        if quarantine_file.is_file()
        else set()
    )

    unknown = [r["pair_id"] for r in records if r["pair_id"] not in instruction_of]
    if unknown:
        raise ValueError(f"pairs_trl.jsonl has pair ids missing from pairs.parquet: {_listed(unknown)}")
    kept = [r for r in records if instruction_of[r["pair_id"]] not in quarantined]
    if len(kept) < len(records):
        log.warning(
            "%d of %d pairs dropped: corrupted_images quarantined their instruction's image (%s)",
            len(records) - len(kept), len(records), quarantine_file,
        )
        if not kept:
            raise ValueError(f"every pair's instruction is quarantined in {quarantine_file}")
        records = kept
    uncorrupted = sorted({instruction_of[r["pair_id"]] for r in records} - corrupted_of.keys())
    if uncorrupted:
        raise ValueError(
            f"{corrupted_dir / 'manifest.parquet'} has no corrupted image for instructions {_listed(uncorrupted)}: "
            "rebuild corrupted_images from the current preference_pairs"
        )
    columns = {
        "pair_id": [r["pair_id"] for r in records],
        "prompt": [r["prompt"] for r in records],
        "chosen": [r["chosen"] for r in records],
        "rejected": [r["rejected"] for r in records],
        "image": [str(image_root / r["image"]) for r in records],
        "corrupted_image": [str(corrupted_dir / corrupted_of[instruction_of[r["pair_id"]]]) for r in records],
    }
    if contrast_of:  # the answer for the contrasting image, as a message like the chosen one
        columns["contrast_answer"] = [
            [{"role": "assistant", "content": [{"type": "text", "text": contrast_of[instruction_of[r["pair_id"]]]}]}]
            for r in records]
    missing = [p for p in sorted(set(columns["image"]) | set(columns["corrupted_image"])) if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image files are missing: {_listed(missing)}")
    dataset = datasets.Dataset.from_dict(columns)
    return dataset.cast_column("image", datasets.Image()).cast_column("corrupted_image", datasets.Image())


def _without_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**m, "content": [block for block in m["content"] if block["type"] != "image"]}
        if isinstance(m["content"], list)
        else m
        for m in messages
    ]


@dataclass
class DataCollatorForMDPO(DataCollatorMixin):
    """Tokenize and process rows on the fly into one batch of ``len(views) * B`` rows, view-major.

    The prompt text comes from the processor's chat template (via TRL's ``apply_chat_template``), once per
    example: every view of a pair shares it and differs only in the image or the completion. With
    ``withhold_image`` the image placeholder is removed from the prompt and no pixel values are produced.
    When the examples carry cached reference log-probs, ``ref_logps`` holds them in the same row order.
    """

    processor: ProcessorMixin
    views: tuple[str, ...] = CACHED_VIEWS
    withhold_image: bool = False
    max_length: int | None = None
    return_tensors: str = "pt"

    def __post_init__(self):
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown or not self.views:
            raise ValueError(f"views must be a non-empty subset of {list(VIEWS)}, got {list(self.views)}")

    def _template(self, example: dict[str, Any]) -> dict[str, str]:
        if self.withhold_image:
            prompt = prepare_multimodal_messages(_without_images(example["prompt"]))
        else:
            prompt = prepare_multimodal_messages(example["prompt"], images=[example["image"]])
        conversation = {
            "prompt": prompt,
            "chosen": prepare_multimodal_messages(example["chosen"]),
            "rejected": prepare_multimodal_messages(example["rejected"]),
        }
        if any(VIEWS[v][0] == "contrast_answer" for v in self.views):
            conversation["contrast_answer"] = prepare_multimodal_messages(example["contrast_answer"])
        return preference_texts(self.processor, conversation)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [self._template(example) for example in examples]
        prompts, completions, images = [], [], []
        for view in self.views:
            completion_key, image_key = VIEWS[view]
            for example, text in zip(examples, texts):
                prompts.append(text["prompt"])
                completions.append(text[completion_key])
                if not self.withhold_image:
                    # The view corrupted_images cropped (16-bit scaled, alpha over white); orientation is
                    # already applied by datasets.Image, and as_rgb does not apply it twice.
                    images.append([as_rgb(example[image_key])])

        # add_special_tokens=False: preference_texts wrote BOS and the end-of-answer token exactly once.
        prompt_batch = self.processor(
            images=images or None,
            text=prompts,
            padding=True,
            padding_side="left",
            return_tensors=self.return_tensors,
            add_special_tokens=False,
        )
        # An answer holds no image: its tokens are the tokenizer's (some processors refuse text without images).
        completion_batch = self.processor.tokenizer(
            completions,
            padding=True,
            padding_side="right",
            return_tensors=self.return_tensors,
            add_special_tokens=False,
        )
        completion_ids, completion_mask = completion_batch["input_ids"], completion_batch["attention_mask"]
        rows, prompt_length = prompt_batch["input_ids"].shape
        # An answer token carries what the prompt's last token does (left padding: always a real token): text for
        # token types, "sees the image" for Mllama's cross-attention mask.
        per_token = {
            key: torch.cat((value, value[:, -1:].expand(-1, completion_ids.shape[1], *value.shape[2:])), dim=1)
            for key, value in prompt_batch.items()
            if key not in _OWN_KEYS and torch.is_tensor(value) and value.dim() >= 2
            and value.shape[:2] == (rows, prompt_length)
        }
        attention_mask = torch.cat((prompt_batch["attention_mask"], completion_mask), dim=1)
        input_ids = torch.cat((prompt_batch["input_ids"], completion_ids), dim=1)
        completion_mask = torch.cat((torch.zeros_like(prompt_batch["attention_mask"]), completion_mask), dim=1)
        # Prompts are left-padded: flush_left moves every row to start at position 0, as TRL's collator does.
        attention_mask, input_ids, completion_mask, *packed = _flush_left(
            attention_mask, input_ids, completion_mask, *per_token.values()
        )
        output = prompt_batch  # keeps the image tensors (pixel_values, image_sizes, ...)
        truncate = slice(None, self.max_length)
        output["input_ids"] = input_ids[:, truncate]
        output["attention_mask"] = attention_mask[:, truncate]
        output["completion_mask"] = completion_mask[:, truncate]
        for key, value in zip(per_token, packed):
            output[key] = value[:, truncate]
        if all(REFERENCE_COLUMNS[view] in examples[0] for view in self.views):
            output["ref_logps"] = torch.tensor(
                [example[REFERENCE_COLUMNS[view]] for view in self.views for example in examples], dtype=torch.float32
            )
        return output


def _flush_left(mask: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """``mask`` and ``tensors`` with each row's tokens moved to start at position 0 and the all-padding columns
    dropped (TRL's flush_left), for tensors of any rank (rows, tokens, ...)."""
    length = mask.shape[1]
    index = (torch.arange(length, device=mask.device) + mask.argmax(dim=1, keepdim=True)) % length
    width = int((mask.gather(1, index).sum(dim=0) > 0).sum())
    out = []
    for t in (mask, *tensors):
        moved = t.gather(1, index.view(*index.shape, *[1] * (t.dim() - 2)).expand(-1, -1, *t.shape[2:]))
        out.append(moved[:, :width])
    return out


def prompt_lengths(dataset: datasets.Dataset, processor: ProcessorMixin, withhold_image: bool = False) -> list[int]:
    """Tokens of each row's prompt as the collator builds it, image tokens included (one processor call per row)."""
    collator = DataCollatorForMDPO(processor, views=("chosen",), withhold_image=withhold_image)
    lengths = []
    for row in dataset:
        batch = collator([row])
        lengths.append(int(((batch["completion_mask"][0] == 0) & (batch["attention_mask"][0] == 1)).sum()))
    return lengths


#: Processor (and tokenizer) attributes naming a token the processor expands into, or wraps around, image or video
#: features: Llava's image_token, Gemma 3's boi/eoi, Qwen's vision start/end, InternVL's start/end/context, Pixtral's
#: break/end, Idefics3's fake and global ones.
IMAGE_TOKEN_ATTRIBUTES = (
    "image_token", "video_token", "boi_token", "eoi_token", "vision_start_token", "vision_end_token",
    "start_image_token", "end_image_token", "context_image_token", "image_break_token", "image_end_token",
    "fake_image_token", "global_image_tag", "image_start_token", "image_seq_token",
)
#: An added token in markup ("<...>", "[...]", "<|...|>") whose text names an image, video or vision part is one too,
#: whatever attribute (if any) holds it; a plain word a tokenizer added ("image") is text like any other.
_IMAGE_MARKUP = re.compile(r"(?=.*[<>\[\]|])(?=.*(?:image|img|video|vision))", re.I | re.S)
#: The reason ``drop_image_token_rows`` records.
IMAGE_TOKEN_REASON = "text_has_image_token"


def model_image_tokens(processor: Any) -> tuple[str, ...]:
    """The image and video token strings of ``processor``: its and its tokenizer's IMAGE_TOKEN_ATTRIBUTES, and the
    tokenizer's added tokens whose text names an image, video or vision part."""
    tokenizer = getattr(processor, "tokenizer", None)
    found = set()
    for owner in (processor, tokenizer):
        for name in IMAGE_TOKEN_ATTRIBUTES:
            value = getattr(owner, name, None) if owner is not None else None
            value = getattr(value, "content", value)  # some processors keep an AddedToken, not its text
            if isinstance(value, str) and value.strip():
                found.add(value)
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    contents = (str(getattr(token, "content", token)) for token in added.values())
    found |= {content for content in contents if _IMAGE_MARKUP.match(content)}
    return tuple(sorted(found))


def _texts(messages: Any) -> list[str]:
    """Every text block of a conversational column value (a string, or messages whose content is text or blocks)."""
    if isinstance(messages, str):
        return [messages]
    out = []
    for message in messages or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            out.append(content)
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                out.append(block["text"])
    return out


def drop_image_token_rows(dataset: datasets.Dataset, processor: Any) -> tuple[datasets.Dataset, list[dict[str, Any]]]:
    """(rows whose prompt and answers hold none of the model's image tokens as text, the others with their reason).

    Such text becomes image tokens with no image behind them: the processor refuses the whole batch ("3 image
    tokens and 1 image"), so one row would stop every run and the reference cache. Ingest quarantines the common
    spellings (core/placeholders.py); this catches the base model's own, whatever they are."""
    tokens = model_image_tokens(processor)
    if not tokens or not len(dataset):
        return dataset, []
    texts = dataset.select_columns(["pair_id", "prompt", "chosen", "rejected"])  # no image is decoded
    keep, dropped = [], []
    for i, row in enumerate(texts):
        found = {column: placeholders_in("\n".join(_texts(row[column])), tokens)
                 for column in ("prompt", "chosen", "rejected")}
        found = {column: hits for column, hits in found.items() if hits}
        if not found:
            keep.append(i)
            continue
        where = "; ".join(f"{column} holds {describe_placeholders(hits)}" for column, hits in found.items())
        dropped.append({"pair_id": row["pair_id"], "reason": IMAGE_TOKEN_REASON,
                        "detail": f"{where}: the base model's image token(s) as text, which the processor would "
                                  "expand with no image behind them"})
    if not keep:
        raise ValueError(f"every pair holds the base model's image tokens {list(tokens)} as text, e.g. "
                         f"{dropped[0]['pair_id']}: {dropped[0]['detail']}")
    return (dataset if not dropped else dataset.select(keep)), dropped


def fit_max_length(
    dataset: datasets.Dataset, processor: ProcessorMixin, max_length: int | None, withhold_image: bool = False
) -> tuple[datasets.Dataset, list[dict[str, Any]]]:
    """(rows whose prompt leaves at least one answer token within ``max_length``, the others with their reason).

    Truncation cuts from the end, so such a row would train on no answer token at all: a silent zero in the loss.
    Its prompt is not cut instead, because the prompt holds the image tokens, which must stay whole."""
    if max_length is None:
        return dataset, []
    lengths = prompt_lengths(dataset, processor, withhold_image)
    keep = [i for i, n in enumerate(lengths) if n < max_length]
    dropped = [
        {"pair_id": dataset[i]["pair_id"], "reason": "prompt_exceeds_max_length",
         "detail": f"prompt has {n} tokens (image tokens included), max_length is {max_length}: no answer token fits"}
        for i, n in enumerate(lengths) if n >= max_length
    ]
    return (dataset if not dropped else dataset.select(keep)), dropped

