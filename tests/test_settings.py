"""params.yaml as one typed settings model (pipeline/settings.py): read once, every field with a help,
types and ranges checked naming the key, one place per default, and training parsed into each method's MDPOConfig
(the preset's defaults where params.yaml is silent)."""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import yaml

from mdpo_pipeline.pipeline.train import training_run_config
from mdpo_pipeline.pipeline.validate import validate_params
from mdpo_pipeline.pipeline.project import ConfigError, Project
from mdpo_pipeline.core.eval.common import Mode
from mdpo_pipeline.core.typed import field_docs
from mdpo_pipeline.core.eval.settings import BENCHMARK_NAMES, PopeSplit
from mdpo_pipeline.pipeline.settings import Settings, load_settings, parse_settings, read_params
from mdpo_pipeline.shapeworld.sft_settings import SFTSettings
from tests.conftest import REPO

REPO_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def _params(**sections) -> dict:
    return yaml.safe_load(yaml.safe_dump(REPO_PARAMS)) | sections


def _write(root: Path, params: dict) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return Project(root)


def _training(settings, method: str, preset: str = "shapeworld-tiny"):
    """(TrainRunConfig, MDPOConfig) of ``method`` as train_run_config builds them, stage outputs stubbed."""
    from mdpo_pipeline.training.presets import get_preset

    fixed = {"method": method, "output_dir": f"out/{method}", "pairs_dir": "p", "image_root": "i",
             "corrupted_dir": "c", "base_model": preset,
             "max_length": settings.reference_logprobs.resolved_max_length(get_preset(preset))}
    cfg = training_run_config(settings, method, fixed)
    return cfg, cfg.parse(cuda=False)[1]


# --- the model --------------------------------------------------------------------------------------


def test_every_field_of_every_section_has_a_one_line_help():
    from mdpo_pipeline.training.config import MDPOConfig
    from mdpo_pipeline.training.run import RunArguments

    rows = field_docs(Settings)
    keys = {key for key, *_ in rows}
    assert {"params.yaml:raw_silkie.max_quarantine_share", "params.yaml:raw_silkie.path",
            "params.yaml:shapeworld.n_instructions", "params.yaml:base_model.sft.steps",
            "params.yaml:benchmark_scores.gate.primary", "params.yaml:benchmark_scores.generation.batch_size",
            "params.yaml:benchmark_scores.pope.splits", "params.yaml:reference_logprobs.max_length"} <= keys
    for section in (f.name for f in fields(Settings)):
        assert any(k.startswith(f"params.yaml:{section}") for k in keys), section
    rows += field_docs(RunArguments, "params.yaml:training") + field_docs(MDPOConfig, "params.yaml:training")
    missing = [key for key, _, _, text in rows if not text.strip()]
    assert not missing, f"fields without help: {missing}"
    assert all("\n" not in text for *_, text in rows)


def test_the_benchmark_names_and_modes_are_the_evaluations():
    from mdpo_pipeline.core.eval.pope import SPLITS
    from mdpo_pipeline.core.eval.common import MODES
    from mdpo_pipeline.evaluation.benchmarks import BENCHMARKS

    assert BENCHMARK_NAMES == tuple(BENCHMARKS)
    assert typing.get_args(Mode) == MODES and typing.get_args(PopeSplit) == SPLITS


def test_the_checked_in_params_resolve_to_the_demos_values():
    s = load_settings(Project(REPO))
    assert s.shapeworld.n_instructions == 6400 and s.shapeworld.bad_rating_share == 0.02
    assert s.raw_silkie.max_quarantine_share == 0.05 and str(s.raw_silkie.reader.path) == "data/shapeworld/vlfeedback"
    assert (s.preference_pairs.n, s.preference_pairs.sources) == (1500, ("llava",))
    assert (s.base_model.sft.steps, s.base_model.sft.vision_pretrain_steps, s.base_model.sft.detailed) == (800, 1500, True)
    assert s.reference_logprobs.batch_size == 32
    assert asdict(s.benchmark_scores.generation) == {"batch_size": 64, "max_new_tokens": 96}  # typed now


def test_sft_defaults_are_the_ones_params_yaml_states():
    """One default per setting: params.yaml's base_model.sft keys restate SFTSettings' defaults, none differs."""
    stated = REPO_PARAMS["base_model"]["sft"]
    assert {k: getattr(SFTSettings(), k) for k in stated} == stated


# --- errors name the key ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0.05", -1, 5])
def test_max_quarantine_share_is_a_number_in_0_1(value):
    with pytest.raises(ConfigError) as e:
        parse_settings(_params(raw_silkie={**REPO_PARAMS["raw_silkie"], "max_quarantine_share": value}))
    assert str(e.value) == f"params.yaml:raw_silkie.max_quarantine_share: must be a number in [0, 1], got {value!r}"


def test_the_quarantine_gate_reads_the_typed_value(tmp_path):
    """The blocking check and the stage read the same typed setting (a string never reaches the comparison)."""
    from mdpo_pipeline.pipeline import quality

    project = _write(tmp_path, _params(raw_silkie={**REPO_PARAMS["raw_silkie"], "max_quarantine_share": 0.0}))
    passed, _ = quality.quarantine_gate({"n_read": 10, "n_quarantined": 1, "n_kept": 9},
                                        load_settings(project).raw_silkie.max_quarantine_share)
    assert not passed


@pytest.mark.parametrize(("params", "message"), [
    ({"shapeworld": {"n_instruction": 10}},
     r"^params.yaml:shapeworld.n_instruction: unknown key \(did you mean n_instructions\?\); known: \["),
    ({"base_model": {"sft": {"stepz": 10}}}, r"^params.yaml:base_model.sft.stepz: unknown key \(did you mean steps\?\)"),
    ({"benchmark_scores": {"pope": {"split": ["random"]}}}, r"^params.yaml:benchmark_scores.pope.split: unknown key"),
    ({"raw_silkie": {"path": "x", "quarantine": 0.1}}, r"^params.yaml:raw_silkie.quarantine: unknown key"),
    ({"evaluation": {}}, r"^params.yaml:evaluation: unknown section"),
    ({"shapeworld": [1, 2]}, r"^params.yaml:shapeworld: must be a mapping"),
])
def test_an_unknown_key_fails_naming_section_and_key(params, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings(params)


def test_an_unknown_training_key_fails_naming_method_and_key():
    s = parse_settings({"training": {"methods": {"mdpo": {"anchor_wieght": 0.5}}}})
    _training(s, "dpo")  # other methods do not see mdpo's overrides
    with pytest.raises(ConfigError, match=r"params.yaml:training.methods.mdpo.anchor_wieght: unknown key \(method "
                                          r"mdpo\).*did you mean anchor_weight\?"):
        _training(s, "mdpo")


def test_params_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        read_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        read_params(bad)
    bad.write_text("a: [\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        read_params(bad)


def test_params_yaml_is_read_once_per_load(tmp_path, monkeypatch):
    from mdpo_pipeline.pipeline import settings

    project = _write(tmp_path, _params())
    reads = []
    original = settings.read_yaml

    def counting(path, *a, **kw):
        if Path(path).name == "params.yaml":
            reads.append(path)
        return original(path, *a, **kw)

    monkeypatch.setattr(settings, "read_yaml", counting)
    load_settings(project)
    assert len(reads) == 1
    reads.clear()
    validate_params(project)  # every section, every method's MDPOConfig, the gate: one read
    assert len(reads) == 1


def test_load_settings_is_the_only_reader_of_params_yaml():
    """One reader, and it reads through the one YAML loader with limits (core/yamlfile.py)."""
    package = REPO / "mdpo_pipeline"
    readers = {p.relative_to(REPO).as_posix() for p in package.rglob("*.py")
               if any(call in (text := p.read_text()) for call in ("safe_load", "yaml.load", "read_yaml("))
               and any(name in text for name in ("PARAMS_FILE", "params_path", '"params.yaml"'))}
    assert readers == {"mdpo_pipeline/pipeline/settings.py"}
    assert "read_yaml(" in (package / "pipeline" / "settings.py").read_text()


# --- training: MDPOConfig per method ----------------------------------------------------------------


def test_loss_weights_and_delta_per_method_reach_that_methods_mdpo_config():
    s = parse_settings({"training": {"learning_rate": 1.0e-4, "methods": {
        "mdpo": {"conditional_weight": 0.5, "anchor_weight": 0.25, "anchor_rejected_weight": 0.125,
                 "anchor_corrupted_weight": 0.75, "delta": 0.3},
        "dpo": {"beta": 0.2, "learning_rate": 2.0e-4}}}})
    _, mdpo = _training(s, "mdpo")
    w = mdpo.mdpo_weights
    assert (w.conditional, w.anchor, w.anchor_rejected, w.anchor_corrupted) == (0.5, 0.25, 0.125, 0.75)
    assert (mdpo.delta, mdpo.beta, mdpo.learning_rate) == (0.3, 0.1, 1.0e-4)
    _, dpo = _training(s, "dpo")
    assert (dpo.delta, dpo.beta, dpo.learning_rate) == (0.0, 0.2, 2.0e-4)
    assert (dpo.mdpo_weights.conditional, dpo.mdpo_weights.anchor) == (0.0, 0.0)
    _, ablation = _training(s, "mdpo_no_anchor")
    assert (ablation.delta, ablation.conditional_weight, ablation.learning_rate) == (0.0, None, 1.0e-4)


def test_any_mdpo_config_field_is_settable_and_a_null_is_not_set():
    s = parse_settings({"training": {"gradient_accumulation_steps": 2, "max_steps": 7, "logging_steps": 3,
                                     "save_steps": 4, "seed": 5, "per_device_train_batch_size": 8,
                                     "num_train_epochs": 2, "lr_scheduler_type": "linear",
                                     "methods": {"dpo": {"seed": None}}}})
    _, args = _training(s, "mdpo")
    assert (args.gradient_accumulation_steps, args.max_steps, args.logging_steps, args.save_steps, args.seed,
            args.data_seed, args.per_device_train_batch_size, args.num_train_epochs) == (2, 7, 3, 4, 5, 5, 8, 2)
    assert args.lr_scheduler_type.value == "linear"
    _, dpo = _training(s, "dpo")
    assert dpo.seed == dpo.data_seed == 0  # methods.dpo.seed: null → the pipeline's default, not the common 5


def test_preset_defaults_apply_where_params_are_silent():
    s = parse_settings({"training": {"methods": {"dpo": {"learning_rate": 1.0e-4}}}})
    _, mdpo = _training(s, "mdpo")
    assert (mdpo.learning_rate, mdpo.per_device_train_batch_size, mdpo.gradient_accumulation_steps,
            mdpo.num_train_epochs, mdpo.max_length) == (5e-4, 16, 1, 1, 256)
    assert (mdpo.seed, mdpo.logging_steps, mdpo.save_steps, mdpo.report_to) == (0, 5, 50, [])
    _, dpo = _training(s, "dpo")
    assert (dpo.learning_rate, dpo.per_device_train_batch_size) == (1e-4, 16)
    _, real = _training(s, "mdpo", preset="llava-1.5-7b")  # the paper's: batch 32 = 4 x 8, lr 1e-5, 3 epochs
    assert (real.learning_rate, real.per_device_train_batch_size, real.gradient_accumulation_steps,
            real.num_train_epochs, real.max_length, real.bf16) == (1e-5, 4, 8, 3, 2048, False)


def test_the_run_config_is_flat_json_with_the_keys_the_launchers_read(tmp_path):
    from mdpo_pipeline.training.run import TrainRunConfig

    cfg, _ = _training(parse_settings({"training": {"threads": 2, "lora_r": 4}}), "mdpo")
    data = json.loads(json.dumps(cfg))
    assert {"output_dir", "method", "threads", "pairs_dir", "image_root", "corrupted_dir", "max_length"} <= set(data)
    assert all(not isinstance(v, dict) for v in data.values())
    assert (cfg.output_dir, cfg.threads, cfg.resume, cfg.checkpoint_dir) == ("out/mdpo", 2, True,
                                                                              Path("out/mdpo.checkpoints"))
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    assert TrainRunConfig.from_json(path) == cfg
    resolved = cfg.resolved(cuda=False)
    assert {"base_model", "base_model_path", "allow_remote_code"} <= set(resolved) and resolved["lora_r"] == 4
    assert resolved["learning_rate"] == 5e-4 and resolved["output_dir"] == "out/mdpo"
    path.write_text(json.dumps(data | {"per_device_batch_size": 4}))
    with pytest.raises(ValueError, match=r"unknown run config key\(s\) \['per_device_batch_size'\]"):
        TrainRunConfig.from_json(path)


def test_mdpo_params_prints_the_resolved_settings_and_the_fields_help(tmp_path, monkeypatch, capsys):
    from mdpo_pipeline.cli import main

    project = _write(tmp_path, _params(training={"seed": 0, "methods": {"mdpo": {"delta": 0.25}}}))
    (project.root / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(project.root))
    assert main(["params", "--method", "mdpo"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    mdpo = printed["training"]["methods"]["mdpo"]
    assert (mdpo["delta"], mdpo["learning_rate"], mdpo["max_length"]) == (0.25, 5e-4, 256)
    assert printed["reference_logprobs"]["max_length"] == 256
    assert printed["raw_silkie"]["max_quarantine_share"] == 0.05 and printed["benchmark_scores"]["gate"]["primary"]
    assert main(["params", "--help-fields"]) == 0
    text = capsys.readouterr().out
    assert "params.yaml:raw_silkie.max_quarantine_share  (a number in [0, 1]; default 0.05)" in text
    assert "params.yaml:training.delta" in text and "params.yaml:training.output_dir" not in text
