"""The training phase: the base model, the reference log-prob cache, each adapter's run config and its record.

``base_model`` and ``reference_logprobs`` are stages (``stages.RUNNERS``); the adapters are trained by a launcher
from ``train_run_config`` and logged by ``record_adapter``. The model stack is imported inside the functions that
load a model, so checking settings or running a data stage never loads torch, and ``integrations/lineage.py`` counts
a module as a stage's code only when that stage's function imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from mdpo_pipeline.core.errors import clip
from mdpo_pipeline.core.io import write_json
from mdpo_pipeline.core.methods import METHOD_CORRUPTION, METHODS, TEXT_ONLY_METHOD
from mdpo_pipeline.core.plots import training_curves
from mdpo_pipeline.core.typed import key
from mdpo_pipeline.pipeline.project import ConfigError, Project
from mdpo_pipeline.pipeline.settings import Settings, load_settings

if TYPE_CHECKING:
    from mdpo_pipeline.training.presets import ModelPreset
    from mdpo_pipeline.training.run import TrainRunConfig


def model_preset(name: str) -> "ModelPreset":
    """The model preset ``name`` (params.yaml:base_model.preset), or a ConfigError naming the key."""
    from mdpo_pipeline.training.presets import get_preset

    try:
        return get_preset(name)
    except KeyError as e:
        raise ConfigError(f"params.yaml:base_model.preset: {e.args[0]}") from None


def run_base_model(project: Project, progress: bool = False) -> dict[str, Any]:
    """The base model: SFT of the tiny VLM on ShapeWorld, or a pointer to a real checkpoint's local weights, checked
    here (files, family or model type, processor, chat template) so a checkpoint that cannot train stops at this
    stage."""
    from mdpo_pipeline.training.models import check_base_model, checkpoint_model_type

    settings = load_settings(project)
    base = settings.base_model
    preset = model_preset(base.preset)
    out = project.data_dir("base_model")
    if preset.built_here:
        from mdpo_pipeline.shapeworld.sft import train_base_model

        world = project.path(settings.raw_silkie.reader.path)
        metrics = train_base_model(
            world / "shapeworld_truth.jsonl", world / "merged_images", out, base.sft, progress=progress
        )
        return {"preset": preset.name, "path": project.rel(out), **metrics}
    path = check_base_model(preset, project.path(base.path) if base.path else None,
                            allow_remote_code=base.allow_remote_code)
    model_type = checkpoint_model_type(path)
    # An auto checkpoint is named by what it is, so two of them are two registered models, not one called "auto".
    name = f"{model_type}-{Path(path).name}" if preset.generic else preset.name
    summary = {"preset": preset.name, "hf_id": preset.hf_id, "path": path, "model_type": model_type, "name": name}
    out.mkdir(parents=True, exist_ok=True)
    (out / "preset.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def base_model_location(project: Project, settings: Settings | None = None) -> tuple[str, str]:
    """(preset name, local path of its weights) as the base_model stage recorded them."""
    out = project.data_dir("base_model")
    pointer = out / "preset.json"
    if pointer.is_file():
        info = json.loads(pointer.read_text())
        return info["preset"], info["path"]
    if not (out / "config.json").is_file():
        raise FileNotFoundError(f"{out} holds no model: materialize base_model first")
    return (settings or load_settings(project)).base_model.preset, str(out)


def base_model_name(project: Project, settings: Settings | None = None) -> str:
    """The base model's name in the registry and the reports: its preset's, or for ``auto`` the checkpoint's model
    type and directory (as the base_model stage recorded it)."""
    pointer = project.data_dir("base_model") / "preset.json"
    if pointer.is_file():
        info = json.loads(pointer.read_text())
        return info.get("name", info["preset"])
    return base_model_location(project, settings)[0]


def run_reference_logprobs(project: Project, progress: bool = False) -> dict[str, Any]:
    """The base model's summed log-probs for every pair's three views, computed once for every training run."""
    from mdpo_pipeline.training.data import drop_image_token_rows, load_preference_dataset
    from mdpo_pipeline.training.models import load_model_and_processor
    from mdpo_pipeline.training.reference import compute_reference_logprobs

    settings = load_settings(project)
    preset, path = base_model_location(project, settings)
    model, processor = load_model_and_processor(preset, path, allow_remote_code=settings.base_model.allow_remote_code)
    dataset = load_preference_dataset(*_training_data_dirs(project))
    read = len(dataset)
    # A row holding the model's own image token as text would stop the cache's batch; training drops the same rows.
    dataset, dropped = drop_image_token_rows(dataset, processor)
    # The one max_length: every training run against this cache gets the same (train_run_config).
    max_length = settings.reference_logprobs.resolved_max_length(model_preset(preset))
    out = project.data_dir("reference_logprobs") / "reference.parquet"
    summary = compute_reference_logprobs(
        model, processor, dataset, settings.reference_logprobs.batch_size, out, progress=progress,
        max_length=max_length, packed_rows=settings.training.common.get("packed_rows", True) is not False,
    )
    summary = {"preset": preset, "pairs_read": read, "pairs_dropped": {"text_has_image_token": len(dropped)},
               **summary}
    stored = {k: v for k, v in summary.items() if k != "timing"}  # timings vary: they go to the metadata only
    (out.parent / "summary.json").write_text(json.dumps(stored, indent=2, sort_keys=True, default=str) + "\n")
    return summary


def _training_data_dirs(project: Project) -> tuple[Path, Path, Path]:
    image_root = project.path(project.summary("raw_silkie")["image_root"])
    return project.data_dir("preference_pairs"), image_root, project.data_dir("corrupted_images")


def train_run_config(project: Project, method: str, output_dir: Path,
                     settings: Settings | None = None) -> "TrainRunConfig":
    """The run config of one adapter: params.yaml:training (and its overrides for ``method``), the stage outputs,
    and the one max_length the reference cache was computed with."""
    settings = settings or load_settings(project)
    own = METHOD_CORRUPTION.get(method)
    if own is not None and settings.corrupted_images.strategy != own:
        raise ConfigError(
            f"{method}: its image term is defined over corrupted_images.strategy {own!r}, and params.yaml's is "
            f"{settings.corrupted_images.strategy!r}: train {method} in the experiment grid (params.yaml:experiment."
            f"methods), which makes that data for its cells, or set params.yaml:corrupted_images.strategy: {own}")
    preset, path = base_model_location(project, settings)
    pairs_dir, image_root, corrupted_dir = _training_data_dirs(project)
    cache = project.data_dir("reference_logprobs") / "reference.parquet"
    fixed = {
        "method": method,
        "pairs_dir": str(pairs_dir),
        "image_root": str(image_root),
        "corrupted_dir": str(corrupted_dir),
        "output_dir": str(output_dir),
        "base_model": preset,
        "base_model_path": path,
        "allow_remote_code": settings.base_model.allow_remote_code,
        # The cache holds image-conditioned log-probs only: the image-withheld probe needs a live reference.
        "reference_cache": str(cache) if cache.is_file() and method != TEXT_ONLY_METHOD else None,
        "max_length": settings.reference_logprobs.resolved_max_length(model_preset(preset)),
    }
    return training_run_config(settings, method, fixed)


def training_run_config(settings: Settings, method: str, fixed: dict[str, Any]) -> "TrainRunConfig":
    """params.yaml:training's values for ``method`` (typed against RunArguments and MDPOConfig, every error naming
    its key) with ``fixed`` (the pipeline's own keys), parsed into MDPOConfig the way the run will parse them."""
    from mdpo_pipeline.training.run import TrainRunConfig, typed_run_values

    if method not in METHODS:
        where = key("params.yaml:training.methods", str(method)) if method in settings.training.methods else "method"
        raise ConfigError(f"{where}: unknown method: method must be one of {sorted(METHODS)}")
    located = settings.training.located(method)
    if "output_dir" in located:
        raise ConfigError(f"{located['output_dir'][1]}: unknown key (method {method}): the pipeline sets each "
                          "adapter's output_dir")
    values = typed_run_values({k: v for k, (v, _) in located.items()}, lambda k: located[k][1],
                              unknown=f"unknown key (method {method})")
    cfg = TrainRunConfig(values | fixed)
    environ = dict(os.environ)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' renames: the run itself reports them
            cfg.parse(cuda=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params.yaml:training (method {method}): {clip(str(e))}") from e
    finally:
        # Parsing TrainingArguments may export accelerate variables; this process must not pass them on.
        for name in set(os.environ) - set(environ):
            del os.environ[name]
        os.environ.update(environ)
    return cfg


@contextlib.contextmanager
def adapter_lock(project: Project, method: str, holder: str, log=print) -> Iterator[None]:
    """Held while ``method``'s adapter is trained and recorded: another materialization of the same partition waits
    for it (saying whom it waits for) instead of writing the same adapter directory, so an adapter and its registry
    version always come from one run. A file lock beside the adapter: it holds across processes and containers that
    share the checkout, and the system releases it when its process dies."""
    out = project.adapter_path(method)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock, who = FileLock(str(out.with_name(f"{method}.lock"))), out.with_name(f"{method}.lock.holder")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        current = who.read_text().strip() if who.is_file() else "another run"
        log(f"adapters[{method}] is being trained by {current}: waiting for it to finish")
        lock.acquire()
    try:
        who.write_text(f"{holder} (pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        yield
    finally:
        who.unlink(missing_ok=True)
        lock.release()


#: Where adapters whose MLflow logging failed (the server unreachable) wait for ``replay_pending``: one JSON each.
PENDING_DIR = "artifacts/mlflow_pending"
#: Seconds before each new try of an unreachable tracking server (after MLflow's own HTTP retries).
RETRY_DELAYS_S = (5.0, 20.0, 60.0)


def _unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the tracking server could not be reached (not a refusal or a bug of ours)."""
    import requests

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                             TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    return any(s in text for s in ("Max retries exceeded", "Connection refused", "Failed to establish a new "
                                   "connection", "Read timed out", "Connection aborted"))


def _adapter_digest(out: Path) -> str | None:
    weights = out / "adapter_model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None


def record_adapter_or_defer(project: Project, cfg: "TrainRunConfig", uri: str, experiment: str,
                            tags: dict[str, str] | None = None, log=print,
                            delays: tuple[float, ...] = RETRY_DELAYS_S) -> dict[str, Any]:
    """``record_adapter``, tried again after each of ``delays`` while the tracking server is unreachable; when it
    stays so, the adapter is kept and what to log is written under PENDING_DIR for ``replay_pending`` (which the
    next recorded run also calls). Adapters left pending earlier are replayed first. Returns record_adapter's
    result, or {"pending": path, "error": ...}."""
    replay_pending(project, uri, experiment, log=log)
    for attempt, delay in enumerate((*delays, None), start=1):
        try:
            return record_adapter(project, cfg, uri, experiment, tags)
        except Exception as e:
            if not _unreachable(e):
                raise
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            if delay is None:
                break
            log(f"MLflow at {uri} unreachable (try {attempt} of {len(delays) + 1}): {reason}; trying again in "
                f"{delay:g} s")
            time.sleep(delay)
    # Named by the time it was left (nanoseconds: sorted = oldest first, never two alike) and its method.
    pending = project.root / PENDING_DIR / f"{time.time_ns():020d}-{cfg.method}.json"
    out = Path(cfg.output_dir)
    write_json({"method": cfg.method, "output_dir": str(out), "run_config": dict(cfg), "experiment": experiment,
                "tags": dict(tags or {}), "adapter_sha256": _adapter_digest(out), "error": reason}, pending)
    log(f"MLflow at {uri} stayed unreachable: the adapter at {out} is kept and its run and registry version wait "
        f"in {pending}; `mdpo mlflow replay` logs them (so does the next adapter recorded)")
    return {"pending": str(pending), "error": reason}


def replay_pending(project: Project, uri: str, experiment: str | None = None, log=print) -> list[dict[str, Any]]:
    """Log every adapter waiting under PENDING_DIR (oldest first) and remove its file once logged; an adapter
    changed since (trained again) is not logged under the old run's name: its file is set aside as .stale. Stops at
    the first one the server still cannot take."""
    from mdpo_pipeline.training.run import TrainRunConfig

    waiting = []
    for path in sorted((project.root / PENDING_DIR).glob("*.json")):
        entry = json.loads(path.read_text())
        out = Path(entry["output_dir"])
        if _adapter_digest(out) != entry["adapter_sha256"]:
            path.rename(path.with_suffix(".stale"))
            log(f"{path.name}: the adapter at {out} changed since it was trained (another run wrote it): not logged")
        else:
            waiting.append((path, entry))
    done = []
    for path, entry in waiting:
        cfg = TrainRunConfig(entry["run_config"])
        try:
            recorded = record_adapter(project, cfg, uri, entry.get("experiment") or experiment, entry["tags"])
        except Exception as e:
            if not _unreachable(e):
                raise
            log(f"{path.name}: MLflow at {uri} still unreachable; left pending")
            break
        path.unlink()
        log(f"{path.name}: logged as MLflow run {recorded['mlflow_run_id']}, registry version "
            f"{recorded['registered_version']}")
        done.append({"pending": path.name, **recorded})
    return done


def record_adapter(project: Project, cfg: "TrainRunConfig", uri: str, experiment: str,
                   tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Log a finished adapter as an MLflow run (with ``tags``) and a new registry version; draw its curves beside
    it. Returns the run id, the version and their MLflow UI pages."""
    from mdpo_pipeline.integrations.dvc import lock_hashes
    from mdpo_pipeline.integrations.tracking import (
        TrainingRecord,
        git_commit,
        log_training_run,
        model_version_ui_url,
        registered_model_name,
        run_ui_url,
        split_history,
    )

    out = Path(cfg.output_dir)
    history = json.loads((out / "log_history.json").read_text())
    curves = training_curves(split_history(history)[0], out.parent / f"{cfg.method}.curves.png", title=cfg.method)
    # What the run trained with (its defaults, the preset's and LoRA's included), as it wrote it beside the adapter.
    saved = out / "run_config.json"
    config = json.loads(saved.read_text()) if saved.is_file() else dict(cfg)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    name = base_model_name(project)
    record = TrainingRecord(cfg.method, name, out, config, history, lock_hashes(project.root),
                            tags=dict(tags or {}), curves=curves, started_at=summary.get("started_at"),
                            ended_at=summary.get("ended_at"))
    artifact_root = project.root / "mlartifacts"
    run_id, version = log_training_run(record, uri, experiment, artifact_root=artifact_root,
                                       git_sha=git_commit(project.root))
    from mlflow import MlflowClient

    exp_id = MlflowClient(uri).get_run(run_id).info.experiment_id
    return {"mlflow_run_id": run_id, "registered_version": version, "curves": curves, "experiment_id": exp_id,
            "run_url": run_ui_url(exp_id, run_id),
            "version_url": model_version_ui_url(registered_model_name(name), version)}

