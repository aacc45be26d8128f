"""``base_model: {path: DIR}`` with the preset ``auto`` (or none): any image-text-to-text checkpoint, its classes read
from its own files; and every way a checkpoint can be wrong stopping at the base_model stage with one message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from mdpo_pipeline.core.errors import ConfigError
from mdpo_pipeline.integrations.launchers import TrainingFailed, launch_local
from mdpo_pipeline.pipeline.project import Project
from mdpo_pipeline.pipeline.settings import load_settings
from mdpo_pipeline.pipeline.train import run_base_model
from mdpo_pipeline.training.data import DataCollatorForMDPO
from mdpo_pipeline.training.families import FAMILIES, CheckpointError
from mdpo_pipeline.training.models import ModelUnavailable, checkpoint_classes, load_model_and_processor
from mdpo_pipeline.training.presets import GENERIC, get_preset
from mdpo_pipeline.training.reference import completion_logps, ensure_fused_lm_head
from tests.conftest import write_tiny_training_data
from tests.test_families import FAMILY_NAMES, PRESET_OF, _examples, checkpoints  # noqa: F401

#: Another image must move every answer's summed log-prob by more than float32 rounding (~1e-6 here), and one of
#: them by more than IMAGE_EFFECT.
IMAGE_EFFECT, ROUNDING = 1e-2, 1e-5


def _logps(model, processor, examples) -> torch.Tensor:
    model.eval()
    ensure_fused_lm_head(model)
    with torch.no_grad():
        return completion_logps(model, DataCollatorForMDPO(processor)(examples))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_auto_reads_the_classes_from_the_checkpoint_and_trains_what_the_family_preset_trains(checkpoints, family):
    """The three families are cases of the generic path: same classes, same three-view log-probs."""
    generic, generic_processor = load_model_and_processor(GENERIC, checkpoints[family])
    known, known_processor = load_model_and_processor(PRESET_OF[family], checkpoints[family])
    assert type(generic).__name__ == FAMILIES[family].model_class == type(known).__name__
    assert type(generic_processor).__name__ == FAMILIES[family].processor_class
    torch.testing.assert_close(_logps(generic, generic_processor, _examples()),
                               _logps(known, known_processor, _examples()), atol=0, rtol=0)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_the_image_changes_the_answer_log_probs(checkpoints, family):
    """A checkpoint whose projector carries nothing (zeros) would pass every other test with images ignored."""
    model, processor = load_model_and_processor(GENERIC, checkpoints[family])
    examples = _examples()
    swapped = [dict(e, image=Image.new("RGB", e["image"].size, "navy")) for e in examples]
    moved = (_logps(model, processor, examples) - _logps(model, processor, swapped)).abs()
    seen = moved.view(3, -1)[:2]  # chosen and rejected see the swapped image, chosen_corrupted does not
    assert seen.min() > ROUNDING and seen.max() > IMAGE_EFFECT, moved


def _project(tmp_path: Path, base_model: dict) -> Project:
    root = tmp_path / "proj"
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump({"base_model": base_model}))
    return Project(root)


def test_a_path_without_a_preset_is_trained_as_it_is_not_replaced_by_the_toy_model(checkpoints, tmp_path):
    project = _project(tmp_path, {"path": str(checkpoints["qwen2.5-vl"])})
    assert load_settings(project).base_model.preset == GENERIC
    summary = run_base_model(project)
    assert summary["preset"] == GENERIC and summary["model_type"] == "qwen2_5_vl"
    assert summary["path"] == str(checkpoints["qwen2.5-vl"])
    recorded = json.loads((project.data_dir("base_model") / "preset.json").read_text())
    assert recorded["path"] == summary["path"]


def test_a_path_given_to_the_toy_model_is_refused_not_ignored(tmp_path):
    project = _project(tmp_path, {"preset": "shapeworld-tiny", "path": "/models/qwen3-vl"})
    with pytest.raises(ConfigError, match=r"params.yaml:base_model.*'/models/qwen3-vl' would be ignored.*preset: auto"):
        load_settings(project)


def test_auto_without_a_path_says_to_set_one():
    with pytest.raises(ModelUnavailable, match="base_model.path"):
        load_model_and_processor(GENERIC)


def _copy(checkpoints, family, tmp_path) -> Path:
    out = tmp_path / family
    shutil.copytree(checkpoints[family], out)
    return out


def _edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | changes))


@pytest.mark.parametrize(("changes", "match"), [
    ({"model_type": "bert", "architectures": ["BertModel"]},
     r"config.json: model_type 'bert' is not an image-text-to-text model type"),
    ({"model_type": "my_vlm", "auto_map": {"AutoModelForImageTextToText": "modeling_my_vlm.MyVLM"}},
     r"model_type 'my_vlm' exists only as the checkpoint's own Python code \(auto_map\)"),
    ({"is_encoder_decoder": True}, r"encoder-decoder"),
])
def test_a_checkpoint_auto_cannot_train_stops_at_the_base_model_stage(checkpoints, tmp_path, changes, match):
    path = _copy(checkpoints, "llava-1.5", tmp_path)
    _edit_config(path, **changes)
    project = _project(tmp_path, {"path": str(path)})
    with pytest.raises(CheckpointError, match=match):
        run_base_model(project)
    assert not (project.data_dir("base_model") / "preset.json").exists()


def test_missing_processor_files_and_a_template_without_images_stop_at_the_base_model_stage(checkpoints, tmp_path):
    path = _copy(checkpoints, "gemma-3", tmp_path)
    (path / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no tokenizer \(tokenizer.json or tokenizer.model\)"):
        run_base_model(_project(tmp_path / "a", {"path": str(path)}))
    path = _copy(checkpoints, "llava-1.5", tmp_path / "b")
    (path / "chat_template.jinja").write_text("{% for m in messages %}{{ m['role'] }}{% endfor %}")
    with pytest.raises(CheckpointError, match="renders an image turn without the image token"):
        run_base_model(_project(tmp_path / "c", {"path": str(path)}))


def test_a_checkpoint_of_another_family_is_refused_at_the_base_model_stage(checkpoints, tmp_path):
    """Before: it passed base_model and was refused only when reference_logprobs loaded it."""
    project = _project(tmp_path, {"preset": "qwen2.5-vl-3b", "path": str(checkpoints["gemma-3"])})
    with pytest.raises(CheckpointError, match=r"expects a qwen2.5-vl checkpoint.*describes a gemma-3 checkpoint"
                                              r".*or set base_model.preset: auto"):
        run_base_model(project)


def test_the_checkpoint_decides_the_classes_not_a_list(checkpoints, tmp_path):
    """``architectures`` names the class when it is an image-text-to-text class; a processor file names its class."""
    path = _copy(checkpoints, "qwen2.5-vl", tmp_path)
    model_class, processor = checkpoint_classes(path)
    assert (model_class, processor.__name__) == ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor")
    _edit_config(path, architectures=["SomethingElse"])  # not a class of the mapping: the model type's own
    assert checkpoint_classes(path)[0] == "Qwen2_5_VLForConditionalGeneration"
    assert get_preset(GENERIC).generic and not get_preset(GENERIC).built_here


def test_a_training_process_that_refuses_its_checkpoint_reports_one_line_not_a_traceback(checkpoints, tmp_path):
    path = _copy(checkpoints, "llava-1.5", tmp_path)
    _edit_config(path, model_type="bert", architectures=["BertModel"])
    data = write_tiny_training_data(tmp_path / "data", n_pairs=4, image_size=32)
    cfg = {"method": "mdpo", "output_dir": str(tmp_path / "adapter"), "pairs_dir": str(data["pairs"]),
           "image_root": str(data["images"]), "corrupted_dir": str(data["corrupted"]), "base_model": GENERIC,
           "base_model_path": str(path)}
    lines: list[str] = []
    with pytest.raises(TrainingFailed) as failed:
        launch_local(cfg, log=lines.append)
    message = str(failed.value)
    assert message.startswith(f"{path}/config.json: model_type 'bert' is not an image-text-to-text model type")
    assert "Traceback" not in message and "\n" not in message
    assert any("model_type 'bert'" in line for line in lines)
