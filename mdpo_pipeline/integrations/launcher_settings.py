"""Where and how a training run is started: the one definition of the launcher's settings. No Dagster here.

`LauncherSettings` is read by four things, and each takes its fields from here:

- the Dagster resource `defs.resources.TrainingLauncher` subclasses it (its config schema, descriptions and
  validation are these; its values may be Dagster `EnvVar`s, checked once Dagster has resolved them);
- the container spec (`launchers.container_spec`, `container_config`, `prepare_output`) takes it;
- the deployment (`deploy.DeploymentSettings.launcher`, docker/compose.yaml) reads it with `from_env`;
- the Ray driver (`ray_launcher`, `mdpo train --ray`) takes its ``ray_*``/worker fields.

A field with an ``env`` variable can be set from the environment (`from_env` here, `TrainingLauncher.from_env`
for Dagster); the others are set in Python only. Errors name the setting (``gpus='gpu0': ...``), or its
variable when it came from the environment (``MDPO_GPUS='gpu0': ...``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from mdpo_pipeline.core.errors import ConfigError
from mdpo_pipeline.integrations.containers import DEFAULT_TAG

MODES = ("local", "docker", "ray")


class SettingError(ValueError):
    """A refused value, naming its setting; ``why`` is the reason alone."""

    def __init__(self, name: str, value: Any, why: str):
        super().__init__(f"{name}={value!r}: {why}")
        self.why = why


def _setting(default: Any, description: str, env: str | None = None, **kw: Any) -> Any:
    """A field: its default, one-line description and (optionally) the environment variable that sets it."""
    return Field(default, description=description, json_schema_extra={"env": env} if env else None, **kw)


def _matches(pattern: str, expected: str, flags: int = 0) -> Callable[[Any], str | None]:
    return lambda v: None if v is None or re.fullmatch(pattern, v, flags) else expected


#: Each field's check beyond its type: the reason a value is refused, or None.
_RULES: dict[str, Callable[[Any], str | None]] = {
    "mode": lambda v: None if v in MODES else "use 'local', 'docker' or 'ray'",
    "threads": lambda v: None if v is None or v >= 1 else "expected an integer >= 1, or unset",
    "num_processes": lambda v: None if v >= 1 else "expected an integer >= 1",
    "image": lambda v: None if v.strip() else "expected an image name",
    "gpus": _matches(r"all|\d+(,\d+)*", "use 'all' or comma-separated device ids such as '0,1'"),
    "user": _matches(r"\d+:\d+", "expected numeric uid:gid such as '1000:1000'"),
    "network_mode": lambda v: None if v.strip() else "expected a Docker network mode such as 'none'",
    "shm_size": _matches(r"\d+[bkmg]?", "expected a size such as '16g' or '512m'", re.IGNORECASE),
    # A GCS address (host:port, what `ray start --head` prints), a Ray Client one (ray://host:10001), or "auto".
    "ray_address": _matches(r"auto|(ray://)?[A-Za-z0-9._-]+:\d+",
                            "use 'auto', host:port (the head's GCS) or ray://host:10001 (Ray Client)"),
    "num_workers": lambda v: None if v >= 1 else "expected an integer >= 1",
    "cpus_per_worker": lambda v: None if v >= 1 else "expected an integer >= 1",
    "gpus_per_worker": lambda v: None if v >= 0 else "expected an integer >= 0",
    "storage_path": lambda v: None if v is None or v.strip() else "expected a directory path, or unset",
    "max_failures": lambda v: None if v >= -1 else "expected an integer >= 0, or -1 for no limit",
    "env": lambda v: next((f"{k!r} is not an environment variable name" for k in v
                           if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)), None),
}


class LauncherSettings(BaseModel):
    """How `mdpo train` is started: a local subprocess (default), a Docker container (a GPU box) or Ray Train workers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: str = _setting(
        "local", "Where training runs: 'local', a subprocess with this interpreter; 'docker', a container; "
        "'ray', Ray Train workers on a Ray cluster.",
        env="MDPO_LAUNCHER_MODE")
    threads: int | None = _setting(None, "torch CPU threads of the training process when its run config sets none.")
    num_processes: int = _setting(
        1, "Training processes (one per GPU; locally without CUDA one per CPU core, gloo); > 1 runs `accelerate launch`.",
        env="MDPO_NUM_PROCESSES")
    accelerate_config: str | None = _setting(
        None, "accelerate config file relative to the project, e.g. docker/accelerate/deepspeed_zero2.yaml.",
        env="MDPO_ACCELERATE_CONFIG")
    env: dict[str, str] = _setting(
        {}, "Extra environment of the training process (no secrets: HF_TOKEN etc. pass through from the host).")
    image: str = _setting(
        DEFAULT_TAG, "docker: the training image (docker/Dockerfile.train, built by `mdpo image`).",
        env="MDPO_TRAIN_IMAGE")
    gpus: str | None = _setting(
        None, "docker: GPUs of the container: unset none, 'all', or device ids '0,1'.", env="MDPO_GPUS")
    docker_host: str | None = _setting(
        None, "docker: the engine's URL; unset: $DOCKER_HOST of the launching process, else the default socket.",
        env="DOCKER_HOST")
    host_project_root: str | None = _setting(
        None, "docker: the checkout's path as the Docker engine sees it, when Dagster itself runs in a container.",
        env="MDPO_HOST_PROJECT_ROOT")
    user: str | None = _setting(
        None, "docker: the container's uid:gid; unset: the host user's (the image's user `mdpo` for root).")
    network_mode: str = _setting("none", "docker: the container's network; 'none', training reads mounted files only.")
    shm_size: str | None = _setting(None, "docker: the container's /dev/shm size; unset: 16g with GPUs, else the engine's.")
    ray_address: str | None = _setting(
        None, "ray: the cluster: unset, $RAY_ADDRESS, else the one `ray start --head` started on this machine, else a "
        "local one started for the run; 'auto', an existing one on this machine; host:port, a head's GCS; "
        "ray://host:10001, Ray Client (e.g. a KubeRay head service).", env="MDPO_RAY_ADDRESS")
    num_workers: int = _setting(
        1, "ray: Ray Train workers, one training process each (DDP: gloo on CPU, NCCL with GPUs).",
        env="MDPO_RAY_NUM_WORKERS")
    cpus_per_worker: int = _setting(
        1, "ray: CPUs each worker reserves (also its torch threads when the run config sets none).",
        env="MDPO_RAY_CPUS_PER_WORKER")
    gpus_per_worker: int = _setting(0, "ray: GPUs each worker reserves; > 0 trains on CUDA (NCCL).",
                                    env="MDPO_RAY_GPUS_PER_WORKER")
    storage_path: str | None = _setting(
        None, "ray: a directory every worker and this machine see (NFS, a shared volume): the adapter, its "
        "checkpoints and Ray's run state go there and the adapter is copied to the run's output_dir; unset: "
        "beside the output_dir (one machine, or nodes that mount the project at the same path).",
        env="MDPO_RAY_STORAGE_PATH")
    max_failures: int = _setting(
        1, "ray: times a failed worker group is restarted (resuming from the newest checkpoint); -1: no limit.",
        env="MDPO_RAY_MAX_FAILURES")

    @classmethod
    def _deferred(cls, value: Any) -> bool:
        """Whether ``value`` is a placeholder resolved later (the Dagster resource's EnvVars): checked then."""
        return False

    @field_validator("*", mode="wrap")
    @classmethod
    def _check(cls, value: Any, handler: Callable[[Any], Any], info: ValidationInfo) -> Any:
        if cls._deferred(value):
            return handler(value)
        name = info.field_name
        if isinstance(value, str):
            value = value.strip()
            if not value and cls.optional(name):
                value = None  # what compose passes for an unset `${VAR:-}`
        value = handler(value)
        why = _RULES.get(name, lambda v: None)(value)
        if why:
            raise SettingError(name, value, why)
        return value

    @classmethod
    def optional(cls, name: str) -> bool:
        """Whether field ``name`` may be unset (None)."""
        return type(None) in get_args(cls.model_fields[name].annotation)

    @classmethod
    def env_vars(cls) -> dict[str, str]:
        """{field name: environment variable} of the fields the environment can set."""
        return {name: f.json_schema_extra["env"] for name, f in cls.model_fields.items() if f.json_schema_extra}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LauncherSettings:
        """Settings from ``environ`` (default os.environ); unset or empty variables keep their defaults.

        ConfigError names the variable of a value that is refused."""
        environ = os.environ if environ is None else environ
        raw = {name: environ[var] for name, var in cls.env_vars().items() if (environ.get(var) or "").strip()}
        try:
            return cls(**raw)
        except ValidationError as e:
            error = e.errors()[0]
            name = str(error["loc"][0])
            cause = (error.get("ctx") or {}).get("error")
            why = cause.why if isinstance(cause, SettingError) else error["msg"]
            raise ConfigError(f"{cls.env_vars()[name]}={raw[name]!r}: {why}") from None
