"""The DVC client against the real DVC CLI in a throwaway repo."""

import subprocess

import pytest
import yaml

from mdpo_pipeline.integrations.dvc import Dvc, DvcError, find_dvc
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


def test_raw_data_version_from_a_dvc_file_or_the_lock_output_that_contains_it(tmp_path):
    from mdpo_pipeline.integrations.dvc import raw_data_version

    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  shapeworld:\n    cmd: x\n    outs:\n    - path: data/shapeworld\n      md5: abc.dir\n"
    )
    assert raw_data_version(tmp_path, "data/shapeworld/vlfeedback") == "abc.dir"
    assert raw_data_version(tmp_path, "data/elsewhere") is None
    (tmp_path / "data").mkdir()
    (tmp_path / "data/vlfeedback.dvc").write_text("outs:\n- md5: def.dir\n  path: vlfeedback\n")
    assert raw_data_version(tmp_path, "data/vlfeedback") == "def.dir"
    assert raw_data_version(tmp_path, "data/vlfeedback/part") == "def.dir"
