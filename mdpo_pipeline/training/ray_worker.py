"""The loop each Ray Train worker runs (integrations/ray_launcher.py submits it): the run config's training as one
rank of the torch.distributed group Ray has set up. No Ray import here: Ray sets RANK, WORLD_SIZE, MASTER_ADDR and
initialises the process group before the loop starts, and the Trainer's accelerate state joins that group."""

from __future__ import annotations

from typing import Any


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: train ``config["run"]`` (a run config); a restarted worker resumes."""
    # the model stack: loaded when a model is trained, not when the driver submits the loop
    from mdpo_pipeline.training.run import TrainRunConfig, run_training

    run_training(TrainRunConfig(config["run"]))
