"""The DVC client against the real DVC CLI in a throwaway repo."""

import subprocess

import pytest
import yaml

from mdpo_pipeline.dvc import Dvc, DvcError, find_dvc
from tests.conftest import dvc_executable


def _repo(tmp_path):
    dvc = dvc_executable()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([dvc, "remote", "add", "-d", "local", str(tmp_path / "remote")], cwd=tmp_path, check=True)
    (tmp_path / "src.txt").write_text("input\n")
    stage = {"stages": {"make": {"cmd": "cp src.txt out/a.txt", "deps": ["src.txt"], "outs": ["out"]}}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(stage))
    return Dvc(tmp_path, dvc)


def test_commit_records_hash_and_status_turns_clean(tmp_path):
    dvc = _repo(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("input\n")
    assert dvc.status()  # not yet committed: DVC reports the stage as changed
    hashes = dvc.commit("make")
    assert list(hashes) == ["out"] and hashes["out"].endswith(".dir")
    assert dvc.status() == {}
    dvc.push("make")
    assert any((tmp_path / "remote").rglob("*"))
    # Changed output ⇒ a different content hash for the same stage.
    (tmp_path / "out" / "a.txt").write_text("changed\n")
    assert dvc.commit("make")["out"] != hashes["out"]


def test_errors_are_explained(tmp_path, monkeypatch):
    dvc = _repo(tmp_path)
    with pytest.raises(DvcError, match="was never committed"):
        dvc.out_hashes("make")
    with pytest.raises(DvcError, match=r"`dvc commit --force --quiet nope` failed"):
        dvc.commit("nope")
    monkeypatch.delenv("MDPO_DVC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DvcError, match="make dvc-env"):
        find_dvc(tmp_path)
