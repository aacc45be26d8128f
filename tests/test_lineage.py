"""dvc.yaml's code deps are derived from the import graph: every project module a stage runs is a dep, and
editing one makes `dvc status` report that stage (and only the stages that run it) as changed."""

from __future__ import annotations

import pytest

from mdpo_pipeline.integrations import lineage
from mdpo_pipeline.integrations.dvc import Dvc
from mdpo_pipeline.pipeline.project import Project
from tests.conftest import REPO, dvc_executable, make_project


def test_dvc_yaml_lists_exactly_the_derived_code_deps():
    assert lineage.check(REPO / "dvc.yaml") == {}, "run `python -m mdpo_pipeline.integrations.lineage --write`"


def test_derived_deps_cover_what_the_stages_run():
    deps = {stage: set(lineage.stage_code_deps(stage)) for stage in lineage._runner_names()}
    # Modules the hand-written list used to miss: the tower for base_model, the presets/loading for the reference
    # cache, the shared writers for every stage.
    assert {"mdpo_pipeline/shapeworld/vision.py", "mdpo_pipeline/shapeworld/tiny.py"} <= deps["base_model"]
    assert {"mdpo_pipeline/training/models.py", "mdpo_pipeline/training/chat.py"} <= deps["reference_logprobs"]
    assert all({"mdpo_pipeline/core/io.py", "mdpo_pipeline/pipeline/stages.py"} <= d for d in deps.values())
    # Parameter checks and other stages' code are not deps: they cannot change this stage's output.
    assert "mdpo_pipeline/shapeworld/sft.py" not in deps["reference_logprobs"]
    assert not any(d.startswith("mdpo_pipeline/evaluation/") for d in deps["shapeworld"])
    with pytest.raises(KeyError, match="unknown stage 'adapters'"):
        lineage.stage_modules("adapters")


def test_editing_a_module_a_stage_imports_changes_its_dvc_status(tmp_path, tiny_params):
    from mdpo_pipeline.pipeline.data import run_shapeworld

    root = make_project(tmp_path / "proj", tiny_params)
    project = Project(root)
    run_shapeworld(project)
    dvc = Dvc(root, dvc_executable())
    dvc.commit("shapeworld")
    assert "shapeworld" not in dvc.status("shapeworld")
    # sft.py is not run by shapeworld: editing it leaves the stage's lineage alone.
    with open(root / "mdpo_pipeline/shapeworld/sft.py", "a") as f:
        f.write("\n# an edit\n")
    assert "shapeworld" not in dvc.status("shapeworld")
    # core/io.py writes every file shapeworld makes (the hand-written deps named only core/shapeworld/).
    with open(root / "mdpo_pipeline/core/io.py", "a") as f:
        f.write("\n# an edit\n")
    changed = dvc.status("shapeworld")
    assert "shapeworld" in changed and "mdpo_pipeline/core/io.py" in str(changed["shapeworld"])
