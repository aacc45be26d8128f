"""Scores carry the base model they were computed on: the gate, the report and the registry compare only
models of the same base model and refuse a mismatch by name."""

from __future__ import annotations

import json

import pytest

from mdpo_pipeline.core.io import write_json
from mdpo_pipeline.pipeline.evaluate import adapter_dir, gate_partition, model_dir, scored_models
from mdpo_pipeline.pipeline.project import ConfigError, Project

SCORES = {"chair_s": 0.5, "recall": 0.7}


def _score(project: Project, key: str, preset: str | None, sha: str | None, chair_s: float = 0.5) -> None:
    record = {"model": key, "scores": SCORES | {"chair_s": chair_s}}
    if preset is not None:
        record["base_model"] = {"preset": preset, "weights_sha256": sha}
    write_json(record, model_dir(project, key) / "scores.json")


@pytest.fixture
def project(tmp_path) -> Project:
    (tmp_path / "params.yaml").write_text("benchmark_scores: {}\n")
    return Project(tmp_path)


def test_gate_refuses_scores_of_another_base_model_by_name(project):
    _score(project, "base", "shapeworld-tiny", "a" * 64)
    _score(project, "mdpo", "llava-1.5-7b", "b" * 64, chair_s=0.1)
    with pytest.raises(ConfigError) as err:
        gate_partition(project, "mdpo")
    msg = str(err.value)
    assert "base model llava-1.5-7b (weights bbbbbbbbbbbb)" in msg and "base model shapeworld-tiny (weights aaaa" in msg
    assert "rematerialize benchmark_scores[base]" in msg

    _score(project, "mdpo", "shapeworld-tiny", "c" * 64, chair_s=0.1)  # same preset, other weights (re-SFT'd base)
    with pytest.raises(ConfigError, match="weights cccccccccccc"):
        gate_partition(project, "mdpo")
    _score(project, "mdpo", None, None, chair_s=0.1)  # written before scores carried their base
    with pytest.raises(ConfigError, match="an unrecorded base model"):
        gate_partition(project, "mdpo")

    _score(project, "mdpo", "shapeworld-tiny", "a" * 64, chair_s=0.1)
    assert gate_partition(project, "mdpo").passed


def test_report_and_registry_leave_out_models_of_another_base(project):
    _score(project, "base", "shapeworld-tiny", "a" * 64)
    _score(project, "dpo", "shapeworld-tiny", "a" * 64)
    _score(project, "mdpo", "qwen2.5-vl-3b", "d" * 64)
    models, left_out = scored_models(project)
    assert list(models) == ["base", "dpo"]
    assert set(left_out) == {"mdpo"} and "qwen2.5-vl-3b" in left_out["mdpo"]


def test_adapter_trained_on_another_preset_is_not_scored(project):
    path = project.root / "artifacts/adapters/dpo"
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    (path / "run_config.json").write_text(json.dumps({"base_model": "llava-1.5-7b"}))
    assert adapter_dir(project, "dpo", "llava-1.5-7b") == path
    with pytest.raises(ConfigError, match=r"trained on base model 'llava-1.5-7b', the base model now is 'gemma-3-4b'"):
        adapter_dir(project, "dpo", "gemma-3-4b")


def test_scores_made_with_another_judge_or_mode_are_not_compared(project):
    _score(project, "base", "shapeworld-tiny", "a" * 64)
    _score(project, "mdpo", "shapeworld-tiny", "a" * 64, chair_s=0.1)
    for key, prompt in (("base", "official"), ("mdpo", "own")):
        path = model_dir(project, key) / "scores.json"
        record = json.loads(path.read_text())
        record["benchmarks"] = {"mmhal": {"identity": {"judge_model": "gpt-4-0613", "prompt": prompt}, "n": 96},
                                "pope": {"identity": {}, "n": 10}}
        write_json(record, path)
    with pytest.raises(ConfigError, match=r"mdpo's mmhal scores were made with .*'own'.*, the base's with .*'official'"):
        gate_partition(project, "mdpo")
    models, left_out = scored_models(project)
    assert list(models) == ["base"] and "mmhal" in left_out["mdpo"]
