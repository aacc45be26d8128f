"""The ingest's output files: instructions.parquet, quarantine.parquet and summary.json."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from mdpo_pipeline.core.ingest.result import IngestResult
from mdpo_pipeline.core.io import write_json, write_parquet
from mdpo_pipeline.core.schemas import INSTRUCTIONS_SCHEMA, QUARANTINE_SCHEMA, instruction_to_row


def write_ingest(
    result: IngestResult, out_dir: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> dict:
    """Write instructions.parquet, quarantine.parquet and summary.json; return the summary.

    ``image_root`` is how summary.json records the image root (e.g. relative to the project, so the
    bytes do not depend on the checkout's location); default: the absolute path.
    """
    out = Path(out_dir)
    rows = (instruction_to_row(i) for i in result.instructions)
    write_parquet(rows, out / "instructions.parquet", INSTRUCTIONS_SCHEMA)
    records = (asdict(q) | {"reason": q.reason.value} for q in result.quarantine)
    write_parquet(records, out / "quarantine.parquet", QUARANTINE_SCHEMA)
    summary = result.summary(None if image_root is None else str(image_root))
    write_json(summary, out / "summary.json")
    return summary
