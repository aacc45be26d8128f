"""A Dagster run worker SIGKILLed while ``adapters[mdpo]`` trains: the run is marked failed naming what happened
(by the code server that started the worker, or by run monitoring through the project's MonitoredRunLauncher when
that server is gone too), the step and training processes die with the worker (nothing trains on unseen), no
adapter is left, and the rerun resumes from the newest checkpoint to a complete adapter. Real parts:
`dagster-daemon`, the code server, run and step workers, the training process. The monitoring backstop and the
pid checks are tested apart, against a real instance and real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from mdpo_pipeline.integrations.deploy import RUN_MONITORING
from mdpo_pipeline.training.run import _last_complete_checkpoint
from tests.conftest import project_from_base, stop_process_group

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the death signal and /proc are Linux's")

BIN = Path(sys.executable).parent
MAX_STEPS = 24


def _instance_yaml(home: Path) -> None:
    monitoring = json.loads(json.dumps(RUN_MONITORING))  # the deployment's, polled every second here
    monitoring["run_monitoring"]["poll_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump({**monitoring, "telemetry": {"enabled": False}}))


def _launch(workspace: Path, env: dict[str, str], run_id: str) -> None:
    subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", str(workspace), "-j", "retrain_job", "-o", "adapters",
                    "--tags", json.dumps({"dagster/partition": "mdpo"}), "--run-id", run_id],
                   env=env, check=True, capture_output=True, text=True, timeout=120)


def _wait(what: str, cond, timeout_s: float, daemon_log: Path, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out waiting for {what}; daemon log:\n{daemon_log.read_text()[-3000:]}")


def _training_pids(config_path: Path) -> list[int]:
    """Processes whose command line names the run config (`mdpo train --config ...`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(config_path).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@LINUX
def test_alive_since_tells_a_live_process_from_a_dead_or_newer_one():
    from mdpo_pipeline.integrations.processes import alive_since

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        seen_now, seen_an_hour_ago = time.time(), time.time() - 3600
        assert alive_since(proc.pid, seen_now)
        # A pid seen before this process existed names another (an earlier holder of the same number).
        assert not alive_since(proc.pid, seen_an_hour_ago)
    finally:
        proc.kill()
        proc.wait()
    assert not alive_since(proc.pid, seen_now)


@LINUX
def test_a_zombie_counts_as_dead():
    from mdpo_pipeline.integrations.processes import alive_since

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    seen_now = time.time()
    assert not alive_since(proc.pid, seen_now)
    proc.wait()


@LINUX
def test_monitoring_backstop_fails_a_run_whose_worker_is_gone(tmp_path):
    """MonitoredRunLauncher.check_run_worker_health on a real instance: the worker pid comes from the run's own
    "Started process" event; alive -> running, killed -> failed with the reason, a run launched on another machine
    or with no worker pid yet -> not judged (running)."""
    import dagster as dg
    from dagster._core.events import EngineEventData
    from dagster._core.launcher import WorkerStatus

    from mdpo_pipeline.defs.run_worker import LAUNCHED_ON, MonitoredRunLauncher, machine_id, run_worker

    _instance_yaml(tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, MonitoredRunLauncher) and launcher.supports_check_run_worker_health
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_resume_run_attempts == 0

        @dg.op
        def noop() -> None:
            pass

        @dg.job
        def job() -> None:
            noop()

        def run(tags: dict[str, str]) -> dg.DagsterRun:
            created = instance.create_run_for_job(job, tags=tags)
            return instance.get_run_by_id(created.run_id)

        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        here = run({LAUNCHED_ON: machine_id()})
        assert launcher.check_run_worker_health(here).status == WorkerStatus.RUNNING  # no pid reported yet
        instance.report_engine_event(f"Started process for run (pid: {worker.pid}).", here,
                                     EngineEventData.in_process(worker.pid))
        assert run_worker(instance, here.run_id)[0] == worker.pid
        assert launcher.check_run_worker_health(here).status == WorkerStatus.RUNNING
        worker.kill()
        worker.wait()
        result = launcher.check_run_worker_health(here)
        assert result.status == WorkerStatus.FAILED
        assert f"the run worker (pid {worker.pid}) died without ending the run" in result.msg
        assert "resumes from its newest checkpoint" in result.msg

        elsewhere = run({LAUNCHED_ON: "another-host/boot"})
        instance.report_engine_event(f"Started process for run (pid: {worker.pid}).", elsewhere,
                                     EngineEventData.in_process(worker.pid))
        assert launcher.check_run_worker_health(elsewhere).status == WorkerStatus.RUNNING


@pytest.mark.slow
@pytest.mark.integration
@LINUX
def test_killed_run_worker_fails_its_run_and_the_rerun_resumes(shapeworld_base, tmp_path):
    import dagster as dg

    from mdpo_pipeline.defs.run_worker import run_worker

    project = project_from_base(shapeworld_base, tmp_path / "project", training={
        "seed": 0, "max_steps": MAX_STEPS, "save_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 2,
        "threads": 1})
    home = tmp_path / "home"
    home.mkdir()
    _instance_yaml(home)
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "mdpo_pipeline.definitions", "working_directory": str(project)}}]}))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"DAGSTER_HOME": str(home), "MDPO_PROJECT_ROOT": str(project)}
    adapter = project / "artifacts" / "adapters" / "mdpo"
    checkpoints, config_path = Path(f"{adapter}.checkpoints"), Path(f"{adapter}.run.json")

    daemon_log = tmp_path / "daemon.log"
    with open(daemon_log, "w") as out:
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env=env, cwd=project,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            first = str(uuid.uuid4())
            _launch(workspace, env, first)
            _wait("the first checkpoint", lambda: _last_complete_checkpoint(checkpoints), 300, daemon_log)
            worker, _ = run_worker(instance, first)
            step = next(int(r.event_log_entry.dagster_event.event_specific_data.metadata["pid"].value)
                        for r in instance.get_records_for_run(
                            first, of_type=dg.DagsterEventType.STEP_WORKER_STARTED).records)
            training = _training_pids(config_path)
            assert training and worker != step, (worker, step, training)
            os.kill(worker, signal.SIGKILL)
            killed_at = _last_complete_checkpoint(checkpoints)

            failed = _wait("run monitoring to fail the run", lambda: (
                r := instance.get_run_by_id(first)).status == dg.DagsterRunStatus.FAILURE and r, 60, daemon_log)
            assert failed.status == dg.DagsterRunStatus.FAILURE
            reasons = [r.event_log_entry.dagster_event.message or "" for r in instance.get_records_for_run(
                first).records if r.event_log_entry.dagster_event]
            # Whoever sees it first says so: the code server that started the worker (Dagster's own check), or,
            # when that server is gone too, run monitoring through MonitoredRunLauncher (unit-tested apart).
            said = ("was terminated by signal 9 (SIGKILL)", f"the run worker (pid {worker}) died without ending the run")
            assert any(s in m for m in reasons for s in said), "\n".join(m[:300] for m in reasons[-6:])
            # Nothing trains on unseen: the step process and the training process died with the worker.
            _wait("the step and training processes to die", lambda: not any(
                _alive(p) for p in [step, *training]), 10, daemon_log)
            assert not adapter.exists(), "a killed run must not leave an adapter"
            newest = _last_complete_checkpoint(checkpoints)
            assert newest is not None and int(newest.rsplit("-", 1)[1]) >= int(killed_at.rsplit("-", 1)[1])

            second = str(uuid.uuid4())
            _launch(workspace, env, second)
            done = _wait("the rerun", lambda: (r := instance.get_run_by_id(second)).status in (
                dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) and r, 300, daemon_log, poll_s=0.5)
            assert done.status == dg.DagsterRunStatus.SUCCESS, daemon_log.read_text()[-3000:]
        summary = json.loads((adapter / "summary.json").read_text())
        assert summary["resumed_from"] == Path(newest).name and summary["global_step"] == MAX_STEPS
        assert not checkpoints.exists()  # a finished run removes its checkpoints
    finally:
        stop_process_group(daemon, signal.SIGTERM)
