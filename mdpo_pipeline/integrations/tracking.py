"""MLflow tracking and registry for training runs. No Dagster here: the training program logs too.

The backend is a sqlite file in the project by default (offline, real MLflow); MLFLOW_TRACKING_URI
switches to a server. Artifacts go under <root>/mlartifacts unless the server decides.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mdpo_pipeline.core.plots import training_curves

DEFAULT_EXPERIMENT = "mdpo"
_PARAM_MAX = 6000  # MLflow's limit on a param value's length


def tracking_uri(root: str | os.PathLike, explicit: str | None = None) -> str:
    """``explicit``, else $MLFLOW_TRACKING_URI, else a sqlite file in the project root."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


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


def experiment_id(client, name: str, artifact_root: Path | None) -> str:
    """The id of experiment ``name``, created (artifacts under ``artifact_root``/name) when missing."""
    from mlflow.exceptions import MlflowException  # see log_training_run: mlflow is imported on use

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (artifact_root / name).resolve().as_uri() if artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another run (the demo trains models side by side) created it first.
        if (exp := client.get_experiment_by_name(name)) is None:
            raise
        return exp.experiment_id


def log_training_run(
    record: TrainingRecord,
    uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    artifact_root: Path | None = None,
    git_sha: str = "unknown",
) -> tuple[str, str]:
    """Log ``record`` as one MLflow run and register its adapter as a new model version; (run_id, version)."""
    # mlflow takes seconds to import: only the functions that talk to the server pay for it.
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    exp_id = experiment_id(client, experiment, artifact_root)
    tags = {"method": record.method, "base_model": record.base_model, "git_commit": git_sha}
    tags |= {f"data.{stage}": md5 for stage, md5 in record.data_versions.items()} | record.tags
    run = client.create_run(exp_id, run_name=record.method, tags=tags)
    run_id = run.info.run_id
    try:
        params = flatten_params(record.config) | {f"data.{k}": v for k, v in record.data_versions.items()}
        items = list(params.items())
        for i in range(0, len(items), 100):  # the batch API caps params per call
            client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in items[i : i + 100]])
        metrics = [
            mlflow.entities.Metric(key, float(value), 0, int(h["step"]))
            for h in record.log_history
            if "step" in h
            for key, value in h.items()
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
        ]
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
            elif record.log_history:
                training_curves(record.log_history, png, title=record.method)
            if png.is_file():
                client.log_artifact(run_id, str(png), artifact_path="plots")
        client.set_terminated(run_id, "FINISHED")
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


#: Registry aliases: the promoted adapter, and the one it replaced.
CHAMPION, PREVIOUS = "champion", "previous"


class GateDecision(Protocol):
    """What the registry records of a gate decision (``programs.evaluation.registry.Decision``)."""

    passed: bool
    promote: bool

    def as_dict(self) -> dict[str, Any]: ...


def download_registered_adapter(name: str, version: str, tracking_uri: str) -> Path:
    """The local folder of a registered adapter version (a number, or an alias such as "champion")."""
    # mlflow takes seconds to import: only the functions that talk to the server pay for it.
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
