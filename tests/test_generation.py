"""Batched greedy generation: same answers as one prompt at a time, in the prompts' order; stored answer files."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from mdpo_pipeline.evaluation.answers import (
    GenerationSettings,
    Prompt,
    generation_fingerprint,
    read_generations,
    write_generations,
)
from mdpo_pipeline.evaluation.generation import generate_answers, generate_one_by_one
from mdpo_pipeline.shapeworld.tiny import build_tiny_llava


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    questions = ["Describe this image.", "Is there a red star in the image?",
                 "Provide a thorough description of the given image, please.", "What colour is the ring?", "Hi"]
    out = []
    for i, q in enumerate(questions):
        image = Image.new("RGB", (32, 32), "grey")
        ImageDraw.Draw(image).rectangle((2 + 3 * i, 4, 14 + 3 * i, 20), fill=("red", "blue", "green", "white", "cyan")[i])
        path = root / f"{i}.png"
        image.save(path)
        out.append(Prompt(id=f"q{i}", image=str(path), question=q))
    return out


def test_batched_answers_equal_one_by_one_and_keep_order(prompts):
    model, processor = build_tiny_llava(image_size=32, seed=3)
    model.eval()
    settings = GenerationSettings(batch_size=3, max_new_tokens=6)
    batched = generate_answers(model, processor, prompts, settings)
    single = generate_one_by_one(model, processor, prompts, settings)
    # Left padding with RoPE shifts every position by the same offset, so greedy answers must not change.
    assert batched == single
    assert len(batched) == len(prompts) and all(isinstance(a, str) for a in batched)
    assert len(set(batched)) > 1, "different images/questions should not all give one answer"


def test_answer_files_round_trip_and_are_ignored_when_the_fingerprint_differs(prompts, tmp_path):
    settings = GenerationSettings(batch_size=2, max_new_tokens=4)
    fingerprint = generation_fingerprint("model-sha", prompts, settings)
    path = write_generations(tmp_path / "amber.jsonl", prompts, [f"a{i}" for i in range(len(prompts))], fingerprint)
    assert read_generations(path, fingerprint) == {f"q{i}": f"a{i}" for i in range(len(prompts))}
    other = generation_fingerprint("other-model", prompts, settings)
    assert read_generations(path, other) is None
    assert read_generations(tmp_path / "missing.jsonl", fingerprint) is None
    assert generation_fingerprint("model-sha", prompts[:2], settings) != fingerprint


def test_settings_are_validated():
    with pytest.raises(ValueError):
        GenerationSettings(batch_size=0)
