"""One preference-training run as a program: a JSON run config in, a PEFT adapter directory out.

`mdpo train --config run.json` calls ``run_training``; the launcher starts it as a local subprocess or
inside the GPU container, so the same code runs on a laptop, in CI and on a GPU box. No Dagster here.

The run config is one flat JSON object, typed by the engine that types params.yaml (``core/typed.py``: every value
checked against its field's type, an unknown key refused with the closest known one): the fields of
``RunArguments`` (data, base model, LoRA, threads, resume), any field of ``MDPOConfig`` (method, delta, the
loss-weight overrides, TRL's DPOConfig fields: learning_rate,
per_device_train_batch_size, max_length, seed, ...), and ``output_dir``: the adapter directory (the Trainer's
checkpoints go beside it, in ``<output_dir>.checkpoints``). An MDPOConfig field the run config leaves out takes,
in this order, the base model preset's ``TrainingDefaults`` (presets.py), ``RUN_DEFAULTS`` below, and MDPOConfig's
own default; bf16 and gradient checkpointing follow the preset only on a CUDA device.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import Enum
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdpo_pipeline.core.errors import ConfigError, clip, shown
from mdpo_pipeline.core.io import atomic_dir, write_json
from mdpo_pipeline.core.typed import check, did_you_mean, type_hints
from mdpo_pipeline.training.presets import get_preset

if TYPE_CHECKING:
    from mdpo_pipeline.training.config import MDPOConfig

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: The key ``WallClock`` adds to every log_history entry: seconds since the epoch when the Trainer logged it
#: (MLflow's metric timestamps); it is no metric itself.
WALL_TIME = "wall_time"

#: MDPOConfig values of every run of this pipeline that neither the run config nor the model preset sets (TRL's
#: own defaults are for long GPU runs: seed 42, a log and a checkpoint every 500 steps, every tracker on).
RUN_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "logging_steps": 5,
    "save_strategy": "steps",
    "save_steps": 50,  # the resume point after a crash
    "save_total_limit": 2,
    "report_to": [],  # MLflow logging is the pipeline's (stages.record_adapter), not the Trainer's
    "disable_tqdm": False,
}


@dataclass
class RunArguments:
    """The run-level settings of one training run that are not MDPOConfig fields (TRL keeps such settings in its
    ScriptArguments and ModelConfig): where the data and the base model are, LoRA, CPU threads, resuming."""

    pairs_dir: str = field(metadata={"help": "The preference_pairs stage's output directory (pairs.parquet)."})
    image_root: str = field(metadata={"help": "Where the pairs' image paths resolve (raw_silkie's image root)."})
    corrupted_dir: str = field(metadata={"help": "The corrupted_images stage's output directory (manifest.parquet)."})
    base_model: str = field(default="shapeworld-tiny", metadata={
        "help": "Model preset name (training/presets.py): how the weights load and the training defaults."})
    base_model_path: str | None = field(default=None, metadata={
        "help": "Local weights of the preset; None: $MDPO_MODEL_DIR/<preset> or the offline hub cache."})
    allow_remote_code: bool = field(default=False, metadata={
        "help": "Let a preset that runs the checkpoint's own Python code (trust_remote_code) load."})
    quantization: str | None = field(default=None, metadata={
        "help": "'4bit' loads the base model 4-bit for QLoRA (CUDA only); None loads it whole."})
    lora_r: int | None = field(default=None, metadata={"help": "LoRA rank; None: the preset's (the paper's 64)."})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha; None: the preset's (the paper's 128)."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads; None keeps torch's default."})
    resume: bool = field(default=True, metadata={
        "help": "Continue from the newest complete checkpoint beside the adapter when one exists."})

    def __post_init__(self):
        if self.quantization not in (None, "4bit"):
            raise ValueError(f"quantization must be null or '4bit', got {shown(self.quantization)}")
        for name in ("lora_r", "lora_alpha", "threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be null or an integer >= 1, got {shown(value)}")


@cache
def run_argument_names() -> frozenset[str]:
    """The fields of RunArguments."""
    return frozenset(f.name for f in fields(RunArguments))


@cache
def mdpo_config_names() -> frozenset[str]:
    """The fields of MDPOConfig (imports TRL)."""
    from mdpo_pipeline.training.config import MDPOConfig

    return frozenset(f.name for f in fields(MDPOConfig) if f.init)


def typed_run_values(values: Mapping[str, Any], where: Callable[[str], str] | None = None,
                     unknown: str = "unknown key") -> dict[str, Any]:
    """``values`` with each checked against its RunArguments or MDPOConfig field's type (YAML/JSON lists made
    tuples where the field wants one); an unknown key or a wrong type is a ConfigError naming ``where(key)`` (by
    default the key itself)."""
    from mdpo_pipeline.training.config import MDPOConfig

    known = {f.name: (cls, f) for cls in (RunArguments, MDPOConfig) for f in fields(cls) if f.init}
    if strays := sorted(set(values) - set(known)):
        if where is None:
            raise ConfigError(f"unknown run config key(s) {shown(strays)}: neither RunArguments nor MDPOConfig fields"
                              f"{did_you_mean(strays[0], known)}")
        raise ConfigError(f"{where(strays[0])}: {unknown}: neither an MDPOConfig field nor a run argument"
                          f"{did_you_mean(strays[0], known)}")
    where = where or str
    return {name: check(value, type_hints(known[name][0])[name], known[name][1].metadata, where(name))
            for name, value in values.items()}


class TrainRunConfig(dict):
    """One run's config: the flat JSON object ``mdpo train --config`` reads, typed (``typed_run_values``), as a dict
    whose keys also read as attributes (a RunArguments field it lacks reads as its default). ``parse`` makes the
    RunArguments and the MDPOConfig the run trains with."""

    REQUIRED = ("method", "output_dir", "pairs_dir", "image_root", "corrupted_dir")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(typed_run_values(dict(*args, **kwargs)))
        missing = [k for k in self.REQUIRED if self.get(k) in (None, "")]
        if missing:
            raise ValueError(f"run config lacks {missing}")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TrainRunConfig":
        """Read a run config file; unknown keys are an error naming them."""
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a run config is a JSON object, got {type(data).__name__}")
        try:
            return cls(data)
        except ValueError as e:
            raise ValueError(f"{path}: {clip(str(e))}") from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self:
            return self[name]
        for f in fields(RunArguments):
            if f.name == name and f.default is not MISSING:
                return f.default
        raise AttributeError(f"the run config does not set {name!r} (MDPOConfig values: parse() or mdpo_values())")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in run_argument_names() | mdpo_config_names():
            raise AttributeError(f"{name!r} is neither a RunArguments nor an MDPOConfig field")
        self[name] = typed_run_values({name: value})[name]

    @property
    def checkpoint_dir(self) -> Path:
        """Trainer checkpoints live beside the adapter, so a half-finished run never looks like an adapter."""
        return Path(f"{self['output_dir']}.checkpoints")

    def run_arguments(self) -> RunArguments:
        """The run's RunArguments."""
        return RunArguments(**{k: v for k, v in self.items() if k in run_argument_names()})

    def mdpo_values(self, cuda: bool) -> dict[str, Any]:
        """The MDPOConfig keyword arguments of this run (output_dir aside): the run config's own values over the
        base model preset's defaults over RUN_DEFAULTS; data_seed follows seed unless set."""

        own = {k: v for k, v in self.items() if k in mdpo_config_names() and k != "output_dir"}
        preset = get_preset(self.base_model).training.mdpo_config(cuda)
        values = copy.deepcopy(RUN_DEFAULTS) | preset | {"use_cpu": not cuda} | own
        if "data_seed" not in own:
            values["data_seed"] = values["seed"]
        return values

    def parse(self, cuda: bool) -> tuple[RunArguments, "MDPOConfig"]:
        """(RunArguments, MDPOConfig) of this run on a machine with (``cuda``) or without a CUDA device."""
        from mdpo_pipeline.training.config import MDPOConfig

        # The preset's and RUN_DEFAULTS' values are typed here too: a preset is code, but a wrong type there
        # should name its key as well as a run config's does.
        values = typed_run_values(self.mdpo_values(cuda), lambda k: f"{self.base_model} preset / run default {k}")
        return self.run_arguments(), MDPOConfig(**values, output_dir=str(self.checkpoint_dir))

    def resolved(self, cuda: bool) -> dict[str, Any]:
        """The run config with every value this pipeline decides filled in (RunArguments, output_dir = the adapter,
        the MDPOConfig values of ``mdpo_values``); ``trained`` is what a finished run records."""
        return asdict(self.run_arguments()) | {"output_dir": self["output_dir"]} | self.mdpo_values(cuda)

    def trained(self, args: "MDPOConfig", lora: Any, threads: int) -> dict[str, Any]:
        """What the adapter's run_config.json records: ``resolved`` with every value read back from what the run
        trained with (the parsed MDPOConfig, the LoRA config the preset completed, torch's thread count), so no
        "None: the preset's" is left and the file is still a run config that trains the same adapter."""
        values = self.resolved(cuda=not args.use_cpu)
        mdpo = [k for k in values if k in mdpo_config_names() and k != "output_dir"]
        # The objective and its loss weights as the method resolved them: comparing two methods' runs means
        # comparing these, whether or not params.yaml spelled them out.
        values |= {k: _plain(getattr(args, k)) for k in (*mdpo, "method", "beta", "delta", "reference_cache",
                                                          "withhold_image")}
        weights = args.mdpo_weights
        values |= {f"{term}_weight": getattr(weights, term)
                   for term in ("conditional", "anchor", "anchor_rejected", "anchor_corrupted")}
        return values | {"lora_r": lora.r, "lora_alpha": lora.lora_alpha, "threads": threads}


RUN_CONFIG_FILE = "run_config.json"


def trained_image_use_probe(adapter: str | os.PathLike, policy: Mapping[str, Any],
                            reference: Mapping[str, Any]) -> dict[str, Any]:
    """``core.losses.image_use_probe`` of an adapter's log-probs against the reference's, at the β the adapter
    trained with (its run_config.json records every value it trained with)."""
    from mdpo_pipeline.core.losses import image_use_probe

    trained = json.loads((Path(adapter) / RUN_CONFIG_FILE).read_text())
    return image_use_probe(policy, reference, trained["beta"])


def _plain(value: Any) -> Any:
    """An enum-typed TrainingArguments value (SchedulerType, SaveStrategy) as the string a run config holds."""
    return value.value if isinstance(value, Enum) else value


def _callbacks(tty: bool) -> tuple[list[Any], list[type]]:
    """(callbacks to add, callbacks to remove): every run stamps its logs with the wall clock; without a terminal
    the progress bar gives way to one line per log (a bar redrawn into a pipe is a flood of \\r-joined updates)."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class WallClock(TrainerCallback):
        """Adds WALL_TIME to the log entry the Trainer just appended (MLflow's timestamp of that step)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.log_history and WALL_TIME not in state.log_history[-1]:
                state.log_history[-1][WALL_TIME] = round(time.time(), 3)

    class LogLines(TrainerCallback):
        """One line per Trainer log: step, elapsed time, the loss and the margins, 4 significant digits."""

        started = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_local_process_zero or not logs:
                return
            shown = {k: v for k, v in logs.items() if k in ("loss", "rewards/margins", "rewards/accuracies",
                                                             "learning_rate", "train_loss", "train_runtime")}
            text = "  ".join(f"{k} {v:.4g}" for k, v in shown.items() if isinstance(v, int | float))
            print(f"step {state.global_step}/{state.max_steps}  {time.monotonic() - self.started:.0f} s  {text}",
                  flush=True)

    return ([WallClock()], []) if tty else ([WallClock(), LogLines()], [ProgressCallback, PrinterCallback])


def _last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest checkpoint that was saved to the end (a kill can land in the middle of writing one)."""
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not checkpoint_dir.is_dir():
        return None
    steps = []
    for path in checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = path.name.rsplit("-", 1)[1]
        # trainer_state.json is the last file the Trainer writes into a checkpoint, and a kill can land while it
        # is being written: only a state that reads back whole marks the checkpoint complete.
        if step.isdigit() and _reads_as_json(path / TRAINER_STATE_NAME):
            steps.append((int(step), path))
    return str(max(steps, key=lambda s: s[0])[1]) if steps else None


def _reads_as_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def run_training(cfg: TrainRunConfig | dict[str, Any]) -> dict[str, Any]:
    """Train one adapter as ``cfg`` says; write it to ``cfg.output_dir`` atomically and return a summary."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import set_seed

    from mdpo_pipeline.training.data import drop_image_token_rows, fit_max_length, load_preference_dataset
    from mdpo_pipeline.training.models import load_model_and_processor, lora_config
    from mdpo_pipeline.training.trainer import MDPOTrainer

    cfg = cfg if isinstance(cfg, TrainRunConfig) else TrainRunConfig(cfg)
    cuda = torch.cuda.is_available()
    run, args = cfg.parse(cuda)  # a bad value stops the run before any weights load
    if run.threads:
        torch.set_num_threads(run.threads)
    # Before the model exists: LoRA's A matrices are drawn at wrapping time, before the Trainer seeds anything.
    set_seed(args.seed)
    preset = get_preset(run.base_model)
    dataset = load_preference_dataset(run.pairs_dir, run.image_root, run.corrupted_dir)
    model, processor = load_model_and_processor(
        preset, run.base_model_path, allow_remote_code=run.allow_remote_code, quantization=run.quantization
    )
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=preset.training.gradient_checkpointing)
    read = len(dataset)
    # Before the cache check: the reference_logprobs stage drops the same rows before computing the cache.
    dataset, image_tokens = drop_image_token_rows(dataset, processor)
    if args.reference_cache:
        from mdpo_pipeline.training.reference import verify_reference_cache

        verify_reference_cache(args.reference_cache, model, processor, dataset, args.max_length)
    dataset, too_long = fit_max_length(dataset, processor, args.max_length, withhold_image=args.withhold_image)
    if not len(dataset):
        raise ValueError(f"no pair fits max_length={args.max_length}: every prompt leaves no room for an answer")
    # TRL wraps the model itself: handed a PEFT model it would also copy the adapter as a "ref" adapter.
    peft_config = lora_config(model, preset, r=run.lora_r, alpha=run.lora_alpha)
    trainer = MDPOTrainer(
        model, args=args, train_dataset=dataset, processing_class=processor, peft_config=peft_config
    )
    added, removed = _callbacks(sys.stdout.isatty())
    for callback in removed:
        trainer.remove_callback(callback)
    for callback in added:
        trainer.add_callback(callback)
    last = _last_complete_checkpoint(cfg.checkpoint_dir) if run.resume else None
    started_at = time.time()
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - start
    history = [h for h in trainer.state.log_history if "step" in h]
    logged = [h for h in history if "loss" in h]
    summary = {
        "method": args.method,
        "base_model": preset.name,
        "global_step": trainer.state.global_step,
        "resumed_from": Path(last).name if last else None,
        "train_loss": output.training_loss,
        "seconds": seconds,
        # Wall clock (seconds since the epoch) of this process's training: the MLflow run's start and end.
        "started_at": round(started_at, 3),
        "ended_at": round(started_at + seconds, 3),
        "pairs": len(dataset),
        "pairs_read": read,
        "pairs_dropped": {"text_has_image_token": len(image_tokens), "prompt_exceeds_max_length": len(too_long)},
        "device": "cuda" if cuda else "cpu",
        "num_processes": trainer.accelerator.num_processes,
        "final": {k: v for k, v in logged[-1].items() if isinstance(v, int | float) and k != WALL_TIME}
        if logged else {},
    }
    # Under `accelerate launch` every rank gets here with the same weights (DDP keeps them in step); one
    # writer is enough and two would race on the rename. The log and the loss are already global means.
    accelerator = trainer.accelerator
    if accelerator.is_main_process:
        with atomic_dir(cfg.output_dir) as tmp:
            trainer.model.save_pretrained(tmp, safe_serialization=True)
            write_json(cfg.trained(args, peft_config, torch.get_num_threads()), tmp / RUN_CONFIG_FILE)
            write_json(history, tmp / "log_history.json")
            write_json(summary, tmp / "summary.json")
            write_json(image_tokens + too_long, tmp / "dropped_pairs.json")
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
