"""The production deployment (docker/compose.yaml): its settings, read from the environment, and what each
service is configured with. No Dagster here.

One `DeploymentSettings` feeds Dagster's instance file (Postgres run/event/schedule storage), the MLflow
server's backend URI and, through its `launcher` (the `LauncherSettings` the Dagster resource and the
container spec read too), the training launcher; `compose_check.validate_compose` checks the compose file
against the same definitions. The Postgres password is only ever read from MDPO_PG_PASSWORD when it is
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple
from urllib.parse import quote

import yaml

from mdpo_pipeline.core.errors import ConfigError
from mdpo_pipeline.integrations.launcher_settings import LauncherSettings

PASSWORD_ENV = "MDPO_PG_PASSWORD"
DEFAULT_BIND_HOST = "127.0.0.1"

# Compose service names.
POSTGRES, MLFLOW, WEBSERVER, DAEMON, TRAIN = "postgres", "mlflow", "dagster-webserver", "dagster-daemon", "train"
DAGSTER_SERVICES = (WEBSERVER, DAEMON)
PG_CLIENTS = (MLFLOW, *DAGSTER_SERVICES)
#: The services that start training, and so need the launcher's variables.
LAUNCHER_SERVICES = DAGSTER_SERVICES


class EnvSecret:
    """A secret read from one environment variable each time it is used; repr and str never show it."""

    __slots__ = ("_environ", "name")

    def __init__(self, name: str, environ: Mapping[str, str] | None = None):
        self.name = name
        self._environ = os.environ if environ is None else environ

    @property
    def is_set(self) -> bool:
        """Whether the variable is present (an empty value counts: a server without password auth)."""
        return self._environ.get(self.name) is not None

    def value(self) -> str:
        """The secret as the environment holds it now; ConfigError naming the variable when it is unset."""
        value = self._environ.get(self.name)
        if value is None:
            raise ConfigError(f"{self.name} is not set: the Postgres password is read from the environment only")
        return value

    def __repr__(self) -> str:
        return f"EnvSecret({self.name}={'***' if self.is_set else '<unset>'})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnvSecret) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __reduce__(self):
        # A pickled copy (Dagster ships resources to run workers) names the variable but never carries the value.
        return (EnvSecret, (self.name,))


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("out of range")
    return value


def _optional(raw: str) -> str | None:
    return raw or None


def _setting(env: str, default: Any, help: str, parse: Callable[[str], Any] = str, services: tuple[str, ...] = ()):
    """A settings field: its environment variable, one-line help, parser and the compose services that need it."""
    return field(default=default, metadata={"env": env, "help": help, "parse": parse, "services": services})


class Variable(NamedTuple):
    """One environment variable of the deployment: the settings field it sets, its help and who needs it."""

    env: str
    field: str  # a DeploymentSettings field, or a LauncherSettings one when ``launcher``
    help: str
    services: tuple[str, ...]
    launcher: bool = False


@dataclass(frozen=True)
class DeploymentSettings:
    """Everything the deployed services are configured with; `from_env` reads it, each field names its variable.

    The training launcher's settings are not declared here: ``launcher`` is a `LauncherSettings`, with the
    variables, help and validation that model defines."""

    pg_host: str = _setting(
        "MDPO_PG_HOST", "127.0.0.1", "PostgreSQL host (the `postgres` service in compose).", services=PG_CLIENTS)
    pg_port: int = _setting("MDPO_PG_PORT", 5432, "PostgreSQL port.", _port, PG_CLIENTS)
    pg_user: str = _setting("MDPO_PG_USER", "mdpo", "PostgreSQL user of Dagster and MLflow.", services=PG_CLIENTS)
    pg_password: EnvSecret = field(
        default_factory=lambda: EnvSecret(PASSWORD_ENV),
        metadata={"env": PASSWORD_ENV, "parse": None, "services": PG_CLIENTS,
                  "help": "PostgreSQL password; read from the environment when used, never stored."},
    )
    pg_db: str = _setting(
        "MDPO_PG_DB", "dagster", "Database of Dagster's run, event log and schedule storage.",
        services=DAGSTER_SERVICES)
    # A database of its own: Dagster and MLflow both have a `runs` table and an `alembic_version` table.
    mlflow_db: str = _setting(
        "MDPO_MLFLOW_DB", "mlflow", "Database of the MLflow tracking and registry backend.", services=(MLFLOW,))
    mlflow_tracking_uri: str | None = _setting(
        "MLFLOW_TRACKING_URI", None, "MLflow server the pipeline logs to; unset: <project>/mlflow.db (sqlite).",
        _optional, DAGSTER_SERVICES)
    max_concurrent_runs: int = _setting(
        "MDPO_MAX_CONCURRENT_RUNS", 1, "Dagster runs in progress at once (-1: no limit); 1 keeps trainings apart.",
        int, DAGSTER_SERVICES)
    bind_host: str = _setting(
        "MDPO_BIND_HOST", DEFAULT_BIND_HOST, "Host address the web UIs are published on; loopback only by default.")
    webserver_port: int = _setting("MDPO_WEBSERVER_PORT", 3000, "Host port of the Dagster UI.", _port)
    mlflow_port: int = _setting("MDPO_MLFLOW_PORT", 5000, "Host port of the MLflow UI.", _port)
    # The training launcher: its fields, variables and checks are LauncherSettings' (help lists them too).
    launcher: LauncherSettings = field(default_factory=LauncherSettings, metadata={"env": None})

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, why: str) -> ConfigError:
            return ConfigError(f"{self.env_name(name)}={value!r}: {why}")

        for name in ("pg_port", "webserver_port", "mlflow_port"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 65535:
                raise bad(name, value, "expected a port number 1-65535")
        if self.max_concurrent_runs < -1:
            raise bad("max_concurrent_runs", self.max_concurrent_runs, "expected -1 (no limit) or an integer >= 0")
        if not isinstance(self.pg_password, EnvSecret):
            raise ConfigError(f"pg_password must be an EnvSecret: the password is read from {PASSWORD_ENV} only")
        if not isinstance(self.launcher, LauncherSettings):
            raise ConfigError(f"launcher must be a LauncherSettings, got {type(self.launcher).__name__}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeploymentSettings:
        """Settings from ``environ`` (default os.environ); unset or empty variables keep their defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {"pg_password": EnvSecret(PASSWORD_ENV, environ),
                                  "launcher": LauncherSettings.from_env(environ)}
        for f in fields(cls):
            if f.metadata["env"] is None:
                continue
            parse = f.metadata["parse"]
            raw = environ.get(f.metadata["env"])
            if parse is None or raw is None or not raw.strip():
                continue
            try:
                values[f.name] = parse(raw.strip())
            except ValueError:
                raise ConfigError(f"{f.metadata['env']}={raw!r}: {_EXPECTED.get(parse, 'invalid value')}") from None
        return cls(**values)

    @classmethod
    def variables(cls) -> list[Variable]:
        """Every environment variable of the deployment: these fields', then the launcher's."""
        own = [Variable(f.metadata["env"], f.name, f.metadata["help"], f.metadata["services"])
               for f in fields(cls) if f.metadata["env"] is not None]
        launcher = [Variable(env, name, LauncherSettings.model_fields[name].description, LAUNCHER_SERVICES, True)
                    for name, env in LauncherSettings.env_vars().items()]
        return own + launcher

    @classmethod
    def env_name(cls, name: str) -> str:
        """The environment variable of field ``name`` (of these settings or of LauncherSettings)."""
        return next(v.env for v in cls.variables() if v.field == name)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Each environment variable with its one-line help."""
        return {v.env: v.help for v in cls.variables()}

    @classmethod
    def service_env(cls, service: str) -> dict[str, str]:
        """The settings' variables compose service ``service`` must set: {env var: field name}."""
        return {v.env: v.field for v in cls.variables() if service in v.services}

    def value(self, variable: Variable) -> Any:
        """The value ``variable`` set (the EnvSecret itself for the password)."""
        return getattr(self.launcher if variable.launcher else self, variable.field)


_EXPECTED = {_port: "expected a port number 1-65535", int: "expected an integer"}


# --- what each service is configured with -----------------------------------------------------------


def dagster_instance_yaml(settings: DeploymentSettings, *, env_refs: bool = False) -> dict[str, Any]:
    """dagster.yaml content: Postgres run/event/schedule storage and the run queue's limit.

    The password is always ``{env: MDPO_PG_PASSWORD}``. With ``env_refs`` the other connection values and the
    run limit are environment references too, so one committed file serves every deployment (docker/dagster.yaml).
    """

    def value(name: str) -> Any:
        return {"env": settings.env_name(name)} if env_refs else getattr(settings, name)

    return {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "hostname": value("pg_host"),
                    "port": value("pg_port"),
                    "username": value("pg_user"),
                    "password": {"env": PASSWORD_ENV},
                    "db_name": value("pg_db"),
                    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; dagster-postgres ships psycopg2.
                    "scheme": "postgresql+psycopg2",
                }
            }
        },
        # The daemon dequeues runs under this limit (Dagster's default is 10 trainings on the same GPUs at once).
        "run_queue": {"max_concurrent_runs": value("max_concurrent_runs")},
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
    # optional: only the production deployment talks to PostgreSQL
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
        # compose_check imports this module: import at use, not circularly
        from mdpo_pipeline.integrations.compose_check import validate_compose

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
