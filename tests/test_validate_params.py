"""Every params.yaml value is checked before any stage does work, with an error naming the key."""

from __future__ import annotations

import pytest
import yaml

from mdpo_pipeline.pipeline.project import ConfigError, Project
from mdpo_pipeline.pipeline.validate import validate_params

REPO_PARAMS = yaml.safe_load((Project.discover().params_path).read_text())


def _project(tmp_path, **changes) -> Project:
    params = yaml.safe_load(yaml.safe_dump(REPO_PARAMS))
    for dotted, value in changes.items():
        section, *rest = dotted.split("__")
        if not rest:
            params[section] = value
            continue
        target = params.setdefault(section, {})
        for key in rest[:-1]:
            target = target.setdefault(key, {})
        target[rest[-1]] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return Project(tmp_path)


def test_the_checked_in_params_are_valid(tmp_path):
    validate_params(_project(tmp_path))


@pytest.mark.parametrize(("change", "message"), [
    ({"raw_silkie__max_quarantine_share": "0.05"},
     r"^params.yaml:raw_silkie.max_quarantine_share: must be a number in \[0, 1\], got '0.05'$"),
    ({"raw_silkie__max_quarantine_share": -1},
     r"^params.yaml:raw_silkie.max_quarantine_share: must be a number in \[0, 1\], got -1$"),
    ({"raw_silkie__max_quarantine_share": 5}, r"raw_silkie.max_quarantine_share: .* got 5$"),
    ({"raw_silkie__max_quarantine_share": True}, r"raw_silkie.max_quarantine_share: .* got True$"),
    ({"raw_silkie__image_check": "all"}, "params.yaml:raw_silkie: IngestConfig.image_check must be in"),
    ({"raw_silkie__pth": "x"}, r"params.yaml:raw_silkie.pth: unknown key \(did you mean path\?\)"),
    ({"shapeworld__image_size": 3}, "params.yaml:shapeworld: image_size"),
    ({"shapeworld__n_instructions": "6400"}, "params.yaml:shapeworld.n_instructions: must be an integer, got '6400'"),
    ({"preference_pairs__n": "many"}, "params.yaml:preference_pairs.n: must be an integer, got 'many'"),
    ({"preference_pairs__sources": "llava"}, "params.yaml:preference_pairs.sources: must be a list of strings"),
    ({"corrupted_images__strategy": "blur"}, "params.yaml:corrupted_images: strategy must be one of"),
    ({"base_model__preset": "bunny-v1.0-3b"}, "base_model.preset: unknown model preset 'bunny-v1.0-3b'"),
    ({"base_model__allow_remote_code": "yes"}, "base_model.allow_remote_code: must be true or false, got 'yes'"),
    ({"base_model__sft__steps": 0}, r"params.yaml:base_model.sft.steps: must be an integer >= 1, got 0"),
    ({"base_model__sft__detail": True}, r"params.yaml:base_model.sft.detail: unknown key \(did you mean detailed\?\)"),
    ({"reference_logprobs__batch_size": 0}, r"params.yaml:reference_logprobs.batch_size: must be an integer >= 1"),
    ({"reference_logprobs__max_length": 0}, r"params.yaml:reference_logprobs.max_length: must be an integer >= 1 or null"),
    ({"training__max_length": 128}, "params.yaml:training.max_length: max_length is one setting, reference_logprobs"),
    ({"training__methods": {"mdpo": {"max_length": 128}}}, "training.methods.mdpo.max_length: max_length is one setting"),
    ({"training__epochs": 1}, "params.yaml:training.epochs: moved to training.num_train_epochs"),
    ({"training__output_dir": "x"}, r"params.yaml:training.output_dir: set by the pipeline"),
    ({"training__learning_rat": 1e-4},
     r"params.yaml:training.learning_rat: unknown key \(method \w+\): .*did you mean learning_rate\?"),
    ({"training__learning_rate": "1e-4"},
     r"params.yaml:training.learning_rate: must be a number, got '1e-4' \(YAML reads 1e-4 as text: write 1.0e-4\)"),
    ({"training__methods": {"mdpo": {"betta": 0.2}}}, r"params.yaml:training.methods.mdpo.betta: unknown key \(method mdpo\)"),
    ({"training__methods": {"mdpo": {"delta": "0.1"}}}, "params.yaml:training.methods.mdpo.delta: must be a number"),
    ({"training__methods": {"dpo": {"beta": -1.0}}}, r"params.yaml:training \(method dpo\): beta must be a positive"),
    ({"training__methods": {"mdpo": {"anchor_weight": -0.5}}},
     r"params.yaml:training \(method mdpo\): anchor_weight must be None or a finite number >= 0"),
    ({"training__methods": {"mdpoo": {}}}, "params.yaml:training.methods.mdpoo: unknown method: method must be one of"),
    ({"training__lora_r": 0}, r"params.yaml:training \(method \w+\): lora_r must be null or an integer >= 1"),
    ({"trainig": {}}, r"params.yaml:trainig: unknown section \(did you mean training\?\)"),
    ({"benchmark_scores__gate__primary": "chair_z"}, "params.yaml:benchmark_scores.gate: unknown metric 'chair_z'"),
    ({"benchmark_scores__gate__coverage": "chair_s"}, "coverage must be a higher-is-better metric"),
    ({"benchmark_scores__gate__max_coverage_drop": "5%"},
     "params.yaml:benchmark_scores.gate.max_coverage_drop: must be a number, got '5%'"),
    ({"benchmark_scores__benchmarks": ["amber", "mme"]},
     r"params.yaml:benchmark_scores.benchmarks: must be a list of \[.*\], got \['amber', 'mme'\]"),
    ({"benchmark_scores__amber__mode": "fast"},
     r"params.yaml:benchmark_scores.amber.mode: must be one of \['offline', 'official'\], got 'fast'"),
    ({"benchmark_scores__generation__batch_size": 0}, "params.yaml:benchmark_scores.generation: batch_size"),
    ({"benchmark_scores__max_items": {"ambr": 3}}, r"params.yaml:benchmark_scores.max_items: must be a mapping of"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        validate_params(_project(tmp_path, **change))
