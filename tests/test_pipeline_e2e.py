"""The data assets materialized for real (in-process Dagster, real DVC CLI) on a tiny ShapeWorld."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from mdpo_pipeline.defs.assets.data import data_assets
from mdpo_pipeline.defs.checks import data_checks
from mdpo_pipeline.defs.resources import DvcResource, ProjectResource
from mdpo_pipeline.integrations.dvc import Dvc
from tests.conftest import dvc_executable, make_project

pytestmark = pytest.mark.slow

STAGES = ["shapeworld", "raw_silkie", "preference_pairs", "corrupted_images"]


def _materialize(root: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*data_assets, *data_checks],
        resources={"project": ProjectResource(root=str(root)), "dvc": DvcResource(executable=dvc_executable())},
        raise_on_error=False,
    )


def _files(root: Path) -> dict[str, bytes]:
    data = root / "data"
    return {p.relative_to(data).as_posix(): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path, tiny_params, monkeypatch):
    root = make_project(tmp_path / "proj", tiny_params)
    # The CLI run by `dvc repro` finds the project through this variable.
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    return root


def test_data_assets_materialize_version_and_rerun_identically(project):
    result = _materialize(project)
    assert result.success
    for stage in STAGES:
        mats = result.asset_materializations_for_node(stage)
        assert mats, stage
        meta = mats[-1].metadata
        assert meta["dvc_md5"].value.endswith(".dir"), stage
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "quarantine_share_below_threshold": True,
        "pairs_are_usable": True,
        "every_pair_has_its_corrupted_image": True,
    }
    raw_meta = result.asset_materializations_for_node("raw_silkie")[-1].metadata
    assert raw_meta["n_kept"].value + raw_meta["n_quarantined"].value == raw_meta["n_read"].value
    assert "data:image/png;base64," in result.asset_materializations_for_node("corrupted_images")[-1].metadata[
        "preview"
    ].value

    pairs = pq.read_table(project / "data/preference_pairs/pairs.parquet").to_pylist()
    assert len(pairs) == 40 and {p["source"] for p in pairs} == {"llava"}
    manifest = pq.read_table(project / "data/corrupted_images/manifest.parquet").to_pylist()
    assert {m["sample_id"] for m in manifest} == {p["instruction_id"] for p in pairs}

    dvc = Dvc(project, dvc_executable())
    assert dvc.status(*STAGES) == {}, "dvc status must be clean after a Dagster run"
    hashes = {s: dvc.out_hashes(s) for s in STAGES}

    # Determinism: a second run from scratch, through the other path (`dvc repro` runs the same stage code through
    # the CLI, forced to execute every stage), writes byte-identical files and so the same DVC versions.
    first = _files(project)
    for stage in STAGES:
        subprocess.run(["rm", "-rf", str(project / "data" / stage)], check=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(
        [dvc_executable(), "repro", "--force", "--no-run-cache", STAGES[-1]],
        cwd=project, env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert _files(project) == first
    assert {s: dvc.out_hashes(s) for s in STAGES} == hashes
    assert dvc.status(*STAGES) == {}


def test_quarantine_gate_blocks_downstream(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["shapeworld"]["bad_rating_share"] = 0.5
    params["raw_silkie"]["max_quarantine_share"] = 0.0
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    result = _materialize(project)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    gate = evaluations["quarantine_share_below_threshold"]
    assert not gate.passed
    assert gate.metadata["quarantined_share"].value > 0
    # The blocking check stopped the chain: nothing downstream of raw_silkie was written.
    assert not result.asset_materializations_for_node("preference_pairs")
    assert not (project / "data/preference_pairs").exists()
