"""A training run killed with SIGKILL and restarted continues from its last checkpoint and ends with the same
adapter as an uninterrupted run; the killed run leaves no adapter behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from mdpo_pipeline.core.io import write_json
from mdpo_pipeline.integrations.launchers import launch_local, run_config_path
from mdpo_pipeline.shapeworld.tiny import build_tiny_llava
from mdpo_pipeline.training.run import TrainRunConfig
from tests.conftest import write_tiny_training_data

pytestmark = pytest.mark.slow

#: Same seed, same data order, CPU float32: the resumed adapter should match to float rounding.
ATOL = 1e-6


def test_killed_run_resumes_to_the_same_adapter(tmp_path):
    data = write_tiny_training_data(tmp_path / "data", n_pairs=16, image_size=32)
    build_tiny_llava(tmp_path / "base", image_size=32)

    def config(name: str) -> TrainRunConfig:
        return TrainRunConfig(
            method="mdpo", pairs_dir=str(data["pairs"]), image_root=str(data["images"]),
            corrupted_dir=str(data["corrupted"]), output_dir=str(tmp_path / name),
            base_model_path=str(tmp_path / "base"), max_steps=16, per_device_train_batch_size=2, learning_rate=1e-3,
            save_steps=2, logging_steps=1, threads=1, seed=0,
        )

    full = launch_local(config("full"), log=lambda _: None)
    assert full["global_step"] == 16 and full["resumed_from"] is None

    killed = config("resumed")
    write_json(dict(killed), run_config_path(killed))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdpo_pipeline.cli", "train", "--config", str(run_config_path(killed))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    marker = killed.checkpoint_dir / "checkpoint-4" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not os.path.exists(killed.output_dir), "a killed run must not leave an adapter"

    resumed = launch_local(killed, log=lambda _: None)
    step = int(resumed["resumed_from"].split("-")[1])
    assert 4 <= step < 16 and resumed["global_step"] == 16

    a = load_file(tmp_path / "full" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= ATOL, f"resumed adapter differs by {worst}"
    # It did train: the adapter moved away from its zero-initialised LoRA B matrices.
    assert max(t.abs().max().item() for k, t in a.items() if "lora_B" in k) > 0


def test_a_checkpoint_killed_while_writing_its_state_is_not_resumed_from(tmp_path):
    """A kill can land while trainer_state.json is being written (seen under load: an empty file): the run resumes
    from the newest checkpoint whose state reads back whole, not from the torn one."""
    from mdpo_pipeline.training.run import _last_complete_checkpoint

    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_step": 4}'), (6, ""), (8, '{"global_st')):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-10").mkdir()  # no state at all
    assert _last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert _last_complete_checkpoint(tmp_path / "none") is None
