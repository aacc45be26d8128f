"""One preference-training run as a program: a JSON run config in, a PEFT adapter directory out.

`mdpo train --config run.json` calls ``run_training``; the launcher starts it as a local subprocess or
inside the GPU container, so the same code runs on a laptop, in CI and on a GPU box. No Dagster here.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mdpo_pipeline.core.io import atomic_dir, write_json
from mdpo_pipeline.core.losses import METHODS

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class TrainRunConfig:
    """Everything one training run needs; None means the model preset's default (FACTS §2 for real models)."""

    method: str  # a loss preset: dpo, mdpo, mdpo_no_conditional, mdpo_no_anchor, mdpo_anchor_all, dpo_no_image
    pairs_dir: str  # data/preference_pairs
    image_root: str  # where the pairs' image paths resolve
    corrupted_dir: str  # data/corrupted_images
    output_dir: str  # the finished adapter lands here, whole or not at all
    base_model: str = "shapeworld-tiny"  # model preset name
    base_model_path: str | None = None  # local weights; None: $MDPO_MODEL_DIR/<preset> or the offline hub cache
    allow_remote_code: bool = False  # a preset that runs hub code refuses to load without this
    quantization: str | None = None  # "4bit" for QLoRA on a GPU
    reference_cache: str | None = None  # reference_logprobs parquet; None computes the reference live
    seed: int = 0  # model init, data order and dropout
    max_steps: int = -1  # > 0 caps the run (overrides epochs)
    epochs: float | None = None  # passes over the pairs
    learning_rate: float | None = None  # peak learning rate
    per_device_batch_size: int | None = None  # pairs per device per step
    grad_accum: int | None = None  # gradient-accumulation steps
    beta: float = 0.1  # DPO temperature β
    delta: float = 0.0  # anchor δ
    lora_r: int | None = None  # LoRA rank (paper 64)
    lora_alpha: int | None = None  # LoRA α (paper 128)
    max_length: int | None = None  # tokens per sequence, image tokens included
    logging_steps: int = 5  # log TRL metrics every N steps
    save_steps: int = 50  # checkpoint every N steps (resume point after a crash)
    resume: bool = True  # continue from the newest checkpoint when one exists
    threads: int | None = None  # torch CPU threads; None keeps torch's default

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        for name in ("logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TrainRunConfig":
        """Read a run config file; unknown keys are an error naming them."""
        data = json.loads(Path(path).read_text())
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{path}: unknown run config key(s) {unknown}")
        return cls(**data)

    @property
    def checkpoint_dir(self) -> Path:
        """Trainer checkpoints live beside the adapter, so a half-finished run never looks like an adapter."""
        return Path(f"{self.output_dir}.checkpoints")


def _mdpo_args(cfg: TrainRunConfig, preset, cuda: bool):
    from mdpo_pipeline.programs.training.config import MDPOConfig

    t = preset.training
    return MDPOConfig(
        output_dir=str(cfg.checkpoint_dir),
        method=cfg.method,
        beta=cfg.beta,
        delta=cfg.delta,
        reference_cache=cfg.reference_cache,
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.epochs if cfg.epochs is not None else t.epochs,
        learning_rate=cfg.learning_rate if cfg.learning_rate is not None else t.learning_rate,
        per_device_train_batch_size=cfg.per_device_batch_size or t.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accum or t.grad_accum,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        weight_decay=t.weight_decay,
        adam_beta2=t.adam_beta2,
        bf16=cuda and t.bf16,
        gradient_checkpointing=cuda and t.gradient_checkpointing,
        max_length=cfg.max_length or t.max_length,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        report_to=[],
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not cuda,
        disable_tqdm=False,
    )


def _last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest checkpoint that was saved to the end (a kill can land in the middle of writing one)."""
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not checkpoint_dir.is_dir():
        return None
    steps = []
    for path in checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = path.name.rsplit("-", 1)[1]
        # trainer_state.json is the last file the Trainer writes into a checkpoint.
        if step.isdigit() and (path / TRAINER_STATE_NAME).is_file():
            steps.append((int(step), path))
    return str(max(steps, key=lambda s: s[0])[1]) if steps else None


def run_training(cfg: TrainRunConfig) -> dict[str, Any]:
    """Train one adapter as ``cfg`` says; write it to ``cfg.output_dir`` atomically and return a summary."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import set_seed

    from mdpo_pipeline.programs.training.data import fit_max_length, load_preference_dataset
    from mdpo_pipeline.programs.training.models import load_model_and_processor, lora_config
    from mdpo_pipeline.programs.training.presets import get_preset
    from mdpo_pipeline.programs.training.trainer import MDPOTrainer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Before the model exists: LoRA's A matrices are drawn at wrapping time, before the Trainer seeds anything.
    set_seed(cfg.seed)
    preset = get_preset(cfg.base_model)
    cuda = torch.cuda.is_available()
    dataset = load_preference_dataset(cfg.pairs_dir, cfg.image_root, cfg.corrupted_dir)
    model, processor = load_model_and_processor(
        preset, cfg.base_model_path, allow_remote_code=cfg.allow_remote_code, quantization=cfg.quantization
    )
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=preset.training.gradient_checkpointing)
    args = _mdpo_args(cfg, preset, cuda)
    if cfg.reference_cache:
        from mdpo_pipeline.programs.training.reference import verify_reference_cache

        verify_reference_cache(cfg.reference_cache, model, processor, dataset, args.max_length)
    read = len(dataset)
    dataset, too_long = fit_max_length(dataset, processor, args.max_length, withhold_image=args.withhold_image)
    if not len(dataset):
        raise ValueError(f"no pair fits max_length={args.max_length}: every prompt leaves no room for an answer")
    # TRL wraps the model itself: handed a PEFT model it would also copy the adapter as a "ref" adapter.
    peft_config = lora_config(model, preset, r=cfg.lora_r, alpha=cfg.lora_alpha)
    trainer = MDPOTrainer(
        model, args=args, train_dataset=dataset, processing_class=processor, peft_config=peft_config
    )
    last = _last_complete_checkpoint(cfg.checkpoint_dir) if cfg.resume else None
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - start
    history = [h for h in trainer.state.log_history if "step" in h]
    logged = [h for h in history if "loss" in h]
    summary = {
        "method": cfg.method,
        "base_model": preset.name,
        "global_step": trainer.state.global_step,
        "resumed_from": Path(last).name if last else None,
        "train_loss": output.training_loss,
        "seconds": seconds,
        "pairs": len(dataset),
        "pairs_read": read,
        "pairs_dropped": {"prompt_exceeds_max_length": len(too_long)},
        "device": "cuda" if cuda else "cpu",
        "num_processes": trainer.accelerator.num_processes,
        "final": {k: v for k, v in logged[-1].items() if isinstance(v, int | float)} if logged else {},
    }
    # Under `accelerate launch` every rank gets here with the same weights (DDP keeps them in step); one
    # writer is enough and two would race on the rename. The log and the loss are already global means.
    accelerator = trainer.accelerator
    if accelerator.is_main_process:
        with atomic_dir(cfg.output_dir) as tmp:
            trainer.model.save_pretrained(tmp, safe_serialization=True)
            write_json(asdict(cfg), tmp / "run_config.json")
            write_json(history, tmp / "log_history.json")
            write_json(summary, tmp / "summary.json")
            write_json(too_long, tmp / "dropped_pairs.json")
        missing = [f for f in ADAPTER_FILES if not (Path(cfg.output_dir) / f).is_file()]
        if missing:
            raise RuntimeError(f"{cfg.output_dir}: adapter incomplete, missing {missing}")
    # No rank exits before the adapter exists, and no rank is still writing its last checkpoint's RNG
    # state when rank 0 removes the checkpoints.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # Finished: the checkpoints would otherwise make the next run with this output_dir "resume" a done run.
        shutil.rmtree(cfg.checkpoint_dir, ignore_errors=True)
    return summary
