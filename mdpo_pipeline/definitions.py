"""The one Dagster Definitions object of the project (`dagster dev -m mdpo_pipeline.definitions`, `dg dev`)."""

import dagster as dg

from mdpo_pipeline import use_private_defaults

use_private_defaults()  # before the definitions import anything that reads them (huggingface_hub reads them once)

from mdpo_pipeline.defs.assets.data import data_assets
from mdpo_pipeline.defs.assets.evaluation import evaluation_assets, evaluation_checks
from mdpo_pipeline.defs.assets.grid import grid_assets
from mdpo_pipeline.defs.assets.training import training_assets
from mdpo_pipeline.defs.automation import jobs, schedules, sensors
from mdpo_pipeline.defs.checks import data_checks
from mdpo_pipeline.defs.resources import DvcResource, JudgeResource, MlflowResource, ProjectResource, TrainingLauncher

data_job = dg.define_asset_job(
    "data_job", selection=dg.AssetSelection.groups("data"), description="Materialize the data half of the pipeline."
)

defs = dg.Definitions(
    assets=[*data_assets, *training_assets, *evaluation_assets, *grid_assets],
    asset_checks=[*data_checks, *evaluation_checks],
    jobs=[data_job, *jobs],
    schedules=schedules,
    sensors=sensors,
    resources={
        "project": ProjectResource(),
        "dvc": DvcResource(),
        "mlflow": MlflowResource(),
        # Local subprocess by default; MDPO_LAUNCHER_MODE=docker, MDPO_TRAIN_IMAGE, MDPO_GPUS, ... (docker/compose.yaml)
        # become dg.EnvVars, read when a run starts (LauncherSettings.env_vars names them all).
        "launcher": TrainingLauncher.from_env(),
        "judge": JudgeResource(),
    },
)
