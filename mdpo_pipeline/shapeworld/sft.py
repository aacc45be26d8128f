"""Supervised fine-tune of the tiny ShapeWorld LLaVA: the base model that preference training then aligns.

The model learns to describe scenes and answer short questions from ShapeWorld's ground truth. With
probability ``cooccurrence_bias`` a caption also names the co-occurrence partner B of a shown object A
when B is absent, which plants the language prior that makes a VLM hallucinate (docs/shapeworld.md, "The planted
hallucination: co-occurrence bias").
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from mdpo_pipeline.core.eval.chair import SynonymTable, chair_scores
from mdpo_pipeline.core.io import atomic_dir, write_json
from mdpo_pipeline.training.chat import generation_prompt
from mdpo_pipeline.training.models import save_model
from mdpo_pipeline.shapeworld import (
    COLOURS,
    COOCCURRENCE,
    VOCABULARY,
    Scene,
    SceneObject,
    synonym_lines,
)
from mdpo_pipeline.shapeworld.feedback import DESCRIBE_PROMPTS, Mention
from mdpo_pipeline.shapeworld.sft_settings import SFTSettings
from mdpo_pipeline.shapeworld.tiny import build_tiny_llava
from mdpo_pipeline.shapeworld.world import SIZES, article

EVAL_PROMPT = DESCRIBE_PROMPTS[0]  # "Describe this image."
_PARTNERS: dict[str, tuple[str, ...]] = {
    a: tuple(b for a2, b in COOCCURRENCE if a2 == a) for a in {a for a, _ in COOCCURRENCE}
}


def _scene(row: dict) -> Scene:
    keys = ("category", "colour", "size", "variant", "low_contrast", "occluded")
    objs = tuple(SceneObject(bbox=tuple(o["bbox"]), **{k: o[k] for k in keys}) for o in row["objects"])
    return Scene(objects=objs, background=row["background"], texture_seed=0)


def caption(row: dict, rng: random.Random, bias: float, detailed: bool = False) -> str:
    """A caption of the row's scene in reading order, with co-occurrence partners inserted at rate ``bias``."""
    scene = _scene(row)
    present = scene.categories
    parts = []
    for obj in scene.reading_order():
        parts.append(Mention.of(obj))
        for partner in _PARTNERS.get(obj.category, ()):
            if partner not in present and rng.random() < bias:
                colour = rng.choice(tuple(COLOURS))
                parts.append(Mention(partner, colour, rng.choice(tuple(SIZES)), obj.position))
                present = present | {partner}  # name an invented object once
    if detailed:
        texts = [m.text() for m in parts]
    else:
        texts = [f"{article(m.colour)} {m.colour} {m.category}" for m in parts]
    body = texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]
    return f"The image shows {body}." if detailed else body[0].upper() + body[1:] + "."


# --- object mentions: the benchmarks' own CHAIR -------------------------------------------------------------

#: ShapeWorld's synonym list, as its Object HalBench split ships it: the SFT's progress is measured like the benchmark.
_TABLE = SynonymTable.from_lines(synonym_lines(), source="ShapeWorld synonyms")


def mentioned_objects(text: str) -> list[str]:
    """Canonical categories named in ``text``, in order, as the benchmark's CHAIR matches them."""
    return list(chair_scores([text], [()], _TABLE).per_answer[0].mentioned)


def hallucination_metrics(answers: list[str], rows: list[dict]) -> dict:
    """The benchmark's CHAIR_s / CHAIR_i and object recall, and the share of eligible images naming a
    co-occurrence partner."""
    truths = [{o["category"] for o in row["objects"]} for row in rows]
    result = chair_scores(answers, truths, _TABLE)
    eligible = partner_named = 0
    for detail, truth in zip(result.per_answer, truths):
        partners = {b for a, b in COOCCURRENCE if a in truth and b not in truth}
        if partners:
            eligible += 1
            partner_named += bool(partners & set(detail.mentioned))
    return {
        "recall": result.recall,
        "chair_s": result.chair_s,
        "chair_i": result.chair_i,
        "cooccurrence_hallucination": partner_named / eligible if eligible else None,
        "n_images": len(answers),
    }


# --- training -----------------------------------------------------------------------------------


def _example(row: dict, rng: random.Random, settings: SFTSettings) -> tuple[str, str]:
    if row["kind"] != "describe" and rng.random() >= settings.describe_share:
        return row["question"], row["expected_answer"]
    return rng.choice(DESCRIBE_PROMPTS), caption(row, rng, settings.cooccurrence_bias, settings.detailed)


class _Pixels:
    """Every image's pixel values, computed once by the processor's image processor (it treats each image on its
    own), and the number of tokens the processor expands one image token into: SFT batches then cost a gather and
    a tokenizer call instead of re-processing 32 images per step (the same tensors, a fifth of the SFT's time)."""

    def __init__(self, processor, images: list[Image.Image]):
        self.values = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        probe = processor(images=images[:1], text=[processor.image_token], add_special_tokens=False)
        self.image_tokens = probe["input_ids"][0].count(processor.image_token_id)


def _batch(processor, pixels: _Pixels, idx: list[int], pairs: list[tuple[str, str]], max_len: int) -> dict:
    """Model inputs of images ``idx`` with labels on the answer tokens (and the closing </s>) only; equal to what
    ``processor(images=..., text=...)`` returns for them."""
    texts = [f"{generation_prompt(processor, q)} {a}{processor.tokenizer.eos_token}" for q, a in pairs]
    image_token = processor.image_token
    texts = [t.replace(image_token, image_token * pixels.image_tokens) for t in texts]
    batch = processor.tokenizer(texts, padding=True, padding_side="right", return_tensors="pt",
                                add_special_tokens=False)
    batch["pixel_values"] = pixels.values[idx]
    tok = processor.tokenizer
    # A word-level tokenizer splits the same way in context and alone, so the answer is the last n real tokens.
    n_answer = [len(tok(f" {a}{tok.eos_token}", add_special_tokens=False)["input_ids"]) for _, a in pairs]
    labels = torch.full_like(batch["input_ids"], -100)
    for i, n in enumerate(n_answer):
        answer = batch["attention_mask"][i].nonzero().flatten()[-n:]
        labels[i, answer] = batch["input_ids"][i, answer]
    batch["labels"] = labels
    if batch["input_ids"].shape[1] > max_len:
        for key in ("input_ids", "attention_mask", "labels"):
            batch[key] = batch[key][:, :max_len]
    return batch


_AUX_LABELS = {name: i for i, name in enumerate((*VOCABULARY, *COLOURS))}


def cell_targets(rows: list[dict], grid: int) -> torch.Tensor:
    """Multi-hot (category, colour) targets per cell of a ``grid``×``grid`` image grid, from objects' boxes.

    A cell is marked with every object whose box overlaps it; the tower's token for that cell learns to say
    what is there, the way a pretrained vision encoder's patch features do before LLaVA ever sees them."""
    target = torch.zeros(len(rows), grid * grid, len(_AUX_LABELS))
    for i, row in enumerate(rows):
        for obj in row["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            cols = range(min(int(x0 * grid), grid - 1), min(int(x1 * grid), grid - 1) + 1)
            for r in range(min(int(y0 * grid), grid - 1), min(int(y1 * grid), grid - 1) + 1):
                for c in cols:
                    target[i, r * grid + c, _AUX_LABELS[obj["category"]]] = 1.0
                    target[i, r * grid + c, _AUX_LABELS[obj["colour"]]] = 1.0
    return target


def pretrain_vision(
    tower, head: torch.nn.Module, pixel_values: torch.Tensor, targets: torch.Tensor, settings: "SFTSettings",
    rng: random.Random, progress: bool = False,
) -> list[float]:
    """Train the tower and the per-cell head on ``targets`` alone; return the losses.

    Shapes are what a from-scratch tower learns slowly (colours come in a few hundred steps, categories only
    after ~1,000), and this costs a third of an SFT step: the language model is not run at all."""
    params = [*tower.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps = range(settings.vision_pretrain_steps)
    if progress:

        steps = tqdm(steps, desc="vision pretraining")
    losses = []
    tower.train()
    for _ in steps:
        idx = [rng.randrange(len(pixel_values)) for _ in range(settings.vision_pretrain_batch_size)]
        logits = head(tower(pixel_values[idx]).last_hidden_state)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _lr_factor(step: int, settings: SFTSettings) -> float:
    warmup = max(1, round(settings.warmup_share * settings.steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, settings.steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine down to a 10 % floor


@torch.no_grad()
def describe(model, processor, images: list[Image.Image], batch_size: int = 64, max_new_tokens: int = 96) -> list[str]:
    """Greedy answers to "Describe this image." for each image."""
    model.eval()
    prompt = generation_prompt(processor, EVAL_PROMPT)
    answers = []
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        inputs = processor(images=chunk, text=[prompt] * len(chunk), padding=True, padding_side="left",
                           return_tensors="pt", add_special_tokens=False)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        answers += processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return answers


#: The fields of a ShapeWorld truth record the SFT reads (and nothing else: the preference answers' cues are not
#: among them, so a world that differs only there trains the same base model; the experiment grid relies on it).
TRUTH_FIELDS = ("id", "kind", "question", "expected_answer", "objects", "background")


def read_truths(truth_jsonl: str | Path) -> list[dict]:
    """The truth records of ``truth_jsonl`` as the SFT sees them: TRUTH_FIELDS only."""
    rows = [json.loads(line) for line in Path(truth_jsonl).read_text().splitlines() if line.strip()]
    return [{k: row[k] for k in TRUTH_FIELDS} for row in rows]


def _load(truth_jsonl: str | Path, image_dir: str | Path) -> tuple[list[dict], list[Image.Image]]:
    rows = read_truths(truth_jsonl)
    images = []
    for row in rows:
        with Image.open(Path(image_dir) / f"{row['id']}.jpg") as im:
            images.append(im.convert("RGB"))
    return rows, images


def train_base_model(
    truth_jsonl: str | Path, image_dir: str | Path, out_dir: str | Path, settings: SFTSettings | None = None,
    progress: bool = False,
) -> dict:
    """Build the tiny LLaVA, fine-tune it on ShapeWorld captions and answers, save it atomically; return metrics."""
    settings = settings or SFTSettings()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    rows, images = _load(truth_jsonl, image_dir)
    n_eval = min(settings.eval_images, len(rows) - 1)
    train_idx = list(range(len(rows) - n_eval))
    eval_rows, eval_images = rows[len(train_idx) :], images[len(train_idx) :]

    model, processor = build_tiny_llava(image_size=images[0].width, seed=settings.seed)
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    tower = model.model.vision_tower
    # A per-cell classifier on the tower's tokens, used during SFT only and not saved: it stands in for the
    # pretraining a real VLM's vision encoder had, without which a from-scratch tower learns too slowly here.
    aux_head = torch.nn.Linear(tower.config.hidden_size, len(_AUX_LABELS))
    grid = tower.config.image_size // tower.config.patch_size
    vision_losses: list[float] = []
    vision_start = time.perf_counter()
    pixels = _Pixels(processor, images)
    if settings.vision_pretrain_steps:
        train_rows = [rows[i] for i in train_idx]
        vision_losses = pretrain_vision(tower, aux_head, pixels.values[train_idx], cell_targets(train_rows, grid),
                                        settings, rng, progress)
    vision_s = time.perf_counter() - vision_start
    captured: dict[str, torch.Tensor] = {}
    hook = tower.register_forward_hook(lambda m, a, out: captured.__setitem__("tokens", out.last_hidden_state))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n] + [aux_head.weight]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embed" in n] + [aux_head.bias]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate, betas=(0.9, 0.98),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, settings))
    losses: list[float] = []
    aux_losses: list[float] = []
    steps = range(settings.steps)
    if progress:

        steps = tqdm(steps, desc="sft")
    model.train()
    start = time.perf_counter()
    for _ in steps:
        idx = [rng.choice(train_idx) for _ in range(settings.batch_size)]
        batch = _batch(processor, pixels, idx, [_example(rows[i], rng, settings) for i in idx], settings.max_len)
        lm_loss = loss = model(**batch).loss
        if settings.vision_aux_weight:
            aux = torch.nn.functional.binary_cross_entropy_with_logits(
                aux_head(captured["tokens"]), cell_targets([rows[i] for i in idx], grid)
            )
            aux_losses.append(aux.item())
            loss = loss + settings.vision_aux_weight * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(lm_loss.item())
    train_s = time.perf_counter() - start
    hook.remove()

    start = time.perf_counter()
    answers = describe(model, processor, eval_images) if eval_rows else []
    metrics = {
        "first_loss": losses[0],
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "final_vision_pretrain_loss": sum(vision_losses[-20:]) / len(vision_losses[-20:]) if vision_losses else None,
        "final_vision_aux_loss": sum(aux_losses[-20:]) / len(aux_losses[-20:]) if aux_losses else None,
        "steps": settings.steps,
        "n_params": sum(p.numel() for p in model.parameters()),
        "eval": hallucination_metrics(answers, eval_rows),
        "eval_examples": [{"id": r["id"], "answer": a} for r, a in zip(eval_rows[:5], answers)],
    }
    # Timings are returned, not saved: the model directory is a pure function of its inputs (byte-identical reruns).
    timing = {"steps_per_s": settings.steps / train_s, "train_s": train_s, "vision_pretrain_s": vision_s,
              "eval_s": time.perf_counter() - start}
    with atomic_dir(out_dir) as tmp:
        save_model(model, processor, tmp)
        write_json({"settings": asdict(settings), "metrics": metrics, "losses": losses,
                    "vision_pretrain_losses": vision_losses}, tmp / "sft.json")
    return metrics | timing
