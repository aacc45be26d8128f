"""MLflow logging and registry against a real sqlite backend."""

import dataclasses
import shutil
import sqlite3
from pathlib import Path

from mlflow import MlflowClient

from mdpo_pipeline.integrations.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    TrainingRecord,
    download_registered_adapter,
    experiment_id,
    flatten_params,
    git_commit,
    log_training_run,
    model_version_ui_url,
    registered_model_name,
    run_ui_url,
    split_history,
    tracking_uri,
)
from tests.conftest import fake_adapter

T0 = 1_790_000_000.0  # the training's wall clock (s since the epoch), as run.py's WallClock stamps its logs
HISTORY = [
    {"step": 1, "loss": 0.9, "rewards/chosen": 0.1, "rewards/margins": 0.2, "epoch": 0.5, "wall_time": T0 + 10},
    {"step": 2, "loss": 0.7, "rewards/chosen": 0.3, "rewards/margins": 0.5, "epoch": 1.0, "wall_time": T0 + 20},
    # The Trainer's closing entry, as transformers writes it: at the last step, with the epoch again.
    {"step": 2, "epoch": 1.0, "train_runtime": 21.5, "train_loss": 0.8, "train_samples_per_second": 3.0,
     "train_steps_per_second": 0.1, "total_flos": 1e9, "wall_time": T0 + 21},
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
    assert "wall_time" not in run.data.metrics, "the log's clock is the metrics' timestamp, not a metric"
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


def _run_with_history(tmp_path, history, **record):
    tmp_path.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(tmp_path)
    record = TrainingRecord(method="mdpo", base_model="shapeworld-tiny", adapter_dir=fake_adapter(tmp_path),
                            config={"beta": 0.1}, log_history=history, **record)
    run_id, _ = log_training_run(record, uri, artifact_root=tmp_path / "mlartifacts")
    return MlflowClient(uri), run_id


def test_closing_summary_is_run_level_and_the_step_series_stay_clean(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client, run_id = _run_with_history(tmp_path, HISTORY)
    # One point per logged step: the closing entry adds no third epoch point at step 2.
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "epoch")] == [(1, 0.5), (2, 1.0)]
    metrics = client.get_run(run_id).data.metrics
    assert not {"train_loss", "train_runtime", "total_flos"} & set(metrics)
    for key, value in {"train/loss_mean": 0.8, "train/runtime_s": 21.5, "train/total_flos": 1e9}.items():
        (point,) = client.get_metric_history(run_id, key)
        assert (point.step, point.value) == (0, value), key


def test_split_history_counts_a_repeated_step_once():
    resumed = [{"step": 5, "loss": 1.0, "wall_time": 1.0}, {"step": 5, "loss": 1.1, "epoch": 0.5, "wall_time": 2.0},
               {"step": 6, "loss": 0.9}]
    series, summary = split_history([*resumed, {"step": 6, "train_loss": 0.95}])
    assert series == [{"step": 5, "loss": 1.0, "wall_time": 1.0}, {"step": 5, "epoch": 0.5, "wall_time": 2.0},
                      {"step": 6, "loss": 0.9}]
    assert summary == {"train/loss_mean": 0.95}


def test_run_spans_the_training_and_metrics_carry_its_clock(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client, run_id = _run_with_history(tmp_path, HISTORY, started_at=T0, ended_at=T0 + 22)
    info = client.get_run(run_id).info
    assert (info.start_time, info.end_time) == (int(T0 * 1000), int((T0 + 22) * 1000))
    assert [m.timestamp for m in client.get_metric_history(run_id, "loss")] == [int((T0 + 10) * 1000),
                                                                               int((T0 + 20) * 1000)]
    # Without the process's own times (an older adapter), the logs' clock bounds the run.
    client, run_id = _run_with_history(tmp_path / "older", HISTORY)
    info = client.get_run(run_id).info
    assert (info.start_time, info.end_time) == (int((T0 + 10) * 1000), int((T0 + 21) * 1000))


def test_curves_are_an_image_of_one_key_in_every_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client, run_id = _run_with_history(tmp_path, HISTORY)
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    assert images and all(p.startswith("images/training_curves") for p in images), images


def test_experiment_opens_as_classic_ml_new_or_existing(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    created = experiment_id(client, "fresh", tmp_path / "mlartifacts")
    assert client.get_experiment(created).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    old = client.create_experiment("old")  # made before the tag existed: the UI would guess GenAI
    client.set_experiment_tag(old, EXPERIMENT_KIND_TAG, "genai_development_inferred")
    assert experiment_id(client, "old", tmp_path / "mlartifacts") == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    experiment_id(client, "chosen", tmp_path / "mlartifacts")
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development", "someone's choice stays"


def test_a_copied_checkout_logs_into_its_own_artifact_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    original, copy = tmp_path / "original", tmp_path / "moved" / "copy"
    original.mkdir()
    client, old_run = _run_with_history(original, HISTORY[:2])
    shutil.copytree(original, copy)
    shutil.rmtree(original)  # moved, not copied: the old folder is gone, so nothing can resolve there

    uri = tracking_uri(copy)
    record = TrainingRecord(method="dpo", base_model="shapeworld-tiny", adapter_dir=copy / "adapter",
                            config={"beta": 0.1}, log_history=HISTORY[:2])
    new_run, _ = log_training_run(record, uri, artifact_root=copy / "mlartifacts")
    client = MlflowClient(uri)
    for run_id in (old_run, new_run):
        artifact_uri = client.get_run(run_id).info.artifact_uri
        assert artifact_uri.startswith((copy / "mlartifacts").resolve().as_uri() + "/"), artifact_uri
        local = client.download_artifacts(run_id, "adapter/adapter_config.json", str(tmp_path / "dl" / run_id))
        assert Path(local).read_text() == '{"r": 8}'
    assert (copy / "mlartifacts" / "mdpo").is_dir() and not original.exists()
    (exp,) = [e for e in client.search_experiments() if e.name == "mdpo"]
    assert exp.artifact_location == (copy / "mlartifacts" / "mdpo").resolve().as_uri()
    # The registered version of the old run loads from the copy too.
    assert (download_registered_adapter("shapeworld-tiny", "1", uri) / "adapter_config.json").read_text() == '{"r": 8}'
    with sqlite3.connect(copy / "mlflow.db") as con:
        stored = [row[0] for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"))
                  for row in con.execute(f"SELECT {column} FROM {table}")]
    assert stored and not [s for s in stored if "/original/" in s]


def test_a_store_set_by_uri_is_never_relocated(tmp_path, monkeypatch):
    """A sqlite store elsewhere (a shared one) keeps its locations: only a checkout's own mlflow.db moves."""
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{shared / 'mlflow.db'}")
    project = tmp_path / "project"
    client = MlflowClient(tracking_uri(project))
    exp = experiment_id(client, "mdpo", project / "mlartifacts")
    assert tracking_uri(shared / "elsewhere") == f"sqlite:///{shared / 'mlflow.db'}"
    assert client.get_experiment(exp).artifact_location == (project / "mlartifacts" / "mdpo").resolve().as_uri()


def test_ui_links(monkeypatch):
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    assert run_ui_url("3", "abc") == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    monkeypatch.setenv("MLFLOW_UI_URL", "https://mlflow.example/")
    assert model_version_ui_url("shapeworld-tiny", 4) == "https://mlflow.example/#/models/shapeworld-tiny/versions/4"
