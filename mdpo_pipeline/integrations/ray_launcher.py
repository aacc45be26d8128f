"""Training on a Ray cluster: the same run (a run config, `run_training`) as Ray Train workers. No Dagster here.

Two halves, in two processes:

- ``launch_ray`` (the Dagster resource's side) writes the run config and the launcher settings beside the adapter
  and starts the driver, ``python -m mdpo_pipeline.cli train --config run.json --ray settings.json``, in a session
  of its own: its output (the workers' lines included, Ray forwards them) streams to the log, and stopping it ends
  the Ray job, since the trainer's controller and workers are actors owned by that driver.
- ``train_on_ray`` (the driver) checks that the cluster answers and is big enough, then runs a ``TorchTrainer``
  whose workers each call the loop they are given (``cli.ray_train_loop``: ``run_training``). Ray joins
  them in one torch.distributed group (gloo on CPU, NCCL with GPUs) and sets RANK/WORLD_SIZE, which the Trainer's
  accelerate state reads; only rank 0 writes the adapter. A failed worker group is restarted
  (``max_failures``) and ``run_training`` resumes from the newest complete checkpoint beside the adapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mdpo_pipeline.core.errors import ConfigError
from mdpo_pipeline.core.io import atomic_dir, write_json
from mdpo_pipeline.integrations.launcher_settings import LauncherSettings
from mdpo_pipeline.integrations.launchers import (
    PATH_FIELDS,
    TRAIN_MODULE,
    RunConfig,
    TrainingFailed,
    follow,
    read_summary,
    run_config_path,
    run_json,
)
from mdpo_pipeline.integrations.processes import die_with_parent_preexec

#: Seconds a cluster address gets to accept a TCP connection before the launch is refused.
CONNECT_TIMEOUT_S = 5.0
#: The environment variables of the ``ray_*``/worker settings, for messages that tell what to change.
_VAR = LauncherSettings.env_vars()


class RayClusterError(ConfigError):
    """The Ray cluster cannot run this training: unreachable, or too small for the workers asked for."""


def settings_path(cfg: RunConfig) -> Path:
    """Where the launcher settings of a Ray run are written for its driver: beside the adapter directory."""
    return Path(f"{run_json(cfg)['output_dir']}.ray.json")


def check_ray_settings(settings: LauncherSettings) -> None:
    """Refuse settings of the other launchers that Ray would silently ignore."""
    if settings.num_processes != 1 or settings.accelerate_config:
        raise ConfigError(
            f"num_processes={settings.num_processes}, accelerate_config={settings.accelerate_config!r}: the ray "
            f"launcher starts one process per Ray worker; set num_workers ({_VAR['num_workers']}) instead"
        )


def launch_ray(
    cfg: RunConfig, settings: LauncherSettings, log: Callable[[str], None] = print, grace_s: float = 30,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run the training on Ray through a driver subprocess streaming to ``log`` (``env``: more variables for the
    driver, e.g. a Dagster Pipes session's); return the adapter's summary.json."""
    check_ray_settings(settings)
    run = run_json(cfg)
    write_json(run, run_config_path(run))
    own = {name: getattr(settings, name) for name in LauncherSettings.model_fields}
    write_json(LauncherSettings(**own).model_dump(mode="json"), settings_path(run))
    cmd = [sys.executable, *TRAIN_MODULE, str(run_config_path(run)), "--ray", str(settings_path(run))]
    # A session of its own: stop_local's killpg reaches the driver and a local cluster it started. The driver dies
    # with this process (a killed Dagster run worker leaves no driver behind to race the rerun).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **dict(settings.env), **dict(env or {})}, start_new_session=True,
                            preexec_fn=die_with_parent_preexec())
    follow(proc, log, grace_s)
    return read_summary(run)


# --- the driver ---------------------------------------------------------------------------------


def check_reachable(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse within ``timeout_s`` a host:port (or ray://host:port) address nothing listens at.

    ``ray.init`` itself retries an unreachable GCS for a minute or more; None and "auto" are resolved by Ray from
    this machine and fail at once when no cluster is there."""
    if address in (None, "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayClusterError(
            f"ray_address={address!r} ({_VAR['ray_address']}): no Ray cluster answers at {host}:{port} "
            f"({e.strerror or e}); start one (`ray start --head`, a KubeRay RayCluster) or fix the address"
        ) from None


def check_resources(settings: LauncherSettings, total: Mapping[str, float], nodes: list[Mapping[str, float]],
                    address: str | None = None) -> None:
    """Refuse workers that the cluster could never hold: all of them together, or one of them on any one node.

    Only the cluster's size counts, not what is free: runs that fit but find it busy wait for each other."""
    n, cpus, gpus = settings.num_workers, settings.cpus_per_worker, settings.gpus_per_worker
    where = f"the Ray cluster at {address}" if address else "the local Ray cluster"
    have = f"{total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs on {len(nodes)} node(s)"
    asks = (f"num_workers={n} ({_VAR['num_workers']}) × cpus_per_worker={cpus} ({_VAR['cpus_per_worker']}), "
            f"gpus_per_worker={gpus} ({_VAR['gpus_per_worker']})")
    for kind, each in (("CPU", cpus), ("GPU", gpus)):
        if n * each > total.get(kind, 0):
            raise RayClusterError(f"{asks} need {n * each:g} {kind}s but {where} has {have}: ask for fewer "
                                  "workers or resources, or add nodes")
        if each and not any(node.get(kind, 0) >= each for node in nodes):
            raise RayClusterError(f"{asks}: no node of {where} has {each:g} {kind}s for one worker ({have})")


def _token_auth_if_available() -> None:
    """Send this machine's Ray token when RAY_AUTH_MODE is unset and a token is there, as Ray itself does only
    for a cluster it finds on this machine: to an explicit address it sends none, and a cluster with token
    authentication (the default since Ray 2.5x) refuses it after a minute of retries."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or (
            Path.home() / ".ray" / "auth_token").is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def run_name(run: RunConfig) -> str:
    """The Ray run's name: the adapter's directory name and a digest of its path (one per adapter, stable)."""
    out = Path(run_json(run)["output_dir"])
    return f"{out.name}-{hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:8]}"


def staging_dir(run: RunConfig, settings: LauncherSettings) -> Path | None:
    """Where the workers write the adapter and its checkpoints when that is not the run's own output_dir: under
    ``storage_path``, which every node sees, so a worker restarted on another node resumes from them."""
    if settings.storage_path is None:
        return None
    storage = Path(settings.storage_path).resolve()
    if Path(run_json(run)["output_dir"]).resolve().is_relative_to(storage):
        return None
    return storage / run_name(run)


def worker_run(run: RunConfig, settings: LauncherSettings) -> dict[str, Any]:
    """The run config the workers train: the adapter in the staging directory if any; torch threads as reserved."""
    run = run_json(run)
    for name in PATH_FIELDS:
        if run.get(name) and not os.path.isabs(run[name]):
            run[name] = os.path.abspath(run[name])  # as this process reads it: a worker's cwd is not the project
    stage = staging_dir(run, settings)
    if stage is not None:
        run["output_dir"] = str(stage / "adapter")
    if not run.get("threads"):
        run["threads"] = settings.cpus_per_worker  # else each worker's torch takes every core of its node
    return run


def _ray_storage(run: RunConfig, settings: LauncherSettings) -> tuple[str, str]:
    """(storage_path, name) of Ray's own run state: in the staging directory, else beside the adapter."""
    stage = staging_dir(run, settings)
    if stage is not None:
        return str(stage), "ray"
    out = Path(run_json(run)["output_dir"]).resolve()
    return str(out.parent), f"{out.name}.ray"


def train_on_ray(
    cfg: RunConfig, settings: LauncherSettings, train_loop: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """The driver: train ``cfg`` with ``train_loop({"run": run config})`` on every Ray Train worker; return the
    adapter's summary once it is at the run's output_dir."""
    _token_auth_if_available()  # before Ray is imported: its core reads RAY_AUTH_MODE once
    import ray
    from ray.train import FailureConfig, ScalingConfig, TrainingFailedError
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchTrainer

    check_ray_settings(settings)
    run = run_json(cfg)
    # Ray Train's print patch sends each print to its logger, so the workers' lines came twice and dill's
    # stdout capture (datasets' fingerprints) missed what it captures; the driver passes this on to the workers.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    address = settings.ray_address
    check_reachable(address)
    runtime_env = {"env_vars": dict(settings.env)} if settings.env else None
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:
        raise RayClusterError(
            f"ray_address={address!r} ({_VAR['ray_address']}): cannot join the Ray cluster: {e} (a cluster with "
            "token authentication needs RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        ) from None
    try:
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        check_resources(settings, ray.cluster_resources(), nodes, address)
        inner = worker_run(run, settings)
        storage_path, name = _ray_storage(run, settings)
        resources = {"CPU": settings.cpus_per_worker} | ({"GPU": settings.gpus_per_worker}
                                                         if settings.gpus_per_worker else {})
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"run": inner},
            scaling_config=ScalingConfig(num_workers=settings.num_workers, use_gpu=settings.gpus_per_worker > 0,
                                         resources_per_worker=resources),
            run_config=RayRunConfig(name=name, storage_path=storage_path,
                                    failure_config=FailureConfig(max_failures=settings.max_failures)),
        )
        print(f"ray: {settings.num_workers} worker(s) × {resources} for {run['output_dir']} "
              f"(Ray run {storage_path}/{name})", flush=True)
        try:
            trainer.fit()
        except TrainingFailedError as e:
            raise TrainingFailed(f"Ray Train gave up after max_failures={settings.max_failures} "
                                 f"({_VAR['max_failures']}) restarts: {e}") from None
    finally:
        ray.shutdown()
    _publish(run, inner)
    shutil.rmtree(Path(storage_path) / name, ignore_errors=True)  # finished: nothing left to resume
    return read_summary(run)


def _publish(run: dict[str, Any], inner: dict[str, Any]) -> None:
    """Copy the adapter the workers wrote in the staging directory to the run's output_dir (whole or not at all)."""
    src, dest = Path(inner["output_dir"]), Path(run["output_dir"])
    if src.resolve() == dest.resolve():
        return
    if not (src / "summary.json").is_file():
        raise TrainingFailed(f"Ray Train finished but the adapter {src} is incomplete (no summary.json)")
    with atomic_dir(dest) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        # The adapter's run config trains the same adapter again where it now is.
        recorded = json.loads((tmp / "run_config.json").read_text())
        write_json(recorded | {"output_dir": run["output_dir"]}, tmp / "run_config.json")
    shutil.rmtree(src.parent, ignore_errors=True)
