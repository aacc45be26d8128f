"""Starting a training run as its own process or container. No Dagster here; the Dagster resource wraps this.

The run gets a JSON config file and writes an adapter directory; the launcher only starts it, streams its
output and reads the summary it leaves, so the same program runs locally, in CI or in a container.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from mdpo_pipeline.core.errors import CLI_ERROR
from mdpo_pipeline.core.io import write_json
from mdpo_pipeline.integrations.launcher_settings import LauncherSettings
from mdpo_pipeline.integrations.processes import die_with_parent_preexec


#: A training run as the launcher sees it: the JSON object ``mdpo train --config`` reads (or the dataclass it is
#: written from). Launchers read only ``output_dir``, ``threads``, ``method`` and the path fields below.
RunConfig = Mapping[str, Any]


def run_json(cfg: Any) -> dict[str, Any]:
    """The run config as the JSON object the training program reads."""
    return asdict(cfg) if is_dataclass(cfg) else dict(cfg)


class TrainingFailed(RuntimeError):
    """The training process exited non-zero; the message carries the end of its output."""


def run_config_path(cfg: RunConfig) -> Path:
    """Where the run's config file is written: beside its adapter directory."""
    return Path(f"{run_json(cfg)['output_dir']}.run.json")


def launch_local(
    cfg: RunConfig,
    log: Callable[[str], None] = print,
    env: dict[str, str] | None = None,
    num_processes: int = 1,
    accelerate_config: str | None = None,
) -> dict[str, Any]:
    """Run ``mdpo train`` in a subprocess with this interpreter (``accelerate launch`` for several processes);
    return the adapter's summary.json."""
    proc = start_local(cfg, env=env, num_processes=num_processes, accelerate_config=accelerate_config)
    follow(proc, log)
    return read_summary(cfg)


#: What differs between two emissions of one message: a timestamp, the emitting process's pid or address.
_VOLATILE = re.compile(r"^\[\d{4}-\d\d-\d\d [^\]]*\]|\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[.,]?\d*|"
                       r"\b(?:pid|ip)=[\w.:-]+")


class QuietLog:
    """``log`` that passes each message once: a line repeating an earlier one (timestamps, pids and addresses
    aside) is counted, not logged, and ``close`` says once per message how often it repeated. Ray's driver, for
    one, prints "Failed to query Ray Train Controller actor state" every second while a worker restarts; progress
    lines differ in their numbers and all pass."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.first: dict[str, str] = {}  # message -> its first line as logged
        self.repeats: dict[str, int] = {}

    def __call__(self, text: str) -> None:
        key = _VOLATILE.sub("", text).strip()
        if key in self.first:
            self.repeats[key] = self.repeats.get(key, 0) + 1
            return
        self.first[key] = text
        self.log(text)

    def close(self) -> None:
        """Say how often each repeated message repeated (once per message)."""
        for key, count in self.repeats.items():
            self.log(f"(repeated {count} more time{'s' * (count > 1)}: {self.first[key][:200]})")
        self.repeats = {}


def follow(proc: subprocess.Popen, log: Callable[[str], None], grace_s: float = 30) -> None:
    """Pass a training process's output to ``log`` line by line until it exits, each message once (``QuietLog``);
    TrainingFailed (with the end of its output) when it fails. A launch cancelled meanwhile stops the process's
    whole session."""
    tail: deque[str] = deque(maxlen=40)
    quiet = QuietLog(log)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            # Progress bars redraw with \r; only whole lines are worth a log entry.
            text = line.rstrip().rsplit("\r", 1)[-1]
            if text:
                tail.append(text)
                quiet(text)
        quiet.close()
    except BaseException:
        # Its own session no longer hears the terminal's Ctrl-C: a cancelled launch stops the run itself (for the
        # Ray driver, ending it ends its Ray job: the workers are its actors).
        stop_local(proc, grace_s)
        raise
    if proc.wait() != 0:
        args = proc.args if isinstance(proc.args, str) else " ".join(map(str, proc.args))
        # A configuration error (the CLI's one-line "mdpo: error:", exit 2) is the message, not a log to dig in.
        refused = [line for line in tail if line.startswith(CLI_ERROR)]
        if proc.returncode == 2 and refused:
            raise TrainingFailed(refused[-1].removeprefix(CLI_ERROR))
        raise TrainingFailed(f"`{args}` exited {proc.returncode}:\n" + "\n".join(tail))


def start_local(
    cfg: RunConfig,
    env: dict[str, str] | None = None,
    num_processes: int = 1,
    accelerate_config: str | None = None,
    stdout: int | None = subprocess.PIPE,
) -> subprocess.Popen:
    """Write the run config and start its training process (output merged into ``stdout``) in a new session; it is
    killed if this process dies, so call it from the thread that waits for it."""
    check_num_processes(num_processes)
    cfg = run_json(cfg)
    path = run_config_path(cfg)
    write_json(cfg, path)
    cmd = local_command(str(path), num_processes, accelerate_config, free_port=True)
    child_env = {**os.environ, **(env or {})}
    if num_processes > 1 and cfg.get("threads") and "OMP_NUM_THREADS" not in child_env:
        child_env["OMP_NUM_THREADS"] = str(cfg["threads"])  # else torchrun sets 1 and warns about it
    # A session of its own: the launcher and every rank below it can be stopped with one killpg. And it dies with
    # this process: a launcher killed with SIGKILL (a Dagster run worker, say) leaves no training running on unseen.
    return subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT, text=True, env=child_env,
                            start_new_session=True, preexec_fn=die_with_parent_preexec())


def stop_local(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """Stop a run started by ``start_local``: SIGTERM to its process group, SIGKILL after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def available_devices() -> tuple[int, str]:
    """How many training processes this machine can hold, and what it counts: CUDA devices, else CPU cores."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count(), "CUDA devices"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores, "CPU cores (no CUDA device)"


def check_num_processes(num_processes: int) -> None:
    """Refuse, before anything starts, more processes than devices (one rank per GPU, or per CPU core)."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if num_processes == 1:
        return
    available, kind = available_devices()
    if num_processes > available:
        raise ValueError(
            f"num_processes={num_processes} but this machine has {available} {kind}: set num_processes "
            f"(TrainingLauncher.num_processes, launch_local(num_processes=...)) to at most {available}, "
            "or run where there are more devices"
        )


# --- commands -----------------------------------------------------------------------------------

TRAIN_MODULE = ("-m", "mdpo_pipeline.cli", "train", "--config")


def accelerate_args(num_processes: int, accelerate_config: str | None, free_port: bool = False) -> list[str]:
    """``accelerate launch`` options for ``num_processes`` workers, or [] when one plain process will do.

    ``free_port`` lets accelerate pick an unused rendezvous port, so runs on one host do not collide."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if num_processes == 1 and not accelerate_config:
        return []
    args = ["--num_processes", str(num_processes)]
    if accelerate_config:
        args += ["--config_file", accelerate_config]
    elif num_processes > 1:
        # Despite the name, this is accelerate's only way to start N local ranks (torchrun) without MPI; on a
        # machine without CUDA each rank's Accelerator (TrainingArguments.use_cpu) joins with gloo on the CPU.
        # `--cpu` is no substitute: it starts a single process whatever --num_processes says.
        args += ["--multi_gpu"]
    if free_port and num_processes > 1:
        args += ["--main_process_port", "0"]
    return args


def local_command(
    config_path: str, num_processes: int = 1, accelerate_config: str | None = None, free_port: bool = False
) -> list[str]:
    """The training command for this interpreter: ``python -m mdpo_pipeline.cli train`` or ``accelerate launch`` of it."""
    extra = accelerate_args(num_processes, accelerate_config, free_port)
    if not extra:
        return [sys.executable, *TRAIN_MODULE, config_path]
    return [sys.executable, "-m", "accelerate.commands.launch", *extra, *TRAIN_MODULE, config_path]


# --- containers ---------------------------------------------------------------------------------

#: Environment variables passed into the training container when set on the host (values never logged).
PASSTHROUGH_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "CUDA_VISIBLE_DEVICES", "NCCL_DEBUG")
#: Fields of RunConfig that hold paths the container must see.
PATH_FIELDS = ("pairs_dir", "image_root", "corrupted_dir", "output_dir", "base_model_path", "reference_cache")
#: Where the project appears inside the container (the image's working directory).
WORKDIR = "/workspace"
#: The image's non-root user `mdpo`, which the container runs as when the launcher runs as root.
IMAGE_USER = "1000:1000"


def container_user(settings: LauncherSettings) -> str:
    """The container's uid:gid: the configured one, the host user's, or the image's non-root user instead of root."""
    if settings.user:
        return settings.user
    uid, gid = os.getuid(), os.getgid()
    return IMAGE_USER if uid == 0 else f"{uid}:{gid}"


def container_config(
    cfg: RunConfig, settings: LauncherSettings, project_root: str | Path
) -> tuple[RunConfig, dict[str, dict]]:
    """The run config as the container sees it, and the volumes that make it so.

    Paths under ``project_root`` move to WORKDIR (one read-only mount of ``settings.host_project_root`` or the
    project); paths outside it (real weights, a raw data disk) are mounted read-only at their own path; the
    adapter's parent directory is the only writable one.
    """
    cfg = run_json(cfg)
    root = Path(project_root).resolve()
    host_root = Path(settings.host_project_root or root)
    volumes: dict[str, dict] = {str(host_root): {"bind": WORKDIR, "mode": "ro"}}
    moved: dict[str, Any] = {}
    for name in PATH_FIELDS:
        value = cfg.get(name)
        if value is None:
            continue
        path = Path(value).resolve()
        if path.is_relative_to(root):
            moved[name] = str(Path(WORKDIR) / path.relative_to(root))
        else:
            volumes[str(path)] = {"bind": str(path), "mode": "ro"}
    out_parent = Path(cfg["output_dir"]).resolve().parent
    inside = Path(moved.get("output_dir", str(out_parent / Path(cfg["output_dir"]).name))).parent
    source = host_root / out_parent.relative_to(root) if out_parent.is_relative_to(root) else out_parent
    volumes[str(source)] = {"bind": str(inside), "mode": "rw"}
    return {**cfg, **moved}, volumes


def container_spec(cfg: RunConfig, settings: LauncherSettings, project_root: str | Path) -> dict[str, Any]:
    """What the launcher asks the Docker engine for: image, command, mounts, user, GPUs, env (names only logged)."""
    cfg = run_json(cfg)
    inner, volumes = container_config(cfg, settings, project_root)
    config_path = str(run_config_path(inner))
    extra = accelerate_args(settings.num_processes, settings.accelerate_config and
                            str(Path(WORKDIR) / settings.accelerate_config))
    if extra:
        entrypoint, command = ["accelerate"], ["launch", *extra, *TRAIN_MODULE, config_path]
    else:
        entrypoint, command = ["mdpo"], ["train", "--config", config_path]
    env = {name: os.environ[name] for name in PASSTHROUGH_ENV if os.environ.get(name)}
    env |= dict(settings.env) | {"HF_HUB_OFFLINE": "1", "HOME": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib"}
    if cfg.get("threads"):
        env["OMP_NUM_THREADS"] = str(cfg["threads"])
    spec: dict[str, Any] = {
        "image": settings.image,
        "entrypoint": entrypoint,
        "command": command,
        "volumes": volumes,
        "working_dir": WORKDIR,
        "user": container_user(settings),
        "network_mode": settings.network_mode,
        "environment": env,
        # mdpo.adapter: which adapter it writes, to find a container an earlier launch left running (launch_docker).
        "labels": {"mdpo.method": cfg["method"], "mdpo.output": Path(cfg["output_dir"]).name,
                   "mdpo.adapter": str(cfg["output_dir"])},
    }
    if settings.gpus is not None:
        from docker.types import DeviceRequest

        ids = None if settings.gpus == "all" else settings.gpus.split(",")
        spec["device_requests"] = [DeviceRequest(count=-1 if ids is None else None, device_ids=ids,
                                                 capabilities=[["gpu"]])]
        spec["shm_size"] = settings.shm_size or "16g"
        spec["ulimits"] = [{"Name": "memlock", "Soft": -1, "Hard": -1}]  # pinned memory for NCCL / CUDA
    elif settings.shm_size:
        spec["shm_size"] = settings.shm_size
    return spec


def prepare_output(cfg: RunConfig, settings: LauncherSettings, project_root: str | Path) -> Path:
    """Write the run config where the container reads it and let the container's user write the adapter's parent."""
    cfg = run_json(cfg)
    write_json(container_config(cfg, settings, project_root)[0], run_config_path(cfg))
    parent = Path(cfg["output_dir"]).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    uid, gid = (int(x) for x in container_user(settings).split(":"))
    if os.getuid() == 0 and (uid, gid) != (0, 0):
        # Root on the host launching a non-root container: hand it the output directory (and only that).
        for path in (parent, *parent.glob(f"{Path(cfg['output_dir']).name}*")):
            os.chown(path, uid, gid)
    return run_config_path(cfg)


def launch_docker(
    cfg: RunConfig,
    settings: LauncherSettings,
    project_root: str | Path,
    log: Callable[[str], None] = print,
    env: Mapping[str, str] | None = None,
    follow_logs: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Run ``mdpo train`` in a container of ``settings.image`` (``container_spec``) on the Docker engine of
    ``settings.docker_host``, else of the environment; return the adapter's summary.json.

    ``env`` is added under the spec's environment (e.g. a Dagster Pipes session's bootstrap variables);
    ``follow_logs`` reads the started container's output until it ends (default: each line to ``log``). The
    container is stopped (a cancelled launch's too) and removed once finished."""
    import docker

    cfg = run_json(cfg)
    spec = container_spec(cfg, settings, project_root)
    prepare_output(cfg, settings, project_root)
    image, command = spec.pop("image"), spec.pop("command")
    method = cfg["method"]
    log(
        f"training {method} in {image}: {' '.join(spec['entrypoint'] + command)} "
        f"(gpus={settings.gpus}, env names={sorted(spec['environment'])})"
    )
    environ = {**os.environ, "DOCKER_HOST": settings.docker_host} if settings.docker_host else None
    try:
        client = docker.from_env(environment=environ)
        kwargs = {**spec, "environment": {**(env or {}), **spec["environment"]}}
        # The caller holds this adapter's lock, so a container still training it is an orphan: its launcher died
        # (a SIGKILLed run worker cannot stop it). It would race this run for the checkpoints: stop it first.
        adapter_label = f"mdpo.adapter={spec['labels']['mdpo.adapter']}"
        for orphan in client.containers.list(filters={"label": adapter_label, "status": "running"}):
            log(f"stopping container {orphan.short_id}, still training {method} for an earlier run whose launcher "
                "died; this run resumes from its newest checkpoint")
            orphan.stop()
        try:
            container = client.containers.create(image=image, command=command, detach=True, **kwargs)
        except docker.errors.ImageNotFound:
            client.images.pull(image)
            container = client.containers.create(image=image, command=command, detach=True, **kwargs)
        container.start()
        try:
            if follow_logs is None:
                _log_container(container, log)
            else:
                follow_logs(container)
            result = container.wait()
            if result["StatusCode"] != 0:
                raise TrainingFailed(f"Container exited with non-zero status code: {result}")
        finally:
            container.stop()
    except docker.errors.DockerException as e:
        raise TrainingFailed(f"Docker engine error while training {method} in {image}: {e}") from e
    except Exception as e:  # a non-zero exit: the message has its status code
        raise TrainingFailed(f"training {method} in {image} failed: {e}") from e
    finally:
        _remove_containers(settings.docker_host, spec["labels"])
    return read_summary(cfg)


def _log_container(container: Any, log: Callable[[str], None]) -> None:
    """Pass a container's output to ``log`` line by line until it ends."""
    for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True):
        text = chunk.decode("utf-8", errors="replace") if isinstance(chunk, bytes) else str(chunk)
        for line in text.split("\n"):
            # Progress bars redraw with \r; only whole lines are worth a log entry.
            line = line.rstrip().rsplit("\r", 1)[-1]
            if line:
                log(line)


def _remove_containers(docker_host: str | None, labels: dict[str, str]) -> None:
    """Remove the finished training containers (stopped containers are kept until removed)."""
    import docker

    try:
        client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
        for c in client.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]}):
            if c.status in ("exited", "created", "dead"):
                c.remove()
        client.close()
    except docker.errors.DockerException:
        pass  # leftover stopped containers are harmless; the run's outcome is already known


def read_summary(cfg: RunConfig) -> dict[str, Any]:
    """The finished adapter's summary.json, or TrainingFailed naming what is missing."""
    path = Path(run_json(cfg)["output_dir"]) / "summary.json"
    if not path.is_file():
        raise TrainingFailed(f"training reported success but {path} does not exist")
    return json.loads(path.read_text())
