"""Building the training image, online (CUDA base from a registry) or offline (a local Debian base + host wheels).

Offline is what CI and this project's tests use: no registry is reachable, so the base is a Debian root
filesystem made by debootstrap and imported into the engine, and every Python package comes from wheels
downloaded on the host (the same pins as constraints.txt). No Dagster here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

DOCKERFILE = "docker/Dockerfile.train"
WHEELS_DIR = "docker/wheels"
#: The training image's name: the one place it is written in Python. LauncherSettings.image defaults to
#: DEFAULT_TAG; docker/compose.yaml, docker/.env.example, Dockerfile.train and the README repeat the literal,
#: and tests/test_deploy.py checks they say the same.
TRAIN_IMAGE = "mdpo-pipeline-train"
DEFAULT_TAG = f"{TRAIN_IMAGE}:latest"  # the GPU image (CUDA base)
CPU_TAG = f"{TRAIN_IMAGE}:cpu"  # the offline CPU variant (`mdpo image --offline`, the Docker test)
DEBIAN_BASE_TAG = "mdpo-debian-python:bookworm"
#: What the Debian base carries: Python with venv (the image installs into /opt/venv) and CA certificates.
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")


class ImageBuildError(RuntimeError):
    """An image could not be built; the message says which step and why."""


def debian_mirror(sources: Path = Path("/etc/apt/sources.list.d/debian.sources"),
                  legacy: Path = Path("/etc/apt/sources.list")) -> str:
    """The Debian mirror this machine's apt uses (never a hard-coded host): deb822 sources first, then sources.list."""
    if sources.is_file():
        for stanza in sources.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and not any(s.endswith("-security") for s in suites.group(1).split()):
                return uris.group(1)
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and not m.group(2).endswith("-security"):
                return m.group(1)
    raise ImageBuildError(f"no Debian mirror found in {sources} or {legacy}")


def _client(docker_host: str | None = None):
    import docker

    return docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()


def image_exists(client, tag: str) -> bool:
    """Whether the engine already has ``tag``."""
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def make_debian_base(client, tag: str = DEBIAN_BASE_TAG, suite: str = "bookworm", log: Callable[[str], None] = print,
                     rebuild: bool = False) -> str:
    """Import a minimal Debian with Python as ``tag`` (debootstrap, needs root); reuse it when already there."""
    if image_exists(client, tag) and not rebuild:
        return tag
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed (Debian package debootstrap)")
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="mdpo-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap {suite} from {mirror} (about a minute)")
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}", suite, str(rootfs), mirror],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise ImageBuildError(f"debootstrap failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        repo, _, version = tag.partition(":")
        client.api.import_image(src=str(archive), repository=repo, tag=version or "latest")
    return tag


def training_requirements(root: Path) -> list[str]:
    """The training image's packages: the project's base dependencies (no orchestration extras; dagster-pipes is
    one of them)."""
    meta = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return list(meta["dependencies"])


def download_wheels(root: Path, dest: Path, log: Callable[[str], None] = print) -> Path:
    """Wheels for everything the image installs, pinned by constraints.txt, plus this project's own wheel."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    log(f"downloading wheels into {dest}")
    steps = [
        [*pip, "download", "-q", "--only-binary=:all:", "-d", str(dest), "-c", str(root / "constraints.txt"),
         *training_requirements(root)],
        [*pip, "wheel", "-q", "--no-deps", "-w", str(dest), str(root)],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
        if proc.returncode != 0:
            raise ImageBuildError(f"`{' '.join(cmd[2:5])} ...` failed:\n{proc.stderr[-2000:]}")
    return dest


def build_training_image(
    root: Path,
    tag: str = DEFAULT_TAG,
    *,
    base_image: str | None = None,
    offline: bool = False,
    docker_host: str | None = None,
    log: Callable[[str], None] = print,
) -> str:
    """Build docker/Dockerfile.train as ``tag``; offline: on a local Debian base with host-downloaded wheels."""
    root = Path(root).resolve()
    client = _client(docker_host)
    buildargs = {}
    if offline:
        buildargs["BASE_IMAGE"] = base_image or make_debian_base(client, log=log)
        download_wheels(root, root / WHEELS_DIR, log=log)
        buildargs["PIP_NO_INDEX"] = "1"
    elif base_image:
        buildargs["BASE_IMAGE"] = base_image
    log(f"building {tag} from {DOCKERFILE}")
    try:
        # The low-level API streams the build log, so a failing RUN step is reported with its output.
        stream = client.api.build(
            path=str(root), dockerfile=DOCKERFILE, tag=tag, buildargs=buildargs, rm=True, decode=True,
            network_mode="none" if offline else None,
        )
        tail: list[str] = []
        for chunk in stream:
            text = (chunk.get("stream") or "").rstrip()
            if text:
                tail = (tail + [text])[-30:]
                log(text)
            if "error" in chunk:
                raise ImageBuildError(f"building {tag} failed: {chunk['error']}\n" + "\n".join(tail))
    finally:
        client.close()
    return tag
