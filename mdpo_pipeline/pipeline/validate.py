"""Validation: every section of params.yaml checked before any stage does work, each error naming its key."""

from __future__ import annotations

from mdpo_pipeline.core.methods import METHODS, TEXT_ONLY_METHOD
from mdpo_pipeline.core.typed import key
from mdpo_pipeline.pipeline.project import ConfigError, Project
from mdpo_pipeline.pipeline.settings import load_settings
from mdpo_pipeline.pipeline.train import model_preset, training_run_config


def validate_params(project: Project) -> None:
    """Check every section of params.yaml (types, ranges, names) before any stage does work; errors name the key.

    Loading types every section (the benchmarks, their generation and the gate included); here also what needs
    more than the file: the model preset and every method's MDPOConfig (one adapter per method, so all of them)."""
    settings = load_settings(project)
    preset = model_preset(settings.base_model.preset)
    for method in settings.training.methods:
        if method not in METHODS:
            where = key("params.yaml:training.methods", str(method))
            raise ConfigError(f"{where}: unknown method: method must be one of "
                              f"{sorted(METHODS)}")
    placeholders = {"pairs_dir": ".", "image_root": ".", "corrupted_dir": ".", "base_model": preset.name,
                    "max_length": settings.reference_logprobs.resolved_max_length(preset)}
    for method in METHODS:
        cache = "reference.parquet" if method != TEXT_ONLY_METHOD else None
        training_run_config(settings, method, placeholders | {"method": method, "output_dir": method,
                                                              "reference_cache": cache})
