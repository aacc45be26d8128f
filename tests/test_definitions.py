"""The Dagster definitions load and declare what the pipeline promises."""

import dagster as dg

from mdpo_pipeline.definitions import defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"shapeworld", "raw_silkie", "preference_pairs", "corrupted_images"} <= keys
    # Lineage: each data asset depends on the one before it.
    parents = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys} for k in graph.get_all_asset_keys()}
    assert parents["raw_silkie"] == {"shapeworld"}
    assert parents["preference_pairs"] == {"raw_silkie"}
    assert parents["corrupted_images"] == {"preference_pairs"}


def test_quality_gates_are_blocking_checks():
    specs = {}
    for check_def in defs.asset_checks or []:
        for spec in check_def.check_specs:
            specs[spec.key.name] = spec
    assert {"quarantine_share_below_threshold", "pairs_are_usable", "every_pair_has_its_corrupted_image"} <= set(specs)
    assert all(s.blocking for s in specs.values())


def test_retraining_is_off_by_default_and_requests_one_run_per_model(monkeypatch):
    from mdpo_pipeline.defs.automation import (
        raw_data_sensor,
        retrain_after_refresh,
        retrain_partitions,
        retrain_schedule,
    )

    assert retrain_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert raw_data_sensor.default_status == retrain_after_refresh.default_status == dg.DefaultSensorStatus.STOPPED
    monkeypatch.setenv("MDPO_RETRAIN_MODELS", "base,mdpo")
    from datetime import datetime, timezone

    tick = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
    requests = list(retrain_schedule(dg.build_schedule_context(scheduled_execution_time=tick)))
    assert [r.partition_key for r in requests] == ["base", "mdpo"]
    assert requests[0].run_key == "2026-11-23T03:00:00+00:00:base"
    assert retrain_partitions({}) == ["base", "dpo", "mdpo"]
    import pytest

    with pytest.raises(ValueError, match="unknown models"):
        retrain_partitions({"MDPO_RETRAIN_MODELS": "base,sft"})


def test_raw_data_sensor_fires_once_per_new_dvc_version(tmp_path):
    from mdpo_pipeline.defs.automation import raw_data_sensor
    from mdpo_pipeline.defs.resources import ProjectResource

    (tmp_path / "params.yaml").write_text("raw_silkie: {path: data/vlfeedback}\n")
    (tmp_path / "data").mkdir()
    dvc_file = tmp_path / "data/vlfeedback.dvc"
    resources = {"project": ProjectResource(root=str(tmp_path))}

    def tick(cursor):
        with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
            return raw_data_sensor(context), context.cursor

    result, cursor = tick(None)
    assert isinstance(result, dg.SkipReason) and "not tracked by DVC" in result.skip_message
    dvc_file.write_text("outs:\n- md5: v1.dir\n  path: vlfeedback\n")
    result, cursor = tick(None)
    assert isinstance(result, dg.SkipReason) and cursor == "v1.dir"  # first look only remembers the version
    result, cursor = tick(cursor)
    assert isinstance(result, dg.SkipReason) and "unchanged" in result.skip_message
    dvc_file.write_text("outs:\n- md5: v2.dir\n  path: vlfeedback\n")
    result, cursor = tick(cursor)
    assert isinstance(result, dg.RunRequest) and result.run_key == "v2.dir" and cursor == "v2.dir"
    assert result.tags["mdpo/previous"] == "v1.dir"


def test_evaluation_graph_and_gate_check():
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys} for k in graph.get_all_asset_keys()}
    assert parents["benchmark_scores"] == {"base_model", "adapters"}
    assert parents["comparison_report"] == {"benchmark_scores"} and parents["champion"] == {"comparison_report"}
    specs = {s.key.name: s for c in defs.asset_checks or [] for s in c.check_specs}
    assert specs["beats_base_model"].blocking
    assert {j.name for j in defs.jobs} >= {"retrain_job", "refresh_job", "data_job"}
