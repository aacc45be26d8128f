"""The user's path through Dagster for model types nothing in the pipeline knows, one per mechanism: a tiny
checkpoint of the real classes given as ``base_model: {path}`` alone (no preset), then the reference cache, the DPO
and mDPO adapters (each its own training process, registered in MLflow), their benchmark scores and the report.

qwen3_vl: M-RoPE with deepstack visual features; idefics3: image splitting and ``pixel_attention_mask``; mllama:
cross-attention (no image tokens in the language model); internvl: a pixel-shuffle projector between
``<img>...</img>``; llava_onevision: any-resolution tiles with ``image_sizes``."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from mlflow import MlflowClient
from safetensors import safe_open

from mdpo_pipeline.defs.assets.data import data_assets
from mdpo_pipeline.defs.assets.evaluation import evaluation_assets, evaluation_checks
from mdpo_pipeline.defs.assets.training import training_assets
from mdpo_pipeline.defs.checks import data_checks
from mdpo_pipeline.training.builder import build_tiny
from mdpo_pipeline.training.presets import GENERIC
from tests.conftest import pipeline_resources, project_from_base

pytestmark = pytest.mark.slow

MECHANISMS = ("qwen3_vl", "idefics3", "mllama", "internvl", "llava_onevision")


@pytest.mark.parametrize("model_type", MECHANISMS)
def test_a_model_type_trains_scores_and_reports_through_dagster(model_type, tmp_path, shapeworld_base, monkeypatch):
    checkpoint = tmp_path / "my-vlm"
    build_tiny(model_type, checkpoint)
    # The shared base's data (no stage of it reads a model setting); the model's own stages are built here.
    root = project_from_base(shapeworld_base, tmp_path / "proj", model={
        "base_model": {"path": str(checkpoint)}, "reference_logprobs": {"batch_size": 8}}, training={
        "seed": 0, "max_steps": 2, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
        "logging_steps": 1, "save_steps": 2, "threads": 1, "learning_rate": 1e-3, "lora_r": 8, "lora_alpha": 16},
        benchmark_scores={"generation": {"batch_size": 16, "max_new_tokens": 6},
                          "max_items": {"object_halbench": 6, "amber": 8, "mmhal": 8, "pope": 4}})
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resources = pipeline_resources(root)
    everything = [*data_assets, *data_checks, *training_assets, *evaluation_assets, *evaluation_checks]

    assert dg.materialize(everything, selection="key:base_model or key:reference_logprobs",
                          resources=resources).success
    base = json.loads((root / "data/base_model/preset.json").read_text())
    assert base["preset"] == GENERIC and base["model_type"] == model_type and base["path"] == str(checkpoint)
    assert json.loads((root / "data/reference_logprobs/summary.json").read_text())["n"] == 40
    for method in ("base", "dpo", "mdpo"):  # the gate checks compare each adapter with the base model
        assert dg.materialize(everything, selection="key:adapters or key:benchmark_scores", partition_key=method,
                              resources=resources).success, method
    assert dg.materialize(everything, selection="key:comparison_report", resources=resources).success

    scores = json.loads((root / "artifacts/eval/mdpo/scores.json").read_text())
    assert scores["base_model"]["preset"] == GENERIC and scores["object_halbench"]["n_answers"] == 6
    run_config = json.loads((root / "artifacts/adapters/mdpo/run_config.json").read_text())
    assert run_config["base_model_path"] == str(checkpoint) and run_config["reference_cache"].endswith(".parquet")
    with safe_open(str(root / "artifacts/adapters/mdpo/adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and all("lora_" in n for n in names)
    # Registered under the checkpoint's own name, not under "auto" with every other user's model.
    registered = {m.name for m in MlflowClient(f"sqlite:///{root}/mlflow.db").search_registered_models()}
    assert registered == {f"{model_type}-my-vlm"}
    assert "| mdpo |" in (root / "artifacts/eval/comparison.md").read_text()
