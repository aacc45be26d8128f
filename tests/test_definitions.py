"""The Dagster definitions load and declare what the pipeline promises."""

import dagster as dg
import pytest

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
    data = {"quarantine_share_below_threshold", "pairs_are_usable", "every_pair_has_its_corrupted_image"}
    assert data <= set(specs)
    assert all(specs[name].blocking for name in data)


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
    # The registry gate decides promotion only: a model that fails it is a finished, scored model.
    assert not specs["beats_base_model"].blocking
    assert {j.name for j in defs.jobs} >= {"retrain_job", "refresh_job", "data_job"}


# --- the training launcher: one settings model for the resource, the container spec and the deployment -------

LAUNCHER_ENV = {
    "MDPO_LAUNCHER_MODE": "docker", "MDPO_TRAIN_IMAGE": "registry.local/train:7", "MDPO_GPUS": "0,1",
    "MDPO_NUM_PROCESSES": "2", "MDPO_ACCELERATE_CONFIG": "docker/accelerate/deepspeed_zero2.yaml",
    "MDPO_HOST_PROJECT_ROOT": "/srv/mdpo", "DOCKER_HOST": "unix:///tmp/engine.sock",
    "MDPO_RAY_ADDRESS": "ray://head:10001", "MDPO_RAY_NUM_WORKERS": "4", "MDPO_RAY_CPUS_PER_WORKER": "2",
    "MDPO_RAY_GPUS_PER_WORKER": "1", "MDPO_RAY_STORAGE_PATH": "/mnt/shared", "MDPO_RAY_MAX_FAILURES": "3",
}


def _launcher_env(monkeypatch, env: dict[str, str]) -> None:
    from mdpo_pipeline.integrations.launcher_settings import LauncherSettings

    for var in LauncherSettings.env_vars().values():
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)


def _resolved(launcher):
    """The launcher as a run sees it: its EnvVars read by Dagster."""
    with dg.build_resources({"launcher": launcher}) as resources:
        return resources.launcher


def test_launcher_settings_come_from_the_environment_as_env_vars(monkeypatch):
    from mdpo_pipeline.defs.resources import TrainingLauncher
    from mdpo_pipeline.integrations.deploy import DeploymentSettings
    from mdpo_pipeline.integrations.launcher_settings import LauncherSettings

    _launcher_env(monkeypatch, LAUNCHER_ENV)
    launcher = TrainingLauncher.from_env()
    # Wired as Dagster EnvVars (the UI shows the variable, not its value), not values read at load.
    for name, var in LauncherSettings.env_vars().items():
        value = launcher.__dict__[name]
        assert getattr(value, "env_var_name", None) == var, name
    resolved = _resolved(launcher)
    assert (resolved.mode, resolved.image, resolved.gpus, resolved.num_processes) == (
        "docker", "registry.local/train:7", "0,1", 2)
    # The deployment reads the same variables into the same model, to the same values.
    deployment = DeploymentSettings.from_env().launcher
    assert LauncherSettings(**resolved.model_dump()) == deployment
    # Read when the run starts, not when the definitions load.
    monkeypatch.setenv("MDPO_GPUS", "3")
    assert _resolved(launcher).gpus == "3"
    # Unset or empty variables keep the model's defaults (compose passes `${VAR:-}` as empty).
    _launcher_env(monkeypatch, {"MDPO_GPUS": "", "MDPO_LAUNCHER_MODE": "docker"})
    resolved = _resolved(TrainingLauncher.from_env())
    assert resolved.model_dump() == LauncherSettings(mode="docker").model_dump()
    assert _resolved(TrainingLauncher.from_env({})) == TrainingLauncher()


def test_definitions_launcher_is_wired_from_the_environment(monkeypatch):
    import importlib

    import mdpo_pipeline.definitions as definitions

    _launcher_env(monkeypatch, {"MDPO_LAUNCHER_MODE": "docker", "MDPO_NUM_PROCESSES": "2"})
    try:
        fresh = importlib.reload(definitions).defs
        dg.Definitions.validate_loadable(fresh)
        launcher = fresh.resources["launcher"]
        assert launcher.__dict__["mode"].env_var_name == "MDPO_LAUNCHER_MODE"
        assert launcher.__dict__["num_processes"].env_var_name == "MDPO_NUM_PROCESSES"
        assert (_resolved(launcher).mode, _resolved(launcher).num_processes) == ("docker", 2)
    finally:
        monkeypatch.undo()
        importlib.reload(definitions)


@pytest.mark.parametrize(
    "var, value, shown",
    [("MDPO_GPUS", "gpu0", "gpus='gpu0'"), ("MDPO_LAUNCHER_MODE", "k8s", "mode='k8s'"),
     ("MDPO_NUM_PROCESSES", "0", "num_processes=0"), ("MDPO_NUM_PROCESSES", "two", None)],
)
def test_bad_launcher_values_name_the_setting(monkeypatch, var, value, shown):
    from mdpo_pipeline.core.errors import ConfigError
    from mdpo_pipeline.defs.resources import TrainingLauncher
    from mdpo_pipeline.integrations.deploy import DeploymentSettings

    _launcher_env(monkeypatch, {var: value})
    # The deployment names the variable.
    with pytest.raises(ConfigError, match=rf"^{var}={value!r}: "):
        DeploymentSettings.from_env()
    launcher = TrainingLauncher.from_env()  # loading is fine: the value is read when a run starts
    with pytest.raises(Exception) as excinfo:
        _resolved(launcher)
    if shown is None:  # not an integer: Dagster's config check names the variable
        assert var in str(excinfo.value)
    else:  # the model's check names the setting, at run launch as when constructed in Python
        assert f"{shown}: " in str(excinfo.value.__cause__)
        field = shown.split("=")[0]
        with pytest.raises(ValueError, match=f"{shown}: "):
            TrainingLauncher(**{field: value})


def test_resource_container_spec_and_deployment_read_one_model(tmp_path):
    """TrainingLauncher is LauncherSettings (fields, descriptions, checks), container_spec takes it, and the
    deployment embeds it: a field added to the model is in all three without being declared again."""
    from pydantic import Field

    from mdpo_pipeline.defs.resources import TrainingLauncher
    from mdpo_pipeline.integrations import deploy, launchers
    from mdpo_pipeline.integrations.launcher_settings import LauncherSettings

    assert issubclass(TrainingLauncher, LauncherSettings)
    schema = TrainingLauncher().get_resource_definition().config_schema.config_type.fields
    model = LauncherSettings.model_fields
    assert set(schema) == set(model) == set(TrainingLauncher.model_fields)
    for name, info in model.items():
        assert schema[name].description == info.description and info.description, name
        assert TrainingLauncher.model_fields[name].default == info.default
    assert deploy.DeploymentSettings.__dataclass_fields__["launcher"].type in ("LauncherSettings", LauncherSettings)
    assert set(deploy.DeploymentSettings.help()) >= set(LauncherSettings.env_vars().values())

    # The container spec of the resource is the container spec of its settings.
    from tests.test_docker_launcher import _cfg

    values = {"mode": "docker", "image": "x:1", "user": "1:1", "host_project_root": "/srv/p", "shm_size": "1g"}
    assert launchers.container_spec(_cfg(tmp_path), TrainingLauncher(**values), tmp_path) == \
        launchers.container_spec(_cfg(tmp_path), LauncherSettings(**values), tmp_path)

    # One more field in the model: the Dagster resource's config has it, with its description and check.
    class Extended(LauncherSettings):
        cpus: str | None = Field(None, description="docker: CPUs of the container.", json_schema_extra={"env": "MDPO_CPUS"})

    class ExtendedLauncher(Extended, TrainingLauncher):
        pass

    schema = ExtendedLauncher().get_resource_definition().config_schema.config_type.fields
    assert schema["cpus"].description == "docker: CPUs of the container."
    assert ExtendedLauncher.env_vars()["cpus"] == "MDPO_CPUS"
    assert ExtendedLauncher.from_env({"MDPO_CPUS": "4"}).__dict__["cpus"].env_var_name == "MDPO_CPUS"
    assert Extended.from_env({"MDPO_CPUS": "4"}).cpus == "4" and Extended(cpus="").cpus is None
