"""MLflow logging and registry against a real sqlite backend."""

import dataclasses
from pathlib import Path

from mlflow import MlflowClient

from mdpo_pipeline.integrations.tracking import (
    TrainingRecord,
    flatten_params,
    git_commit,
    log_training_run,
    registered_model_name,
    tracking_uri,
)
from tests.conftest import fake_adapter

HISTORY = [
    {"step": 1, "loss": 0.9, "rewards/chosen": 0.1, "rewards/margins": 0.2, "epoch": 0.5},
    {"step": 2, "loss": 0.7, "rewards/chosen": 0.3, "rewards/margins": 0.5, "epoch": 1.0},
    {"train_runtime": 3.2},  # the Trainer's closing summary has no step: not a metric point
]


def test_run_params_metrics_artifacts_and_registry(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    record = TrainingRecord(
        method="mdpo",
        base_model="shapeworld-tiny",
        adapter_dir=fake_adapter(tmp_path),
        config={"beta": 0.1, "lora": {"r": 8}, "sources": ["llava"]},
        log_history=HISTORY,
        data_versions={"preference_pairs": "abc.dir"},
    )
    run_id, version = log_training_run(record, uri, artifact_root=tmp_path / "mlartifacts", git_sha="deadbeef")
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["lora.r"] == "8" and run.data.params["sources"] == '["llava"]'
    assert run.data.params["data.preference_pairs"] == "abc.dir"
    assert run.data.tags["method"] == "mdpo" and run.data.tags["git_commit"] == "deadbeef"
    assert [m.value for m in client.get_metric_history(run_id, "rewards/margins")] == [0.2, 0.5]
    assert "train_runtime" not in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for d in ("adapter", "plots", "config") for a in client.list_artifacts(run_id, d)
    }
    assert {"adapter/adapter_config.json", "plots/curves.png", "config/run_config.json"} <= artifacts
    mv = client.get_model_version("shapeworld-tiny", version)
    assert mv.tags["method"] == "mdpo" and mv.run_id == run_id
    # A second run is a new version of the same registered model; a plot drawn beforehand is logged, not redrawn.
    drawn = tmp_path / "mdpo.curves.png"
    drawn.write_bytes(b"\x89PNG drawn once by the pipeline")
    run2, version2 = log_training_run(dataclasses.replace(record, curves=drawn), uri,
                                      artifact_root=tmp_path / "mlartifacts")
    assert int(version2) == int(version) + 1
    logged = client.download_artifacts(run2, "plots/curves.png", str(tmp_path / "dl"))
    assert Path(logged).read_bytes() == drawn.read_bytes()


def test_helpers(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"
    assert tracking_uri(tmp_path, "sqlite:///x.db") == "sqlite:///x.db"
    assert registered_model_name("llava-hf/llava-1.5-7b-hf") == "llava-hf-llava-1.5-7b-hf"
    assert flatten_params({"a": {"b": 1, "c": [1, 2]}, "d": "x" * 7000}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x" * 6000}
    assert git_commit(tmp_path) == "unknown"
