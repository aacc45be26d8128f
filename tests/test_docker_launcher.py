"""The Docker training launcher: the container spec it sends (GPU case included), and a real run.

The integration test starts a private Docker engine when none is reachable (docker/local-engine.sh), builds
the CPU variant of docker/Dockerfile.train offline on a debootstrap'ed Debian base, and trains a ShapeWorld
adapter inside it through the TrainingLauncher resource that the `adapters` asset uses. It skips only when no
engine can start on this machine, and says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mdpo_pipeline.integrations.launcher_settings import LauncherSettings
from mdpo_pipeline.integrations.launchers import (
    IMAGE_USER,
    accelerate_args,
    container_config,
    container_spec,
    local_command,
    prepare_output,
    run_json,
)
from mdpo_pipeline.training.run import TrainRunConfig
from tests.conftest import REPO


def _cfg(root: Path, **kw) -> TrainRunConfig:
    base = {
        "method": "mdpo",
        "pairs_dir": str(root / "data/preference_pairs"),
        "image_root": str(root / "data/shapeworld/vlfeedback"),
        "corrupted_dir": str(root / "data/corrupted_images"),
        "output_dir": str(root / "artifacts/adapters/mdpo"),
        "base_model": "llava-1.5-7b",
        "base_model_path": "/models/llava-1.5-7b-hf",
        "reference_cache": str(root / "data/reference_logprobs/reference.parquet"),
    }
    return TrainRunConfig(**(base | kw))


def test_gpu_container_spec_requests_gpus_mounts_and_accelerate(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    root = tmp_path / "proj"
    settings = LauncherSettings(
        mode="docker", image="registry.example/mdpo-train:1", gpus="all", num_processes=4,
        accelerate_config="docker/accelerate/deepspeed_zero2.yaml", user="1001:1001", env={"NCCL_P2P_DISABLE": "1"},
    )
    spec = container_spec(_cfg(root), settings, root)

    (request,) = spec["device_requests"]
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]] and not request.get("DeviceIDs")
    assert spec["shm_size"] == "16g" and spec["ulimits"][0]["Name"] == "memlock"
    assert spec["entrypoint"] == ["accelerate"]
    assert spec["command"] == [
        "launch", "--num_processes", "4", "--config_file", "/workspace/docker/accelerate/deepspeed_zero2.yaml",
        "-m", "mdpo_pipeline.cli", "train", "--config", "/workspace/artifacts/adapters/mdpo.run.json",
    ]
    # The project read-only, the adapters' directory the only writable mount, outside weights read-only in place.
    assert spec["volumes"] == {
        str(root): {"bind": "/workspace", "mode": "ro"},
        "/models/llava-1.5-7b-hf": {"bind": "/models/llava-1.5-7b-hf", "mode": "ro"},
        str(root / "artifacts/adapters"): {"bind": "/workspace/artifacts/adapters", "mode": "rw"},
    }
    assert spec["user"] == "1001:1001" and spec["network_mode"] == "none" and spec["working_dir"] == "/workspace"
    assert spec["environment"]["HF_TOKEN"] == "hf_secret_value" and "WANDB_API_KEY" not in spec["environment"]
    assert spec["environment"]["HF_HUB_OFFLINE"] == "1" and spec["environment"]["NCCL_P2P_DISABLE"] == "1"

    inner, _ = container_config(_cfg(root), settings, root)
    assert inner["pairs_dir"] == "/workspace/data/preference_pairs"
    assert inner["reference_cache"] == "/workspace/data/reference_logprobs/reference.parquet"
    assert inner["base_model_path"] == "/models/llava-1.5-7b-hf"


def test_gpu_ids_and_no_gpu_specs(tmp_path):
    root = tmp_path / "proj"
    spec = container_spec(_cfg(root), LauncherSettings(gpus="0,2", user="1:1", shm_size="8g"), root)
    (request,) = spec["device_requests"]
    assert request["DeviceIDs"] == ["0", "2"] and not request.get("Count") and spec["shm_size"] == "8g"
    cpu = container_spec(_cfg(root, threads=2), LauncherSettings(user="1:1"), root)
    assert "device_requests" not in cpu and "shm_size" not in cpu
    assert cpu["entrypoint"] == ["mdpo"] and cpu["command"] == ["train", "--config", str(
        Path("/workspace/artifacts/adapters/mdpo.run.json"))]
    assert cpu["environment"]["OMP_NUM_THREADS"] == "2"


def test_engine_in_another_container_mounts_the_host_path(tmp_path):
    root = tmp_path / "proj"
    spec = container_spec(_cfg(root), LauncherSettings(host_project_root="/srv/mdpo", user="1:1"), root)
    assert spec["volumes"]["/srv/mdpo"] == {"bind": "/workspace", "mode": "ro"}
    assert spec["volumes"]["/srv/mdpo/artifacts/adapters"] == {"bind": "/workspace/artifacts/adapters", "mode": "rw"}


@pytest.mark.parametrize(
    "field, value, why",
    [
        ("mode", "k8s", "use 'local', 'docker' or 'ray'"), ("gpus", "two", "comma-separated device ids"),
        ("gpus", "0,", "comma-separated device ids"), ("num_processes", 0, "integer >= 1"),
        ("num_processes", "two", "valid integer"), ("threads", 0, "integer >= 1"), ("user", "mdpo", "uid:gid"),
        ("shm_size", "lots", "size such as '16g'"), ("network_mode", " ", "network mode"), ("image", "", "image name"),
        ("env", {"NOT A NAME": "1"}, "not an environment variable name"), ("workdir", "/w", "Extra inputs"),
    ],
)
def test_bad_settings_name_the_field(field, value, why):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as excinfo:
        LauncherSettings(**{field: value})
    (error,) = excinfo.value.errors()
    assert error["loc"] == (field,) and why in error["msg"]
    if error["type"] == "value_error":
        assert f"{field}=" in error["msg"]  # the message names the setting on its own too


def test_empty_optional_settings_are_unset():
    s = LauncherSettings(gpus="", accelerate_config=" ", shm_size="", mode=" docker ")
    assert (s.gpus, s.accelerate_config, s.shm_size, s.mode) == (None, None, None, "docker")


def test_default_user_is_the_host_user_or_the_images_non_root_user(tmp_path):
    spec = container_spec(_cfg(tmp_path), LauncherSettings(), tmp_path)
    expected = IMAGE_USER if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    assert spec["user"] == expected != "0:0"


def test_prepare_output_writes_the_containers_view_of_the_config(tmp_path):
    settings = LauncherSettings(user=f"{os.getuid()}:{os.getgid()}")
    path = prepare_output(_cfg(tmp_path), settings, tmp_path)
    written = json.loads(path.read_text())
    assert path == tmp_path / "artifacts/adapters/mdpo.run.json"
    assert written["output_dir"] == "/workspace/artifacts/adapters/mdpo"
    assert TrainRunConfig(**written).method == "mdpo"


def test_run_config_is_read_as_its_json_object(tmp_path):
    # Whatever produces the run config, the launcher reads only its JSON object (output_dir, method, threads, paths).
    cfg = _cfg(tmp_path, threads=3)
    settings = LauncherSettings(user="1:1")
    as_json = json.loads(json.dumps(run_json(cfg)))
    assert container_spec(as_json, settings, tmp_path) == container_spec(cfg, settings, tmp_path)
    assert container_config(as_json, settings, tmp_path) == container_config(cfg, settings, tmp_path)


def test_local_and_multi_process_commands():
    assert local_command("run.json") == [sys.executable, "-m", "mdpo_pipeline.cli", "train", "--config", "run.json"]
    cmd = local_command("run.json", num_processes=2)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[3:6] == ["--num_processes", "2", "--multi_gpu"]
    assert accelerate_args(1, "zero2.yaml") == ["--num_processes", "1", "--config_file", "zero2.yaml"]


def test_accelerate_configs_are_valid_yaml_for_accelerate():
    import yaml

    for name, kind in (("multi_gpu.yaml", "MULTI_GPU"), ("deepspeed_zero2.yaml", "DEEPSPEED")):
        cfg = yaml.safe_load((REPO / "docker/accelerate" / name).read_text())
        assert cfg["distributed_type"] == kind and cfg["num_processes"] >= 1
    zero2 = yaml.safe_load((REPO / "docker/accelerate/deepspeed_zero2.yaml").read_text())["deepspeed_config"]
    assert zero2["zero_stage"] == 2
    from accelerate.commands.config.config_args import ClusterConfig

    # accelerate's own loader accepts both files (unknown keys would raise).
    for name in ("multi_gpu.yaml", "deepspeed_zero2.yaml"):
        ClusterConfig.from_yaml_file(str(REPO / "docker/accelerate" / name))


# --- the real thing ---------------------------------------------------------------------------


def _engine() -> str:
    """DOCKER_HOST of a reachable engine: the configured one, else a private one started for the tests."""
    import docker

    if os.environ.get("DOCKER_HOST"):
        try:
            docker.from_env().ping()
            return os.environ["DOCKER_HOST"]
        except docker.errors.DockerException:
            pass
    proc = subprocess.run([str(REPO / "docker/local-engine.sh"), "start"], capture_output=True, text=True)
    if proc.returncode != 0:
        reason = f"no Docker engine could start here: {proc.stderr.strip()[-800:]}"
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    return proc.stdout.strip().split("=", 1)[1]


@pytest.fixture(scope="module")
def cpu_image() -> tuple[str, str]:
    """(DOCKER_HOST, tag) of the offline-built CPU training image."""
    from mdpo_pipeline.integrations.containers import CPU_TAG, build_training_image

    host = _engine()
    lines: list[str] = []
    try:
        build_training_image(REPO, CPU_TAG, offline=True, docker_host=host, log=lines.append)
    except Exception as e:  # a build failure is a test failure, with the build log's end
        pytest.fail(f"building {CPU_TAG} failed: {e}\n" + "\n".join(lines[-20:]))
    return host, CPU_TAG


@pytest.mark.slow
@pytest.mark.docker
def test_adapter_trains_inside_the_cpu_image_through_the_dagster_launcher(cpu_image, tmp_path, shapeworld_base,
                                                                           monkeypatch):
    import dagster as dg
    from mlflow import MlflowClient

    import docker
    from mdpo_pipeline.defs.assets.data import data_assets
    from mdpo_pipeline.defs.assets.training import training_assets
    from mdpo_pipeline.defs.resources import TrainingLauncher
    from tests.conftest import pipeline_resources, project_from_base

    host, tag = cpu_image
    # The shared base's data, base model and reference cache, mounted into the container with the checkout.
    root = project_from_base(shapeworld_base, tmp_path / "proj", training={
        "seed": 0, "max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 1,
        "threads": 1})
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resources = pipeline_resources(root, TrainingLauncher(mode="docker", image=tag, docker_host=host))
    everything = [*data_assets, *training_assets]
    engine = docker.DockerClient(base_url=host)
    # A container an earlier launch left training this adapter (its run worker was killed): stopped first.
    labels = {"mdpo.method": "mdpo", "mdpo.output": "mdpo", "mdpo.adapter": str(root / "artifacts/adapters/mdpo")}
    orphan = engine.containers.run(tag, entrypoint=["sleep"], command=["300"], labels=labels, detach=True,
                                   network_mode="none")
    result = dg.materialize(everything, selection="key:adapters", partition_key="mdpo", resources=resources)
    assert result.success
    with pytest.raises(docker.errors.NotFound):  # stopped before training, then removed with the run's own
        orphan.reload()

    adapter = root / "artifacts/adapters/mdpo"
    summary = json.loads((adapter / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["device"] == "cpu"
    run_config = json.loads((adapter / "run_config.json").read_text())
    assert run_config["output_dir"] == "/workspace/artifacts/adapters/mdpo", "it ran inside the container"
    assert run_config["reference_cache"] == "/workspace/data/reference_logprobs/reference.parquet"
    if os.getuid() == 0:
        assert (adapter / "adapter_model.safetensors").stat().st_uid == int(IMAGE_USER.split(":")[0])
    assert not adapter.with_name("mdpo.checkpoints").exists()

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    (version,) = client.search_model_versions("name = 'shapeworld-tiny'")
    assert version.tags["method"] == "mdpo"
    assert not engine.containers.list(all=True, filters={"label": "mdpo.method=mdpo"}), "finished containers removed"
