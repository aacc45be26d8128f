"""The production deployment: settings from the environment, the files under docker/, and (slow) Dagster and
MLflow against a real throwaway PostgreSQL."""

from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml

from mdpo_pipeline.integrations.compose_check import validate_compose
from mdpo_pipeline.integrations.containers import CPU_TAG, DEFAULT_TAG
from mdpo_pipeline.integrations.deploy import (
    dagster_instance_yaml,
    ensure_database,
    main,
    mlflow_backend_uri,
    render_dagster_yaml,
)
from mdpo_pipeline.integrations.deploy_settings import DeploymentSettings, EnvSecret
from mdpo_pipeline.integrations.launcher_settings import LauncherSettings
from mdpo_pipeline.pipeline.project import ConfigError
from tests.conftest import REPO, fake_adapter, stop_process_group
from tests.pg import pg_server  # noqa: F401  (a fixture)

COMPOSE = REPO / "docker" / "compose.yaml"
ENV_EXAMPLE = REPO / "docker" / ".env.example"
SECRET = "hunter2:@/%s3cret"

FULL_ENV = {
    "MDPO_PG_HOST": "db.internal", "MDPO_PG_PORT": "6543", "MDPO_PG_USER": "pipeline", "MDPO_PG_PASSWORD": SECRET,
    "MDPO_PG_DB": "dagster_prod", "MDPO_MLFLOW_DB": "mlflow_prod", "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "MDPO_MAX_CONCURRENT_RUNS": "2", "MDPO_LAUNCHER_MODE": "docker", "MDPO_TRAIN_IMAGE": "registry.local/train:1",
    "MDPO_GPUS": "0,1", "MDPO_NUM_PROCESSES": "2", "MDPO_ACCELERATE_CONFIG": "docker/accelerate/deepspeed_zero2.yaml",
    "MDPO_HOST_PROJECT_ROOT": "/srv/mdpo", "DOCKER_HOST": "unix:///var/run/docker.sock", "MDPO_BIND_HOST": "10.0.0.5",
    "MDPO_WEBSERVER_PORT": "8080", "MDPO_MLFLOW_PORT": "8081", "MDPO_RAY_ADDRESS": "ray://head:10001",
    "MDPO_RAY_NUM_WORKERS": "4", "MDPO_RAY_CPUS_PER_WORKER": "2", "MDPO_RAY_GPUS_PER_WORKER": "1",
    "MDPO_RAY_STORAGE_PATH": "/mnt/shared", "MDPO_RAY_MAX_FAILURES": "3", "MDPO_UI_USER": "ops",
    "MDPO_UI_PASSWORD": "open sesame",
}


def _compose() -> dict:
    # A JSON round trip: YAML aliases would share one dict between services, and the tests mutate them.
    return json.loads(json.dumps(yaml.safe_load(COMPOSE.read_text())))


# --- settings -------------------------------------------------------------------------------------------


def test_defaults():
    s = DeploymentSettings.from_env({})
    assert s == DeploymentSettings()
    assert (s.pg_host, s.pg_port, s.pg_user, s.pg_db, s.mlflow_db) == ("127.0.0.1", 5432, "mdpo", "dagster", "mlflow")
    assert (s.bind_host, s.webserver_port, s.mlflow_port) == ("127.0.0.1", 3000, 5000)
    assert s.launcher == LauncherSettings() and s.launcher.image == DEFAULT_TAG and s.max_concurrent_runs == 1
    assert s.mlflow_tracking_uri is None
    assert not s.pg_password.is_set
    with pytest.raises(ConfigError, match="MDPO_PG_PASSWORD is not set"):
        mlflow_backend_uri(s)


def test_every_field_has_a_variable_and_help():
    help_ = DeploymentSettings.help()
    own = [name for name in DeploymentSettings.__dataclass_fields__ if name != "launcher"]
    assert len(help_) == len(own) + len(LauncherSettings.env_vars())
    assert set(FULL_ENV) == set(help_)
    assert all(text and "\n" not in text for text in help_.values())
    # The launcher's variables and their help are LauncherSettings' own, not a second declaration.
    for name, var in LauncherSettings.env_vars().items():
        assert help_[var] == LauncherSettings.model_fields[name].description
        assert DeploymentSettings.env_name(name) == var
        assert DeploymentSettings.service_env("dagster-daemon")[var] == name


def test_from_env_reads_every_variable_and_empty_means_default():
    s = DeploymentSettings.from_env(FULL_ENV)
    assert (s.pg_host, s.pg_port, s.pg_user) == ("db.internal", 6543, "pipeline")
    assert (s.pg_db, s.mlflow_db) == ("dagster_prod", "mlflow_prod")
    assert s.mlflow_tracking_uri == "http://mlflow:5000" and s.max_concurrent_runs == 2
    launcher = s.launcher
    assert (launcher.mode, launcher.image, launcher.gpus, launcher.num_processes) == (
        "docker", "registry.local/train:1", "0,1", 2)
    assert launcher.accelerate_config == "docker/accelerate/deepspeed_zero2.yaml"
    assert launcher.host_project_root == "/srv/mdpo" and launcher.docker_host == "unix:///var/run/docker.sock"
    assert launcher == LauncherSettings.from_env(FULL_ENV)
    assert (s.bind_host, s.webserver_port, s.mlflow_port) == ("10.0.0.5", 8080, 8081)
    # What compose passes for an unset `${VAR:-}`: empty, which keeps the default.
    s = DeploymentSettings.from_env({"MDPO_GPUS": "", "MDPO_PG_PORT": " ", "MDPO_ACCELERATE_CONFIG": ""})
    assert s.launcher.gpus is None and s.pg_port == 5432 and s.launcher.accelerate_config is None


def test_password_is_masked_and_never_copied():
    env = dict(FULL_ENV)
    s = DeploymentSettings.from_env(env)
    for text in (repr(s), str(s), repr(s.pg_password), str(s.pg_password)):
        assert SECRET not in text
    assert "MDPO_PG_PASSWORD=***" in repr(s)
    assert SECRET.encode() not in pickle.dumps(s)
    assert pickle.loads(pickle.dumps(s.pg_password)) == EnvSecret("MDPO_PG_PASSWORD")
    for env_refs in (False, True):
        assert SECRET not in yaml.safe_dump(dagster_instance_yaml(s, env_refs=env_refs))
    assert SECRET not in repr(s.launcher)
    # Read when used, not when the settings were made.
    env["MDPO_PG_PASSWORD"] = "rotated"
    assert ":rotated@" in mlflow_backend_uri(s)


def test_settings_command_masks_the_password(monkeypatch, capsys):
    monkeypatch.setenv("MDPO_PG_PASSWORD", SECRET)
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out and "MDPO_PG_PASSWORD=***" in out and "MDPO_PG_PORT=" in out
    assert f"MDPO_TRAIN_IMAGE={DEFAULT_TAG}" in out and "MDPO_GPUS=<unset>" in out


@pytest.mark.parametrize(
    "var, value",
    [
        ("MDPO_PG_PORT", "postgres"), ("MDPO_PG_PORT", "0"), ("MDPO_PG_PORT", "70000"), ("MDPO_WEBSERVER_PORT", "x"),
        ("MDPO_MLFLOW_PORT", "-1"), ("MDPO_NUM_PROCESSES", "two"), ("MDPO_NUM_PROCESSES", "0"),
        ("MDPO_LAUNCHER_MODE", "k8s"), ("MDPO_GPUS", "gpu0"), ("MDPO_GPUS", "0,"), ("MDPO_MAX_CONCURRENT_RUNS", "-2"),
    ],
)
def test_bad_values_name_their_variable(var, value):
    with pytest.raises(ConfigError, match=rf"^{var}="):
        DeploymentSettings.from_env({var: value})


def test_dagster_instance_yaml():
    s = DeploymentSettings.from_env(FULL_ENV)
    cfg = dagster_instance_yaml(s)
    assert cfg["storage"]["custom"]["class"] == "PatientPostgresStorage"
    assert cfg["storage"]["custom"]["config"]["postgres_db"] == {
        "hostname": "db.internal", "port": 6543, "username": "pipeline",
        "password": {"env": "MDPO_PG_PASSWORD"}, "db_name": "dagster_prod", "scheme": "postgresql+psycopg2",
    }
    assert cfg["run_queue"] == {"max_concurrent_runs": 2} and cfg["telemetry"] == {"enabled": False}
    refs = dagster_instance_yaml(s, env_refs=True)
    assert refs["storage"]["custom"]["config"]["postgres_db"] == {
        "hostname": {"env": "MDPO_PG_HOST"}, "port": {"env": "MDPO_PG_PORT"}, "username": {"env": "MDPO_PG_USER"},
        "password": {"env": "MDPO_PG_PASSWORD"}, "db_name": {"env": "MDPO_PG_DB"}, "scheme": "postgresql+psycopg2",
    }
    # Both are valid instance configs for this Dagster.
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config_schema

    for c in (cfg, refs):
        result = validate_config(dagster_instance_config_schema(), c)
        assert result.success, result.errors


def test_committed_dagster_yaml_is_the_generated_one(tmp_path):
    committed = REPO / "docker" / "dagster.yaml"
    regenerate = "python -m mdpo_pipeline.integrations.deploy dagster-yaml --output docker/dagster.yaml"
    assert committed.read_text() == render_dagster_yaml(), f"stale: {regenerate}"
    assert main(["dagster-yaml", "--check", str(committed)]) == 0
    stale = tmp_path / "dagster.yaml"
    stale.write_text(committed.read_text().replace("MDPO_PG_DB", "PG_DB"))
    assert main(["dagster-yaml", "--check", str(stale)]) == 1


def test_local_instance_monitors_run_workers_as_the_deployment_does():
    from mdpo_pipeline.defs.run_worker import MonitoredRunLauncher
    from mdpo_pipeline.integrations.deploy import RUN_MONITORING

    local = yaml.safe_load((REPO / ".dagster_home" / "dagster.yaml").read_text())
    assert {k: local[k] for k in RUN_MONITORING} == RUN_MONITORING
    launcher = RUN_MONITORING["run_launcher"]
    assert getattr(importlib.import_module(launcher["module"]), launcher["class"]) is MonitoredRunLauncher


def test_mlflow_backend_uri_quotes_everything():
    from sqlalchemy.engine import make_url

    s = DeploymentSettings.from_env(FULL_ENV | {"MDPO_PG_USER": "ml user"})
    url = make_url(mlflow_backend_uri(s))
    assert url.drivername == "postgresql+psycopg2"
    assert (url.username, url.password, url.database) == ("ml user", SECRET, "mlflow_prod")
    assert (url.host, url.port) == ("db.internal", 6543)
    no_password = DeploymentSettings.from_env({"MDPO_PG_PASSWORD": ""})
    assert mlflow_backend_uri(no_password) == "postgresql+psycopg2://mdpo@127.0.0.1:5432/mlflow"


# --- docker/ --------------------------------------------------------------------------------------------


def test_compose_file_matches_the_settings():
    assert validate_compose(_compose()) == []
    assert main(["check-compose", str(COMPOSE)]) == 0


def test_env_example_lists_every_compose_variable_with_placeholder_secrets():
    text = COMPOSE.read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))  # $${...} is escaped: the container expands it
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    example = dict(line.split("=", 1) for line in lines)
    assert used == set(example), f"only in compose: {used - set(example)}, only in .env.example: {set(example) - used}"
    # Each settings variable is in .env.example or set by compose.yaml itself for the services that need it.
    fixed_by_compose = {"MDPO_PG_HOST", "MDPO_PG_PORT", "MLFLOW_TRACKING_URI", "DOCKER_HOST"}
    assert set(DeploymentSettings.help()) <= set(example) | fixed_by_compose
    assert "change-me" in example["MDPO_PG_PASSWORD"] and example["OPENAI_API_KEY"] == ""
    assert example["MDPO_BIND_HOST"] == "127.0.0.1"


def test_training_image_tag_is_the_python_constant():
    """The tag is written once in Python (containers.DEFAULT_TAG, CPU_TAG; LauncherSettings.image's default);
    the files that cannot import it repeat the literal, and must say the same."""
    from mdpo_pipeline.integrations.containers import TRAIN_IMAGE

    assert LauncherSettings().image == DEFAULT_TAG and DEFAULT_TAG.startswith(f"{TRAIN_IMAGE}:")
    services = _compose()["services"]
    fallback = f"${{MDPO_TRAIN_IMAGE:-{DEFAULT_TAG}}}"
    assert services["train"]["image"] == services["dagster-daemon"]["environment"]["MDPO_TRAIN_IMAGE"] == fallback
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line and line[0] != "#")
    assert example["MDPO_TRAIN_IMAGE"] == DEFAULT_TAG
    for path in (COMPOSE, ENV_EXAMPLE, REPO / "docker/Dockerfile.train", REPO / "docker/README.md", REPO / "README.md"):
        for tag in re.findall(rf"{re.escape(TRAIN_IMAGE)}:[\w.-]+", path.read_text()):
            assert tag in (DEFAULT_TAG, CPU_TAG), f"{path.name}: {tag}"


class _Delete:
    """Marks a key to remove; its repr names it, so test ids are the same in every process (pytest-xdist)."""

    def __repr__(self) -> str:
        return "<delete>"


_DELETE = _Delete()


def _mutate(compose: dict, path: str, value) -> None:
    """Set (or with _DELETE remove) ``services.<path>``, dotted, list items by index."""
    *parents, last = path.split(".")
    node = compose["services"]
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value


BROKEN = [
    ("gateway.ports.0", "0.0.0.0:3000:3000", "gateway: port '0.0.0.0:3000:3000' is published on 0.0.0.0"),
    ("gateway.ports.1", "5000:5000", "published on every interface"),
    ("gateway.ports.1", "${OTHER_HOST:-127.0.0.1}:5000:5000", "is published on ${OTHER_HOST"),
    ("gateway.ports.1", {"target": 5000, "published": 5000}, "published on every interface"),
    ("mlflow.ports", ["127.0.0.1:5000:5000"], "mlflow: publishes ['127.0.0.1:5000:5000']; only 'gateway' publishes"),
    ("gateway.environment.MDPO_UI_PASSWORD", _DELETE, "gateway: environment variable MDPO_UI_PASSWORD is not set"),
    ("gateway.environment.MDPO_UI_PASSWORD", "open sesame", "gateway: MDPO_UI_PASSWORD is written in the file"),
    ("gateway", _DELETE, "service 'gateway' is missing"),
    ("dagster-daemon.environment.MDPO_PG_PASSWORD", _DELETE,
     "dagster-daemon: environment variable MDPO_PG_PASSWORD is not set"),
    ("mlflow.environment.MDPO_MLFLOW_DB", _DELETE, "mlflow: environment variable MDPO_MLFLOW_DB is not set"),
    ("dagster-webserver.environment", ["MDPO_PG_HOST=postgres", "MDPO_PG_USER"],
     "dagster-webserver: environment variable MDPO_PG_USER is not set"),
    ("postgres.environment.POSTGRES_PASSWORD", SECRET, "postgres: POSTGRES_PASSWORD is written in the file"),
    ("dagster-daemon.environment.MDPO_PG_USER", "other",
     "dagster-daemon: MDPO_PG_USER='other' differs from postgres's POSTGRES_USER"),
    ("mlflow.environment.MDPO_PG_HOST", "localhost", "mlflow: MDPO_PG_HOST='localhost' is not the postgres service"),
    ("dagster-daemon.environment.MLFLOW_TRACKING_URI", "http://localhost:5000", "does not point at the mlflow service"),
    ("dagster-daemon.environment.DAGSTER_HOME", "/tmp/home", "use different DAGSTER_HOME"),
    ("dagster-daemon.volumes.1", "./other.yaml:/opt/dagster/home/dagster.yaml:ro", "mount different instance files"),
    ("dagster-webserver.volumes", [], "dagster-webserver: mounts no dagster.yaml"),
    ("dagster-daemon.volumes.3", "/tmp/x:/tmp/x", "dagster-daemon: the Docker socket is not mounted"),
    ("dagster-daemon.volumes.2", "/elsewhere:/workspace", "must be MDPO_HOST_PROJECT_ROOT"),
    ("train.profiles", _DELETE, "train: needs a `profiles:` entry"),
    ("train.build.dockerfile", "docker/Dockerfile.pipeline", "train: must build docker/Dockerfile.train"),
    ("train.image", "other:latest", "is not the one the launcher starts"),
    ("train.image", "${MDPO_TRAIN_IMAGE:-mdpo-pipeline-train:old}", "is not the launcher's default"),
    ("postgres.healthcheck", _DELETE, "postgres: needs a healthcheck"),
    ("mlflow.depends_on", ["postgres"], "mlflow: must depend on postgres with condition: service_healthy"),
    ("dagster-daemon.depends_on.postgres.condition", "service_started", "dagster-daemon: must depend on postgres"),
    ("mlflow", _DELETE, "service 'mlflow' is missing"),
]


@pytest.mark.parametrize("path, value, expected", BROKEN, ids=[f"{p}={v!r}"[:60] for p, v, _ in BROKEN])
def test_broken_compose_is_reported(path, value, expected):
    compose = _compose()
    _mutate(compose, path, value)
    problems = validate_compose(compose)
    assert any(expected in p for p in problems), problems
    assert not any(SECRET in p for p in problems)


def test_bind_host_override_is_allowed_only_through_its_variable():
    compose = _compose()
    compose["services"]["gateway"]["ports"] = ["${MDPO_BIND_HOST-127.0.0.1}:5000:5000", "127.0.0.1:5001:5001",
                                               {"target": 5002, "published": 5002, "host_ip": "127.0.0.1"}]
    assert validate_compose(compose) == []
    compose["services"]["gateway"]["ports"] = ["${MDPO_BIND_HOST:-0.0.0.0}:5000:5000"]
    assert any("published on ${MDPO_BIND_HOST:-0.0.0.0}" in p for p in validate_compose(compose))


def test_pipeline_dockerfile():
    text = (REPO / "docker" / "Dockerfile.pipeline").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text and "FROM ${BASE_IMAGE}" in text
    # the ray extra: the daemon's launcher may start Ray drivers (MDPO_LAUNCHER_MODE=ray)
    assert '"/opt/mdpo/src[pipeline,ray]"' in text and "dagster-postgres==" in text and "psycopg2-binary==" in text
    assert re.search(r"^USER mdpo$", text, re.MULTILINE)
    # The compose build context is the checkout; everything the Dockerfile copies must pass its ignore file.
    ignore = (REPO / "docker" / "Dockerfile.pipeline.dockerignore").read_text().split()
    for src in re.findall(r"^COPY ([^\n]+) \S+$", text, re.MULTILINE):
        for name in src.split():
            assert f"!{name}" in ignore, name
            assert (REPO / name).exists(), name


# --- against a real PostgreSQL ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
def test_dagster_materializes_with_postgres_storage(pg_server, tmp_path, monkeypatch):  # noqa: F811
    import dagster as dg
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "docker" / "dagster.yaml", home / "dagster.yaml")  # the deployed file, as is
    for key, value in pg_server.env(MDPO_MAX_CONCURRENT_RUNS="1").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    @dg.asset
    def deploy_smoke() -> int:
        return 42

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        # the deployment's patient storage (defs/storage.py), built from the committed file's `custom` entry
        assert type(instance.event_log_storage).__name__ == "PatientPostgresEventLogStorage"
        assert type(instance.run_storage).__name__ == "PatientPostgresRunStorage"
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1
        result = dg.materialize([deploy_smoke], instance=instance)
        assert result.success
        run_id = result.run_id
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        records = instance.fetch_materializations(dg.AssetKey("deploy_smoke"), limit=5).records
        assert [r.run_id for r in records] == [run_id]
        assert instance.all_instigator_state() == []  # schedule storage answers from Postgres too

    conn = pg_server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
            assert cur.fetchall() == [("SUCCESS",)]
            cur.execute("SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s GROUP BY 1", (run_id,))
            events = dict(cur.fetchall())
            # Runs keep Dagster's legacy event names in the table (PIPELINE_SUCCESS for RUN_SUCCESS).
            assert events["ASSET_MATERIALIZATION"] == 1 and events["PIPELINE_SUCCESS"] == 1
            cur.execute("SELECT to_regclass('jobs'), to_regclass('instigators')")  # schedule storage tables
            assert all(cur.fetchone())
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("down_s", [2.0, 12.0])
def test_a_run_survives_a_postgres_restart(pg_server, tmp_path, monkeypatch, down_s):  # noqa: F811
    """PostgreSQL restarted (fast shutdown, ``down_s`` down) while a run logs to it every 0.1 s: the run completes,
    every event it wrote before, during and after the restart is stored once, the earlier run's history is intact,
    and a rerun materializes. 12 s is past Dagster's own reconnect window (about 6 s: it dropped a log line there);
    the deployment's storage waits about a minute (defs/storage.py)."""
    import dagster as dg

    from tests.pg import restart

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "docker" / "dagster.yaml", home / "dagster.yaml")
    for key, value in pg_server.env(MDPO_MAX_CONCURRENT_RUNS="1").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    started, restarted = threading.Event(), threading.Event()

    @dg.asset
    def upstream() -> int:
        return 1

    @dg.asset
    def through_restart(context, upstream: int) -> int:
        started.set()
        ticks = 0
        while not restarted.is_set() or ticks < 5:  # events before, during and after the outage
            context.log.info(f"tick {ticks}")
            ticks += 1
            time.sleep(0.1)
            assert ticks < 600, "the restart never came"
        return ticks

    @dg.asset
    def downstream(through_restart: int) -> int:
        return through_restart

    def restart_once_running() -> None:
        if started.wait(120):
            restart(pg_server, down_s=down_s)
        restarted.set()

    with dg.DagsterInstance.get() as instance:
        before = dg.materialize([upstream], instance=instance).run_id
        operator = threading.Thread(target=restart_once_running)
        operator.start()
        try:
            result = dg.materialize([upstream, through_restart, downstream], instance=instance)
        finally:
            operator.join()
        assert result.success
        ticks = result.output_for_node("through_restart")
        logged = [r.event_log_entry for r in instance.get_records_for_run(result.run_id).records
                  if r.event_log_entry.user_message.startswith("tick ")]
        assert [e.user_message for e in logged] == [f"tick {i}" for i in range(ticks)]  # none lost, none twice
        # It did write through the outage: one write waited (reconnecting) for the server to come back.
        assert max(b.timestamp - a.timestamp for a, b in zip(logged, logged[1:])) >= down_s * 0.75
        assert instance.get_run_by_id(before).status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        rerun = dg.materialize([upstream, through_restart, downstream], selection=[downstream], instance=instance)
        assert rerun.success and rerun.output_for_node("downstream") == ticks
        records = instance.fetch_materializations(dg.AssetKey("downstream"), limit=5).records
        assert [r.run_id for r in records][:2] == [rerun.run_id, result.run_id]  # newest first


@pytest.mark.slow
@pytest.mark.integration
def test_mlflow_run_and_registry_on_postgres(pg_server, tmp_path):  # noqa: F811
    from mlflow import MlflowClient

    from mdpo_pipeline.integrations.tracking import TrainingRecord, log_training_run

    settings = DeploymentSettings.from_env(pg_server.env(MDPO_MLFLOW_DB="mlflow"))
    assert ensure_database(settings, settings.mlflow_db) is True
    assert ensure_database(settings, settings.mlflow_db) is False
    uri = mlflow_backend_uri(settings)
    record = TrainingRecord(
        method="mdpo", base_model="shapeworld-tiny", adapter_dir=fake_adapter(tmp_path), config={"beta": 0.1},
        log_history=[{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.7}],
    )
    run_id, version = log_training_run(record, uri, artifact_root=tmp_path / "mlartifacts", git_sha="deadbeef")
    client = MlflowClient(uri)
    client.set_registered_model_alias("shapeworld-tiny", "champion", version)

    assert client.get_run(run_id).info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [0.9, 0.7]
    champion = client.get_model_version_by_alias("shapeworld-tiny", "champion")
    assert (champion.version, champion.run_id, champion.tags["method"]) == (version, run_id, "mdpo")

    conn = pg_server.connect("mlflow")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT step, value FROM metrics WHERE run_uuid = %s AND key = 'loss' ORDER BY step", (run_id,))
            assert cur.fetchall() == [(1, 0.9), (2, 0.7)]
            cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = 'shapeworld-tiny'")
            assert cur.fetchall() == [("champion", int(version))]
    finally:
        conn.close()


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@pytest.mark.slow
@pytest.mark.integration
def test_mlflow_server_command_of_the_compose_file(pg_server, tmp_path):  # noqa: F811
    """What the compose `mlflow` service runs: the database is created, the password stays out of argv."""
    from mlflow import MlflowClient

    from tests.pg import _free_port

    mlflow_svc = _compose()["services"]["mlflow"]
    allowed = re.fullmatch(r"\$\{\w+:-(.*)\}", mlflow_svc["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]).group(1)
    port = _free_port()
    env = {**os.environ, **pg_server.env(MDPO_MLFLOW_DB="mlflow_server"), "MLFLOW_SERVER_ALLOWED_HOSTS": allowed}
    artifacts = (tmp_path / "mlartifacts").as_uri()
    cmd = [sys.executable, "-m", "mdpo_pipeline.integrations.deploy", "mlflow-server", "--host", "127.0.0.1", "--port", str(port),
           "--", "--no-serve-artifacts", "--default-artifact-root", artifacts, "--workers", "1"]
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=120)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:  # what `ps` shows of the exec'ed server
            assert pg_server.password.encode() not in fh.read()
        client = MlflowClient(f"http://127.0.0.1:{port}")
        exp = client.create_experiment("deploy-smoke")
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "loss", 0.5, step=3)
        client.set_terminated(run.info.run_id)
        client.create_registered_model("smoke")
        mv = client.create_model_version("smoke", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        client.set_registered_model_alias("smoke", "champion", mv.version)
        assert client.get_model_version_by_alias("smoke", "champion").run_id == run.info.run_id
    finally:
        stop_process_group(proc, signal.SIGTERM)
    output = log.read_text()
    assert "created database 'mlflow_server'" in output and pg_server.password not in output
    conn = pg_server.connect("mlflow_server")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT value FROM metrics WHERE run_uuid = %s AND key = 'loss'", (run.info.run_id,))
            assert cur.fetchall() == [(0.5,)]
    finally:
        conn.close()
