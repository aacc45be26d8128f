"""The pipeline's stages, in order, and the one table of the functions that run them.

The CLI (and so `dvc repro`), the Dagster assets and the experiment grid all run a stage through ``RUNNERS``;
``integrations/lineage.py`` reads this table to derive each stage's code deps for dvc.yaml.
"""

from __future__ import annotations

from typing import Any

from mdpo_pipeline.core.errors import NO_SPACE_ERRNOS, OutOfSpace
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


def run_stage(stage: str, project: Any, progress: bool = False) -> dict[str, Any]:
    """Run ``stage`` (``RUNNERS``); a write that finds no room is an OutOfSpace naming the stage's output and what to
    do, not a traceback from deep in an image encoder."""
    try:
        return RUNNERS[stage](project, progress=progress)
    except OSError as e:
        if e.errno not in NO_SPACE_ERRNOS:
            raise
        where = e.filename or project.data_dir(stage)
        raise OutOfSpace(f"{stage}: no space to write {where} ({e.strerror}); nothing of it was kept (outputs are "
                         f"written whole or not at all): free space under {project.data_dir(stage).parent} and run "
                         "it again") from e
