"""The ray launcher for real, on a local Ray cluster this module starts (2 CPUs, token authentication on, gloo):
two Ray Train workers train the adapter one process trains at the same global batch; runs that do not all fit
wait for each other; a worker killed mid-run is restarted and resumes to the uninterrupted adapter; a cancelled
launch takes its workers with it; an unreachable or too small cluster is refused within seconds. The settings
and the driver's checks are also tested without a cluster."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch
from safetensors.torch import load_file

from mdpo_pipeline.core.errors import ConfigError
from mdpo_pipeline.defs.resources import TrainingLauncher
from mdpo_pipeline.integrations import ray_launcher
from mdpo_pipeline.integrations.launcher_settings import LauncherSettings
from mdpo_pipeline.integrations.launchers import TrainingFailed, launch_local
from mdpo_pipeline.integrations.ray_launcher import (
    RayClusterError,
    check_reachable,
    check_resources,
    launch_ray,
    worker_run,
)
from mdpo_pipeline.pipeline.train import train_run_config
from mdpo_pipeline.pipeline.project import Project

#: Per-device batch of each of two workers; one process (or one worker) gets twice as many: the same global batch.
B = 2
#: 8 steps of global batch 4 on the base's 40 pairs: one epoch, no padded last batch; a checkpoint every 2 steps.
STEPS = 8
#: 2 workers vs 1 process: the same examples per step (accelerate's sampler draws one permutation from the seed
#: and deals consecutive per-device batches to the ranks), but each rank pads its half of the batch to its own
#: length and gloo sums the two halves' gradients where one process sums them in one backward, so float32 rounding
#: differs (tests/test_multiprocess.py measured 2.9e-7 for the same comparison through `accelerate launch`).
ADAPTER_ATOL = 1e-5
METRIC_ATOL = 1e-4
#: The same computation, rounded the same way: one Ray worker vs one local process, or a run restarted after a
#: kill vs the uninterrupted one (same seed, same data order, the RNG states restored from the checkpoint).
SAME_ATOL = 1e-6

cpu_ranks = pytest.mark.skipif(torch.cuda.is_available(), reason="tests CPU (gloo) workers; this machine has CUDA")


# --- settings and checks, no cluster --------------------------------------------------------------


def test_ray_settings_from_the_environment():
    env = {"MDPO_LAUNCHER_MODE": "ray", "MDPO_RAY_ADDRESS": "ray://head.ray.svc:10001", "MDPO_RAY_NUM_WORKERS": "4",
           "MDPO_RAY_CPUS_PER_WORKER": "8", "MDPO_RAY_GPUS_PER_WORKER": "1", "MDPO_RAY_STORAGE_PATH": "/mnt/shared",
           "MDPO_RAY_MAX_FAILURES": "-1"}
    s = LauncherSettings.from_env(env)
    assert (s.mode, s.ray_address, s.num_workers, s.cpus_per_worker, s.gpus_per_worker, s.storage_path,
            s.max_failures) == ("ray", "ray://head.ray.svc:10001", 4, 8, 1, "/mnt/shared", -1)
    defaults = LauncherSettings()
    assert (defaults.ray_address, defaults.num_workers, defaults.cpus_per_worker, defaults.gpus_per_worker,
            defaults.storage_path, defaults.max_failures) == (None, 1, 1, 0, None, 1)
    for name in ("ray_address", "num_workers", "cpus_per_worker", "gpus_per_worker", "storage_path", "max_failures"):
        assert LauncherSettings.model_fields[name].description.startswith("ray: ")
    # The Dagster resource reads them as EnvVars, resolved when the run starts.
    resource = TrainingLauncher.from_env(env)
    assert resource.__dict__["num_workers"].env_var_name == "MDPO_RAY_NUM_WORKERS"


@pytest.mark.parametrize(("var", "value", "expected"), [
    ("MDPO_RAY_ADDRESS", "http://head:8265", "ray://host:10001"),
    ("MDPO_RAY_NUM_WORKERS", "0", "integer >= 1"),
    ("MDPO_RAY_CPUS_PER_WORKER", "0", "integer >= 1"),
    ("MDPO_RAY_GPUS_PER_WORKER", "-1", "integer >= 0"),
    ("MDPO_RAY_MAX_FAILURES", "-2", "-1 for no limit"),
    ("MDPO_LAUNCHER_MODE", "k8s", "'local', 'docker' or 'ray'"),
])
def test_bad_ray_settings_name_their_variable(var, value, expected):
    with pytest.raises(ConfigError, match=rf"{var}={value!r}: .*{expected}"):
        LauncherSettings.from_env({var: value})


def test_other_launchers_settings_are_refused_in_ray_mode():
    with pytest.raises(ConfigError, match=r"num_processes=2.*MDPO_RAY_NUM_WORKERS"):
        launch_ray({"output_dir": "/nonexistent/x"}, LauncherSettings(mode="ray", num_processes=2))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_nothing_listens_at_is_refused_at_once():
    port = _closed_port()
    start = time.monotonic()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(RayClusterError, match=rf"MDPO_RAY_ADDRESS.*no Ray cluster answers at 127.0.0.1:{port}"):
            check_reachable(address)
    assert time.monotonic() - start < 2 * ray_launcher.CONNECT_TIMEOUT_S
    check_reachable(None)  # Ray's own lookup: this machine's cluster, else a new local one
    check_reachable("auto")


def test_the_driver_sends_this_machines_token_unless_told_otherwise(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    ray_launcher._token_auth_if_available()
    assert "RAY_AUTH_MODE" not in os.environ  # no token here: a cluster without authentication
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t" * 32)
    ray_launcher._token_auth_if_available()
    assert os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray_launcher._token_auth_if_available()
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


def test_workers_the_cluster_cannot_hold_are_refused():
    nodes = [{"CPU": 2.0}, {"CPU": 2.0, "GPU": 1.0}]
    total = {"CPU": 4.0, "GPU": 1.0}
    check_resources(LauncherSettings(num_workers=4), total, nodes)
    check_resources(LauncherSettings(num_workers=1, cpus_per_worker=2, gpus_per_worker=1), total, nodes)
    with pytest.raises(RayClusterError, match=r"num_workers=5 \(MDPO_RAY_NUM_WORKERS\).*need 5 CPUs but the Ray "
                                              r"cluster at h:1 has 4 CPUs and 1 GPUs on 2 node"):
        check_resources(LauncherSettings(num_workers=5), total, nodes, "h:1")
    with pytest.raises(RayClusterError, match="need 2 GPUs"):
        check_resources(LauncherSettings(num_workers=2, gpus_per_worker=1), total, nodes)
    # 4 CPUs in all, but no node has 3 for one worker.
    with pytest.raises(RayClusterError, match="no node of the local Ray cluster has 3 CPUs for one worker"):
        check_resources(LauncherSettings(num_workers=1, cpus_per_worker=3), total, nodes)


def test_workers_write_under_the_shared_storage_and_take_the_reserved_threads(tmp_path):
    run = {"output_dir": str(tmp_path / "adapters" / "mdpo"), "method": "mdpo"}
    assert worker_run(run, LauncherSettings(cpus_per_worker=3)) == run | {"threads": 3}
    staged = worker_run(run | {"threads": 1}, LauncherSettings(storage_path=str(tmp_path / "shared")))
    stage = Path(staged["output_dir"]).parent
    assert stage.parent == tmp_path / "shared" and stage.name.startswith("mdpo-") and staged["threads"] == 1
    # One stage per adapter, the same on every try: a relaunched run resumes from the checkpoints there.
    assert worker_run(run, LauncherSettings(storage_path=str(tmp_path / "shared")))["output_dir"] == staged["output_dir"]
    inside = {"output_dir": str(tmp_path / "shared" / "mdpo")}
    assert worker_run(inside, LauncherSettings(storage_path=str(tmp_path / "shared")))["output_dir"] == inside["output_dir"]


# --- on a local cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local Ray cluster of 2 CPUs (this process its first driver); its GCS address."""
    # optional: only the ray launcher's tests need Ray (the `ray` extra)
    import ray

    # "local": a new cluster even when this machine has one from `ray start` (which ray.init() would join).
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def project(shapeworld_base) -> Project:
    # Read only: the base's data, base model and reference cache; every adapter goes to a tmp directory.
    return Project(shapeworld_base)


def _config(project: Project, out: Path, per_device_batch_size: int) -> dict:
    cfg = train_run_config(project, "mdpo", out)
    # No warmup: with the preset's 10 % of 8 steps the first step's learning rate is 0, so at step 2 the policy would
    # still be the reference and its accuracy would count rounding noise (the exemption below covers step 1 only).
    cfg.update(max_steps=STEPS, per_device_train_batch_size=per_device_batch_size, gradient_accumulation_steps=1,
               learning_rate=1e-3, warmup_steps=0, save_steps=2, logging_steps=1, threads=1, seed=0)
    return cfg


def _ray(cluster: str, **kw) -> LauncherSettings:
    return LauncherSettings(mode="ray", ray_address=cluster, **kw)


def _adapter(path: Path) -> dict:
    weights = load_file(path / "adapter_model.safetensors")
    assert weights
    return weights


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = _adapter(a), _adapter(b)
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def _train_workers() -> list[psutil.Process]:
    """The Ray Train worker processes of this module's cluster (its raylet is this process's child)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="module")
def one_process(project, outputs) -> dict:
    """The single-process adapter (the local launcher) at the global batch the Ray runs use."""
    return launch_local(_config(project, outputs / "one", 2 * B), log=lambda _: None)


@pytest.fixture(scope="module")
def two_workers(cluster, project, outputs) -> tuple[dict, list[str]]:
    """Two Ray Train workers, started by the Dagster resource as the adapters asset does; its summary and log."""
    lines: list[str] = []
    # The driver's output, the workers' lines included, goes to the run's log: context.log.info.
    context = SimpleNamespace(log=SimpleNamespace(info=lines.append))
    resource = TrainingLauncher(mode="ray", ray_address=cluster, num_workers=2, cpus_per_worker=1)
    return resource.launch(_config(project, outputs / "two", B), context, project), lines


@pytest.mark.slow
@pytest.mark.integration
@cpu_ranks
def test_two_ray_workers_match_one_process(one_process, two_workers, outputs):
    two, lines = two_workers
    assert two["num_processes"] == 2 and one_process["num_processes"] == 1
    assert two["global_step"] == one_process["global_step"] == STEPS and two["resumed_from"] is None
    assert any(f"step {STEPS}/{STEPS}" in line for line in lines), "the workers' progress reaches the log"
    # One adapter; its checkpoints and Ray's run state are gone; the run and settings files stay beside it.
    assert sorted(p.name for p in outputs.iterdir() if p.name.startswith("two")) == [
        "two", "two.ray.json", "two.run.json"]
    logs = {n: [h for h in json.loads((outputs / n / "log_history.json").read_text()) if "loss" in h]
            for n in ("one", "two")}
    assert [h["step"] for h in logs["one"]] == [h["step"] for h in logs["two"]] == list(range(1, STEPS + 1))
    for a, b in zip(logs["one"], logs["two"]):
        for key in a.keys() - {"step", "epoch", "wall_time"}:
            if key.endswith("accuracies") and a["step"] == 1:
                # LoRA's B starts at zero: at step 1 the policy is the reference, every reward margin is 0 up to
                # rounding, and the share of margins > 0 counts rounding noise (measured: 0 vs 0.25).
                continue
            assert b[key] == pytest.approx(a[key], abs=METRIC_ATOL, rel=1e-6), f"step {a['step']}: {key}"
    worst = _max_diff(outputs / "one", outputs / "two")
    assert worst <= ADAPTER_ATOL, f"2-worker adapter differs from the 1-process one by {worst}"
    print(f"2 Ray workers vs 1 process: adapter max |diff| {worst:.3g}")


@pytest.mark.slow
@pytest.mark.integration
@cpu_ranks
def test_runs_that_do_not_fit_at_once_wait_and_all_finish(cluster, project, outputs, one_process):
    # Three one-worker runs of 1 CPU on a 2-CPU cluster: two train, the third waits for a free CPU. The third
    # also stages its adapter under a shared storage path and has it copied to its output_dir.
    settings = [_ray(cluster, num_workers=1), _ray(cluster, num_workers=1),
                _ray(cluster, num_workers=1, storage_path=str(outputs / "shared"))]
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(launch_ray, _config(project, outputs / f"queued{i}", 2 * B), s, lambda _: None)
                   for i, s in enumerate(settings)]
        summaries = [f.result(timeout=600) for f in futures]
    for i, summary in enumerate(summaries):
        assert summary["global_step"] == STEPS and summary["num_processes"] == 1
        worst = _max_diff(outputs / "one", outputs / f"queued{i}")
        assert worst <= SAME_ATOL, f"run {i}: one Ray worker differs from one process by {worst}"
    # Never more runs training at once than the cluster has CPUs for.
    spans = [(s["started_at"], s["ended_at"]) for s in summaries]
    most = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert most <= 2, f"{most} one-CPU runs trained at once on 2 CPUs: {spans}"
    recorded = json.loads((outputs / "queued2" / "run_config.json").read_text())
    assert recorded["output_dir"] == str(outputs / "queued2")
    assert list((outputs / "shared").iterdir()) == [], "the staging directory is removed once the adapter is copied"
    print(f"3 runs on 2 CPUs: at most {most} at once; spans {spans}")


@pytest.mark.slow
@pytest.mark.integration
@cpu_ranks
def test_a_killed_worker_is_restarted_and_resumes_to_the_same_adapter(cluster, project, outputs, two_workers):
    cfg = _config(project, outputs / "killed", B)
    marker = Path(f"{cfg['output_dir']}.checkpoints") / "checkpoint-2" / "trainer_state.json"
    killed: list[int] = []

    def kill_a_worker():
        deadline = time.monotonic() + 300
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        workers = _train_workers()
        if workers:
            killed.append(workers[-1].pid)
            workers[-1].send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    lines: list[str] = []
    summary = launch_ray(cfg, _ray(cluster, num_workers=2, max_failures=1), lines.append)
    killer.join()
    assert killed, "no worker was found to kill"
    assert summary["resumed_from"] is not None, "the run finished before the kill landed"
    step = int(summary["resumed_from"].split("-")[1])
    assert 2 <= step < STEPS and summary["global_step"] == STEPS and summary["num_processes"] == 2
    worst = _max_diff(outputs / "two", outputs / "killed")
    assert worst <= SAME_ATOL, f"the restarted run's adapter differs from the uninterrupted one by {worst}"
    print(f"worker {killed[0]} killed; resumed from {summary['resumed_from']}; adapter max |diff| {worst:.3g}")


class _Cancelled(Exception):
    pass


@pytest.mark.slow
@pytest.mark.integration
@cpu_ranks
def test_a_cancelled_launch_stops_its_ray_workers(cluster, project, outputs):
    # What a cancelled Dagster run does to the resource: an exception out of the log call.
    def log(line: str) -> None:
        if "step 2/" in line:
            raise _Cancelled

    # Long enough that the cancel lands mid-run: the workers' lines reach the driver in batches, not at once.
    cfg = _config(project, outputs / "cancelled", B) | {"max_steps": 400, "save_steps": 1000}
    with pytest.raises(_Cancelled):
        launch_ray(cfg, _ray(cluster, num_workers=2), log, grace_s=10)
    deadline = time.monotonic() + 60
    while _train_workers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _train_workers(), "the workers outlived their driver"
    assert not (outputs / "cancelled").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_an_unreachable_cluster_fails_fast(project, outputs):
    port = _closed_port()
    start = time.monotonic()
    with pytest.raises(TrainingFailed, match=rf"MDPO_RAY_ADDRESS.*no Ray cluster answers at 127.0.0.1:{port}"):
        launch_ray(_config(project, outputs / "unreachable", B), _ray(f"127.0.0.1:{port}"), lambda _: None)
    assert time.monotonic() - start < 60  # the driver's start (Python, TRL's config) and a 5 s connect timeout


@pytest.mark.slow
@pytest.mark.integration
def test_more_cpus_than_the_cluster_has_fail_fast(cluster, project, outputs, monkeypatch):
    # As a deployment's driver starts, without RAY_AUTH_MODE: it sends this machine's token to the explicit address
    # (Ray itself would not, and the cluster would refuse it after a minute of retries).
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    start = time.monotonic()
    with pytest.raises(TrainingFailed, match=r"num_workers=3 \(MDPO_RAY_NUM_WORKERS\).*need 3 CPUs but the Ray "
                                             r"cluster at .* has 2 CPUs"):
        launch_ray(_config(project, outputs / "too-big", B), _ray(cluster, num_workers=3), lambda _: None)
    assert time.monotonic() - start < 60


@pytest.mark.slow
@pytest.mark.integration
@cpu_ranks
def test_the_adapters_asset_trains_on_ray_and_dagster_hears_the_driver_through_pipes(cluster, shapeworld_base, tmp_path,
                                                                                     monkeypatch):
    """The same asset as locally, only the launcher settings changed: the adapter is trained on Ray, registered, and
    the Ray driver's Pipes message (its outcome and final metrics) is in the Dagster run's log."""
    import dagster as dg

    from mdpo_pipeline.defs.assets.training import training_assets
    from tests.conftest import pipeline_resources, project_from_base

    root = project_from_base(shapeworld_base, tmp_path / "proj", training={
        "max_steps": 4, "per_device_train_batch_size": 2, "logging_steps": 2, "save_steps": 50, "threads": 1})
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    launcher = TrainingLauncher(mode="ray", ray_address=cluster, num_workers=2, cpus_per_worker=1)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(training_assets, selection="adapters", partition_key="mdpo", instance=instance,
                            resources=pipeline_resources(root, launcher=launcher))
    assert result.success
    adapter = Project(root).adapter_path("mdpo")
    summary = json.loads((adapter / "summary.json").read_text())
    assert summary["global_step"] == 4 and summary["num_processes"] == 2
    messages = [e.user_message for e in instance.all_logs(result.run_id) if "ray driver reported:" in e.user_message]
    assert len(messages) == 1 and "'global_step': 4" in messages[0] and "'num_processes': 2" in messages[0]
    meta = result.asset_materializations_for_node("adapters")[0].metadata
    assert meta["registered_version"].value
