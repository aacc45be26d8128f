"""MDPOTrainer on the tiny offline LLaVA: config checks, one step per method, one policy forward per step,
the reference cache against the live reference, and the text-only (dpo_no_image) batches."""

from __future__ import annotations

import dataclasses
import json
import math

import pyarrow.parquet as pq
import pytest
import torch
from peft import LoraConfig, get_peft_model
from trl import DPOConfig

from mdpo_pipeline.core.losses import BETA
from mdpo_pipeline.core.methods import METHODS, LossWeights
from mdpo_pipeline.training.config import MDPOConfig
from mdpo_pipeline.training.data import DataCollatorForMDPO, load_preference_dataset
from mdpo_pipeline.training.reference import (
    completion_logps,
    compute_reference_logprobs,
    ensure_fused_lm_head,
    load_reference_cache,
    read_reference_summary,
    reference_mode,
    weights_sha256,
)
from mdpo_pipeline.training.trainer import MDPOTrainer
from mdpo_pipeline.shapeworld.tiny import build_tiny_llava
from tests.conftest import write_tiny_training_data

IMAGE_SIZE = 32
BATCH = 2
N_PAIRS = 6
#: Tolerance for cached vs live reference losses: the same float32 forward, only padded to other lengths.
LOSS_TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model is faster on one thread, and far faster on a shared 2-core runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Tiny pipeline artifacts written by the pipeline's own writers: pairs, images, corrupted images."""
    return write_tiny_training_data(tmp_path_factory.mktemp("artifacts"), N_PAIRS, IMAGE_SIZE)


@pytest.fixture(scope="module")
def dataset(artifacts):
    return load_preference_dataset(artifacts["pairs"], artifacts["images"], artifacts["corrupted"])


def lora(**kwargs) -> LoraConfig:
    """LoRA on the language model's linear layers only, as the paper does."""
    return LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*_proj", **kwargs)


def config(tmp_path, **kwargs) -> MDPOConfig:
    """A CPU config for one quick step."""
    defaults = {
        "output_dir": str(tmp_path / "run"), "max_steps": 1, "per_device_train_batch_size": BATCH,
        "learning_rate": 1e-3, "report_to": [], "use_cpu": True, "bf16": False, "gradient_checkpointing": False,
        "logging_steps": 1, "save_strategy": "no", "disable_tqdm": True, "seed": 0,
    }
    return MDPOConfig(**(defaults | kwargs))


class ForwardLog:
    """Records every forward of a module: whether it had gradient, its rows, whether it got pixel values."""

    def __init__(self, module: torch.nn.Module):
        self.calls: list[tuple[bool, int, bool]] = []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.calls.append((torch.is_grad_enabled(), kwargs["input_ids"].shape[0], "pixel_values" in kwargs))


def record_losses(trainer: MDPOTrainer) -> list[float]:
    """Wrap trainer.compute_loss to keep every loss value it returns."""
    losses, compute_loss = [], trainer.compute_loss

    def wrapped(*args, **kwargs):
        loss = compute_loss(*args, **kwargs)
        losses.append(loss.item())
        return loss

    trainer.compute_loss = wrapped
    return losses


def test_beta_has_one_default_trls():
    """MDPOConfig leaves β to TRL's DPOConfig; the pure loss and probe default to the same value (core/losses.BETA)."""
    assert "beta" not in MDPOConfig.__dataclass_fields__ or MDPOConfig.__dataclass_fields__["beta"].default == \
        DPOConfig.__dataclass_fields__["beta"].default
    assert DPOConfig.__dataclass_fields__["beta"].default == BETA == 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "ppo"}, "method must be one of"),
        ({"beta": 0.0}, "beta must be a positive number"),
        ({"delta": math.nan}, "delta must be a finite number"),
        ({"conditional_weight": -1.0}, "conditional_weight must be None or a finite number >= 0"),
        ({"method": "mdpo", "withhold_image": True}, "leaves no image to corrupt"),
        ({"method": "dpo_no_image", "withhold_image": False}, "withhold_image cannot be False"),
        ({"method": "dpo_no_image", "reference_cache": "ref.parquet"}, "reference_cache cannot be used"),
        ({"reference_cache": "ref.parquet", "sync_ref_model": True}, "fixed reference"),
        ({"precompute_ref_log_probs": True}, "use reference_cache"),
        ({"loss_type": "hinge"}, "loss_type must stay"),
        ({"ld_alpha": 0.5}, "ld_alpha must stay"),
        ({"use_weighting": True}, "use_weighting must stay"),
    ],
)
def test_config_rejects(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        config(tmp_path, **kwargs)


def test_config_resolves_method_weights_and_documents_fields(tmp_path):
    assert config(tmp_path, method="dpo_no_image").withhold_image is True
    assert config(tmp_path, method="dpo").withhold_image is False
    assert config(tmp_path).mdpo_weights == METHODS["mdpo"]
    weights = config(tmp_path, method="dpo", conditional_weight=0.5, anchor_rejected_weight=2).mdpo_weights
    assert (weights.dpo, weights.conditional, weights.anchor, weights.anchor_rejected) == (1.0, 0.5, 0.0, 2.0)
    assert weights.needs_corrupted
    # Every term's weight is a setting (params.yaml:training.methods.<method>.<term>_weight), checked the same way.
    symmpo = config(tmp_path, method="symmpo", symmetric_weight=1.0, margin_consistency_weight=0).mdpo_weights
    assert (symmpo.symmetric, symmpo.margin_consistency, symmpo.symmetric_anchor) == (1.0, 0.0, 1.0)
    assert config(tmp_path, method="mpo", sft_weight=0.5, dpo_weight=1).mdpo_weights.sft == 0.5
    # Any of TRL's pair terms in DPO's place, under a method's image terms: mDPO with robust DPO as its pair term.
    assert config(tmp_path, method="mdpo", pair_loss="robust").mdpo_weights == LossWeights(
        dpo=1, conditional=1, anchor=1, pair_loss="robust")
    with pytest.raises(ValueError, match="pair_loss must be None or one of"):
        config(tmp_path, pair_loss="kto")
    for name in ("quality_weight", "symmetric_weight", "dpo_weight"):
        with pytest.raises(ValueError, match=f"{name} must be None or a finite number >= 0"):
            config(tmp_path, method="symmpo", **{name: -1})
    trl_fields = {f.name for f in dataclasses.fields(DPOConfig)}
    for f in dataclasses.fields(MDPOConfig):
        if f.name not in trl_fields:
            assert f.metadata.get("help"), f"{f.name} has no help text"


@pytest.mark.parametrize("method", list(METHODS))
def test_one_step_per_method(tmp_path, dataset, method):
    model, processor = build_tiny_llava(image_size=IMAGE_SIZE)
    if METHODS[method].needs_contrast:
        # SymMPO's terms read each instruction's contrasting answer: refused without one, naming what is missing.
        with pytest.raises(ValueError, match="no contrasting answers.*strategy: counterfactual"):
            MDPOTrainer(model, args=config(tmp_path, method=method), train_dataset=dataset,
                        processing_class=processor, peft_config=lora())
        model, processor = build_tiny_llava(image_size=IMAGE_SIZE)
        answer = [{"role": "assistant", "content": [{"type": "text", "text": "A blue square."}]}]
        dataset = dataset.add_column("contrast_answer", [answer] * len(dataset))
    trainer = MDPOTrainer(
        model, args=config(tmp_path, method=method), train_dataset=dataset, processing_class=processor,
        peft_config=lora(),
    )
    forwards = ForwardLog(trainer.model)
    trainer.train()

    rows = (5 if METHODS[method].needs_contrast else 3 if METHODS[method].needs_corrupted else 2) * BATCH
    with_image = method != "dpo_no_image"
    # One policy forward with gradient, one reference forward without, both over all rows of the step.
    assert forwards.calls == [(True, rows, with_image), (False, rows, with_image)]
    logs = trainer.state.log_history[0]
    assert math.isfinite(logs["loss"])
    # A fresh LoRA adapter (B = 0) is the base model, so the first step's rewards are exactly zero.
    assert logs["rewards/chosen"] == logs["rewards/margins"] == 0.0
    assert {"rewards/rejected", "rewards/accuracies", "loss/dpo", "logps/chosen"} <= logs.keys()
    conditional = {"rewards/chosen_corrupted", "rewards/conditional_margins", "rewards/conditional_accuracies"}
    assert conditional <= logs.keys() if rows >= 3 * BATCH else not conditional & logs.keys()
    if method == "mdpo":
        assert {"loss/conditional", "loss/anchor"} <= logs.keys()
        assert logs["loss"] == pytest.approx(3 * math.log(2), abs=1e-4)
    if method == "symmpo":
        # Every reward 0: DPO log 2 + anchor log 2 + 0.5 × symmetric 2 log 2 + its anchor log 2 + consistency 0.
        assert {"loss/symmetric", "loss/symmetric_anchor", "loss/margin_consistency"} <= logs.keys()
        assert logs["loss/symmetric"] == pytest.approx(2 * math.log(2), abs=1e-4)
        assert logs["loss/margin_consistency"] == 0.0
        assert logs["loss"] == pytest.approx(4 * math.log(2), abs=1e-4)


def test_mpo_quality_shift_runs_over_the_steps_and_resumes_from_a_checkpoint(tmp_path, dataset):
    from mdpo_pipeline.training.trainer import QUALITY_SHIFT_FILE

    def run(steps, **kw):
        model, processor = build_tiny_llava(image_size=IMAGE_SIZE)
        trainer = MDPOTrainer(model, args=config(tmp_path, method="mpo", max_steps=steps, save_strategy="steps",
                                                 save_steps=1, **kw),
                              train_dataset=dataset, processing_class=processor, peft_config=lora())
        return trainer

    full = run(2)
    full.train()
    logs = full.state.log_history
    assert {"loss/quality", "loss/sft", "loss/dpo"} <= logs[0].keys()
    # Step 1: a fresh adapter is the base, every reward is 0, so the running mean stays 0; step 2 moves it.
    first = json.loads((tmp_path / "run/checkpoint-1" / QUALITY_SHIFT_FILE).read_text())
    assert first == {"mean": 0.0, "count": 1}
    assert full.quality_shift.count == 2 and full.quality_shift.mean != 0.0

    resumed = run(2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run/checkpoint-1"))
    assert resumed.quality_shift.count == 2
    assert resumed.quality_shift.mean == pytest.approx(full.quality_shift.mean, abs=1e-7)


def test_full_fine_tuning_uses_the_frozen_reference_model(tmp_path, dataset):
    model, processor = build_tiny_llava(image_size=IMAGE_SIZE)
    ref_model, _ = build_tiny_llava(image_size=IMAGE_SIZE)
    trainer = MDPOTrainer(model, ref_model, args=config(tmp_path), train_dataset=dataset, processing_class=processor)
    policy_forwards, reference_forwards = ForwardLog(trainer.model), ForwardLog(trainer.ref_model)
    trainer.train()
    assert policy_forwards.calls == [(True, 3 * BATCH, True)]
    assert reference_forwards.calls == [(False, 3 * BATCH, True)]
    assert trainer.state.log_history[0]["rewards/chosen"] == 0.0


def test_text_only_batches_carry_no_image(dataset):
    _, processor = build_tiny_llava(image_size=IMAGE_SIZE)
    collator = DataCollatorForMDPO(processor, views=("chosen", "rejected"), withhold_image=True)
    batch = collator([dataset[i] for i in range(BATCH)])
    assert "pixel_values" not in batch
    assert not (batch["input_ids"] == processor.image_token_id).any()
    assert batch["input_ids"].shape[0] == 2 * BATCH


def test_reference_cache_matches_live_reference(tmp_path, dataset):
    base, processor = build_tiny_llava(image_size=IMAGE_SIZE)
    cache_path = tmp_path / "reference.parquet"
    # Batch size 4 pads differently from training's 2: the cache must not depend on batch composition.
    summary = compute_reference_logprobs(base, processor, dataset, 4, cache_path, max_length=1024)

    table = pq.read_table(cache_path)
    assert table.column_names == ["pair_id", "ref_chosen", "ref_rejected", "ref_chosen_corrupted"]
    assert table.num_rows == N_PAIRS == summary["n"]
    assert table["pair_id"].to_pylist() == list(dataset["pair_id"])
    assert all(str(table[c].type) == "double" for c in table.column_names[1:])
    # Stored: the summary without its timings (they would make every rerun's file differ); returned: both.
    assert read_reference_summary(cache_path) == {k: v for k, v in summary.items() if k != "timing"}
    assert set(summary["timing"]) == {"seconds", "fingerprint_seconds"}
    again = cache_path.with_name("again.parquet")
    compute_reference_logprobs(base, processor, dataset, 4, again, max_length=1024)
    assert again.read_bytes() == cache_path.read_bytes(), "DVC versions the cache: a rerun must be byte-identical"
    assert set(summary["fingerprints"]) == {"combined", "model", "processor", "pairs", "corrupted_images"}
    cache = load_reference_cache(cache_path)
    assert all(v[0] < 0 and v[1] < 0 and v[2] < 0 for v in cache.values())

    first_losses, forward_counts = {}, {}
    for reference in ("live", "cached"):
        model, processor = build_tiny_llava(image_size=IMAGE_SIZE)
        args = config(tmp_path, reference_cache=str(cache_path) if reference == "cached" else None)
        # Random LoRA B: the policy differs from the reference at step 0, so the reference values matter.
        trainer = MDPOTrainer(
            model, args=args, train_dataset=dataset, processing_class=processor,
            peft_config=lora(init_lora_weights=False),
        )
        forwards = ForwardLog(trainer.model)
        losses = record_losses(trainer)
        trainer.train()
        first_losses[reference], forward_counts[reference] = losses[0], len(forwards.calls)
    assert forward_counts == {"live": 2, "cached": 1}
    assert abs(first_losses["cached"] - first_losses["live"]) < LOSS_TOL
    assert abs(first_losses["live"] - 3 * math.log(2)) > 1e-3  # the comparison is not trivially log 2 vs log 2


def test_reference_cache_must_cover_every_pair(tmp_path, dataset):
    base, processor = build_tiny_llava(image_size=IMAGE_SIZE)
    cache_path = tmp_path / "partial.parquet"
    compute_reference_logprobs(base, processor, dataset.select(range(2)), 2, cache_path)
    missing = dataset[N_PAIRS - 1]["pair_id"]
    with pytest.raises(ValueError, match=f"lacks {N_PAIRS - 2} of {N_PAIRS} pair ids: .*{missing}"):
        MDPOTrainer(base, args=config(tmp_path, reference_cache=str(cache_path)), train_dataset=dataset,
                    processing_class=processor, peft_config=lora())
    with pytest.raises(ValueError, match="max_length"):
        MDPOTrainer(base, args=config(tmp_path, reference_cache=str(cache_path), max_length=512),
                    train_dataset=dataset, processing_class=processor, peft_config=lora())


def test_a_stale_reference_cache_is_refused_naming_what_changed(tmp_path, dataset):
    from mdpo_pipeline.training.reference import StaleReferenceCache, verify_reference_cache

    base, processor = build_tiny_llava(image_size=IMAGE_SIZE)
    cache_path = tmp_path / "ref.parquet"
    compute_reference_logprobs(base, processor, dataset, 4, cache_path, max_length=256)
    assert verify_reference_cache(cache_path, base, processor, dataset, 256)["n"] == N_PAIRS
    with pytest.raises(StaleReferenceCache, match=r"max_length \(cache 256, run 512\)"):
        verify_reference_cache(cache_path, base, processor, dataset, 512)
    other, _ = build_tiny_llava(image_size=IMAGE_SIZE, seed=7)  # e.g. the base model was retrained
    with pytest.raises(StaleReferenceCache, match=r": model changed .*Rematerialize reference_logprobs"):
        verify_reference_cache(cache_path, other, processor, dataset, 256)
    swapped = dataset.select(range(1, N_PAIRS))
    with pytest.raises(StaleReferenceCache, match="pairs, corrupted_images changed"):
        verify_reference_cache(cache_path, base, processor, swapped, 256)


def test_disabled_adapter_reference_is_the_base_model(dataset):
    base, processor = build_tiny_llava(image_size=IMAGE_SIZE)
    ensure_fused_lm_head(base)
    batch = DataCollatorForMDPO(processor)([dataset[i] for i in range(BATCH)])
    with torch.no_grad():
        base_logps = completion_logps(base, batch)
        fresh = get_peft_model(build_tiny_llava(image_size=IMAGE_SIZE)[0], lora())
        trained = get_peft_model(build_tiny_llava(image_size=IMAGE_SIZE)[0], lora(init_lora_weights=False))
        for peft_model in (fresh, trained):
            ensure_fused_lm_head(peft_model)
            with reference_mode(peft_model):
                assert torch.equal(completion_logps(peft_model, batch), base_logps)
            # The cache fingerprint leaves adapters out, so a cache made from the base model matches its PEFT wrap.
            assert weights_sha256(peft_model) == weights_sha256(base)
        # LoRA's B = 0 init: at step 0 the policy itself equals the base model; a random B does not.
        assert torch.equal(completion_logps(fresh, batch), base_logps)
        assert not torch.allclose(completion_logps(trained, batch), base_logps)


def test_dataset_needs_a_corrupted_image_per_instruction(artifacts, tmp_path):
    manifest = pq.read_table(artifacts["corrupted"] / "manifest.parquet")
    partial = tmp_path / "corrupted"
    partial.mkdir()
    pq.write_table(manifest.slice(1), partial / "manifest.parquet")
    with pytest.raises(ValueError, match="no corrupted image for instructions sw-000000"):
        load_preference_dataset(artifacts["pairs"], artifacts["images"], partial)


def test_live_reference_with_gradient_checkpointing_adds_no_hooks_per_step(tmp_path, dataset):
    """The live reference switches checkpointing off for its no-grad pass; it must not register one more input
    hook every step (TRL's disable/enable round trip does), and checkpointing is on again afterwards."""
    hooks = {}
    for steps in (1, 3):
        model, processor = build_tiny_llava(image_size=IMAGE_SIZE)
        trainer = MDPOTrainer(
            model, args=config(tmp_path / str(steps), method="mdpo", max_steps=steps, gradient_checkpointing=True),
            train_dataset=dataset, processing_class=processor, peft_config=lora(),
        )
        trainer.train()
        hooks[steps] = len(trainer.model.get_input_embeddings()._forward_hooks)
    assert hooks[1] == hooks[3]
    batch = DataCollatorForMDPO(processor)([dataset[i] for i in range(BATCH)])
    trainer._reference_logps(batch)
    assert len(trainer.model.get_input_embeddings()._forward_hooks) == hooks[3]
    flags = [m.gradient_checkpointing for m in trainer.model.modules()
             if isinstance(getattr(m, "gradient_checkpointing", None), bool)]
    assert flags and all(flags)
