"""The disk fills while a stage writes: no partial output becomes visible, the error names the path, and the next
run, with space again, succeeds. "Full" is a file-size limit on the stage's process (RLIMIT_FSIZE): its writes then
fail as they do on a full disk (EFBIG instead of ENOSPC, through the same code), with no root and no real disk."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import project_from_base

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _full_disk(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _stage(root: Path, stage: str, limit: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MDPO_PROJECT_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "mdpo_pipeline.cli", "data", stage], cwd=root, env=env, text=True,
                          capture_output=True, preexec_fn=None if limit is None else _full_disk(limit), timeout=600)


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("stage", ["corrupted_images"])  # images, parquet and a preview: every writer of a stage
def test_a_stage_that_runs_out_of_space_leaves_nothing_half_written_and_reruns(shapeworld_base, tmp_path, stage):
    root = project_from_base(shapeworld_base, tmp_path / "proj")
    before = sorted(p.relative_to(root / "data" / stage).as_posix() for p in (root / "data" / stage).rglob("*"))
    shutil.rmtree(root / "data" / stage)
    others = _visible(root / "data")

    full = _stage(root, stage, limit=16_000)
    assert full.returncode != 0
    message = full.stderr.strip().splitlines()[-1]
    assert str(root / "data") in message and ("File too large" in message or "No space" in message), full.stderr[-2000:]
    assert "Traceback" not in full.stderr, "one message, not a traceback"
    assert _visible(root / "data") == others, "no partial output (nor a temporary one) is left in data/"

    again = _stage(root, stage)
    assert again.returncode == 0, again.stderr[-2000:]
    after = sorted(p.relative_to(root / "data" / stage).as_posix() for p in (root / "data" / stage).rglob("*"))
    assert after == before
