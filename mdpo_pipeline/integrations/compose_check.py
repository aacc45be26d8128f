"""Checking docker/compose.yaml against the deployment's settings (deploy_settings.py). No Dagster here.

`validate_compose` lists what would make the deployed services disagree with the settings they are read
with: a variable a service needs but the file does not set, Postgres credentials that differ between the
server and its clients, a password written into the file, a UI published beyond loopback or by another service
than the gateway (the one that asks for a login), the Dagster webserver and daemon not sharing their instance, the
launcher without the engine's socket or the host's checkout, or a training image other than the one the launcher
starts.

    python -m mdpo_pipeline.integrations.deploy check-compose docker/compose.yaml
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

from mdpo_pipeline.integrations.containers import DOCKERFILE as TRAIN_DOCKERFILE
from mdpo_pipeline.integrations.deploy_settings import (
    DAEMON,
    DAGSTER_SERVICES,
    DEFAULT_BIND_HOST,
    GATEWAY,
    MLFLOW,
    PASSWORD_ENV,
    PG_CLIENTS,
    POSTGRES,
    TRAIN,
    UI_PASSWORD_ENV,
    WEBSERVER,
    DeploymentSettings,
)
from mdpo_pipeline.integrations.launcher_settings import LauncherSettings

DOCKER_SOCKET = "/var/run/docker.sock"
INSTANCE_FILE = "dagster.yaml"
#: The official postgres image's variables, and the settings field each must agree with.
POSTGRES_IMAGE_ENV = {"POSTGRES_USER": "pg_user", "POSTGRES_PASSWORD": "pg_password", "POSTGRES_DB": "pg_db"}


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
    missing = [s for s in (POSTGRES, MLFLOW, WEBSERVER, DAEMON, TRAIN, GATEWAY) if s not in services]
    problems += [f"service {s!r} is missing" for s in missing]
    envs = {name: _environment(svc or {}) for name, svc in services.items()}

    for name, svc in services.items():
        svc = svc or {}
        if name != GATEWAY and svc.get("ports"):
            problems.append(f"{name}: publishes {svc['ports']!r}; only {GATEWAY!r} publishes ports, so that every UI "
                            "asks for a login")
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
    for name in (*PG_CLIENTS, GATEWAY):
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
    for name in (POSTGRES, *PG_CLIENTS, GATEWAY):
        for var in ("POSTGRES_PASSWORD", PASSWORD_ENV, UI_PASSWORD_ENV):
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
    image_var = DeploymentSettings.env_name("image")
    if daemon_env is not None and daemon_env.get(image_var) != train.get("image"):
        problems.append(f"{TRAIN}: image {train.get('image')!r} is not the one the launcher starts "
                        f"({image_var}={daemon_env.get(image_var)!r})")
    fallback = re.fullmatch(rf"\$\{{{image_var}:?-(.*)\}}", str(train.get("image", "")).strip())
    default = LauncherSettings.model_fields["image"].default
    if fallback and fallback.group(1) != default:
        problems.append(f"{TRAIN}: the fallback image {fallback.group(1)!r} is not the launcher's default {default!r}")
    return problems
