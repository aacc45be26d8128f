"""The production deployment (docker/compose.yaml): its settings, read from the environment, and what each
service is configured with. No Dagster here.

One `DeploymentSettings` feeds Dagster's instance file (Postgres run/event/schedule storage), the MLflow
server's backend URI, the training launcher, and `validate_compose`, which checks the compose file against
the same field definitions. The Postgres password is only ever read from MDPO_PG_PASSWORD when it is used:
it is not copied into the settings, written to dagster.yaml or logged.

    python -m mdpo_pipeline.integrations.deploy dagster-yaml --output docker/dagster.yaml   # regenerate the instance file
    python -m mdpo_pipeline.integrations.deploy check-compose docker/compose.yaml           # what validate_compose finds
    python -m mdpo_pipeline.integrations.deploy mlflow-server --host 0.0.0.0 -- <mlflow server options>
    python -m mdpo_pipeline.integrations.deploy settings                                    # the resolved settings, masked
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlparse

import yaml

from mdpo_pipeline.core.errors import ConfigError

PASSWORD_ENV = "MDPO_PG_PASSWORD"
DEFAULT_BIND_HOST = "127.0.0.1"

# Compose service names, and where things live inside the pipeline image.
POSTGRES, MLFLOW, WEBSERVER, DAEMON, TRAIN = "postgres", "mlflow", "dagster-webserver", "dagster-daemon", "train"
DAGSTER_SERVICES = (WEBSERVER, DAEMON)
PG_CLIENTS = (MLFLOW, *DAGSTER_SERVICES)
DOCKER_SOCKET = "/var/run/docker.sock"
TRAIN_DOCKERFILE = "docker/Dockerfile.train"
INSTANCE_FILE = "dagster.yaml"
#: The official postgres image's variables, and the settings field each must agree with.
POSTGRES_IMAGE_ENV = {"POSTGRES_USER": "pg_user", "POSTGRES_PASSWORD": "pg_password", "POSTGRES_DB": "pg_db"}


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


_GPUS = re.compile(r"all|\d+(,\d+)*")  # the rule ContainerSettings enforces; tests/test_deploy.py pins the two together


@dataclass(frozen=True)
class DeploymentSettings:
    """Everything the deployed services are configured with; `from_env` reads it, each field names its variable."""

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
    launcher_mode: str = _setting(
        "MDPO_LAUNCHER_MODE", "local", "Where training runs: 'local' subprocess or 'docker' container.",
        services=DAGSTER_SERVICES)
    train_image: str = _setting(
        "MDPO_TRAIN_IMAGE", "mdpo-pipeline-train:latest", "Training image (docker/Dockerfile.train).",
        services=DAGSTER_SERVICES)
    gpus: str | None = _setting(
        "MDPO_GPUS", None, "GPUs of the training container: unset none, 'all', or ids '0,1'.",
        _optional, DAGSTER_SERVICES)
    num_processes: int = _setting(
        "MDPO_NUM_PROCESSES", 1, "Training processes (one per GPU); > 1 runs `accelerate launch`.",
        int, DAGSTER_SERVICES)
    accelerate_config: str | None = _setting(
        "MDPO_ACCELERATE_CONFIG", None, "accelerate config relative to the project (docker/accelerate/...).",
        _optional, DAGSTER_SERVICES)
    host_project_root: str | None = _setting(
        "MDPO_HOST_PROJECT_ROOT", None, "The checkout's path on the Docker host (Dagster itself runs in a container).",
        _optional, DAGSTER_SERVICES)
    docker_host: str | None = _setting(
        "DOCKER_HOST", None, "Docker engine the launcher talks to; unset: the default socket.",
        _optional, DAGSTER_SERVICES)
    bind_host: str = _setting(
        "MDPO_BIND_HOST", DEFAULT_BIND_HOST, "Host address the web UIs are published on; loopback only by default.")
    webserver_port: int = _setting("MDPO_WEBSERVER_PORT", 3000, "Host port of the Dagster UI.", _port)
    mlflow_port: int = _setting("MDPO_MLFLOW_PORT", 5000, "Host port of the MLflow UI.", _port)

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, why: str) -> ConfigError:
            return ConfigError(f"{self.env_name(name)}={value!r}: {why}")

        for name in ("pg_port", "webserver_port", "mlflow_port"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 65535:
                raise bad(name, value, "expected a port number 1-65535")
        if self.launcher_mode not in ("local", "docker"):
            raise bad("launcher_mode", self.launcher_mode, "use 'local' or 'docker'")
        if self.gpus is not None and not _GPUS.fullmatch(self.gpus):
            raise bad("gpus", self.gpus, "use 'all' or comma-separated device ids such as '0,1'")
        if self.num_processes < 1:
            raise bad("num_processes", self.num_processes, "expected an integer >= 1")
        if self.max_concurrent_runs < -1:
            raise bad("max_concurrent_runs", self.max_concurrent_runs, "expected -1 (no limit) or an integer >= 0")
        if not isinstance(self.pg_password, EnvSecret):
            raise ConfigError(f"pg_password must be an EnvSecret: the password is read from {PASSWORD_ENV} only")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeploymentSettings:
        """Settings from ``environ`` (default os.environ); unset or empty variables keep their defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {"pg_password": EnvSecret(PASSWORD_ENV, environ)}
        for f in fields(cls):
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
    def env_name(cls, name: str) -> str:
        """The environment variable of field ``name``."""
        return next(f.metadata["env"] for f in fields(cls) if f.name == name)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Each environment variable with its one-line help."""
        return {f.metadata["env"]: f.metadata["help"] for f in fields(cls)}

    @classmethod
    def service_env(cls, service: str) -> dict[str, str]:
        """The settings' variables compose service ``service`` must set: {env var: field name}."""
        return {f.metadata["env"]: f.name for f in fields(cls) if service in f.metadata["services"]}


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


def launcher_kwargs(settings: DeploymentSettings) -> dict[str, Any]:
    """Keyword arguments of ``TrainingLauncher(**kwargs)`` for these settings."""
    return {
        "mode": settings.launcher_mode,
        "image": settings.train_image,
        "gpus": settings.gpus,
        "num_processes": settings.num_processes,
        "accelerate_config": settings.accelerate_config,
        "host_project_root": settings.host_project_root,
        "docker_host": settings.docker_host,
    }


# --- checking docker/compose.yaml -----------------------------------------------------------------------


def _split(text: str) -> list[str]:
    """``text`` split on ':' outside ${...} (compose's short port and volume syntax with interpolations)."""
    parts, depth, current = [], 0, ""
    i = 0
    while i < len(text):
        if text.startswith("${", i):
            depth, current, i = depth + 1, current + "${", i + 2
            continue
        ch = text[i]
        if ch == "}" and depth:
            depth -= 1
        if ch == ":" and not depth:
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    return [*parts, current]


def _environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, Mapping):
        return {str(k): None if v is None else str(v) for k, v in env.items()}
    out: dict[str, str | None] = {}
    for item in env:
        key, sep, value = str(item).partition("=")
        out[key] = value if sep else None  # a bare name passes the shell's value through: not set by the file
    return out


def _volumes(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, Mapping):
            out.append((str(v.get("source", "")), str(v.get("target", ""))))
        else:
            parts = _split(str(v))
            out.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return out


def _published_ip(port: Any) -> str | None:
    """The host address of one `ports:` entry; None when it publishes on every interface."""
    if isinstance(port, Mapping):
        return None if port.get("host_ip") in (None, "") else str(port["host_ip"])
    parts = _split(str(port))
    return parts[0] if len(parts) == 3 else None


def _is_loopback_or_override(ip: str | None) -> bool:
    if ip == DEFAULT_BIND_HOST:
        return True
    bind = DeploymentSettings.env_name("bind_host")
    default = DeploymentSettings.__dataclass_fields__["bind_host"].default
    return ip is not None and re.fullmatch(rf"\$\{{{bind}:?-{re.escape(default)}\}}", ip) is not None


def _interpolated(value: str | None) -> bool:
    return value is not None and value.strip().startswith("${") and value.strip().endswith("}")


def validate_compose(compose: Mapping[str, Any]) -> list[str]:
    """Problems in a parsed compose file, checked against DeploymentSettings; [] when there are none."""
    services: Mapping[str, Any] = compose.get("services") or {}
    problems: list[str] = []
    missing = [s for s in (POSTGRES, MLFLOW, WEBSERVER, DAEMON, TRAIN) if s not in services]
    problems += [f"service {s!r} is missing" for s in missing]
    envs = {name: _environment(svc or {}) for name, svc in services.items()}

    for name, svc in services.items():
        svc = svc or {}
        for port in svc.get("ports") or []:
            ip = _published_ip(port)
            if not _is_loopback_or_override(ip):
                problems.append(
                    f"{name}: port {port!r} is published on {ip or 'every interface'}; publish on "
                    f"{DEFAULT_BIND_HOST} or ${{{DeploymentSettings.env_name('bind_host')}:-{DEFAULT_BIND_HOST}}}"
                )
        if name != POSTGRES and not svc.get("profiles"):
            cond = (svc.get("depends_on") or {}) if isinstance(svc.get("depends_on"), Mapping) else {}
            if (cond.get(POSTGRES) or {}).get("condition") != "service_healthy":
                problems.append(f"{name}: must depend on {POSTGRES} with condition: service_healthy")

    # Every variable the settings need, set in the file (a bare name would take whatever the shell has).
    for name in PG_CLIENTS:
        if name in missing:
            continue
        for var in DeploymentSettings.service_env(name):
            if envs[name].get(var) is None:
                problems.append(f"{name}: environment variable {var} is not set")
    if POSTGRES not in missing:
        pg = services[POSTGRES] or {}
        if not (pg.get("healthcheck") or {}).get("test"):
            problems.append(f"{POSTGRES}: needs a healthcheck (the other services wait for it to be healthy)")
        for var, fname in POSTGRES_IMAGE_ENV.items():
            value = envs[POSTGRES].get(var)
            if value is None:
                problems.append(f"{POSTGRES}: environment variable {var} is not set")
                continue
            client_var = DeploymentSettings.env_name(fname)
            for client in PG_CLIENTS:
                other = envs.get(client, {}).get(client_var)
                if client not in missing and other is not None and other != value:
                    shown = "" if client_var == PASSWORD_ENV else f"={other!r}"  # never echo a (literal) password
                    problems.append(f"{client}: {client_var}{shown} differs from {POSTGRES}'s {var}"
                                    + ("" if client_var == PASSWORD_ENV else f"={value!r}"))
        host_var = DeploymentSettings.env_name("pg_host")
        for client in PG_CLIENTS:
            host = envs.get(client, {}).get(host_var)
            if client not in missing and host is not None and host != POSTGRES:
                problems.append(f"{client}: {host_var}={host!r} is not the {POSTGRES} service")
    for name in (POSTGRES, *PG_CLIENTS):
        for var in ("POSTGRES_PASSWORD", PASSWORD_ENV):
            value = envs.get(name, {}).get(var)
            if value is not None and not _interpolated(value):
                problems.append(
                    f"{name}: {var} is written in the file; take it from the environment (${{{PASSWORD_ENV}}})")

    if not (set(DAGSTER_SERVICES) & set(missing)):
        problems += _check_dagster_services(services, envs)
    if MLFLOW not in missing and not (set(DAGSTER_SERVICES) & set(missing)):
        uri_var = DeploymentSettings.env_name("mlflow_tracking_uri")
        for name in DAGSTER_SERVICES:
            uri = envs[name].get(uri_var)
            if uri is not None and urlparse(uri).hostname != MLFLOW:
                problems.append(f"{name}: {uri_var}={uri!r} does not point at the {MLFLOW} service")
    if TRAIN not in missing:
        problems += _check_train_service(services[TRAIN] or {}, envs.get(DAEMON))
    return problems


def _check_dagster_services(services: Mapping[str, Any], envs: Mapping[str, dict[str, str | None]]) -> list[str]:
    problems = []
    homes = {name: envs[name].get("DAGSTER_HOME") for name in DAGSTER_SERVICES}
    for name, home in homes.items():
        if not home:
            problems.append(f"{name}: environment variable DAGSTER_HOME is not set")
    if len(set(homes.values())) > 1:
        problems.append(f"{WEBSERVER} and {DAEMON} use different DAGSTER_HOME: {homes}")
    instance = {}
    shared = {}
    for name in DAGSTER_SERVICES:
        home = homes[name] or ""
        mounts = {target: source for source, target in _volumes(services[name] or {})}
        instance[name] = mounts.get(str(PurePosixPath(home) / INSTANCE_FILE))
        shared[name] = mounts.get(home)
        if not instance[name]:
            problems.append(f"{name}: mounts no {INSTANCE_FILE} at {home}/{INSTANCE_FILE}")
        if not shared[name]:
            problems.append(f"{name}: mounts no volume at DAGSTER_HOME {home} (compute logs are read by the webserver)")
    if len(set(instance.values())) > 1:
        problems.append(f"{WEBSERVER} and {DAEMON} mount different instance files: {instance}")
    if len(set(shared.values())) > 1:
        problems.append(f"{WEBSERVER} and {DAEMON} mount different DAGSTER_HOME volumes: {shared}")

    # The launcher starts training containers through the daemon's engine socket, mounting the host's checkout.
    daemon_env = envs[DAEMON]
    docker_host = daemon_env.get(DeploymentSettings.env_name("docker_host")) or f"unix://{DOCKER_SOCKET}"
    socket = docker_host.removeprefix("unix://")
    daemon_mounts = {target: source for source, target in _volumes(services[DAEMON] or {})}
    if not docker_host.startswith("unix://") or socket not in daemon_mounts:
        problems.append(f"{DAEMON}: the Docker socket is not mounted for the launcher (DOCKER_HOST={docker_host})")
    host_root_var = DeploymentSettings.env_name("host_project_root")
    root = daemon_env.get("MDPO_PROJECT_ROOT")
    if not root:
        problems.append(f"{DAEMON}: environment variable MDPO_PROJECT_ROOT is not set")
    elif daemon_mounts.get(root) != daemon_env.get(host_root_var):
        problems.append(
            f"{DAEMON}: the checkout mounted at {root} ({daemon_mounts.get(root)!r}) must be "
            f"{host_root_var} ({daemon_env.get(host_root_var)!r}): training containers mount that host path"
        )
    return problems


def _check_train_service(train: Mapping[str, Any], daemon_env: Mapping[str, str | None] | None) -> list[str]:
    problems = []
    if not train.get("profiles"):
        problems.append(f"{TRAIN}: needs a `profiles:` entry (built on request, started by the launcher, not by `up`)")
    build = train.get("build")
    dockerfile = build.get("dockerfile") if isinstance(build, Mapping) else None
    if dockerfile is None or PurePosixPath(dockerfile) != PurePosixPath(TRAIN_DOCKERFILE):
        problems.append(f"{TRAIN}: must build {TRAIN_DOCKERFILE} (build.dockerfile is {dockerfile!r})")
    image_var = DeploymentSettings.env_name("train_image")
    if daemon_env is not None and daemon_env.get(image_var) != train.get("image"):
        problems.append(f"{TRAIN}: image {train.get('image')!r} is not the one the launcher starts "
                        f"({image_var}={daemon_env.get(image_var)!r})")
    return problems


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
        for f in fields(settings):
            value = getattr(settings, f.name)
            if isinstance(value, EnvSecret):
                value = "***" if value.is_set else None
            print(f"{f.metadata['env']}={'<unset>' if value is None else value}")
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
