"""The evaluation half for real on a tiny ShapeWorld: scores per model partition logged to MLflow, the gate
check, the comparison report and the champion decision in the registry; stored answers reused on rerun."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from mlflow import MlflowClient

from mdpo_pipeline.defs.assets.data import data_assets
from mdpo_pipeline.defs.assets.evaluation import evaluation_assets, evaluation_checks
from mdpo_pipeline.defs.assets.training import training_assets
from tests.conftest import pipeline_resources, project_from_base

pytestmark = pytest.mark.slow


@pytest.fixture
def project(shapeworld_base, tmp_path, monkeypatch):
    # Data, base model and reference cache come from the session's shared base (conftest.shapeworld_base).
    root = project_from_base(shapeworld_base, tmp_path / "proj", training={
        "seed": 0, "max_steps": 3, "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 2, "threads": 1,
        "learning_rate": 1e-3}, benchmark_scores={
        "generation": {"batch_size": 16, "max_new_tokens": 12},
        "max_items": {"object_halbench": 12, "amber": 30, "mmhal": 16, "pope": 10},
        # A 3-step adapter need not beat the base: let it pass here; the end of the
        # test makes the gate impossible and checks that it blocks.
        "gate": {"primary": "chair_s", "max_coverage_drop": 1.0, "min_improvement": -1.0}})
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


def test_scores_report_and_champion(project):
    resources = pipeline_resources(project)
    everything = [*data_assets, *training_assets, *evaluation_assets, *evaluation_checks]
    per_model = "key:adapters or key:benchmark_scores"
    results = {m: dg.materialize(everything, selection=per_model, partition_key=m, resources=resources)
               for m in ("base", "dpo")}
    assert all(r.success for r in results.values())

    scores = json.loads((project / "artifacts/eval/dpo/scores.json").read_text())
    assert {"chair_s", "chair_i", "recall", "amber_chair", "amber_cover", "amber_hal", "amber_cog", "amber_f1",
            "mmhal_score", "mmhal_hallucination_rate", "pope_f1", "pope_accuracy", "pope_yes_ratio"} <= set(scores["scores"])
    assert set(scores["benchmarks"]) == {"object_halbench", "amber", "mmhal", "pope"}
    assert scores["benchmarks"]["pope"]["n"] == 3 * 10 and set(scores["pope"]) == {"random", "popular", "adversarial", "all"}
    assert scores["object_halbench"]["n_answers"] == 12 and scores["mmhal"]["n"] == 16
    assert "NOT comparable with GPT-4" in scores["judge"]
    meta = results["dpo"].asset_materializations_for_node("benchmark_scores")[-1].metadata
    assert "chair_s" in meta and "mlflow_run_id" in meta
    assert meta["mlflow_run"].value.endswith(f"/runs/{meta['mlflow_run_id'].value}")
    (check,) = results["dpo"].get_asset_check_evaluations()
    assert check.check_name == "beats_base_model" and "reasons" in check.metadata

    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    (version,) = client.search_model_versions("name = 'shapeworld-tiny'")
    history = client.get_metric_history(version.run_id, "eval/chair_s")
    assert [m.value for m in history] == [scores["scores"]["chair_s"]], "scores land on the adapter's training run"

    final = dg.materialize(everything, selection="key:comparison_report or key:champion", resources=resources)
    assert final.success
    report = (project / "artifacts/eval/comparison.md").read_text()
    assert "| base |" in report and "| dpo |" in report and "CHAIR_s" in report and "POPE F1" in report
    assert (project / "artifacts/eval/comparison.png").stat().st_size > 10_000
    decided = client.get_model_version("shapeworld-tiny", version.version).tags
    decision = json.loads(decided["gate.decision"])
    assert decision["numbers"]["base_chair_s"] == json.loads(
        (project / "artifacts/eval/base/scores.json").read_text())["scores"]["chair_s"]
    champion_meta = final.asset_materializations_for_node("champion")[-1].metadata
    promoted = decided["gate.promoted"] == "true"
    assert champion_meta["champion_version"].value == (str(version.version) if promoted else "None")

    # Re-scoring reuses the stored answers: the generation files are not rewritten.
    answers = project / "artifacts/eval/dpo/generations/amber.jsonl"
    before = answers.stat().st_mtime_ns
    assert dg.materialize(everything, selection="key:benchmark_scores", partition_key="dpo", resources=resources).success
    assert answers.stat().st_mtime_ns == before

    # An adapter that does not beat the base model fails the gate as a warning: scored, its run succeeds, and the
    # check says which partition it judged.
    import yaml

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["benchmark_scores"]["gate"]["min_improvement"] = 1.0  # CHAIR_s would have to fall by 100 points
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    blocked = dg.materialize(everything, selection="key:benchmark_scores", partition_key="dpo", resources=resources,
                             raise_on_error=False)
    (evaluation,) = blocked.get_asset_check_evaluations()
    assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["partition"].value == "dpo"
    assert blocked.success and blocked.asset_materializations_for_node("benchmark_scores")
