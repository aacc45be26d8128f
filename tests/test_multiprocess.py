"""Two training processes for real, on CPU (gloo) through the local launcher: the same adapter and the same
logged metrics as one process at the same global batch, one adapter and one summary, and a run killed with
SIGKILL (its whole process group) resumes to the adapter of an uninterrupted two-process run."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
import torch
from safetensors.torch import load_file

from mdpo_pipeline.integrations import launchers as launcher
from mdpo_pipeline.defs.resources import TrainingLauncher
from mdpo_pipeline.integrations.launchers import check_num_processes, launch_local, run_config_path, start_local
from mdpo_pipeline.pipeline.project import Project
from mdpo_pipeline.shapeworld.tiny import build_tiny_llava
from mdpo_pipeline.training.run import TrainRunConfig
from tests.conftest import stop_process_group, write_tiny_training_data

#: Per-device batch of each of the two ranks; the single process gets twice as many, the same global batch.
B = 2
#: 1 vs 2 processes: the same examples per step, but padded to a different length per device and reduced in
#: a different order (gloo all-reduce vs one backward), so float32 rounding differs. Measured: adapter 2.9e-7,
#: metrics 7.6e-6 (summed log-probs of magnitude ~55); the bounds leave room for other CPUs' kernels.
ADAPTER_ATOL = 1e-5
METRIC_ATOL, METRIC_RTOL = 1e-4, 1e-6
#: Two processes killed and resumed vs two processes uninterrupted: the same computation, so float rounding only.
RESUME_ATOL = 1e-6

#: The runs below are the CPU (gloo) path; with CUDA present they would train on the GPUs (NCCL, other rounding).
cpu_ranks = pytest.mark.skipif(torch.cuda.is_available(), reason="tests two CPU ranks; this machine has CUDA")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multiprocess")
    write_tiny_training_data(root / "data", n_pairs=16, image_size=32)
    build_tiny_llava(root / "base", image_size=32, vision_channels=(16, 16))
    return root


def _config(root: Path, name: str, per_device_batch_size: int) -> TrainRunConfig:
    data = root / "data"
    # 16 pairs, global batch 4, 4 steps: one epoch, so the resume at step 2 skips batches inside an epoch.
    return TrainRunConfig(
        method="mdpo", pairs_dir=str(data / "preference_pairs"), image_root=str(data / "images"),
        corrupted_dir=str(data / "corrupted_images"), output_dir=str(root / name), base_model_path=str(root / "base"),
        max_steps=4, per_device_train_batch_size=per_device_batch_size, learning_rate=1e-3, save_steps=2,
        logging_steps=1, threads=1, seed=0,
    )


@pytest.fixture(scope="module")
def two_processes(inputs) -> dict:
    """The uninterrupted two-process run, started by the Dagster resource as the adapters asset does."""
    cfg = _config(inputs, "two", B)
    resource = TrainingLauncher(mode="local", num_processes=2, threads=1)
    return resource.launch(cfg, dg.build_asset_context(), Project(inputs))


def _adapter(path: Path) -> dict:
    weights = load_file(path / "adapter_model.safetensors")
    assert weights
    return weights


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.slow
@pytest.mark.integration
@cpu_ranks
def test_two_processes_match_one_at_the_same_global_batch(inputs, two_processes):
    # Why the steps see the same examples without split_batches: accelerate's seedable sampler draws one
    # permutation per epoch from the seed alone (not the batch size or the process count), and its sharded
    # loader deals consecutive per-device batches round-robin, so ranks 0 and 1 get permutation[4k:4k+2] and
    # [4k+2:4k+4] at step k: together the single process's permutation[4k:4k+4]. The pair count is a multiple of
    # the global batch, else even_batches would pad the two-process run with repeats. Dropout is no concern: TRL
    # (disable_dropout) zeroes it, LoRA's too.
    one = launch_local(_config(inputs, "one", 2 * B), log=lambda _: None)

    assert two_processes["num_processes"] == 2 and one["num_processes"] == 1
    assert two_processes["global_step"] == one["global_step"] == 4
    # One adapter, one summary: rank 1 wrote nothing beside rank 0's directory.
    assert sorted(p.name for p in inputs.iterdir() if p.name.startswith("two")) == ["two", "two.run.json"]
    summary = json.loads((inputs / "two" / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["global_step"] == 4

    logs = {name: [h for h in json.loads((inputs / name / "log_history.json").read_text()) if "loss" in h]
            for name in ("one", "two")}
    assert [h["step"] for h in logs["one"]] == [h["step"] for h in logs["two"]] == [1, 2, 3, 4]
    worst_metric = 0.0
    for a, b in zip(logs["one"], logs["two"]):
        assert a.keys() == b.keys()
        for key in a:
            if key in ("step", "epoch"):
                assert a[key] == b[key]
                continue
            assert b[key] == pytest.approx(a[key], abs=METRIC_ATOL, rel=METRIC_RTOL), f"step {a['step']}: {key}"
            worst_metric = max(worst_metric, abs(a[key] - b[key]))
    assert two_processes["train_loss"] == pytest.approx(one["train_loss"], abs=METRIC_ATOL)

    worst = _max_diff(_adapter(inputs / "one"), _adapter(inputs / "two"))
    assert worst <= ADAPTER_ATOL, f"2-process adapter differs from the 1-process one by {worst}"
    print(f"1 vs 2 processes: adapter max |diff| {worst:.3g}, metrics max |diff| {worst_metric:.3g}")


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.slow
@pytest.mark.integration
@cpu_ranks
def test_killed_two_process_run_resumes_to_the_same_adapter(inputs, two_processes):
    killed = _config(inputs, "resumed", B)
    proc = start_local(killed, num_processes=2, stdout=subprocess.DEVNULL)
    marker = killed.checkpoint_dir / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # torchrun puts each rank in a session of its own: they must die with the launcher agent anyway. Ranks
    # that outlived it would finish within seconds and write the adapter, which the last assert catches.
    children = psutil.Process(proc.pid).children(recursive=True)
    ranks = [p for p in children if "mdpo_pipeline.cli" in " ".join(p.cmdline())]
    stop_process_group(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert len(ranks) == 2
    deadline = time.monotonic() + 20
    while _alive(ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(ranks), "ranks outlived the killed launcher"
    assert not Path(killed.output_dir).exists(), "a killed run must not leave an adapter"

    resumed = launch_local(killed, log=lambda _: None, num_processes=2)
    step = int(resumed["resumed_from"].split("-")[1])
    assert 2 <= step < 4 and resumed["global_step"] == 4 and resumed["num_processes"] == 2
    worst = _max_diff(_adapter(inputs / "two"), _adapter(inputs / "resumed"))
    assert worst <= RESUME_ATOL, f"resumed 2-process adapter differs by {worst}"
    assert not killed.checkpoint_dir.exists()
    print(f"killed + resumed vs uninterrupted (2 processes): adapter max |diff| {worst:.3g}")


def test_more_processes_than_cpu_cores_stop_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "available_devices", lambda: (2, "CPU cores (no CUDA device)"))
    cfg = _config(tmp_path, "adapter", B)
    with pytest.raises(ValueError, match=r"num_processes=3 .* 2 CPU cores .* at most 2"):
        launch_local(cfg, num_processes=3)
    assert not run_config_path(cfg).exists(), "nothing may be written or started"
    with pytest.raises(ValueError, match="TrainingLauncher.num_processes"):
        TrainingLauncher(mode="local", num_processes=3).launch(cfg, dg.build_asset_context(), Project(tmp_path))
    check_num_processes(2)  # as many as there are is fine


def test_more_processes_than_gpus_stop_before_anything_starts(monkeypatch):
    monkeypatch.setattr(launcher, "available_devices", lambda: (8, "CUDA devices"))
    with pytest.raises(ValueError, match=r"num_processes=9 .* 8 CUDA devices"):
        check_num_processes(9)
    with pytest.raises(ValueError, match="num_processes must be >= 1"):
        check_num_processes(0)


def test_this_machine_counts_cores_without_cuda():
    count, kind = launcher.available_devices()
    if torch.cuda.is_available():
        assert (count, kind) == (torch.cuda.device_count(), "CUDA devices")
    else:
        assert 1 <= count <= (psutil.cpu_count() or count) and kind.startswith("CPU cores")


def test_local_runs_pick_a_free_rendezvous_port():
    cmd = launcher.local_command("run.json", num_processes=2, free_port=True)
    assert cmd[cmd.index("--main_process_port") + 1] == "0"  # accelerate then binds a free one
    assert "--main_process_port" not in launcher.local_command("run.json", num_processes=2)  # containers: own netns
