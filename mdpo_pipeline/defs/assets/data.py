"""The data half of the pipeline: shapeworld → raw_silkie → preference_pairs → corrupted_images.

Each asset calls one stage function (mdpo_pipeline.pipeline.stages.run_stage), records the output with DVC and reports
what a person wants to see: counts, reasons, previews, the data version.
"""

from __future__ import annotations

import dagster as dg

from mdpo_pipeline.defs.metadata import md_image, summary_metadata
from mdpo_pipeline.defs.resources import DvcResource, ProjectResource
from mdpo_pipeline.pipeline.stages import run_stage
from mdpo_pipeline.pipeline.validate import validate_params

GROUP = "data"
_downstream = dg.AutomationCondition.eager()


def materialize_stage(stage: str, project: ProjectResource, dvc: DvcResource, **extra) -> dg.MaterializeResult:
    """Run one stage function, record its output with DVC, and report its summary (and images) as metadata."""
    proj = project.project()
    validate_params(proj)  # a typo anywhere in params.yaml stops the first stage, not the fifth
    summary = run_stage(stage, proj, progress=True)
    meta = summary_metadata(summary)
    meta["path"] = dg.MetadataValue.path(str(proj.data_dir(stage)))
    for name, rel in extra.items():
        path = proj.data_dir(stage) / rel
        if path.is_file():
            meta[name] = md_image(path, alt=name)
    meta.update(dvc.record(proj, stage))
    return dg.MaterializeResult(metadata=meta)


@dg.asset(group_name=GROUP, kinds={"python", "jpeg", "json"})
def shapeworld(project: ProjectResource, dvc: DvcResource) -> dg.MaterializeResult:
    """Offline synthetic world: raw VLFeedback files and benchmark splits with known objects (the default data)."""
    return materialize_stage("shapeworld", project, dvc, preview="preview.png")


@dg.asset(group_name=GROUP, deps=[shapeworld], kinds={"python", "parquet"})
def raw_silkie(project: ProjectResource, dvc: DvcResource) -> dg.MaterializeResult:
    """VLFeedback (Silkie) rows read from raw files, validated; unusable rows quarantined with reasons."""
    return materialize_stage("raw_silkie", project, dvc)


@dg.asset(group_name=GROUP, deps=[raw_silkie], kinds={"python", "parquet"}, automation_condition=_downstream)
def preference_pairs(project: ProjectResource, dvc: DvcResource) -> dg.MaterializeResult:
    """Chosen/rejected pairs by Silkie's rating rule, filtered by instruction source, seeded sample of N."""
    return materialize_stage("preference_pairs", project, dvc)


@dg.asset(group_name=GROUP, deps=[preference_pairs], kinds={"python", "jpeg"}, automation_condition=_downstream)
def corrupted_images(project: ProjectResource, dvc: DvcResource) -> dg.MaterializeResult:
    """One stored, seeded corrupted image per sampled instruction, shared by policy and reference."""
    return materialize_stage("corrupted_images", project, dvc, preview="preview.png")


data_assets = [shapeworld, raw_silkie, preference_pairs, corrupted_images]
