"""Real VLM families on tiny random-initialised checkpoints of their real classes, built offline in the hub's layout:
loading without torchvision, identical tokenization in training and generation, the trained end-of-answer token,
one-forward three-view log-probs, cached == live reference, batched == one-at-a-time generation, and bad input.

Float32 throughout; tolerances are stated where values are compared."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from PIL import Image, ImageDraw

from mdpo_pipeline.evaluation.answers import GenerationSettings, Prompt
from mdpo_pipeline.evaluation.generation import encode_prompts, generate_answers
from mdpo_pipeline.training.chat import generation_prompt
from mdpo_pipeline.training.data import DataCollatorForMDPO, load_preference_dataset
from mdpo_pipeline.training.families import FAMILIES, CheckpointError, build_checkpoint
from mdpo_pipeline.training.models import load_model_and_processor, lora_config
from mdpo_pipeline.training.presets import PRESETS
from mdpo_pipeline.training.reference import (
    completion_logps,
    compute_reference_logprobs,
    ensure_fused_lm_head,
    load_reference_cache,
    reference_mode,
)
from mdpo_pipeline.shapeworld.tiny import shapeworld_words
from tests.conftest import write_tiny_training_data

#: The preset each family's tests load through (the user's path: ``base_model: {preset, path}``).
PRESET_OF = {"llava-1.5": "llava-1.5-7b", "qwen2.5-vl": "qwen2.5-vl-3b", "gemma-3": "gemma-3-4b"}
FAMILY_NAMES = sorted(FAMILIES)
#: Log-probs summed over ~10 answer tokens of a float32 model: batching/padding changes only rounding.
LOGP_ATOL = 1e-4


def test_every_family_has_a_preset_and_every_preset_a_family():
    assert set(PRESET_OF) == set(FAMILIES)
    assert {p.family for p in PRESETS.values()} == {*FAMILIES, "shapeworld"}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One tiny checkpoint per family, its tokenizer's merges learnt on ShapeWorld's words."""
    root = tmp_path_factory.mktemp("checkpoints")
    corpus = [" ".join(shapeworld_words())]
    for family in FAMILIES:
        build_checkpoint(family, root / family, corpus=corpus, seed=0)
    return {family: root / family for family in FAMILIES}


def _load(checkpoints, family):
    return load_model_and_processor(PRESET_OF[family], checkpoints[family])


def _image(width: int, height: int, colour: str) -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).ellipse((4, 4, width // 2, height // 2), fill=colour)
    return image


def _examples() -> list[dict]:
    """Two pairs whose images differ in size (and from the corrupted ones), as the collator receives them."""
    def turn(role, text, image=False):
        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        return [{"role": role, "content": content}]

    return [
        {"prompt": turn("user", "What is shown in the image?", image=True),
         "chosen": turn("assistant", "A red circle."), "rejected": turn("assistant", "A blue square and a red circle."),
         "image": _image(64, 64, "red"), "corrupted_image": _image(64, 64, "white")},
        {"prompt": turn("user", "Describe this image.", image=True),
         "chosen": turn("assistant", "There is a green circle on the left."),
         "rejected": turn("assistant", "A cross."),
         "image": _image(96, 56, "green"), "corrupted_image": _image(40, 72, "yellow")},
    ]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_checkpoint_has_the_hub_layout_and_loads_without_torchvision(checkpoints, family, tmp_path):
    fam = FAMILIES[family]
    path = checkpoints[family]
    files = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "processor_config.json", "chat_template.jinja"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == [fam.model_class]
    tokenizer = json.loads((path / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "BPE" and tokenizer["pre_tokenizer"]["type"] == "ByteLevel"
    assert importlib.util.find_spec("torchvision") is None, "this environment proves loading without torchvision"

    model, processor = _load(checkpoints, family)
    assert type(model).__name__ == fam.model_class and type(processor).__name__ == fam.processor_class
    assert type(processor.image_processor).__name__ == fam.image_processor_class
    assert set(fam.special_tokens) <= set(processor.tokenizer.get_vocab())
    stops = model.generation_config.eos_token_id
    assert sorted(stops) == sorted(processor.tokenizer.convert_tokens_to_ids(list(fam.stop_tokens)))
    from mdpo_pipeline.training.models import load_processor
    from mdpo_pipeline.training.reference import processor_sha256

    processor.save_pretrained(tmp_path / "saved")  # and saves, and loads back the same, without torchvision
    assert processor_sha256(load_processor(PRESET_OF[family], tmp_path / "saved")) == processor_sha256(processor)
    if family == "llava-1.5":  # the llava-hf port: feature layer -2, CLS dropped
        assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"
        assert model.config.vision_config.model_type == "clip_vision_model"


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_training_reference_and_generation_tokenize_the_prompt_identically(checkpoints, family):
    _, processor = _load(checkpoints, family)
    tokenizer = processor.tokenizer
    (example,) = _examples()[:1]
    batch = DataCollatorForMDPO(processor, views=("chosen",))([example])
    trained_prompt = batch["input_ids"][0][(batch["completion_mask"][0] == 0) & (batch["attention_mask"][0] == 1)]
    question = example["prompt"][0]["content"][1]["text"]
    generated = encode_prompts(processor, [generation_prompt(processor, question)], [example["image"]])["input_ids"][0]
    assert trained_prompt.tolist() == generated.tolist()
    ids = generated.tolist()
    if FAMILIES[family].add_bos:  # exactly one <bos>, first, whether or not the template writes it
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    else:
        assert tokenizer.bos_token_id is None or tokenizer.bos_token_id not in ids


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_end_of_answer_token_is_trained(checkpoints, family):
    model, processor = _load(checkpoints, family)
    stops = set(model.generation_config.eos_token_id)
    batch = DataCollatorForMDPO(processor, views=("chosen", "rejected"))(_examples())
    for row, mask in zip(batch["input_ids"], batch["completion_mask"]):
        trained = row[mask.bool()].tolist()
        words = [t for t in trained if processor.tokenizer.decode([t]).strip()]
        assert words[-1] in stops, f"last trained token {processor.tokenizer.decode(words[-1:])!r} is no stop token"
        assert sum(t in stops for t in trained) == 1


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_one_forward_over_three_views_equals_separate_forwards(checkpoints, family):
    """Images of different sizes in one batch; the view-major batch against one forward per (view, example)."""
    model, processor = _load(checkpoints, family)
    model.eval()
    ensure_fused_lm_head(model)
    examples = _examples()
    with torch.no_grad():
        together = completion_logps(model, DataCollatorForMDPO(processor)(examples))
        separate = [
            completion_logps(model, DataCollatorForMDPO(processor, views=(view,))([example]))
            for view in ("chosen", "rejected", "chosen_corrupted")
            for example in examples
        ]
    assert together.shape == (6,)
    torch.testing.assert_close(together, torch.cat(separate), atol=LOGP_ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_cached_reference_equals_live_reference(checkpoints, family, tmp_path):
    model, processor = _load(checkpoints, family)
    data = write_tiny_training_data(tmp_path, n_pairs=6, image_size=48)
    dataset = load_preference_dataset(data["pairs"], data["images"], data["corrupted"])
    compute_reference_logprobs(model, processor, dataset, batch_size=4, out_path=tmp_path / "ref.parquet",
                               max_length=512)
    cache = load_reference_cache(tmp_path / "ref.parquet")

    policy = get_peft_model(model, lora_config(model, PRESET_OF[family], r=4, alpha=8))
    with torch.no_grad():  # a trained-looking adapter: the live reference must switch it off
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    policy.eval()
    ensure_fused_lm_head(policy)
    rows = [dataset[i] for i in range(len(dataset))]
    with torch.no_grad(), reference_mode(policy):
        live = completion_logps(policy, DataCollatorForMDPO(processor, max_length=512)(rows)).view(3, -1)
        adapted = None
    with torch.no_grad():
        adapted = completion_logps(policy, DataCollatorForMDPO(processor, max_length=512)(rows)).view(3, -1)
    cached = torch.tensor([cache[r["pair_id"]] for r in rows], dtype=torch.float32).T
    torch.testing.assert_close(live, cached, atol=LOGP_ATOL, rtol=0)
    assert (adapted - cached).abs().max() > 1e-3, "the adapter changes the policy: the comparison can fail"


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_batched_generation_equals_one_at_a_time(checkpoints, family, tmp_path):
    model, processor = _load(checkpoints, family)
    model.eval()
    sizes = [(64, 64), (96, 56), (40, 72), (56, 56)]
    prompts = []
    for i, (w, h) in enumerate(sizes):
        path = tmp_path / f"{i}.png"
        _image(w, h, ("red", "green", "blue", "black")[i]).save(path)
        prompts.append(Prompt(str(i), str(path), ("Describe this image.", "What is shown?", "Any circle?", "Hi")[i]))
    settings = GenerationSettings(batch_size=4, max_new_tokens=6)
    batched = generate_answers(model, processor, prompts, settings)
    single = [generate_answers(model, processor, [p], GenerationSettings(batch_size=1, max_new_tokens=6))[0]
              for p in prompts]
    assert batched == single
    assert any(batched), "a random model still generates something"


# --- bad input ----------------------------------------------------------------------------------


def _copy(checkpoints, family, tmp_path) -> Path:
    dest = tmp_path / family
    shutil.copytree(checkpoints[family], dest)
    return dest


@pytest.mark.parametrize("missing", ["tokenizer.json", "processor_config.json"])
def test_checkpoint_missing_a_processor_file_names_it(checkpoints, tmp_path, missing):
    path = _copy(checkpoints, "qwen2.5-vl", tmp_path)
    (path / missing).unlink()
    with pytest.raises(CheckpointError, match="whole hub snapshot") as err:
        load_model_and_processor("qwen2.5-vl-3b", path)
    assert str(path) in str(err.value) and missing.split(".")[0].split("_")[0] in str(err.value)


def test_chat_template_without_an_image_turn_is_refused(checkpoints, tmp_path):
    path = _copy(checkpoints, "llava-1.5", tmp_path)
    (path / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'text' %}"
        "{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    )
    with pytest.raises(CheckpointError, match="without the image token '<image>'"):
        load_model_and_processor("llava-1.5-7b", path)


def test_checkpoint_of_another_or_unknown_family_is_refused(checkpoints, tmp_path):
    with pytest.raises(CheckpointError, match="expects a llava-1.5 checkpoint.*a qwen2.5-vl checkpoint"):
        load_model_and_processor("llava-1.5-7b", checkpoints["qwen2.5-vl"])
    path = _copy(checkpoints, "gemma-3", tmp_path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"architectures": ["PaliGemmaForConditionalGeneration"]}))
    with pytest.raises(CheckpointError, match="no supported family; supported families: .*gemma-3"):
        load_model_and_processor("gemma-3-4b", path)


def test_unknown_family_name_lists_the_known_ones():
    with pytest.raises(CheckpointError, match="unknown model family 'idefics3'; known: .*qwen2.5-vl"):
        build_checkpoint("idefics3")


def test_processor_fingerprint_ignores_how_it_was_loaded(checkpoints):
    """The orchestrator and the training process load with different hub settings (local_files_only follows
    HF_HUB_OFFLINE); the reference cache's fingerprint must not see that."""
    from mdpo_pipeline.training.models import load_processor
    from mdpo_pipeline.training.reference import processor_sha256

    online = load_processor("qwen2.5-vl-3b", checkpoints["qwen2.5-vl"], local_files_only=False)
    offline = load_processor("qwen2.5-vl-3b", checkpoints["qwen2.5-vl"], local_files_only=True)
    assert processor_sha256(online) == processor_sha256(offline)


def test_gpu_image_installs_torchvision_built_for_the_pinned_torch():
    """The GPU families' processors need torchvision on a GPU box; it must match constraints.txt's torch (a
    mismatched torchvision fails to import: 'operator torchvision::nms does not exist')."""
    import re

    repo = Path(__file__).resolve().parent.parent
    dockerfile = (repo / "docker/Dockerfile.train").read_text()
    (packages,) = re.findall(r'ARG GPU_PACKAGES="([^"]*)"', dockerfile)
    (vision,) = re.findall(r"torchvision==0\.(\d+)\.\*", packages)
    (torch_minor,) = re.findall(r"^torch==2\.(\d+)\.", (repo / "constraints.txt").read_text(), re.M)
    assert int(vision) == int(torch_minor) + 15, "torchvision 0.(N+15) pairs with torch 2.N"
    assert '$GPU_PACKAGES' in dockerfile and "bitsandbytes" in packages


def test_full_size_has_the_releases_dimensions():
    """`size="full"` is what the GPU benchmark trains: the releases' own architectures (built on the meta device,
    with the release vocabulary), within 0.5 % of their published parameter counts."""
    releases = {"llava-1.5": (32064, 7.063e9), "qwen2.5-vl": (152064, 8.292e9), "gemma-3": (262208, 4.300e9)}
    for family, (vocab, params) in releases.items():
        model, _ = build_checkpoint(family, size="full", device="meta")
        model.resize_token_embeddings(vocab, mean_resizing=False)
        assert abs(sum(p.numel() for p in model.parameters()) / params - 1) < 0.005, family
