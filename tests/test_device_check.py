"""The prepared GPU check runs here at toy size, so it cannot rot before a GPU session runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_device_check_runs_every_phase_and_writes_its_table(tmp_path):
    out = tmp_path / "check"
    run = subprocess.run(["bash", "benchmarks/device_check.sh", "--device", "cpu", "--size", "tiny", "--out", str(out),
                          "--python", sys.executable, "--wheels", str(tmp_path / "no-wheels"), "--time-limit", "520"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    report = json.loads((out / "device_check.json").read_text())
    assert report["phases_rc"] == {"train_padded": 0, "train_packed": 0, "generate": 0, "user_path": 0}
    train = {(r["variant"], r["packed_rows"]) for r in report["train"]}
    assert ("mDPO, cached ref", True) in train and ("mDPO, cached ref", False) in train
    assert ("paper 4-call loop", False) in train and all(r["s_per_step"] > 0 for r in report["train"])
    assert report["generate"]["answers_per_s"] > 0
    assert set(report["user_path"]["timings_s"]) >= {"base_model_s", "reference_logprobs_s", "train_s", "score_s"}
    assert "chair_s" in report["user_path"]["scores"] and "device check on cpu (tiny)" in run.stdout
