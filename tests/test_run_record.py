"""What a training run records for comparison: the values it trained with, the wall clock of every logged step,
and a log readable without a terminal."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from mdpo_pipeline.training.presets import get_preset
from mdpo_pipeline.training.run import WALL_TIME, TrainRunConfig, _callbacks

PATHS = {"pairs_dir": "p", "image_root": "i", "corrupted_dir": "c", "output_dir": "/tmp/adapter"}


def test_record_holds_the_values_trained_with_not_the_presets_placeholders():
    """lora_r/lora_alpha None mean "the preset's": the record has the preset's numbers, and the method's loss
    weights, so two runs' params compare field by field."""
    cfg = TrainRunConfig(method="dpo", **PATHS)
    assert cfg.resolved(cuda=False)["lora_r"] is None
    _, args = cfg.parse(cuda=False)
    preset = get_preset(cfg.base_model)
    lora = SimpleNamespace(r=preset.lora_r, lora_alpha=preset.lora_alpha)  # as models.lora_config completes it
    record = cfg.trained(args, lora, threads=3)
    assert (record["lora_r"], record["lora_alpha"], record["threads"]) == (preset.lora_r, preset.lora_alpha, 3)
    defaults = preset.training
    assert record["learning_rate"] == defaults.learning_rate
    assert record["per_device_train_batch_size"] == defaults.per_device_batch_size
    assert record["gradient_accumulation_steps"] == defaults.grad_accum
    assert record["max_length"] == defaults.max_length
    assert (record["beta"], record["conditional_weight"], record["anchor_weight"]) == (args.beta, 0.0, 0.0)
    assert record["lr_scheduler_type"] == "cosine" and record["save_strategy"] == "steps"
    assert None not in (record[k] for k in ("lora_r", "lora_alpha", "learning_rate", "max_length", "threads"))
    json.dumps(record)  # a plain JSON run config: no enums
    # And it is still a run config: parsed again it trains the same way.
    _, again = TrainRunConfig(record).parse(cuda=False)
    assert (again.learning_rate, again.mdpo_weights, again.max_length) == (args.learning_rate, args.mdpo_weights,
                                                                          args.max_length)


def _state(history):
    return SimpleNamespace(log_history=history, global_step=10, max_steps=20, is_local_process_zero=True)


@pytest.mark.parametrize("tty", [True, False])
def test_every_log_entry_gets_the_wall_clock(tty):
    added, _ = _callbacks(tty)
    history = [{"step": 10, "loss": 0.5}]
    for cb in added:
        cb.on_train_begin(None, _state(history), None)
        cb.on_log(None, _state(history), None, logs={"loss": 0.5})
    assert isinstance(history[-1][WALL_TIME], float) and history[-1][WALL_TIME] > 1.7e9


def test_without_a_terminal_one_line_per_log_replaces_the_progress_bar(capsys):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    added, removed = _callbacks(tty=False)
    assert set(removed) == {ProgressCallback, PrinterCallback}
    for cb in added:
        cb.on_train_begin(None, _state([]), None)
        cb.on_log(None, _state([{}]), None, logs={"loss": 0.58496739, "rewards/margins": 0.776, "epoch": 0.5})
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("step 10/20") and "loss 0.585" in line and "epoch" not in line and "\r" not in line
    assert _callbacks(tty=True)[1] == []
