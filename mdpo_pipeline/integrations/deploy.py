"""The production deployment (docker/compose.yaml): its settings, read from the environment, and what each
service is configured with. No Dagster here.

One `DeploymentSettings` (deploy_settings.py) feeds Dagster's instance file (Postgres run/event/schedule
storage), the MLflow server's backend URI and, through its `launcher` (the `LauncherSettings` the Dagster
resource and the container spec read too), the training launcher; `compose_check.validate_compose` checks the
compose file against the same definitions. The Postgres password is only ever read from MDPO_PG_PASSWORD when it is
used: it is not copied into the settings, written to dagster.yaml or logged.

    python -m mdpo_pipeline.integrations.deploy dagster-yaml --output docker/dagster.yaml   # regenerate the instance file
    python -m mdpo_pipeline.integrations.deploy check-compose docker/compose.yaml           # what validate_compose finds
    python -m mdpo_pipeline.integrations.deploy mlflow-server --host 0.0.0.0 -- <mlflow server options>
    python -m mdpo_pipeline.integrations.deploy settings                                    # the resolved settings, masked
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any
from urllib.parse import quote

import yaml

from mdpo_pipeline.integrations.compose_check import validate_compose
from mdpo_pipeline.integrations.deploy_settings import (
    DEFAULT_BIND_HOST,
    PASSWORD_ENV,
    DeploymentSettings,
    EnvSecret,
)

# --- what each service is configured with -----------------------------------------------------------


#: A run worker that dies (out of memory, SIGKILL) fails its run within a poll instead of leaving it STARTED:
#: defs/run_worker.MonitoredRunLauncher tells run monitoring whether the worker lives. It cannot resume a run in
#: place, so no resume attempts; the rerun resumes the training from its checkpoint.
RUN_MONITORING: dict[str, Any] = {
    "run_launcher": {"module": "mdpo_pipeline.defs.run_worker", "class": "MonitoredRunLauncher"},
    "run_monitoring": {"enabled": True, "poll_interval_seconds": 30, "max_resume_run_attempts": 0},
}


#: The storage class of the deployment's instance: Dagster's PostgreSQL storage with patient writes.
PATIENT_STORAGE = {"module": "mdpo_pipeline.defs.storage", "class": "PatientPostgresStorage"}


def dagster_instance_yaml(settings: DeploymentSettings, *, env_refs: bool = False) -> dict[str, Any]:
    """dagster.yaml content: Postgres run/event/schedule storage, the run queue's limit and run monitoring.

    The password is always ``{env: MDPO_PG_PASSWORD}``. With ``env_refs`` the other connection values and the
    run limit are environment references too, so one committed file serves every deployment (docker/dagster.yaml).
    """

    def value(name: str) -> Any:
        return {"env": settings.env_name(name)} if env_refs else getattr(settings, name)

    postgres_db = {
        "hostname": value("pg_host"),
        "port": value("pg_port"),
        "username": value("pg_user"),
        "password": {"env": PASSWORD_ENV},
        "db_name": value("pg_db"),
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; dagster-postgres ships psycopg2.
        "scheme": "postgresql+psycopg2",
    }
    return {
        # Dagster's PostgreSQL storage, its writes waiting out a database restart (defs/storage.py).
        "storage": {"custom": {**PATIENT_STORAGE, "config": {"postgres_db": postgres_db}}},
        # The daemon dequeues runs under this limit (Dagster's default is 10 trainings on the same GPUs at once).
        "run_queue": {"max_concurrent_runs": value("max_concurrent_runs")},
        **RUN_MONITORING,
        "telemetry": {"enabled": False},
    }


def render_dagster_yaml(settings: DeploymentSettings | None = None) -> str:
    """The text of docker/dagster.yaml: the environment-referencing instance file, with a header."""
    body = yaml.safe_dump(dagster_instance_yaml(settings or DeploymentSettings(), env_refs=True), sort_keys=False)
    return (
        "# Dagster instance of docker/compose.yaml (webserver and daemon share it). Generated: do not edit;\n"
        "# regenerate with `python -m mdpo_pipeline.integrations.deploy dagster-yaml --output docker/dagster.yaml`.\n"
        "# Every value comes from the containers' environment (docker/.env), the password included.\n"
        + body
    )


def mlflow_backend_uri(settings: DeploymentSettings) -> str:
    """SQLAlchemy URI of MLflow's Postgres backend; the password is read from MDPO_PG_PASSWORD now."""
    password = settings.pg_password.value()
    userinfo = quote(settings.pg_user, safe="") + (f":{quote(password, safe='')}" if password else "")
    host = f"[{settings.pg_host}]" if ":" in settings.pg_host else settings.pg_host
    return f"postgresql+psycopg2://{userinfo}@{host}:{settings.pg_port}/{quote(settings.mlflow_db, safe='')}"


def ensure_database(settings: DeploymentSettings, name: str) -> bool:
    """Create database ``name`` unless it exists (connecting to ``pg_db``); True when it was created."""
    import psycopg2
    from psycopg2 import errors, sql

    conn = psycopg2.connect(host=settings.pg_host, port=settings.pg_port, user=settings.pg_user,
                            password=settings.pg_password.value(), dbname=settings.pg_db, connect_timeout=10)
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            try:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except errors.DuplicateDatabase:  # created by another process since the lookup
                return False
            return True
    finally:
        conn.close()


# --- command line ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m mdpo_pipeline.integrations.deploy`: dagster-yaml, check-compose, mlflow-server, settings."""
    parser = argparse.ArgumentParser(prog="python -m mdpo_pipeline.integrations.deploy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dagster-yaml", help="print (or write, or check) docker/dagster.yaml")
    p.add_argument("--output", help="write here instead of stdout")
    p.add_argument("--check", metavar="FILE", help="exit 1 when FILE differs from the generated text")
    p = sub.add_parser("check-compose", help="list what validate_compose finds in a compose file")
    p.add_argument("file", nargs="?", default="docker/compose.yaml")
    p = sub.add_parser("mlflow-server", help="create the MLflow database if needed and exec `mlflow server` on it")
    p.add_argument("--host", default=DEFAULT_BIND_HOST, help="address to listen on (0.0.0.0 only inside a container)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("mlflow_args", nargs=argparse.REMAINDER, help="after --: more `mlflow server` options")
    sub.add_parser("settings", help="print the settings resolved from the environment (password masked)")
    args = parser.parse_args(argv)

    if args.command == "dagster-yaml":
        text = render_dagster_yaml()
        if args.check:
            with open(args.check) as fh:
                if fh.read() != text:
                    print(f"{args.check} differs from the generated instance file; regenerate it", file=sys.stderr)
                    return 1
            return 0
        if args.output:
            with open(args.output, "w") as fh:
                fh.write(text)
        else:
            sys.stdout.write(text)
        return 0
    if args.command == "check-compose":
        with open(args.file) as fh:
            problems = validate_compose(yaml.safe_load(fh))
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    if args.command == "settings":
        settings = DeploymentSettings.from_env()
        for variable in settings.variables():
            value = settings.value(variable)
            if isinstance(value, EnvSecret):
                value = "***" if value.is_set else None
            print(f"{variable.env}={'<unset>' if value is None else value}")
        return 0
    # mlflow-server
    settings = DeploymentSettings.from_env()
    if ensure_database(settings, settings.mlflow_db):
        print(f"created database {settings.mlflow_db!r} for MLflow", flush=True)
    extra = args.mlflow_args[1:] if args.mlflow_args[:1] == ["--"] else args.mlflow_args
    # The URI carries the password: hand it over in the environment, where `ps` does not show it.
    env = dict(os.environ, MLFLOW_BACKEND_STORE_URI=mlflow_backend_uri(settings))
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", args.host, "--port", str(args.port), *extra]
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
