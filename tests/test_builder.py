"""The generic tiny-checkpoint builder (training/builder.py) on every model type it makes: the checkpoint reloads
offline with the real classes, its chat template renders an image turn the model accepts, images change the
logits, the same seed gives the same weights, and answers end with an end-of-turn token in the vocabulary.

Float32 on CPU; one checkpoint per type is built once and shared."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

from mdpo_pipeline.training import builder
from mdpo_pipeline.training.builder import MODEL_TYPES, NOT_BUILT, build_tiny
from mdpo_pipeline.training.families import CheckpointError, build_checkpoint, image_only, transformers_class

#: The types the pipeline wants a stand-in for; every one is built or says why not.
TARGETS = ("llava", "qwen2_vl", "qwen2_5_vl", "gemma3", "llava_next", "llava_onevision", "qwen3_vl", "qwen3_vl_moe",
           "idefics3", "smolvlm", "internvl", "mistral3", "mllama", "paligemma", "aya_vision", "gemma3n", "gemma4")
#: Max-abs logit change two different images must make: far above float32 rounding (~1e-6 here).
IMAGES_MATTER = 1e-3
QUESTION, ANSWER = "What is in this picture?", "A red circle on the left."


def noise(seed: int, side: int = 32) -> Image.Image:
    """A random RGB image: two seeds differ in every patch."""
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (side, side, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """model_type → (model, processor, saved dir), each built on first use (xdist workers build only theirs)."""
    root, cache = tmp_path_factory.mktemp("tiny"), {}

    def get(model_type: str):
        if model_type not in cache:
            cache[model_type] = (*build_tiny(model_type, root / model_type, seed=0), root / model_type)
        return cache[model_type]

    return get


def _prompt(processor) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _logits(model, processor, image) -> torch.Tensor:
    inputs = processor(text=[_prompt(processor)], images=[image], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**inputs).logits


def _image_token_id(config) -> int:
    return next(getattr(config, k) for k in ("image_token_id", "image_token_index") if hasattr(config, k))


def test_every_target_is_built_or_says_why_not():
    assert set(TARGETS) <= set(MODEL_TYPES) | set(NOT_BUILT)
    assert not set(MODEL_TYPES) & set(NOT_BUILT)
    assert len(set(TARGETS) & set(MODEL_TYPES)) >= 12


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_saves_and_reloads_offline(built, model_type):
    model, processor, path = built(model_type)
    assert json.loads((path / "mdpo_builder.json").read_text()) == {"model_type": model_type, "seed": 0}
    reloaded = transformers.AutoModelForImageTextToText.from_pretrained(path, local_files_only=True)
    assert type(reloaded) is type(model)
    assert reloaded.config.architectures == [type(model).__name__]
    before, after = model.state_dict(), reloaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert reloaded.generation_config.eos_token_id == model.generation_config.eos_token_id

    cls = image_only(transformers_class(PROCESSOR_MAPPING_NAMES[model_type]))
    loaded = cls.from_pretrained(path, backend="pil", local_files_only=True)
    assert type(loaded.image_processor).__name__.endswith("Pil")
    assert loaded.chat_template == processor.chat_template
    # The reloaded processor makes the same inputs: same tokens, same image size and token count.
    text = _prompt(processor)
    a = processor(text=[text], images=[noise(0)], return_tensors="pt", add_special_tokens=False)
    b = loaded(text=[text], images=[noise(0)], return_tensors="pt", add_special_tokens=False)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_chat_prompt_with_an_image_is_what_the_model_takes(built, model_type):
    model, processor, _ = built(model_type)
    text = _prompt(processor)
    assert QUESTION in text
    inputs = processor(text=[text], images=[noise(0)], return_tensors="pt", add_special_tokens=False)
    ids = inputs["input_ids"]
    # The placeholders the processor writes are the config's image token (the tokenizer's id, not the release's).
    image = ids[0] == _image_token_id(model.config)
    assert image.any()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == ids.shape and logits.shape[-1] >= len(processor.tokenizer)
    assert torch.isfinite(logits).all()
    if hasattr(model.config.text_config, "cross_attention_layers"):  # Mllama: one <|image|>, read by cross-attention
        assert image.sum() == 1
        return
    # The model counts the placeholders against its image features: one fewer is refused, so the count above was
    # exactly what it expects.
    keep = torch.arange(ids.shape[1]) != image.nonzero()[-1].item()
    fewer = {k: v[:, keep] if isinstance(v, torch.Tensor) and v.shape[:2] == ids.shape else v
             for k, v in inputs.items()}
    with pytest.raises(ValueError, match="do not match"), torch.no_grad():
        model(**fewer)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_images_change_the_logits(built, model_type):
    model, processor, _ = built(model_type)
    diff = (_logits(model, processor, noise(0)) - _logits(model, processor, noise(1))).abs().max().item()
    print(f"{model_type}: max |logits(image 0) - logits(image 1)| = {diff:.4g}")
    assert diff > IMAGES_MATTER


def test_gemma3_images_reach_the_logits_only_through_the_reinitialised_projector(monkeypatch):
    """transformers zero-initialises Gemma 3's mm_input_projection_weight: without re-initialising it every image
    gives the same logits, which is what the builder (and families.build_checkpoint) must prevent."""
    monkeypatch.setattr(builder, "reinit_zeros", lambda *a, **k: [])
    model, processor = build_tiny("gemma3")
    assert not model.model.multi_modal_projector.mm_input_projection_weight.any()
    assert (_logits(model, processor, noise(0)) - _logits(model, processor, noise(1))).abs().max() < 1e-6


def test_family_checkpoints_have_no_zero_weight_matrix():
    model, _ = build_checkpoint("gemma-3")
    assert all(p.any() for p in model.parameters() if p.dim() >= 2)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_same_seed_same_weights(built, model_type):
    model, _, _ = built(model_type)
    again, other = build_tiny(model_type, seed=0)[0].state_dict(), build_tiny(model_type, seed=1)[0].state_dict()
    weights = model.state_dict()
    assert all(torch.equal(w, again[k]) for k, w in weights.items())
    assert any(not torch.equal(w, other[k]) for k, w in weights.items())


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_answers_end_with_an_end_of_turn_token(built, model_type):
    model, processor, _ = built(model_type)
    tokenizer = processor.tokenizer
    assert tokenizer.decode(tokenizer(ANSWER, add_special_tokens=False)["input_ids"]) == ANSWER
    stops = model.generation_config.eos_token_id
    assert stops and all(isinstance(i, int) and i < len(tokenizer) for i in stops)
    conversation = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]},
                    {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]}]
    out = tokenizer.apply_chat_template(conversation, chat_template=processor.chat_template, tokenize=True,
                                        return_dict=True, return_assistant_tokens_mask=True)
    answer = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    # The trained tokens are the answer and the end-of-turn token generation stops at.
    assert answer[-1] == stops[0] and tokenizer.decode(answer[:-1]) == ANSWER


@pytest.mark.parametrize("model_type", sorted(NOT_BUILT))
def test_types_it_cannot_build_say_why(model_type):
    with pytest.raises(CheckpointError, match=model_type):
        build_tiny(model_type)


def test_unknown_type_and_bad_image_size_are_checkpoint_errors():
    with pytest.raises(CheckpointError, match="bert"):
        build_tiny("bert")
    with pytest.raises(CheckpointError, match="multiple of 28"):
        build_tiny("llava", image_size=50)
