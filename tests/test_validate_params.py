"""Every params.yaml value is checked before any stage does work, with an error naming the key."""

from __future__ import annotations

import pytest
import yaml

from mdpo_pipeline.programs.pipeline import stages
from mdpo_pipeline.programs.pipeline.project import ConfigError, Project

REPO_PARAMS = yaml.safe_load((stages.Project.discover().params_path).read_text())


def _project(tmp_path, **changes) -> Project:
    params = yaml.safe_load(yaml.safe_dump(REPO_PARAMS))
    for dotted, value in changes.items():
        section, *rest = dotted.split("__")
        target = params.setdefault(section, {})
        for key in rest[:-1]:
            target = target.setdefault(key, {})
        target[rest[-1]] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return Project(tmp_path)


def test_the_checked_in_params_are_valid(tmp_path):
    stages.validate_params(_project(tmp_path))


@pytest.mark.parametrize(("change", "message"), [
    ({"raw_silkie__max_quarantine_share": "0.05"}, "raw_silkie.max_quarantine_share must be a number in \\[0, 1\\]"),
    ({"raw_silkie__max_quarantine_share": -1}, "max_quarantine_share must be a number in \\[0, 1\\], got -1"),
    ({"raw_silkie__max_quarantine_share": 5}, "got 5"),
    ({"shapeworld__image_size": 3}, "params.yaml:shapeworld"),
    ({"preference_pairs__n": "many"}, "params.yaml:preference_pairs"),
    ({"corrupted_images__strategy": "blur"}, "params.yaml:corrupted_images"),
    ({"base_model__preset": "bunny-v1.0-3b"}, "base_model.preset: unknown model preset 'bunny-v1.0-3b'"),
    ({"base_model__sft__steps": 0}, "params.yaml:base_model.sft"),
    ({"training__learning_rat": 1e-4}, "params.yaml:training \\(method dpo\\): unknown key"),
    ({"training__methods": {"mdpo": {"betta": 0.2}}}, "params.yaml:training \\(method mdpo\\): unknown key"),
    ({"training__methods": {"mdpoo": {}}}, "method must be one of"),
    ({"benchmark_scores__gate__primary": "chair_z"}, "unknown metric 'chair_z'"),
    ({"benchmark_scores__gate__coverage": "chair_s"}, "coverage must be a higher-is-better metric"),
    ({"benchmark_scores__benchmarks": ["amber", "mme"]}, "unknown benchmark 'mme'"),
    ({"benchmark_scores__amber__mode": "fast"}, "benchmark_scores.amber.mode='fast'"),
    ({"benchmark_scores__generation__batch_size": 0}, "benchmark_scores.generation"),
    ({"benchmark_scores__max_items": {"ambr": 3}}, "max_items has unknown benchmark"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        stages.validate_params(_project(tmp_path, **change))
