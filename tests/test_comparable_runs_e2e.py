"""An adapter materialized for real, as MLflow shows it next to another: the values it trained with as params,
clean step series stamped with the training's clock, run-level totals, and links between Dagster and MLflow."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from mlflow import MlflowClient

from mdpo_pipeline.defs.assets.data import data_assets
from mdpo_pipeline.defs.assets.training import training_assets
from mdpo_pipeline.integrations.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from mdpo_pipeline.training.presets import get_preset
from tests.conftest import pipeline_resources, project_from_base

pytestmark = pytest.mark.slow


@pytest.fixture
def project(shapeworld_base, tmp_path, monkeypatch):
    root = project_from_base(shapeworld_base, tmp_path / "proj", training={
        "seed": 0, "max_steps": 4, "per_device_train_batch_size": 4, "logging_steps": 2, "save_steps": 2, "threads": 1})
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    return root


def test_adapter_run_is_comparable_and_linked(project):
    result = dg.materialize([*data_assets, *training_assets], selection="key:adapters", partition_key="mdpo",
                            resources=pipeline_resources(project))
    assert result.success
    meta = result.asset_materializations_for_node("adapters")[-1].metadata
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    run = client.get_run(meta["mlflow_run_id"].value)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    # Params: what the run trained with, the preset's values included.
    preset = get_preset("shapeworld-tiny")
    params = run.data.params
    assert (params["lora_r"], params["lora_alpha"]) == (str(preset.lora_r), str(preset.lora_alpha))
    assert float(params["learning_rate"]) == preset.training.learning_rate
    assert params["gradient_accumulation_steps"] == str(preset.training.grad_accum)
    assert params["max_length"] != "null" and params["beta"] != "null" and params["threads"] == "1"

    # Step series: one point per logged step, stamped within the run's span; the closing totals are run-level.
    epoch = client.get_metric_history(run.info.run_id, "epoch")
    assert [m.step for m in epoch] == [2, 4]
    assert run.info.start_time <= min(m.timestamp for m in epoch) <= max(m.timestamp for m in epoch) \
        <= run.info.end_time
    summary = json.loads((project / "artifacts/adapters/mdpo/summary.json").read_text())
    assert run.info.start_time == round(summary["started_at"] * 1000)
    assert "train_loss" not in run.data.metrics and "train/loss_mean" in run.data.metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/runtime_s")] == [0]

    # Links both ways: Dagster metadata to MLflow's pages, MLflow tags to the Dagster run.
    assert meta["mlflow_run"].value == \
        f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
    assert meta["mlflow_model_version"].value.endswith(
        f"/#/models/shapeworld-tiny/versions/{meta['registered_version'].value}")
    assert run.data.tags["dagster.run_id"] == result.run_id and run.data.tags["dagster.partition"] == "mdpo"
    assert run.data.tags["dagster.run_url"] == f"http://127.0.0.1:3000/runs/{result.run_id}"
    assert isinstance(meta["train_loss"].value, float) and len(repr(meta["train_loss"].value)) <= 8
