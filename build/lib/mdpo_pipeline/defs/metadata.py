"""Turning a stage's summary into Dagster metadata a person can read in the UI."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import dagster as dg


def md_table(mapping: dict[str, Any], key: str = "key", value: str = "value") -> dg.MetadataValue:
    """A two-column markdown table of a flat mapping (counts by reason, by source, ...)."""
    lines = [f"| {key} | {value} |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in mapping.items()]
    return dg.MetadataValue.md("\n".join(lines))


def md_image(path: str | Path, alt: str = "preview") -> dg.MetadataValue:
    """An image embedded in markdown metadata (the Dagster UI renders data URIs)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def summary_metadata(summary: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """Scalars become entries, flat dicts of scalars become tables, nested dicts recurse ``depth`` levels."""
    meta: dict[str, Any] = {}
    for k, v in summary.items():
        name = f"{prefix}{k}"
        if isinstance(v, bool | int | float):
            meta[name] = v
        elif isinstance(v, str) and len(v) <= 200:
            meta[name] = v
        elif isinstance(v, dict) and v and all(isinstance(x, bool | int | float | str) for x in v.values()):
            meta[name] = md_table(v)
        elif isinstance(v, dict) and depth > 1 and k != "config":
            meta |= summary_metadata(v, prefix=f"{name}.", depth=depth - 1)
    return meta
