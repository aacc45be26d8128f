"""The MLflow tracking server is down when a training run finishes: the adapter is kept, logging is tried again
with backoff, what could not be logged waits under artifacts/mlflow_pending, and `mdpo mlflow replay` logs it into
the server once it is back (a real `mlflow server`, on the port that refused before)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from mdpo_pipeline.cli import main
from mdpo_pipeline.pipeline.project import Project
from mdpo_pipeline.pipeline.train import PENDING_DIR, record_adapter_or_defer, train_run_config
from tests.conftest import project_from_base, stop_process_group
from tests.pg import _free_port
from tests.test_deploy import _wait_http

pytestmark = [pytest.mark.slow, pytest.mark.integration]

HISTORY = [{"step": 1, "epoch": 0.5, "loss": 0.69, "rewards/margins": 0.1, "wall_time": 1.0e9},
           {"step": 2, "epoch": 1.0, "loss": 0.6, "rewards/margins": 0.3, "wall_time": 1.0e9 + 5}]


def _finished_adapter(project: Project, method: str):
    """The files a finished training run leaves (its adapter shaped like PEFT's, its history, config, summary)."""
    out = project.adapter_path(method)
    cfg = train_run_config(project, method, out)
    out.mkdir(parents=True)
    (out / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (out / "adapter_model.safetensors").write_bytes(b"\1" * 16)
    (out / "log_history.json").write_text(json.dumps(HISTORY))
    (out / "run_config.json").write_text(json.dumps(dict(cfg)))
    (out / "summary.json").write_text(json.dumps({"global_step": 2}))
    return cfg, out


def test_a_run_that_finishes_while_mlflow_is_down_is_kept_and_replayed(shapeworld_base, tmp_path, monkeypatch):
    root = project_from_base(shapeworld_base, tmp_path / "proj")
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    monkeypatch.chdir(root)
    # MLflow's own HTTP retries take minutes by default; the pipeline's backoff is what is tested here.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    project = Project(root)
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"

    cfg, out = _finished_adapter(project, "mdpo")
    lines: list[str] = []
    result = record_adapter_or_defer(project, cfg, uri, "mdpo", tags={"dagster.run_id": "run-1"},
                                     log=lines.append, delays=(0.1, 0.2))
    assert set(result) == {"pending", "error"} and result["pending"].endswith("-mdpo.json")
    assert sum("unreachable (try" in line for line in lines) == 2, lines
    assert "`mdpo mlflow replay` logs them" in lines[-1]
    assert (out / "adapter_model.safetensors").read_bytes() == b"\1" * 16, "the adapter is kept"
    (pending,) = sorted((root / PENDING_DIR).glob("*.json"))
    assert json.loads(pending.read_text())["tags"] == {"dagster.run_id": "run-1"}

    # A second adapter trained meanwhile, then overwritten by a later run: it must not be logged as the first.
    cfg2, out2 = _finished_adapter(project, "dpo")
    record_adapter_or_defer(project, cfg2, uri, "mdpo", log=lines.append, delays=())
    (out2 / "adapter_model.safetensors").write_bytes(b"\2" * 16)
    assert main(["mlflow", "replay", "--tracking-uri", uri]) == 1, "still down: nothing logged"
    # The first stays pending; the overwritten one is set aside at once, down or not.
    assert [p.name for p in (root / PENDING_DIR).glob("*.json")] == [pending.name]
    assert [p.name.endswith("-dpo.stale") for p in (root / PENDING_DIR).glob("*.stale")] == [True]

    # The server comes back on the same address.
    store = f"sqlite:///{tmp_path}/server.db"
    log = tmp_path / "server.log"
    with open(log, "w") as fh:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", store, "--default-artifact-root", (tmp_path / "server-artifacts").as_uri()],
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"{uri}/health", server, timeout=120)
        assert main(["mlflow", "replay", "--tracking-uri", uri]) == 0
        client = MlflowClient(uri)
        (version,) = client.search_model_versions("name = 'shapeworld-tiny'")
        run = client.get_run(version.run_id)
        assert version.tags["method"] == "mdpo" and run.data.tags["dagster.run_id"] == "run-1"
        assert [m.value for m in client.get_metric_history(run.info.run_id, "rewards/margins")] == [0.1, 0.3]
        assert not list((root / PENDING_DIR).glob("*.json"))
    finally:
        stop_process_group(server, signal.SIGTERM)
        shutil.rmtree(tmp_path / "server-artifacts", ignore_errors=True)
