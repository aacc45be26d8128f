"""The training half: base_model → reference_logprobs → adapters (one partition per method).

Training runs as its own process through the TrainingLauncher; every adapter becomes an MLflow run and a
new version of the registered model named after the base model, tagged with its method.
"""

import dagster as dg

from mdpo_pipeline.core.methods import BASE, METHODS
from mdpo_pipeline.defs.assets.data import corrupted_images, materialize_stage, preference_pairs, shapeworld
from mdpo_pipeline.defs.metadata import dagster_run_tags, md_image, mlflow_links, summary_metadata
from mdpo_pipeline.defs.resources import DvcResource, MlflowResource, ProjectResource, TrainingLauncher
from mdpo_pipeline.defs.run_worker import die_with_run_worker
from mdpo_pipeline.pipeline.train import (
    adapter_lock,
    base_model_location,
    record_adapter_or_defer,
    train_run_config,
)

GROUP = "training"
#: One partition per model to evaluate: "base" (the base model itself, no adapter) and every method preset.
#: adapters and benchmark_scores share it, so one partitioned job can retrain and re-score a model.
model_partitions = dg.StaticPartitionsDefinition([BASE, *METHODS])


@dg.asset(group_name=GROUP, deps=[shapeworld], kinds={"pytorch", "safetensors"})
def base_model(project: ProjectResource, dvc: DvcResource) -> dg.MaterializeResult:
    """The model to align: the tiny ShapeWorld VLM after a short SFT, or a real preset's local weights."""
    return materialize_stage("base_model", project, dvc)


@dg.asset(group_name=GROUP, deps=[base_model, preference_pairs, corrupted_images], kinds={"pytorch", "parquet"})
def reference_logprobs(project: ProjectResource, dvc: DvcResource) -> dg.MaterializeResult:
    """The base model's log-probs of every pair's chosen, rejected and chosen-with-corrupted-image views,
    computed once and shared by every training run of the grid."""
    return materialize_stage("reference_logprobs", project, dvc)


@dg.asset(
    group_name=GROUP,
    partitions_def=model_partitions,
    deps=[base_model, preference_pairs, corrupted_images, reference_logprobs],
    kinds={"pytorch", "mlflow"},
)
def adapters(
    context: dg.AssetExecutionContext, project: ProjectResource, launcher: TrainingLauncher, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """One LoRA adapter per method (DPO, mDPO, ablations), trained as its own process and registered in MLflow;
    the "base" partition is the base model itself (nothing to train)."""
    proj = project.project()
    method = context.partition_key
    if method == BASE:
        preset, path = base_model_location(proj)
        return dg.MaterializeResult(metadata={"adapter": "none: the base model itself", "preset": preset,
                                              "path": dg.MetadataValue.path(path)})
    out = proj.adapter_path(method)
    cfg = train_run_config(proj, method, out)
    # A run worker killed meanwhile takes this step and its training with it, leaving no orphan to race the rerun.
    die_with_run_worker(context)
    # Two runs of one partition at once: the second waits, so the adapter and its version are one run's.
    with adapter_lock(proj, method, holder=f"Dagster run {context.run_id}", log=context.log.info):
        summary = launcher.launch(cfg, context, proj)
        # A tracking server that stays down does not lose the adapter: its run waits for `mdpo mlflow replay`.
        recorded = record_adapter_or_defer(proj, cfg, mlflow.uri(proj), mlflow.experiment,
                                           tags=dagster_run_tags(context), log=context.log.warning)
    shown = {k: v for k, v in summary.items() if k not in ("final", "started_at", "ended_at")}
    meta = summary_metadata(shown) | summary_metadata(summary["final"])
    meta["path"] = dg.MetadataValue.path(str(out))
    if "pending" in recorded:
        meta |= {"mlflow": f"not logged, the tracking server was unreachable ({recorded['error']}); "
                           "`mdpo mlflow replay` logs it", "mlflow_pending": dg.MetadataValue.path(recorded["pending"])}
        return dg.MaterializeResult(metadata=meta)
    meta |= {
        "mlflow_run_id": recorded["mlflow_run_id"],
        "registered_version": recorded["registered_version"],
        **mlflow_links(recorded["run_url"], recorded["version_url"]),
        "curves": md_image(recorded["curves"], alt=f"{method} curves"),
    }
    return dg.MaterializeResult(metadata=meta)


training_assets = [base_model, reference_logprobs, adapters]
