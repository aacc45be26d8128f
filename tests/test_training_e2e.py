"""The training assets for real: SFT'd tiny base model, reference cache, adapters trained as their own
process, logged to MLflow (sqlite) and registered — on a tiny ShapeWorld in a throwaway checkout."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from mlflow import MlflowClient

from mdpo_pipeline.defs.assets.data import data_assets
from mdpo_pipeline.defs.assets.training import training_assets
from mdpo_pipeline.defs.checks import data_checks
from mdpo_pipeline.integrations.dvc import Dvc
from tests.conftest import dvc_executable, pipeline_resources, project_from_base

pytestmark = pytest.mark.slow


@pytest.fixture
def project(shapeworld_base, tmp_path, monkeypatch):
    # Data, base model and reference cache come from the session's shared base (materialized through Dagster
    # with their checks, see conftest.shapeworld_base); this test trains on a copy of it.
    root = project_from_base(shapeworld_base, tmp_path / "proj", training={
        "seed": 0, "max_steps": 3, "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 2, "threads": 1})
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


def test_adapters_are_trained_logged_and_registered(project):
    resources = pipeline_resources(project)
    everything = [*data_assets, *data_checks, *training_assets]
    summary = json.loads((project / "data/reference_logprobs/summary.json").read_text())
    assert summary["n"] == 40 and summary["preset"] == "shapeworld-tiny"
    for method in ("dpo", "mdpo"):
        result = dg.materialize(everything, selection="key:adapters", partition_key=method, resources=resources)
        assert result.success
        meta = result.asset_materializations_for_node("adapters")[-1].metadata
        assert meta["global_step"].value == 3
        assert "data:image/png;base64," in meta["curves"].value

    adapter = project / "artifacts/adapters/mdpo"
    assert {"adapter_config.json", "adapter_model.safetensors", "log_history.json"} <= {p.name for p in adapter.iterdir()}
    assert not adapter.with_name("mdpo.checkpoints").exists()
    assert not (adapter / "ref").exists(), "only the trained adapter is saved, no reference copy"
    run_config = json.loads((adapter / "run_config.json").read_text())
    assert run_config["reference_cache"].endswith("reference.parquet")
    logged = json.loads((adapter / "log_history.json").read_text())
    assert "rewards/conditional_margins" in logged[0]
    assert "rewards/conditional_margins" not in json.loads((project / "artifacts/adapters/dpo/log_history.json").read_text())[0]

    # The adapter is standard PEFT: it loads onto the base model.
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration

    base = LlavaForConditionalGeneration.from_pretrained(project / "data/base_model")
    assert isinstance(PeftModel.from_pretrained(base, adapter), PeftModel)

    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    versions = sorted(client.search_model_versions("name = 'shapeworld-tiny'"), key=lambda v: int(v.version))
    assert [v.tags["method"] for v in versions] == ["dpo", "mdpo"]
    run = client.get_run(versions[-1].run_id)
    assert run.data.tags["method"] == "mdpo"
    assert run.data.tags["data.preference_pairs"].endswith(".dir")
    assert run.data.params["method"] == "mdpo"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 3
    assert Dvc(project, dvc_executable()).status() == {}
