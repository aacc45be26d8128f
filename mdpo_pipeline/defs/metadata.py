"""Turning a stage's summary into Dagster metadata a person can read in the UI."""

from __future__ import annotations

import base64
import math
import os
from pathlib import Path
from typing import Any

import dagster as dg

#: Significant digits of a float shown in metadata: a loss of 0.5849673925562108 reads as 0.585.
SIGNIFICANT = 4


def md_table(mapping: dict[str, Any], key: str = "key", value: str = "value") -> dg.MetadataValue:
    """A two-column markdown table of a flat mapping (counts by reason, by source, ...)."""
    lines = [f"| {key} | {value} |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in mapping.items()]
    return dg.MetadataValue.md("\n".join(lines))


def md_image(path: str | Path, alt: str = "preview") -> dg.MetadataValue:
    """An image embedded in markdown metadata (the Dagster UI renders data URIs)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def rounded(value: Any) -> Any:
    """A float to SIGNIFICANT significant digits (ints, bools and the rest as they are): metadata is read, not
    computed with; the exact numbers stay in the files and in MLflow."""
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return float(f"{value:.{SIGNIFICANT}g}")
    return value


def summary_metadata(summary: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """Scalars become entries (floats ``rounded``), flat dicts of scalars become tables, nested dicts recurse
    ``depth`` levels."""
    meta: dict[str, Any] = {}
    for k, v in summary.items():
        name = f"{prefix}{k}"
        if isinstance(v, bool | int | float):
            meta[name] = rounded(v)
        elif isinstance(v, str) and len(v) <= 200:
            meta[name] = v
        elif isinstance(v, dict) and v and all(isinstance(x, bool | int | float | str) for x in v.values()):
            meta[name] = md_table({key: rounded(x) for key, x in v.items()})
        elif isinstance(v, dict) and depth > 1 and k != "config":
            meta |= summary_metadata(v, prefix=f"{name}.", depth=depth - 1)
    return meta


def dagster_ui_url() -> str:
    """The Dagster UI's address for links: $DAGSTER_UI_URL, else `make dev`'s http://127.0.0.1:3000."""
    return os.environ.get("DAGSTER_UI_URL", "http://127.0.0.1:3000").rstrip("/")


def dagster_run_tags(context: dg.AssetExecutionContext) -> dict[str, str]:
    """MLflow tags that lead from a run back to the Dagster run that made it: its id, partition and UI page."""
    run_id = context.run.run_id
    tags = {"dagster.run_id": run_id, "dagster.run_url": f"{dagster_ui_url()}/runs/{run_id}"}
    if context.has_partition_key:
        tags["dagster.partition"] = context.partition_key
    return tags


def mlflow_links(run_url: str | None = None, version_url: str | None = None) -> dict[str, dg.MetadataValue]:
    """Metadata entries linking to an MLflow run and a registered model version (those given)."""
    links = {}
    if run_url:
        links["mlflow_run"] = dg.MetadataValue.url(run_url)
    if version_url:
        links["mlflow_model_version"] = dg.MetadataValue.url(version_url)
    return links
