"""Dagster metadata a person reads: rounded numbers, links to MLflow, and MLflow tags that lead back."""

from __future__ import annotations

import dagster as dg

from mdpo_pipeline.defs.metadata import dagster_run_tags, mlflow_links, summary_metadata


def test_floats_are_rounded_for_display_and_ints_kept():
    meta = summary_metadata({"train_loss": 0.5849673925562108, "seconds": 17.89390275400001, "pairs": 1500,
                             "tiny": 1.23456e-7, "ok": True, "final": {"lr": 4.3583816916779315e-06}})
    assert meta["train_loss"] == 0.585 and meta["seconds"] == 17.89 and meta["tiny"] == 1.235e-7
    assert meta["pairs"] == 1500 and isinstance(meta["pairs"], int) and meta["ok"] is True
    assert "4.358e-06" in meta["final"].value


def test_links_to_mlflow_and_back_to_dagster(monkeypatch):
    monkeypatch.delenv("DAGSTER_UI_URL", raising=False)
    links = mlflow_links("http://127.0.0.1:5000/#/experiments/1/runs/r", "http://127.0.0.1:5000/#/models/m/versions/2")
    assert isinstance(links["mlflow_run"], dg.UrlMetadataValue)
    assert links["mlflow_model_version"].url.endswith("/versions/2")
    assert mlflow_links() == {}
    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["mdpo"]))
    def partitioned(context) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=dagster_run_tags(context))

    @dg.asset
    def whole(context) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=dagster_run_tags(context))

    result = dg.materialize([partitioned], partition_key="mdpo")
    tags = {k: v.value for k, v in result.asset_materializations_for_node("partitioned")[-1].metadata.items()}
    assert tags == {"dagster.run_id": result.run_id, "dagster.partition": "mdpo",
                    "dagster.run_url": f"http://127.0.0.1:3000/runs/{result.run_id}"}
    monkeypatch.setenv("DAGSTER_UI_URL", "https://dagster.example/")
    result = dg.materialize([whole])
    tags = {k: v.value for k, v in result.asset_materializations_for_node("whole")[-1].metadata.items()}
    assert tags == {"dagster.run_id": result.run_id, "dagster.run_url": f"https://dagster.example/runs/{result.run_id}"}
