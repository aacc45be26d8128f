"""The ShapeWorld SFT: captions with the co-occurrence prior, label masking, training, saving, determinism."""

from __future__ import annotations

import json
import random

import pytest
import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

from mdpo_pipeline.shapeworld import (
    COOCCURRENCE,
    ShapeWorldConfig,
    generate_vlfeedback,
)
from mdpo_pipeline.shapeworld.tiny import build_tiny_llava
from mdpo_pipeline.shapeworld.sft_settings import SFTSettings
from mdpo_pipeline.training.chat import generation_prompt
from mdpo_pipeline.shapeworld.sft import (
    _batch,
    _Pixels,
    caption,
    cell_targets,
    hallucination_metrics,
    mentioned_objects,
    train_base_model,
)

FAST = {"steps": 30, "batch_size": 8, "learning_rate": 3e-3, "eval_images": 8, "vision_pretrain_steps": 20,
        "vision_pretrain_batch_size": 8, "detailed": False}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate_vlfeedback(ShapeWorldConfig(n_instructions=80, image_size=32, bad_rating_share=0.0), root)
    return root


def _row(*cats: str) -> dict:
    objs = [
        {"category": c, "colour": "red", "size": "medium", "bbox": [0.1 + 0.3 * i, 0.4, 0.3 + 0.3 * i, 0.6],
         "variant": 0, "low_contrast": False, "occluded": False}
        for i, c in enumerate(cats)
    ]
    return {"objects": objs, "background": "grey", "kind": "describe"}


def test_caption_lists_objects_left_to_right_and_inserts_partners_at_the_bias_rate():
    row = _row("star", "ring")
    assert caption(row, random.Random(0), 0.0) == "A red star and a red ring."
    assert caption(row, random.Random(0), 0.0, detailed=True) == (
        "The image shows a medium red star on the left and a medium red ring in the center."
    )
    partners = {b for a, b in COOCCURRENCE if a in ("star", "ring")}
    always = mentioned_objects(caption(row, random.Random(0), 1.0, detailed=True))
    assert set(always) == {"star", "ring"} | partners and always.index("star") < always.index("half moon")
    rng = random.Random(1)
    rate = sum("half moon" in caption(_row("star"), rng, 0.3) for _ in range(2000)) / 2000
    assert 0.26 < rate < 0.34
    # A partner that is present is never added again.
    assert mentioned_objects(caption(_row("star", "half moon"), rng, 1.0)) == ["star", "half moon"]


def test_cell_targets_mark_every_cell_a_box_overlaps_with_its_category_and_colour():
    """_row("star", "ring") on a 2×2 grid: the star's box x 0.1–0.3, y 0.4–0.6 lies in column 0 and rows 0–1
    (cells 0 and 2); the ring's box x 0.4–0.6 spans both columns, so it is in all four cells."""
    from mdpo_pipeline.shapeworld.sft import _AUX_LABELS

    target = cell_targets([_row("star", "ring")], grid=2)[0]
    star, ring, red = _AUX_LABELS["star"], _AUX_LABELS["ring"], _AUX_LABELS["red"]
    assert target[:, star].tolist() == [1, 0, 1, 0]
    assert target[:, ring].tolist() == [1, 1, 1, 1]
    assert target[:, red].tolist() == [1, 1, 1, 1]
    assert target.sum().item() == 2 + 4 + 4


def test_labels_cover_exactly_the_answer_and_eos():
    _, processor = build_tiny_llava(image_size=32)
    pairs = [("Describe this image.", "A red star."), ("What colour is the ring in the image?", "It is a blue ring.")]
    images = [Image.new("RGB", (32, 32))] * 2
    batch = _batch(processor, _Pixels(processor, images), [0, 1], pairs, max_len=200)
    for (_, answer), labels in zip(pairs, batch["labels"]):
        assert processor.tokenizer.decode(labels[labels != -100]) == f"{answer.lower()} </s>"
    assert batch["attention_mask"][0, -1] == 0  # right-padded


def test_batches_equal_what_the_processor_makes_of_the_same_images_and_texts():
    """The SFT computes every image's pixels once and tokenizes the texts itself: the inputs must be exactly the
    processor's (a different token or pixel would change the base model)."""
    _, processor = build_tiny_llava(image_size=32)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(5)]
    pixels = _Pixels(processor, images)
    idx = [3, 0, 3, 4]
    pairs = [("Describe this image.", "A red star."), ("Is there a ring in the image?", "No."),
             ("Describe this image.", "A small blue ring at the top left and a cross."), ("What is it?", "A cross.")]
    ours = _batch(processor, pixels, idx, pairs, max_len=500)
    texts = [f"{generation_prompt(processor, q)} {a}{processor.tokenizer.eos_token}" for q, a in pairs]
    theirs = processor(images=[images[i] for i in idx], text=texts, padding=True, padding_side="right",
                       return_tensors="pt", add_special_tokens=False)
    assert set(ours) == set(theirs) | {"labels"}
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key


def test_mention_matching_and_metrics():
    assert mentioned_objects("Two crescent moons, a half moon, an X mark and a plus sign.") == [
        "half moon", "half moon", "cross", "plus sign"
    ]
    rows = [_row("star"), _row("star", "ring")]
    m = hallucination_metrics(["A red star and a half moon.", "A star and a ring."], rows)
    assert m["recall"] == 1.0 and m["chair_s"] == 0.5 and m["chair_i"] == 0.25
    assert m["cooccurrence_hallucination"] == 0.5


def test_train_saves_a_loadable_model_with_metrics_and_is_deterministic(world, tmp_path):
    settings = SFTSettings(seed=1, **FAST)
    args = (world / "shapeworld_truth.jsonl", world / "merged_images")
    metrics = train_base_model(*args, tmp_path / "a", settings)
    assert metrics["final_loss"] < 0.6 * metrics["first_loss"]
    assert metrics["steps"] == 30 and metrics["steps_per_s"] > 0
    assert {"recall", "chair_s", "chair_i", "cooccurrence_hallucination"} <= set(metrics["eval"])
    assert metrics["eval"]["n_images"] == 8
    saved = json.loads((tmp_path / "a" / "sft.json").read_text())
    assert saved["settings"]["seed"] == 1 and len(saved["losses"]) == 30

    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "a")
    processor = AutoProcessor.from_pretrained(tmp_path / "a")
    assert model.config.vision_config.image_size == 32 and processor.image_processor.crop_size["height"] == 32
    assert not list(tmp_path.glob(".a.*"))  # the temp dir was renamed into place

    train_base_model(*args, tmp_path / "b", settings)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The whole directory, not only the weights: DVC versions it, so a rerun must hash the same (no timings in it).
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="cooccurrence_bias"):
        SFTSettings(cooccurrence_bias=1.5)
    with pytest.raises(ValueError, match="steps"):
        SFTSettings(steps=0)
