"""Padding-free batches (training/packing.py): one packed forward gives every row's summed answer log-probs as the
padded forward does, for each model type it allows; the others are refused with the reason."""

from __future__ import annotations

import warnings

import pytest
import torch

from mdpo_pipeline.shapeworld.tiny import build_tiny_llava
from mdpo_pipeline.training import packing
from mdpo_pipeline.training.data import DataCollatorForMDPO
from mdpo_pipeline.training.packing import (
    NOT_PACKABLE,
    PACKABLE,
    pack,
    packable,
    packed_completion_logps,
    pad_share,
    rope_positions,
    use_packing,
)
from mdpo_pipeline.training.reference import completion_logps
from mdpo_pipeline.training.trainer import MDPOTrainer
from tests.test_families import LOGP_ATOL, _examples
from tests.test_model_types import TYPES, _load, built  # noqa: F401
from tests.test_trainer import IMAGE_SIZE, artifacts, config, dataset, lora, one_thread, record_losses  # noqa: F401


def test_every_trained_model_type_is_packable_or_refused_with_a_reason():
    assert set(TYPES) == PACKABLE | set(NOT_PACKABLE)
    for model_type in NOT_PACKABLE:
        ok, why = packable(model_type)
        assert not ok and why
    assert packable("no_such_type") == (False, "model type 'no_such_type' has no packed == padded proof")


@pytest.mark.parametrize("model_type", sorted(PACKABLE))
def test_packed_log_probs_equal_padded(built, model_type):
    """Images of different sizes, answers of different lengths: packed rows no longer than the longest padded one
    (the default), and every row of the batch in one packed row."""
    model, processor = _load(built, model_type)
    batch = DataCollatorForMDPO(processor)(_examples())
    assert pad_share(batch) > 0
    everything = int(batch["attention_mask"].sum())
    with torch.no_grad():
        padded = completion_logps(model, batch)
        for width in (None, everything):
            torch.testing.assert_close(packed_completion_logps(model, batch, width), padded, atol=LOGP_ATOL, rtol=0)
    assert pack(batch, everything, rope_positions(model, batch))[0]["input_ids"].shape[0] == 1


def test_a_refused_type_would_break_packed(built):
    """Why Mllama is refused: its per-row cross-attention mask cannot follow two rows into one packed row."""
    model, processor = _load(built, "mllama")
    batch = DataCollatorForMDPO(processor)(_examples())
    with torch.no_grad(), pytest.raises(RuntimeError, match="must match the size"):
        packed_completion_logps(model, batch, int(batch["attention_mask"].sum()))


def test_pack_keeps_every_real_token_and_restarts_positions_per_row():
    batch = {"input_ids": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
             "completion_mask": torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]]),
             "pixel_values": torch.ones(2, 3)}
    packed, segments = pack(batch, width=5)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert packed["completion_mask"].tolist() == [[0, 1, 1, 0, 1]]
    assert segments.tolist() == [[0, 0, 0, 1, 1]] and torch.equal(packed["pixel_values"], batch["pixel_values"])
    assert "attention_mask" not in packed and pad_share(batch) == 0.375
    packed, segments = pack(batch)  # no wider than the longest row (3): two packed rows, in order
    assert packed["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2], [0, 1, 0]] and segments.tolist() == [[0, 0, 0], [1, 1, -1]]


def test_the_trainer_packs_where_proven_and_trains_as_padded(tmp_path, dataset):
    """Two steps each way on the tiny LLaVA: the second step's loss carries the first step's gradient."""
    losses = {}
    for packed in (True, False):
        model, processor = build_tiny_llava(image_size=IMAGE_SIZE)
        trainer = MDPOTrainer(model, args=config(tmp_path / str(packed), packed_rows=packed, max_steps=2),
                              train_dataset=dataset, processing_class=processor, peft_config=lora())
        assert trainer.logps is (packed_completion_logps if packed else completion_logps)
        losses[packed] = record_losses(trainer)
        trainer.train()
    assert losses[True][1] != losses[True][0]
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_an_unproven_type_stays_padded_with_one_warning(built, monkeypatch):
    monkeypatch.setattr(packing, "_WARNED", set())
    model, _ = _load(built, "mllama")
    with pytest.warns(UserWarning, match=r"packed_rows: mllama batches stay padded: its cross-attention mask"):
        assert use_packing(model, True) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert use_packing(model, True) is False and use_packing(model, False) is False
    assert use_packing(_load(built, "llava")[0], True) is True


def test_out_of_memory_names_the_batch_shape_and_the_settings_to_lower(tmp_path, dataset, monkeypatch):
    model, processor = build_tiny_llava(image_size=IMAGE_SIZE)
    trainer = MDPOTrainer(model, args=config(tmp_path), train_dataset=dataset, processing_class=processor,
                          peft_config=lora())

    def exhausted(model, inputs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "logps", exhausted)
    with pytest.raises(torch.OutOfMemoryError, match=r"batch of 6 rows \(3 views × 2 pairs\) × \d+ tokens, "
                       r"pixel_values \(6, 3, 32, 32\): lower per_device_train_batch_size \(2.*max_length"
                       r".*The device said: CUDA out of memory. Tried to allocate 2.00 GiB"):
        trainer.train()
