"""The user's path for each real family, end to end through Dagster on a tiny ShapeWorld: a random-initialised
checkpoint of the real architecture given as ``base_model: {preset, path}``; the reference cache, DPO and mDPO
adapters (trained as their own process, registered in MLflow) and benchmark scores; then the saved adapter's
tensors, its reload with PEFT and from the MLflow registry."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import torch
from peft import PeftModel
from safetensors import safe_open

from mdpo_pipeline.defs.assets.data import data_assets
from mdpo_pipeline.defs.assets.evaluation import evaluation_assets, evaluation_checks
from mdpo_pipeline.defs.assets.training import training_assets
from mdpo_pipeline.defs.checks import data_checks
from mdpo_pipeline.pipeline.adapters import load_registered_adapter
from mdpo_pipeline.training.families import FAMILIES, build_checkpoint
from mdpo_pipeline.training.models import NON_LANGUAGE_PARTS, load_model_and_processor
from mdpo_pipeline.shapeworld.tiny import shapeworld_words
from tests.conftest import pipeline_resources, project_from_base
from tests.test_families import PRESET_OF

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path, shapeworld_base, monkeypatch, request):
    family = request.param
    checkpoint = tmp_path / "checkpoint"
    build_checkpoint(family, checkpoint, corpus=[" ".join(shapeworld_words())])
    # The shared base's data (no stage of it reads a model setting); the family's own stages are built below.
    root = project_from_base(shapeworld_base, tmp_path / "proj", model={
        "base_model": {"preset": PRESET_OF[family], "path": str(checkpoint)},
        "reference_logprobs": {"batch_size": 8}}, training={
        "seed": 0, "max_steps": 2, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
        "logging_steps": 1, "save_steps": 2, "threads": 1, "learning_rate": 1e-3, "lora_r": 8, "lora_alpha": 16},
        benchmark_scores={"generation": {"batch_size": 16, "max_new_tokens": 6},
                          "max_items": {"object_halbench": 6, "amber": 8, "mmhal": 8, "pope": 4},
                          "gate": {"max_coverage_drop": 1.0, "min_improvement": -1.0}})
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return family, checkpoint, root


@pytest.mark.parametrize("project", sorted(FAMILIES), indirect=True)
def test_family_trains_scores_and_reloads_through_dagster(project):
    family, checkpoint, root = project
    preset = PRESET_OF[family]
    resources = pipeline_resources(root)
    everything = [*data_assets, *data_checks, *training_assets, *evaluation_assets, *evaluation_checks]
    assert dg.materialize(everything, selection="key:base_model or key:reference_logprobs",
                          resources=resources).success
    reference = json.loads((root / "data/reference_logprobs/summary.json").read_text())
    assert reference["preset"] == preset and reference["n"] == 40
    for model in ("base", "dpo", "mdpo"):
        result = dg.materialize(everything, selection="key:adapters or key:benchmark_scores", partition_key=model,
                                resources=resources)
        assert result.success, model
    scores = json.loads((root / "artifacts/eval/mdpo/scores.json").read_text())
    assert scores["base_model"]["preset"] == preset and scores["object_halbench"]["n_answers"] == 6
    base_scores = json.loads((root / "artifacts/eval/base/scores.json").read_text())
    assert scores["base_model"] == base_scores["base_model"]
    assert scores["weights_sha256"] != base_scores["weights_sha256"], "the trained adapter changed the model"
    run_config = json.loads((root / "artifacts/adapters/mdpo/run_config.json").read_text())
    assert run_config["reference_cache"].endswith("reference.parquet"), "mDPO trained against the cache"

    # LoRA touched only the language model's linear layers.
    adapter = root / "artifacts/adapters/mdpo"
    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:
        names = list(f.keys())
    assert names and all("lora_A" in n or "lora_B" in n for n in names)
    assert all(".language_model." in n and not NON_LANGUAGE_PARTS.intersection(n.split(".")) for n in names)
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in names} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

    # The saved adapter loads with PEFT on the base, and the registered version with one call.
    base, processor = load_model_and_processor(preset, checkpoint)
    peft_model = PeftModel.from_pretrained(base, adapter)
    from mlflow import MlflowClient

    uri = f"sqlite:///{root}/mlflow.db"
    (version,) = [v for v in MlflowClient(uri).search_model_versions(f"name = '{preset}'") if v.tags["method"] == "mdpo"]
    registered, _ = load_registered_adapter(preset, version.version, uri)
    want = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    got = dict(registered.named_parameters())
    assert want and all(torch.equal(got[n], p) for n, p in want.items())

    final = dg.materialize(everything, selection="key:comparison_report or key:champion", resources=resources)
    assert final.success
    report = (root / "artifacts/eval/comparison.md").read_text()
    assert "| base |" in report and "| mdpo |" in report and "Left out" not in report
    champion, _ = load_registered_adapter(preset, "champion", uri)  # the alias the registry gate moved
    assert isinstance(champion, PeftModel)
