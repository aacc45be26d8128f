"""Batched greedy generation for the benchmarks: the model (with its adapter merged) answers the prompts."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from peft import PeftModel
from PIL import Image
from tqdm import tqdm

from mdpo_pipeline.evaluation.answers import GenerationSettings, Prompt
from mdpo_pipeline.training.chat import generation_prompt
from mdpo_pipeline.training.models import load_model_and_processor
from mdpo_pipeline.training.reference import weights_sha256


def load_eval_model(
    preset: str, base_path: str | None, adapter_dir: str | os.PathLike | None = None, *, allow_remote_code: bool = False
):
    """The base model (with the adapter merged in, when given) in eval mode, its processor, and the sha256 of the
    base model's own weights (the identity every score of this base carries)."""

    model, processor = load_model_and_processor(preset, base_path, allow_remote_code=allow_remote_code)
    base_sha = weights_sha256(model)
    if adapter_dir is not None:

        # Merged, generation runs at the base model's speed instead of paying for LoRA's extra matmuls.
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval(), processor, base_sha


def encode_prompts(processor, texts: Sequence[str], images: Sequence[Image.Image]):
    """Left-padded model inputs for prompt texts from ``chat.generation_prompt``, one image each.

    ``add_special_tokens=False`` because the prompt text already holds the BOS the training rows hold."""
    return processor(images=[[image] for image in images], text=list(texts), padding=True, padding_side="left",
                     return_tensors="pt", add_special_tokens=False)


@torch.no_grad()
def generate_answers(
    model, processor, prompts: Sequence[Prompt], settings: GenerationSettings = GenerationSettings(),
    progress: bool = False,
) -> list[str]:
    """Greedy answers to ``prompts`` in their order; batches group prompts of similar length to save padding."""
    texts = [generation_prompt(processor, p.question) for p in prompts]
    lengths = [len(processor.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))
    device = next(model.parameters()).device
    answers: list[str | None] = [None] * len(prompts)
    batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    if progress:

        batches = tqdm(batches, desc="generate", unit="batch")
    pad_id = processor.tokenizer.pad_token_id
    for batch in batches:
        images = []
        for i in batch:
            with Image.open(prompts[i].image) as im:
                images.append(im.convert("RGB"))
        inputs = encode_prompts(processor, [texts[i] for i in batch], images).to(device)
        out = model.generate(**inputs, max_new_tokens=settings.max_new_tokens, do_sample=False, use_cache=True,
                             pad_token_id=pad_id)
        decoded = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(batch, decoded):
            answers[i] = text.strip()
    return answers  # type: ignore[return-value]


def generate_one_by_one(model, processor, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[str]:
    """The unbatched baseline (one generate() per prompt) that bench_eval.py compares against."""
    single = GenerationSettings(batch_size=1, max_new_tokens=settings.max_new_tokens)
    return [generate_answers(model, processor, [p], single)[0] for p in prompts]
