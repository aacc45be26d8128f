"""Scheduled retraining and the raw-data sensor.

- ``retrain_job`` (partitioned by model): train the adapter and score it; ``comparison_report`` and
  ``champion`` follow through their eager automation conditions; the registry gate check runs with it.
- ``retrain_schedule``: runs ``retrain_job`` for the configured models on a cron (``MDPO_RETRAIN_CRON``);
  STOPPED by default, so ``dagster dev`` never trains on its own: turn it on in the UI (Automation tab).
- ``raw_data_sensor``: when the raw data's DVC version changes (a new ``dvc pull``/``dvc add``), refreshes the
  data and reference chain (``refresh_job``); ``retrain_after_refresh`` then starts ``retrain_job``. Both are
  STOPPED by default as well.
"""

from __future__ import annotations

import os

import dagster as dg

from mdpo_pipeline.defs.assets.data import corrupted_images, preference_pairs, raw_silkie
from mdpo_pipeline.defs.assets.evaluation import benchmark_scores
from mdpo_pipeline.defs.assets.training import adapters, base_model, model_partitions, reference_logprobs
from mdpo_pipeline.defs.resources import ProjectResource
from mdpo_pipeline.integrations.dvc import raw_data_version
from mdpo_pipeline.pipeline.data import raw_data_path

CRON_ENV, MODELS_ENV = "MDPO_RETRAIN_CRON", "MDPO_RETRAIN_MODELS"
DEFAULT_CRON = "0 3 * * 1"  # Mondays 03:00 UTC
DEFAULT_MODELS = "base,dpo,mdpo"


def retrain_partitions(environ: dict[str, str] | None = None) -> list[str]:
    """The model partitions a scheduled retrain covers: $MDPO_RETRAIN_MODELS (comma-separated), validated."""
    env = os.environ if environ is None else environ
    keys = [k.strip() for k in env.get(MODELS_ENV, DEFAULT_MODELS).split(",") if k.strip()]
    unknown = sorted(set(keys) - set(model_partitions.get_partition_keys()))
    if unknown:
        raise ValueError(f"{MODELS_ENV} names unknown models {unknown}; known: {model_partitions.get_partition_keys()}")
    return keys


retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.assets(adapters, benchmark_scores),
    partitions_def=model_partitions,
    description="Train one model's adapter and score it on the benchmarks (the gate check runs with it).",
)
refresh_job = dg.define_asset_job(
    "refresh_job",
    selection=dg.AssetSelection.assets(raw_silkie, preference_pairs, corrupted_images, base_model, reference_logprobs),
    description="Re-read the raw data and rebuild pairs, crops, base model and reference cache.",
)


@dg.schedule(
    job=retrain_job,
    cron_schedule=os.environ.get(CRON_ENV, DEFAULT_CRON),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=f"Retrain and re-score the models in ${MODELS_ENV} (default {DEFAULT_MODELS}) on ${CRON_ENV}.",
)
def retrain_schedule(context: dg.ScheduleEvaluationContext):
    """One run per configured model partition at each tick."""
    tick = context.scheduled_execution_time.isoformat()
    for key in retrain_partitions():
        yield dg.RunRequest(partition_key=key, run_key=f"{tick}:{key}", tags={"mdpo/trigger": "schedule"})


@dg.sensor(
    job=refresh_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Starts refresh_job (and through it retrain_job) when the raw data's DVC version changes.",
)
def raw_data_sensor(context: dg.SensorEvaluationContext, project: ProjectResource):
    """Compare the raw data's DVC hash with the cursor; a change requests one refresh run keyed by the new hash."""

    proj = project.project()
    version = raw_data_version(proj.root, raw_data_path(proj))
    if version is None:
        return dg.SkipReason(f"{raw_data_path(proj)} is not tracked by DVC (no .dvc file or dvc.lock output)")
    if context.cursor is None:
        context.update_cursor(version)  # first look: remember the version, nothing changed yet
        return dg.SkipReason(f"watching raw data version {version}")
    if version == context.cursor:
        return dg.SkipReason(f"raw data unchanged ({version})")
    previous = context.cursor
    context.update_cursor(version)
    return dg.RunRequest(run_key=version, tags={"mdpo/raw_data_version": version, "mdpo/previous": previous})


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[refresh_job],
    request_job=retrain_job,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="After a successful refresh_job, retrain and re-score the configured models.",
)
def retrain_after_refresh(context: dg.RunStatusSensorContext):
    """One retrain run per configured model partition for each finished refresh."""
    for key in retrain_partitions():
        yield dg.RunRequest(partition_key=key, run_key=f"{context.dagster_run.run_id}:{key}",
                            tags={"mdpo/trigger": "raw_data"})


jobs = [retrain_job, refresh_job]
schedules = [retrain_schedule]
sensors = [raw_data_sensor, retrain_after_refresh]
