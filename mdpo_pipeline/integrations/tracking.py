"""MLflow tracking and registry for training runs. No Dagster here: the training program logs too.

The backend is a sqlite file in the project by default (offline, real MLflow); MLFLOW_TRACKING_URI
switches to a server. Artifacts go under <root>/mlartifacts unless the server decides.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from mdpo_pipeline.core.plots import training_curves

DEFAULT_EXPERIMENT = "mdpo"
_PARAM_MAX = 6000  # MLflow's limit on a param value's length
ARTIFACTS_DIR = "mlartifacts"
#: MLflow 3's UI opens an experiment without this tag on its GenAI (traces) view, empty for training runs; this
#: value makes it open on the runs table (the UI's "Machine learning" kind).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
#: Kinds the UI guessed (or never set): ours replaces them; a kind someone chose is left alone.
_GUESSED_KINDS = ("", "no_inferred_type", "genai_development_inferred", "custom_model_development_inferred")
#: The Trainer's log key with the wall clock of a logged step (training/run.py:WALL_TIME).
WALL_TIME = "wall_time"
#: The Trainer's closing log entry (means and totals over the whole run), renamed to run-level metrics: logged at
#: its last step they would put one extra point on every curve.
SUMMARY_METRICS = {"train_loss": "train/loss_mean", "train_runtime": "train/runtime_s",
                   "train_samples_per_second": "train/samples_per_s", "train_steps_per_second": "train/steps_per_s",
                   "total_flos": "train/total_flos"}


def checkout_store(root: str | os.PathLike) -> str:
    """The project's own tracking store: a sqlite file in its root."""
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def tracking_uri(root: str | os.PathLike, explicit: str | None = None) -> str:
    """``explicit``, else $MLFLOW_TRACKING_URI, else the project's sqlite store (artifact locations a copied or
    moved checkout brought along pointed back at its own folder first: ``relocate_artifacts``)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    relocate_artifacts(root)
    return checkout_store(root)


def _foreign_prefix(location: str, own: str) -> str | None:
    """The ``.../mlartifacts`` URI prefix of ``location`` when it is another folder's than ``own``."""
    marker = f"/{ARTIFACTS_DIR}"
    if not location.startswith("file:") or marker not in location:
        return None
    cut = location.index(marker) + len(marker)
    if location[cut:cut + 1] not in ("", "/"):
        return None
    prefix = location[:cut]
    return None if prefix == own else prefix


#: Every column of MLflow's sqlite schema that holds an artifact URI.
_ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("model_versions", "storage_location"), ("model_versions", "source"),
                     ("logged_models", "artifact_location"))


def relocate_artifacts(root: str | os.PathLike) -> int:
    """Point the artifact locations of the project's own sqlite store that lie in another folder's mlartifacts/
    (a copied or moved checkout: MLflow stores absolute URIs) at this project's mlartifacts/; the number of
    experiments moved. Only the checkout's own mlflow.db is touched, never a server's or a store set by URI."""
    root = Path(root).resolve()
    db = root / "mlflow.db"
    if not db.is_file():
        return 0
    own = (root / ARTIFACTS_DIR).as_uri()
    # The side-by-side runs of the demo may open the store at once: wait for the other writer, do not fail.
    with closing(sqlite3.connect(db, timeout=60)) as con:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return 0
        rows = con.execute("SELECT artifact_location FROM experiments WHERE artifact_location IS NOT NULL")
        foreign = {p for (loc,) in rows if (p := _foreign_prefix(loc, own))}
        if not foreign:
            return 0
        with con:  # one transaction: a store is moved whole or not at all
            for old in foreign:
                for table, column in _ARTIFACT_COLUMNS:
                    if table in tables:
                        con.execute(
                            f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                            f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                            (own, len(old) + 1, old, len(old) + 1, old + "/"),
                        )
        return len(foreign)


def mlflow_ui_url() -> str:
    """The MLflow UI's address for links: $MLFLOW_UI_URL, else `make mlflow-ui`'s http://127.0.0.1:5000."""
    return os.environ.get("MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/")


def run_ui_url(experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run."""
    return f"{mlflow_ui_url()}/#/experiments/{experiment_id}/runs/{run_id}"


def model_version_ui_url(name: str, version: str | int) -> str:
    """The MLflow UI page of one registered model version."""
    return f"{mlflow_ui_url()}/#/models/{quote(name, safe='')}/versions/{version}"


def split_history(log_history: Sequence[dict]) -> tuple[list[dict], dict[str, float]]:
    """(the step series, the run-level summary) of a Trainer's log history: the closing entry's totals renamed by
    SUMMARY_METRICS, and every other entry once per step (a repeated step, as a resumed run logs it, counts once)."""
    series: list[dict] = []
    summary: dict[str, float] = {}
    seen: set[tuple[str, int]] = set()
    for entry in log_history:
        if any(k in entry for k in SUMMARY_METRICS):
            summary |= {SUMMARY_METRICS[k]: float(v) for k, v in entry.items() if k in SUMMARY_METRICS}
            continue
        if "step" not in entry:
            continue
        fresh = {k: v for k, v in entry.items() if (k, entry["step"]) not in seen or k == WALL_TIME}
        seen |= {(k, entry["step"]) for k in entry}
        if set(fresh) - {"step", WALL_TIME}:
            series.append(fresh | {"step": entry["step"]})
    return series, summary


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def registered_model_name(base_model: str) -> str:
    """Registry name for adapters of a base model: its preset or id with only [A-Za-z0-9._-]."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base_model).strip("-") or "model"


def git_commit(root: str | os.PathLike) -> str:
    """HEAD's commit, suffixed '+dirty' when tracked files differ from it; 'unknown' outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


def flatten_params(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested config → {"a.b": "value"} strings within MLflow's length limit."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out |= flatten_params(v, f"{prefix}{k}.")
    else:
        text = obj if isinstance(obj, str) else json.dumps(obj, default=str)
        out[prefix.rstrip(".")] = text[:_PARAM_MAX]
    return out


@dataclass
class TrainingRecord:
    """Everything one finished training run leaves for the tracking server."""

    method: str
    base_model: str
    adapter_dir: Path
    config: dict[str, Any]
    log_history: Sequence[dict] = ()
    data_versions: dict[str, str] = field(default_factory=dict)  # stage → DVC content hash
    tags: dict[str, str] = field(default_factory=dict)
    curves: Path | None = None  # the loss/reward plot already drawn; None: drawn here from log_history
    started_at: float | None = None  # wall clock (s since the epoch) the training began; None: its first log
    ended_at: float | None = None  # and ended; None: its last log (else the time of logging)


def experiment_id(client, name: str, artifact_root: Path | None) -> str:
    """The id of experiment ``name``, created (artifacts under ``artifact_root``/name) when missing; either way
    tagged as a classic-ML experiment for the UI."""
    from mlflow.exceptions import MlflowException  # see log_training_run: mlflow is imported on use

    if artifact_root is not None and client.tracking_uri == checkout_store(Path(artifact_root).parent):
        relocate_artifacts(Path(artifact_root).parent)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = (artifact_root / name).resolve().as_uri() if artifact_root else None
        try:
            return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:
            # Another run (the demo trains models side by side) created it first.
            if (exp := client.get_experiment_by_name(name)) is None:
                raise
    if exp.tags.get(EXPERIMENT_KIND_TAG, "") in _GUESSED_KINDS:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def log_training_run(
    record: TrainingRecord,
    uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    artifact_root: Path | None = None,
    git_sha: str = "unknown",
) -> tuple[str, str]:
    """Log ``record`` as one MLflow run and register its adapter as a new model version; (run_id, version)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    exp_id = experiment_id(client, experiment, artifact_root)
    tags = {"method": record.method, "base_model": record.base_model, "git_commit": git_sha}
    tags |= {f"data.{stage}": md5 for stage, md5 in record.data_versions.items()} | record.tags
    series, summary = split_history(record.log_history)
    logged_at = [h[WALL_TIME] for h in record.log_history if _number(h.get(WALL_TIME))]
    now = time.time()
    # The training's own clock: a resumed run's first logs predate the process that finished it.
    start = min([record.started_at, *logged_at] if record.started_at else logged_at, default=now)
    end = record.ended_at or max(logged_at, default=now)
    run = client.create_run(exp_id, start_time=_ms(start), run_name=record.method, tags=tags)
    run_id = run.info.run_id
    try:
        params = flatten_params(record.config) | {f"data.{k}": v for k, v in record.data_versions.items()}
        items = list(params.items())
        for i in range(0, len(items), 100):  # the batch API caps params per call
            client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in items[i : i + 100]])
        metrics = [
            mlflow.entities.Metric(key, float(value), _ms(h.get(WALL_TIME) or end), int(h["step"]))
            for h in series
            for key, value in h.items()
            if key not in ("step", WALL_TIME) and _number(value)
        ]
        # Run-level numbers, one value each: at step 0, the run's end, apart from every step series.
        metrics += [mlflow.entities.Metric(key, value, _ms(end), 0) for key, value in summary.items()]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        client.log_artifacts(run_id, str(record.adapter_dir), artifact_path="adapter")
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(tmp) / "run_config.json"
            cfg_path.write_text(json.dumps(record.config, indent=2, sort_keys=True, default=str))
            client.log_artifact(run_id, str(cfg_path), artifact_path="config")
            png = Path(tmp) / "curves.png"  # one name in every run, whoever drew it
            if record.curves is not None:
                shutil.copyfile(record.curves, png)
            elif series:
                training_curves(series, png, title=record.method)
            if png.is_file():
                client.log_artifact(run_id, str(png), artifact_path="plots")
                _log_curves_image(client, run_id, png, step=max((int(h["step"]) for h in series), default=0),
                                  timestamp=_ms(end))
        client.set_terminated(run_id, "FINISHED", end_time=_ms(end))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    name = registered_model_name(record.base_model)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        try:
            client.create_registered_model(name, description=f"LoRA adapters of {record.base_model} (mdpo-pipeline)")
        except MlflowException:
            # Another run registered its first version at the same time.
            if not client.search_registered_models(filter_string=f"name = '{name}'"):
                raise
    version = client.create_model_version(
        name, source=f"runs:/{run_id}/adapter", run_id=run_id, tags={"method": record.method}
    )
    return run_id, version.version


def _log_curves_image(client, run_id: str, png: Path, step: int, timestamp: int) -> None:
    """The curves as an MLflow image under one key in every run: the runs' chart view and the compare view show
    them side by side (a plain artifact shows only on its own run's page)."""
# PIL comes with the model stack; a store of runs only needs it when it logs one
    from PIL import Image

    try:
        with Image.open(png) as image:
            client.log_image(run_id, image.convert("RGB"), key="training_curves", step=step, timestamp=timestamp)
    except OSError:
        # Not a PNG PIL can read (a stand-in in tests): the artifact under plots/ is still there.
        return


def tag_run(uri: str, run_id: str, tags: Mapping[str, str]) -> str:
    """Set ``tags`` on a logged run (the orchestrator's run id and page, known only to the caller); its
    experiment's id."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    return client.get_run(run_id).info.experiment_id


#: Registry aliases: the promoted adapter, and the one it replaced.
CHAMPION, PREVIOUS = "champion", "previous"


class GateDecision(Protocol):
    """What the registry records of a gate decision (``evaluation.registry.Decision``)."""

    passed: bool
    promote: bool

    def as_dict(self) -> dict[str, Any]: ...


def download_registered_adapter(name: str, version: str, tracking_uri: str) -> Path:
    """The local folder of a registered adapter version (a number, or an alias such as "champion")."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    mv = client.get_model_version(name, version) if str(version).isdigit() else client.get_model_version_by_alias(
        name, version)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, tracking_uri=tracking_uri))


def current_champion(client, model_name: str):
    """The model version holding the ``champion`` alias, or None."""
    from mlflow.exceptions import MlflowException  # see log_training_run: mlflow is imported on use

    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def apply_decision(client, model_name: str, version: str, decision: GateDecision) -> dict[str, Any]:
    """Tag ``version`` with the decision and, when it promotes, move champion → previous and set champion."""
    client.set_model_version_tag(model_name, version, "gate.passed", str(decision.passed).lower())
    client.set_model_version_tag(model_name, version, "gate.promoted", str(decision.promote).lower())
    client.set_model_version_tag(model_name, version, "gate.decision", json.dumps(decision.as_dict(), default=str)[:5000])
    result: dict[str, Any] = {"version": version, "champion_before": None, "champion_after": None}
    old = current_champion(client, model_name)
    result["champion_before"] = old.version if old else None
    if decision.promote and (old is None or old.version != version):
        if old is not None:
            client.set_registered_model_alias(model_name, PREVIOUS, old.version)
        client.set_registered_model_alias(model_name, CHAMPION, version)
    new = current_champion(client, model_name)
    result["champion_after"] = new.version if new else None
    return result
