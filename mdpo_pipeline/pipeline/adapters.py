"""Registered adapters as models: an MLflow model version (or alias) applied to the base model it was trained on."""

from __future__ import annotations

import json

from peft import PeftModel

from mdpo_pipeline.integrations.tracking import download_registered_adapter
from mdpo_pipeline.training.models import load_model_and_processor


def load_registered_adapter(name: str, version: str, tracking_uri: str, base_model_path: str | None = None):
    """(PeftModel, processor): a registered adapter version (a number, or an alias such as "champion") applied to
    the base model it was trained on (``base_model_path`` overrides where that base model's weights are)."""
    local = download_registered_adapter(name, version, tracking_uri)
    cfg = json.loads((local / "run_config.json").read_text())
    model, processor = load_model_and_processor(cfg["base_model"], base_model_path or cfg["base_model_path"],
                                                allow_remote_code=cfg.get("allow_remote_code", False))
    return PeftModel.from_pretrained(model, str(local)), processor
