"""Model presets and loading, LoRA targets, and the tiny offline ShapeWorld LLaVA."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from mdpo_pipeline.shapeworld import (
    ShapeWorldConfig,
    generate_benchmarks,
    generate_vlfeedback,
)
from mdpo_pipeline.training.models import (
    ModelUnavailable,
    RemoteCodeNotAllowed,
    apply_lora,
    language_model_linear_names,
    load_model_and_processor,
    save_model,
)
from mdpo_pipeline.training.presets import PRESETS, ModelPreset
from mdpo_pipeline.shapeworld.tiny import build_tiny_llava

PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]


def _answer(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def _images(n: int = 2, size: int = 64) -> list[Image.Image]:
    return [Image.new("RGB", (size, size), (40 * i, 90, 200)) for i in range(n)]


def test_chat_template_renders_llava_turns():
    _, processor = build_tiny_llava()
    prompt = processor.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    assert prompt == "USER: <image>\nDescribe this image. ASSISTANT:"
    full = processor.apply_chat_template(PROMPT + _answer("A red star and a blue ring."), tokenize=False)
    assert full == "USER: <image>\nDescribe this image. ASSISTANT: A red star and a blue ring.</s>"
    assert full.startswith(prompt)
    plain = [{"role": "user", "content": "How many stars are there?"}]
    assert processor.apply_chat_template(plain, add_generation_prompt=True, tokenize=False) == (
        "USER: How many stars are there? ASSISTANT:"
    )


def _shapeworld_texts(root) -> list[str]:
    """Every question, answer, caption and prompt a ShapeWorld generation writes."""
    vlf, bench = root / "vlf", root / "bench"
    texts = []
    for row in map(json.loads, (vlf / "vlfeedback_80k.jsonl").read_text().splitlines()):
        texts += [row["prompt"], *(c["response"] for c in row["completions"])]
    for row in map(json.loads, (vlf / "shapeworld_truth.jsonl").read_text().splitlines()):
        texts += [row["question"], row["expected_answer"]]
    texts += [q["query"] for q in json.loads((bench / "amber/data/query/query_all.json").read_text())]
    texts += [json.loads(line)["question"] for line in (bench / "object_halbench/prompts.jsonl").read_text().splitlines()]
    captions = json.loads((bench / "object_halbench/annotations/captions.json").read_text())["annotations"]
    texts += [c["caption"] for c in captions]
    for rec in json.loads((bench / "mmhal/response_template.json").read_text()):
        texts += [rec["question"], rec["gt_answer"]]
    return texts


def test_tokenizer_covers_every_shapeworld_text(tmp_path):
    tok = build_tiny_llava()[1].tokenizer
    cfg = ShapeWorldConfig(n_instructions=150, image_size=32, bad_rating_share=0.0, amber_generative=10, amber_discriminative=40,
                           object_halbench=6)
    generate_vlfeedback(cfg, tmp_path / "vlf")
    generate_benchmarks(cfg, tmp_path / "bench")
    texts = _shapeworld_texts(tmp_path)
    unknown = {t for t in texts if tok.unk_token_id in tok(t, add_special_tokens=False).input_ids}
    assert len(texts) > 500 and not unknown, sorted(unknown)[:5]


def test_tiny_llava_saves_reloads_trains_and_generates(tmp_path):
    model, processor = build_tiny_llava(tmp_path / "tiny", seed=3)
    assert model.config.vision_config.patch_size == 16 and model.config.vision_config.model_type == "shapeworld_cnn"
    n_params = sum(p.numel() for p in model.parameters())
    assert 200_000 < n_params < 2_000_000
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "tiny")
    processor = AutoProcessor.from_pretrained(tmp_path / "tiny")
    assert type(processor.image_processor).__name__ == "CLIPImageProcessorPil"

    answers = ["A red star.", "A blue ring and a green half moon."]
    prompts = [processor.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)] * 2
    texts = [p + f" {a}</s>" for p, a in zip(prompts, answers)]
    batch = processor(images=_images(), text=texts, padding=True, return_tensors="pt")
    assert (batch["input_ids"] == processor.image_token_id).sum(dim=1).tolist() == [16, 16]  # (64 / 16)²
    prompt_len = processor(images=_images(1), text=prompts[:1], return_tensors="pt")["input_ids"].shape[1]
    labels = batch["input_ids"].clone()
    labels[:, :prompt_len] = -100
    labels[batch["attention_mask"] == 0] = -100
    out = model(**batch, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.lm_head.weight.grad is not None

    gen_in = processor(images=_images(), text=prompts, padding=True, padding_side="left", return_tensors="pt")
    generated = model.generate(**gen_in, max_new_tokens=5, do_sample=False)
    assert generated.shape[0] == 2 and generated.shape[1] <= gen_in["input_ids"].shape[1] + 5


def test_saved_processor_pads_right_even_after_left_padded_generation(tmp_path):
    model, processor = build_tiny_llava()
    prompts = ["USER: <image>\nHi ASSISTANT:", "USER: <image>\nDescribe this image. ASSISTANT:"]
    processor(images=_images(), text=prompts, padding=True, padding_side="left", return_tensors="pt")
    save_model(model, processor, tmp_path)
    batch = AutoProcessor.from_pretrained(tmp_path)(images=_images(), text=prompts, padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, 0] == 1 and batch["attention_mask"][0, -1] == 0


def test_same_seed_same_weights_and_trl_collator_accepts_the_processor():
    a, processor = build_tiny_llava(seed=1)
    b, _ = build_tiny_llava(seed=1)
    c, _ = build_tiny_llava(seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)

    example = {
        "prompt": [{"role": "user", "content": "Describe this image."}],
        "chosen": [{"role": "assistant", "content": "A red star."}],
        "rejected": [{"role": "assistant", "content": "A red star and a half moon."}],
        "images": _images(1),
    }
    batch = DataCollatorForVisionPreference(processor=processor)([example])
    assert batch["input_ids"].shape[0] == 2 and batch["pixel_values"].shape == (2, 3, 64, 64)
    chosen = batch["input_ids"][0][batch["completion_mask"][0].bool()]
    assert processor.tokenizer.decode(chosen) == "a red star. </s>"
    assert (batch["input_ids"][0] == processor.image_token_id).sum() == 16


# --- presets, loading and LoRA ------------------------------------------------------------------


@pytest.fixture
def offline_env(monkeypatch, tmp_path):
    """Offline, with an empty HF cache and no model dir, so nothing real can be found."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("MDPO_MODEL_DIR", raising=False)


@pytest.mark.parametrize(
    ("name", "hf_id"), [("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf"), ("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct")]
)
def test_offline_real_model_names_the_id_and_how_to_supply_it(offline_env, name, hf_id):
    with pytest.raises(ModelUnavailable) as err:
        load_model_and_processor(name)
    msg = str(err.value)
    assert hf_id in msg and f"huggingface-cli download {hf_id}" in msg
    assert "MDPO_MODEL_DIR" in msg and "path=" in msg


def test_remote_code_needs_explicit_opt_in(offline_env):
    """No shipped preset runs hub code; one that would must be refused unless the caller opts in."""
    assert not any(p.requires_remote_code for p in PRESETS.values())
    remote = ModelPreset("remote-vlm", "example/remote-vlm", "llava-1.5", requires_remote_code=True)
    with pytest.raises(RemoteCodeNotAllowed, match="allow_remote_code=True"):
        load_model_and_processor(remote)
    with pytest.raises(ModelUnavailable, match="example/remote-vlm"):  # opted in: fails only for lack of weights
        load_model_and_processor(remote, allow_remote_code=True)


def test_presets_carry_paper_and_tiny_defaults():
    for name in ("llava-1.5-7b", "qwen2.5-vl-3b", "qwen2.5-vl-7b", "gemma-3-4b"):
        p = PRESETS[name]
        assert (p.lora_r, p.lora_alpha, p.lora_dropout, p.dtype) == (64, 128, 0.05, "bfloat16")
        t = p.training
        assert (t.epochs, t.batch_size, t.per_device_batch_size, t.learning_rate) == (3, 32, 4, 1e-5)
        assert (t.lr_scheduler, t.warmup_ratio, t.weight_decay, t.adam_beta2, t.max_length) == (
            "cosine", 0.1, 0.05, 0.98, 2048
        )
        assert t.bf16 and t.gradient_checkpointing
    tiny = PRESETS["shapeworld-tiny"]
    assert tiny.hf_id is None and tiny.lora_r < 64 and tiny.training.learning_rate > 1e-5


def test_tiny_preset_loads_from_path_and_model_dir(tmp_path, monkeypatch, offline_env):
    build_tiny_llava(tmp_path / "models" / "shapeworld-tiny")
    model, processor = load_model_and_processor("shapeworld-tiny", tmp_path / "models" / "shapeworld-tiny")
    assert isinstance(model, LlavaForConditionalGeneration) and processor.image_token_id == model.config.image_token_id
    monkeypatch.setenv("MDPO_MODEL_DIR", str(tmp_path / "models"))
    assert isinstance(load_model_and_processor("shapeworld-tiny")[0], LlavaForConditionalGeneration)
    with pytest.raises(ModelUnavailable, match="no config.json"):
        load_model_and_processor("shapeworld-tiny", tmp_path)
    (tmp_path / "models" / "shapeworld-tiny" / "model.safetensors").unlink()
    with pytest.raises(ModelUnavailable, match="safetensors"):
        load_model_and_processor("shapeworld-tiny")


def test_lora_targets_only_language_model_linears_and_saves_peft_adapter(tmp_path):
    model, _ = build_tiny_llava(tmp_path / "base")
    targets = language_model_linear_names(model)
    assert {t.rsplit(".", 1)[1] for t in targets} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                      "down_proj"}
    assert all(".language_model." in t for t in targets)
    assert len(targets) == 7 * model.config.text_config.num_hidden_layers

    peft_model = apply_lora(model, "shapeworld-tiny")
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".language_model." in n for n in trainable)
    lora_modules = {n.rsplit(".lora_", 1)[0] for n, _ in peft_model.named_parameters() if "lora_" in n}
    assert not any(part in n for n in lora_modules for part in ("vision_tower", "multi_modal_projector", "lm_head"))
    assert peft_model.peft_config["default"].r == 8

    with torch.no_grad():  # a non-zero adapter, so reloading it is observable
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.01)
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    reloaded = PeftModel.from_pretrained(LlavaForConditionalGeneration.from_pretrained(tmp_path / "base"),
                                         tmp_path / "adapter")
    want = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    got = dict(reloaded.named_parameters())
    assert all(torch.equal(got[n], p) for n, p in want.items())


def test_cnn_tower_has_no_train_mode_drift_and_reloads_through_auto_classes(tmp_path):
    """Under LoRA the tower is frozen but the model is in train mode: its features must not depend on the mode
    (no BatchNorm statistics, no dropout), or cached reference log-probs would disagree with the policy."""
    from transformers import AutoConfig, AutoModel

    from mdpo_pipeline.shapeworld.vision import ShapeWorldVisionConfig, ShapeWorldVisionModel

    tower = ShapeWorldVisionModel(ShapeWorldVisionConfig(image_size=32, channels=(16, 16), stem_channels=8))
    pixels = torch.randn(3, 3, 32, 32)
    out = tower(pixels)
    assert out.last_hidden_state.shape == (3, 4, 128) and out.hidden_states[-1] is out.last_hidden_state
    tower.eval()
    assert torch.equal(tower(pixels).last_hidden_state, tower.train()(pixels).last_hidden_state)
    tower.save_pretrained(tmp_path / "tower")
    assert AutoConfig.from_pretrained(tmp_path / "tower").model_type == "shapeworld_cnn"
    again = AutoModel.from_pretrained(tmp_path / "tower")
    assert torch.equal(again(pixels).last_hidden_state, tower(pixels).last_hidden_state)
    with pytest.raises(ValueError, match="multiple of the tower's stride"):
        ShapeWorldVisionConfig(image_size=40)
