"""An experiment grid in MLflow: one parent run per grid, one child run per cell, the claims report on the parent.

Cells are compared in MLflow's compare view: every child logs the same metric names (``eval/<metric>``,
``probe/<number>``, ``answers/<benchmark>.<stat>``), its method, seed and axes as params, and its timings. Grid
cells are experiments, not release candidates: they are not registered as model versions. No Dagster here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mdpo_pipeline.integrations.tracking import experiment_id, flatten_params, run_ui_url

GRID_TAG, CELL_TAG, KIND_TAG, FINGERPRINT_TAG = "mdpo.grid", "mdpo.cell", "mdpo.kind", "mdpo.fingerprint"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a child under it


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def parent_run(client, exp_id: str, grid: str, description: str = "") -> str:
    """The grid's parent run (found by its tag, made when missing)."""
    found = client.search_runs([exp_id], filter_string=f"tags.`{GRID_TAG}` = '{grid}' and tags.`{KIND_TAG}` = 'grid'",
                               max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=f"grid:{grid}", tags={
        GRID_TAG: grid, KIND_TAG: "grid", "mlflow.note.content": description or f"experiment grid {grid}"})
    return run.info.run_id


def cell_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one cell record under the names every child run shares."""
    out = {f"eval/{k}": float(v) for k, v in (record.get("scores") or {}).items() if v is not None}
    out |= {f"probe/{k}": float(v) for k, v in (record.get("probe") or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)}
    for bench, stats in (record.get("answers") or {}).items():
        out |= {f"answers/{bench}.{k}": float(v) for k, v in stats.items() if isinstance(v, int | float)}
    out |= {f"time/{k}": float(v) for k, v in (record.get("timing") or {}).items()}
    return out


def log_cell(uri: str, experiment: str, artifact_root: Path | None, record: Mapping[str, Any], cell_dir: Path,
             tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """Log a finished cell as a child run of its grid's parent (once per fingerprint: a reused cell keeps its
    run); {"run_id", "parent_run_id", "url"}."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(uri)
    exp_id = experiment_id(client, experiment, artifact_root)
    grid, cell = record["experiment"], record["cell"]
    parent = parent_run(client, exp_id, grid)
    found = client.search_runs([exp_id], filter_string=(
        f"tags.`{GRID_TAG}` = '{grid}' and tags.`{CELL_TAG}` = '{cell}' "
        f"and tags.`{FINGERPRINT_TAG}` = '{record['fingerprint']}'"), max_results=1)
    if found:
        run_id = found[0].info.run_id
        if tags:
            for k, v in tags.items():
                client.set_tag(run_id, k, v)
        return {"run_id": run_id, "parent_run_id": parent, "url": run_ui_url(exp_id, run_id)}
    started = float(record.get("started") or time.time())
    ended = started + float((record.get("timing") or {}).get("total_s", 0.0))
    run = client.create_run(exp_id, run_name=cell, start_time=_ms(started), tags={
        PARENT_TAG: parent, GRID_TAG: grid, CELL_TAG: cell, FINGERPRINT_TAG: record["fingerprint"],
        KIND_TAG: "grid_cell", "method": record["method"], **(tags or {})})
    run_id = run.info.run_id
    try:
        params = {"method": record["method"], "seed": str(record["seed"])}
        params |= {f"axis.{k}": str(v) for k, v in (record.get("axes") or {}).items()}
        config = cell_dir / "adapter" / "run_config.json"
        if config.is_file():
            import json  # only a trained cell has a run config

            params |= flatten_params({"train": json.loads(config.read_text())})
        items = list(params.items())
        for i in range(0, len(items), 100):  # the batch API caps params per call
            client.log_batch(run_id, params=[Param(k, v) for k, v in items[i: i + 100]])
        client.log_batch(run_id, metrics=[Metric(k, v, _ms(ended), 0) for k, v in cell_metrics(record).items()])
        for name in ("cell.json", "scores.json"):
            if (cell_dir / name).is_file():
                client.log_artifact(run_id, str(cell_dir / name), artifact_path="cell")
        client.set_terminated(run_id, "FINISHED", end_time=_ms(ended))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return {"run_id": run_id, "parent_run_id": parent, "url": run_ui_url(exp_id, run_id)}


def log_report(uri: str, experiment: str, artifact_root: Path | None, grid: str, report_dir: Path,
               metrics: Mapping[str, float] | None = None) -> dict[str, str]:
    """Attach the claims report (markdown, JSON, plots) to the grid's parent run; {"run_id", "url"}."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(uri)
    exp_id = experiment_id(client, experiment, artifact_root)
    parent = parent_run(client, exp_id, grid)
    for path in sorted(report_dir.iterdir()):
        if path.suffix in (".md", ".json", ".png"):
            client.log_artifact(parent, str(path), artifact_path="claims")
    now = _ms(time.time())
    if metrics:
        client.log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    if (report_dir / "claims.md").is_file():
        client.set_tag(parent, "mlflow.note.content", (report_dir / "claims.md").read_text()[:5000])
    run = client.get_run(parent)
    if run.info.status == "RUNNING":
        client.set_terminated(parent, "FINISHED")
    return {"run_id": parent, "url": run_ui_url(exp_id, parent)}
