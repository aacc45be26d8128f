"""The production deployment's settings (docker/compose.yaml): read from the environment, each field naming its
variable and the compose services that need it. No Dagster here.

`deploy` builds what each service is configured with from these settings, and `compose_check` checks the compose
file against them. The Postgres password is only ever read from MDPO_PG_PASSWORD when it is used: it is not
copied into the settings.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from mdpo_pipeline.core.errors import ConfigError
from mdpo_pipeline.integrations.launcher_settings import LauncherSettings

PASSWORD_ENV = "MDPO_PG_PASSWORD"
#: The login the gateway asks for (integrations/gateway.py): its password, read from the environment only.
UI_PASSWORD_ENV = "MDPO_UI_PASSWORD"
DEFAULT_BIND_HOST = "127.0.0.1"

# Compose service names.
POSTGRES, MLFLOW, WEBSERVER, DAEMON, TRAIN = "postgres", "mlflow", "dagster-webserver", "dagster-daemon", "train"
#: The one service that publishes ports: the authenticating proxy in front of the Dagster UI and MLflow.
GATEWAY = "gateway"
DAGSTER_SERVICES = (WEBSERVER, DAEMON)
PG_CLIENTS = (MLFLOW, *DAGSTER_SERVICES)
#: The services that start training, and so need the launcher's variables.
LAUNCHER_SERVICES = DAGSTER_SERVICES


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or "localhost") is this machine only."""
    if host.strip() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip()).is_loopback
    except ValueError:
        return False


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
        "MDPO_BIND_HOST", DEFAULT_BIND_HOST, "Host address the web UIs are published on; loopback only by default.",
        services=(GATEWAY,))
    ui_user: str = _setting("MDPO_UI_USER", "mdpo", "User of the login the gateway asks for.", services=(GATEWAY,))
    ui_password: EnvSecret = field(
        default_factory=lambda: EnvSecret(UI_PASSWORD_ENV),
        metadata={"env": UI_PASSWORD_ENV, "parse": None, "services": (GATEWAY,),
                  "help": "Password of the UIs' login (required when MDPO_BIND_HOST is not loopback); read from "
                          "the environment when used, never stored."},
    )
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
        if not isinstance(self.ui_password, EnvSecret):
            raise ConfigError(f"ui_password must be an EnvSecret: the password is read from {UI_PASSWORD_ENV} only")
        if not is_loopback(self.bind_host) and not (self.ui_password.is_set and self.ui_password.value()):
            raise bad("bind_host", self.bind_host, f"publishes the Dagster UI and MLflow beyond this machine: set "
                      f"{UI_PASSWORD_ENV} so that the gateway asks for a login")
        if not isinstance(self.launcher, LauncherSettings):
            raise ConfigError(f"launcher must be a LauncherSettings, got {type(self.launcher).__name__}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeploymentSettings:
        """Settings from ``environ`` (default os.environ); unset or empty variables keep their defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {"pg_password": EnvSecret(PASSWORD_ENV, environ),
                                  "ui_password": EnvSecret(UI_PASSWORD_ENV, environ),
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
