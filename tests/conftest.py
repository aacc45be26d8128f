"""Shared fixtures: a throwaway project checkout (git + DVC) to run stages and assets in."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def dvc_executable() -> str:
    """The project's DVC (its own environment, made by `make dvc-env`)."""
    from mdpo_pipeline.dvc import find_dvc

    return find_dvc(REPO)


def make_project(dest: Path, params: dict) -> Path:
    """A minimal checkout at ``dest``: dvc.yaml, the package sources it names, params.yaml, git + DVC init."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "mdpo_pipeline", dest / "mdpo_pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = dvc_executable()
    run = lambda *a: subprocess.run(a, cwd=dest, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    run(dvc, "init", "-q")
    run(dvc, "config", "core.analytics", "false")
    run(dvc, "remote", "add", "-d", "local", str(dest / ".dvc-storage"))
    return dest


#: Small enough for seconds, large enough that every source, kind and failure mode occurs.
TINY_PARAMS = {
    "shapeworld": {"seed": 0, "n_instructions": 240, "image_size": 32},
    "raw_silkie": {"format": "vlfeedback", "path": "data/shapeworld/vlfeedback", "max_quarantine_share": 0.05},
    "preference_pairs": {"strategy": "one_per_instruction", "sources": ["llava"], "n": 40, "seed": 0},
    "corrupted_images": {"strategy": "crop_1_20", "seed": 0, "workers": 2},
}


@pytest.fixture
def tiny_params() -> dict:
    """A fresh copy of TINY_PARAMS to modify."""
    return yaml.safe_load(yaml.safe_dump(TINY_PARAMS))
