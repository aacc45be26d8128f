"""Shared fixtures: a throwaway project checkout (git + DVC) to run stages and assets in."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mdpo_pipeline import use_private_defaults
from tests import conformance

REPO = Path(__file__).resolve().parent.parent
# The suite is an entry point like the CLI: offline and private, set before anything imports a hub client.
use_private_defaults()


def pytest_configure(config):
    config.addinivalue_line("markers", f"{conformance.MARKER}(*paths): needs the conformance fixtures at these paths "
                                       "(tests/conformance.py): skips without them, fails under CI")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before any fixture: a test marked ``conformance(*paths)`` skips (fails under CI) when a path is missing."""
    for mark in item.iter_markers(name=conformance.MARKER):
        conformance.require(*mark.args)


# Under pytest-xdist every worker gets its share of the cores (set before torch is imported), so that two workers
# on two cores do not each start two compute threads.
if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))


def dvc_executable() -> str:
    """The project's DVC (its own environment, made by `make dvc-env`)."""
    from mdpo_pipeline.integrations.dvc import find_dvc

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
    "shapeworld": {"seed": 0, "n_instructions": 240, "image_size": 32, "bad_rating_share": 0.0},
    "raw_silkie": {"format": "vlfeedback", "path": "data/shapeworld/vlfeedback", "max_quarantine_share": 0.05},
    "preference_pairs": {"strategy": "one_per_instruction", "sources": ["llava"], "n": 40, "seed": 0},
    "corrupted_images": {"strategy": "crop_1_20", "seed": 0, "workers": 2},
}


@pytest.fixture
def tiny_params() -> dict:
    """A fresh copy of TINY_PARAMS to modify."""
    return yaml.safe_load(yaml.safe_dump(TINY_PARAMS))


#: The ShapeWorld base every model end-to-end test starts from: the tiny world, a short SFT, the reference cache.
BASE_PARAMS = {
    **TINY_PARAMS,
    "base_model": {"preset": "shapeworld-tiny",
                   "sft": {"steps": 20, "batch_size": 8, "eval_images": 4, "vision_pretrain_steps": 10}},
    "reference_logprobs": {"batch_size": 8},
}
#: The stages the shared base holds (materialized with their asset checks).
BASE_SELECTION = "group:data or key:base_model or key:reference_logprobs"


@pytest.fixture(scope="session")
def shapeworld_base(tmp_path_factory) -> Path:
    """A checkout whose data, base_model and reference_logprobs were materialized through Dagster once per session
    (once for all xdist workers): building the base is most of an end-to-end test's time and the same every time."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the workers' common folder
    root = shared / "shapeworld-base"
    with FileLock(str(shared / "shapeworld-base.lock")):
        if not (root / ".built").is_file():
            _build_base(root)
    return root


def _build_base(root: Path) -> None:
    import dagster as dg

    from mdpo_pipeline.defs.assets.data import data_assets
    from mdpo_pipeline.defs.assets.training import training_assets
    from mdpo_pipeline.defs.checks import data_checks

    if root.exists():
        shutil.rmtree(root)  # a half-built base from an interrupted session
    make_project(root, BASE_PARAMS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MDPO_PROJECT_ROOT", str(root))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = dg.materialize([*data_assets, *data_checks, *training_assets], selection=BASE_SELECTION,
                                resources=pipeline_resources(root))
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    (root / ".built").touch()


#: The stages after the data whose outputs depend on the base model: ``project_from_base(..., model=...)`` drops
#: them, and the test materializes them for its own model.
MODEL_STAGES = ("base_model", "reference_logprobs")


def project_from_base(base: Path, dest: Path, *, model: dict | None = None, **sections) -> Path:
    """A copy of the shared base checkout at ``dest`` with params.yaml's ``sections`` (training, benchmark_scores)
    set; the base's own sections cannot change, or the copied data would not be what params.yaml says.

    ``model``: the ``base_model`` and ``reference_logprobs`` sections of another model; the copy keeps only the
    base's data stages (which read no model setting) and the test materializes ``MODEL_STAGES`` itself."""
    clash = sorted(set(sections) & set(BASE_PARAMS))
    assert not clash, f"sections {clash} are the shared base's: build another project for them"
    if model is not None:
        assert set(model) <= set(MODEL_STAGES), f"model sections are {MODEL_STAGES}, got {sorted(model)}"
        sections = sections | {"base_model": {}, "reference_logprobs": {}} | model
    ignored = [".built", "mlflow.db", "mlartifacts", *(MODEL_STAGES if model is not None else ())]
    shutil.copytree(base, dest, symlinks=True, ignore=lambda folder, names: [
        n for n in names if n in ignored and (n not in MODEL_STAGES or Path(folder) == base / "data")])
    params = yaml.safe_load((dest / "params.yaml").read_text()) | sections
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # Each copy pushes to its own DVC remote.
    subprocess.run([dvc_executable(), "remote", "modify", "local", "url", str(dest / ".dvc-storage")], cwd=dest,
                   check=True, capture_output=True)
    return dest


_COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "white", "cyan")
_SHAPES = ("circle", "square", "triangle", "diamond")


def write_tiny_training_data(root: Path, n_pairs: int, image_size: int) -> dict[str, Path]:
    """Tiny training inputs written by the pipeline's own writers: images, pairs, corrupted images."""
    from PIL import Image, ImageDraw

    from mdpo_pipeline.core.corruption import CorruptionConfig, corrupt_images
    from mdpo_pipeline.core.pairs import PairsResult, write_pairs
    from mdpo_pipeline.core.schemas import PreferencePair

    image_root = root / "images"
    (image_root / "merged_images").mkdir(parents=True)
    pairs = []
    for i in range(n_pairs):
        iid = f"sw-{i:06d}"
        colour, other, shape = _COLOURS[i % 8], _COLOURS[(i + 1) % 8], _SHAPES[i % 4]
        image = Image.new("RGB", (image_size, image_size), "white")
        ImageDraw.Draw(image).ellipse((4 + i % 8, 4, 24 + i % 8, 24), fill=colour)
        image.save(image_root / "merged_images" / f"{iid}.jpg")
        pairs.append(
            PreferencePair(
                pair_id=f"{iid}:0-1", instruction_id=iid, source="llava", prompt="What is shown in the image?",
                image=f"merged_images/{iid}.jpg", chosen=f"There is a {colour} {shape} in the image.",
                rejected=f"There is a {other} {shape} and a {other} square in the image.",
                chosen_model="a", rejected_model="b", chosen_score=5.0, rejected_score=2.0,
            )
        )
    write_pairs(PairsResult(pairs=pairs), root / "preference_pairs")
    corrupt_images([(p.instruction_id, p.image) for p in pairs], image_root, root / "corrupted_images",
                   CorruptionConfig(workers=1))
    return {"pairs": root / "preference_pairs", "images": image_root, "corrupted": root / "corrupted_images"}


def pipeline_resources(root: Path, launcher=None) -> dict:
    """The Definitions' resources pointed at a throwaway checkout (local launcher with one thread by default)."""
    from mdpo_pipeline.defs.resources import (
        DvcResource,
        JudgeResource,
        MlflowResource,
        ProjectResource,
        TrainingLauncher,
    )

    return {
        "project": ProjectResource(root=str(root)),
        "dvc": DvcResource(executable=dvc_executable()),
        "mlflow": MlflowResource(),
        "launcher": launcher or TrainingLauncher(threads=1),
        "judge": JudgeResource(),
    }


def fake_adapter(tmp_path: Path) -> Path:
    """A directory shaped like a PEFT adapter (for logging/registry tests that never load it)."""
    import json

    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (d / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    return d


def stop_process_group(proc, sig) -> None:
    """Stop a server started in its own process group: ``sig`` first, SIGKILL after 30 s."""
    import os
    import signal

    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def pytest_collection_modifyitems(config, items):
    """Longest first: the Docker test, then the other end-to-end tests, then the rest. Under pytest-xdist the long
    tests then start at once on every worker and the short ones fill the gaps, instead of one long test at the end."""
    rank = {"docker": 0, "slow": 1}
    items.sort(key=lambda item: min((rank[m.name] for m in item.iter_markers() if m.name in rank), default=2))
