"""The guarantees of the three families, on every model type the generic builder makes, loaded as a user's own
checkpoint (``base_model: {path}``, preset ``auto``): nothing in the pipeline knows these types.

Per type, float32: one forward over the three views == one forward per (view, example), with images of different
sizes in one batch; the cached reference == the live one (adapter switched off); batched greedy generation == one
at a time; exactly one BOS where the tokenizer uses one; the end-of-answer token is trained; another image moves
the answer's log-probs; the adapter holds only LoRA tensors of the language model's linear layers and reloads with
``PeftModel.from_pretrained``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model
from PIL import Image
from safetensors import safe_open

from mdpo_pipeline.cli import main
from mdpo_pipeline.evaluation.model_sweep import BUG, WORKS, sweep
from mdpo_pipeline.evaluation.answers import GenerationSettings, Prompt
from mdpo_pipeline.evaluation.generation import encode_prompts, generate_answers
from mdpo_pipeline.training.builder import MODEL_TYPES, build_tiny
from mdpo_pipeline.training.chat import adds_bos, generation_prompt
from mdpo_pipeline.training.data import DataCollatorForMDPO, load_preference_dataset
from mdpo_pipeline.training.families import CheckpointError
from mdpo_pipeline.training.models import (
    UNTRAINABLE,
    check_base_model,
    language_model_linear_names,
    load_model_and_processor,
    lora_config,
)
from mdpo_pipeline.training.presets import GENERIC, MODEL_TYPE_PRESETS
from mdpo_pipeline.training.reference import (
    completion_logps,
    compute_reference_logprobs,
    ensure_fused_lm_head,
    load_reference_cache,
    reference_mode,
)
from tests.conftest import REPO, write_tiny_training_data
from tests.test_families import LOGP_ATOL, _examples, _image

#: The types the builder makes that the pipeline trains (UNTRAINABLE ones are refused, tested below).
TYPES = [t for t in MODEL_TYPES if t not in UNTRAINABLE]
#: Another image must move every answer's summed log-prob by more than float32 rounding (~1e-6 here), and one of
#: them by more than IMAGE_EFFECT.
IMAGE_EFFECT, ROUNDING = 1e-2, 1e-5


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict[str, Path]:
    """One tiny checkpoint per model type, built once for every test here."""
    root = tmp_path_factory.mktemp("model_types")
    return {t: build_tiny(t, root / t, seed=0) and root / t for t in TYPES}


def _load(built, model_type):
    model, processor = load_model_and_processor(GENERIC, built[model_type])
    model.eval()
    ensure_fused_lm_head(model)
    return model, processor


def test_at_least_twelve_model_types_are_built_and_trained():
    assert len(TYPES) >= 12, TYPES


@pytest.mark.parametrize("model_type", sorted(set(MODEL_TYPES) & set(UNTRAINABLE)))
def test_a_type_that_would_train_wrongly_is_refused_before_any_weights_load(model_type, tmp_path):
    build_tiny(model_type, tmp_path / model_type)
    with pytest.raises(CheckpointError, match=f"model_type '{model_type}' is not trained here: "):
        check_base_model(GENERIC, tmp_path / model_type)


#: A processor setting of another release per type, each changing how many image tokens a prompt gets.
OTHER_RELEASE = {"llava": ("num_additional_image_tokens", 0), "llava_next": ("num_additional_image_tokens", 0),
                 "llava_onevision": ("num_image_tokens", 9), "qwen2_vl": ("image_processor.merge_size", 1),
                 "qwen2_5_vl": ("image_processor.merge_size", 1), "qwen3_vl": ("image_processor.merge_size", 1),
                 "qwen3_vl_moe": ("image_processor.merge_size", 1), "gemma3": ("image_seq_length", 9),
                 "idefics3": ("image_seq_len", 16), "internvl": ("image_seq_length", 9),
                 "mistral3": ("spatial_merge_size", 1), "aya_vision": ("patch_size", 14)}


def test_every_type_with_image_tokens_has_a_mismatch_case():
    # mllama's language model holds one <|image|> per image whatever the processor's sizes: nothing to mismatch.
    assert set(OTHER_RELEASE) == set(TYPES) - {"mllama"}


@pytest.mark.parametrize("model_type", sorted(OTHER_RELEASE))
def test_image_tokens_that_disagree_with_the_models_features_stop_at_base_model(built, model_type, tmp_path):
    check_base_model(GENERIC, built[model_type])  # the release's own processor passes
    path = tmp_path / model_type
    shutil.copytree(built[model_type], path)
    key, value = OTHER_RELEASE[model_type]
    config = json.loads((path / "processor_config.json").read_text())
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    assert node[leaf] != value
    node[leaf] = value
    (path / "processor_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"at .*: the processor's image tokens do not fit the model's image "
                                              r"features \(.+\); the processor files"):
        check_base_model(GENERIC, path)


@pytest.mark.parametrize("model_type", TYPES)
def test_three_views_in_one_forward_equal_separate_forwards(built, model_type):
    model, processor = _load(built, model_type)
    examples = _examples()
    with torch.no_grad():
        together = completion_logps(model, DataCollatorForMDPO(processor)(examples))
        separate = [completion_logps(model, DataCollatorForMDPO(processor, views=(view,))([example]))
                    for view in ("chosen", "rejected", "chosen_corrupted") for example in examples]
    torch.testing.assert_close(together, torch.cat(separate), atol=LOGP_ATOL, rtol=0)


@pytest.mark.parametrize("model_type", TYPES)
def test_the_image_changes_the_answer_log_probs(built, model_type):
    model, processor = _load(built, model_type)
    examples = _examples()
    swapped = [dict(e, image=Image.new("RGB", e["image"].size, "navy")) for e in examples]
    with torch.no_grad():
        moved = (completion_logps(model, DataCollatorForMDPO(processor)(examples))
                 - completion_logps(model, DataCollatorForMDPO(processor)(swapped))).abs()
    seen = moved.view(3, -1)[:2]  # chosen and rejected see the swapped image, chosen_corrupted does not
    assert seen.min() > ROUNDING and seen.max() > IMAGE_EFFECT, moved


@pytest.mark.parametrize("model_type", TYPES)
def test_one_bos_and_the_end_of_answer_token_is_trained(built, model_type):
    model, processor = _load(built, model_type)
    tokenizer = processor.tokenizer
    (example,) = _examples()[:1]
    batch = DataCollatorForMDPO(processor, views=("chosen",))([example])
    trained_prompt = batch["input_ids"][0][(batch["completion_mask"][0] == 0) & (batch["attention_mask"][0] == 1)]
    question = example["prompt"][0]["content"][1]["text"]
    generated = encode_prompts(processor, [generation_prompt(processor, question)], [example["image"]])["input_ids"][0]
    assert trained_prompt.tolist() == generated.tolist()
    ids, bos = generated.tolist(), tokenizer.bos_token_id
    if adds_bos(tokenizer) or (bos is not None and bos in ids):  # written by the tokenizer or by the template
        assert ids[0] == bos and ids.count(bos) == 1
    stops = model.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops])
    batch = DataCollatorForMDPO(processor, views=("chosen", "rejected"))(_examples())
    for row, mask in zip(batch["input_ids"], batch["completion_mask"]):
        words = [t for t in row[mask.bool()].tolist() if tokenizer.decode([t]).strip()]
        assert words[-1] in stops, f"last trained token {tokenizer.decode(words[-1:])!r} is no stop token"


@pytest.mark.parametrize("model_type", TYPES)
def test_cached_reference_equals_live_and_the_adapter_is_language_model_lora_only(built, model_type, tmp_path):
    model, processor = _load(built, model_type)
    data = write_tiny_training_data(tmp_path, n_pairs=4, image_size=48)
    dataset = load_preference_dataset(data["pairs"], data["images"], data["corrupted"])
    compute_reference_logprobs(model, processor, dataset, batch_size=4, out_path=tmp_path / "ref.parquet",
                               max_length=1024)
    cache = load_reference_cache(tmp_path / "ref.parquet")
    targets = language_model_linear_names(model)
    policy = get_peft_model(model, lora_config(model, GENERIC, r=4, alpha=8))
    with torch.no_grad():  # a trained-looking adapter: the live reference must switch it off
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    policy.eval()
    rows = [dataset[i] for i in range(len(dataset))]
    collate = DataCollatorForMDPO(processor, max_length=1024)
    with torch.no_grad(), reference_mode(policy):
        live = completion_logps(policy, collate(rows)).view(3, -1)
    with torch.no_grad():
        adapted = completion_logps(policy, collate(rows)).view(3, -1)
    cached = torch.tensor([cache[r["pair_id"]] for r in rows], dtype=torch.float32).T
    torch.testing.assert_close(live, cached, atol=LOGP_ATOL, rtol=0)
    assert (adapted - cached).abs().max() > 1e-3, "the adapter changes the policy: the comparison can fail"

    policy.save_pretrained(tmp_path / "adapter")
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and all("lora_" in n for n in names)
    adapted_modules = {n.split(".lora_")[0].removeprefix("base_model.model.") for n in names}
    assert adapted_modules == set(targets), "LoRA on exactly the language model's linear layers"
    reloaded = PeftModel.from_pretrained(_load(built, model_type)[0], tmp_path / "adapter").eval()
    with torch.no_grad():
        again = completion_logps(reloaded, collate(rows)).view(3, -1)
    torch.testing.assert_close(again, adapted, atol=LOGP_ATOL, rtol=0)


@pytest.mark.parametrize("model_type", TYPES)
def test_batched_generation_equals_one_at_a_time(built, model_type, tmp_path):
    model, processor = _load(built, model_type)
    sizes = [(64, 64), (96, 56), (40, 72)]
    prompts = []
    for i, (w, h) in enumerate(sizes):
        path = tmp_path / f"{i}.png"
        _image(w, h, ("red", "green", "blue")[i]).save(path)
        prompts.append(Prompt(str(i), str(path), ("Describe this image.", "What is shown?", "Any circle?")[i]))
    batched = generate_answers(model, processor, prompts, GenerationSettings(batch_size=3, max_new_tokens=5))
    single = [generate_answers(model, processor, [p], GenerationSettings(batch_size=1, max_new_tokens=5))[0]
              for p in prompts]
    assert batched == single


@pytest.mark.slow
def test_the_sweep_finds_no_bug_and_docs_model_types_is_its_table():
    """Every image-text-to-text type of this transformers gets a verdict; the README's table is what it says."""
    verdicts = sweep()
    assert not [v for v in verdicts if v.verdict == BUG], [v for v in verdicts if v.verdict == BUG]
    assert {v.model_type for v in verdicts if v.verdict == WORKS} == set(TYPES)
    documented = re.findall(r"^\| `([^`]+)` \| ([a-z ]+) \| `([^`]+)` \|", (REPO / "docs/model_types.md").read_text(),
                            re.M)
    assert sorted(documented) == sorted((v.model_type, v.verdict, v.model_class) for v in verdicts), \
        "regenerate it: .venv/bin/mdpo models --write docs/model_types.md"


def test_mdpo_checkpoint_builds_a_model_type_the_user_path_trains(tmp_path, capsys):
    assert main(["checkpoint", "qwen3_vl", "--out", str(tmp_path / "q")]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] > 0
    assert check_base_model(GENERIC, tmp_path / "q") == str(tmp_path / "q")
    assert main(["checkpoint", "qwen3_vl", "--size", "mid", "--out", str(tmp_path / "m")]) == 2
    assert main(["checkpoint", "no_such_type", "--out", str(tmp_path / "n")]) == 2
    assert "no_such_type" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(MODEL_TYPE_PRESETS))
def test_a_model_type_preset_is_a_hub_id_over_the_generic_path_and_checks_its_type(name, built, tmp_path):
    """A preset is data: its hub id, the paper's defaults and the model type it expects, proven above."""
    preset = MODEL_TYPE_PRESETS[name]
    assert preset.generic and preset.hf_id and preset.model_type in TYPES
    assert check_base_model(name, built[preset.model_type]) == str(built[preset.model_type])
    other = next(t for t in TYPES if t != preset.model_type)
    with pytest.raises(CheckpointError, match=f"expects a {preset.model_type} checkpoint.*model_type '{other}'"):
        check_base_model(name, built[other])
