"""The pipeline's stages, in order, and the one table of the functions that run them.

The CLI (and so `dvc repro`), the Dagster assets and the experiment grid all run a stage through ``RUNNERS``;
``integrations/lineage.py`` reads this table to derive each stage's code deps for dvc.yaml.
"""

from __future__ import annotations

from mdpo_pipeline.pipeline.data import run_corrupted_images, run_preference_pairs, run_raw_silkie, run_shapeworld
from mdpo_pipeline.pipeline.train import run_base_model, run_reference_logprobs

RUNNERS = {
    "shapeworld": run_shapeworld,
    "raw_silkie": run_raw_silkie,
    "preference_pairs": run_preference_pairs,
    "corrupted_images": run_corrupted_images,
    "base_model": run_base_model,
    "reference_logprobs": run_reference_logprobs,
}
#: The stages in the order they run.
STAGES = tuple(RUNNERS)
