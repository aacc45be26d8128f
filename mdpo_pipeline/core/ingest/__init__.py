"""Read Silkie / VLFeedback or the released mDPO pair file into validated Instructions, quarantining
every row that cannot be used with the reason, the place and the offending input.

Rows are streamed: memory grows with the kept and quarantined rows (plus a small key per row for
duplicate detection), never with the raw file. Text checks run in the calling process; image checks,
the expensive part, run in worker processes over batches of rows, drained in input order. Checks run
in a fixed order and a row gets the first reason that applies. Prompts and responses are stored with
outer whitespace stripped.

VLFeedback rows come in two layouts, both accepted from jsonl and parquet: the raw release's, where
``completions`` is a list of {model, response, annotations}, and the Hugging Face ``datasets`` export's,
where it is one struct of equal-length lists ({"model": [...], "response": [...], "annotations": [...]},
nested structs of lists transposed the same way). The second is turned into the first before any check.
An ``img_path`` column, when a row has one, names its image; else it is ``merged_images/{id}.jpg``.

The package, by job: ``config`` (IngestConfig and the raw release's file names), ``readers`` (jsonl, parquet,
a streaming JSON-array parser, the instruction-source file), ``validation`` (the row checks and their
quarantine reasons), ``engine`` (text checks in order, image checks in a process pool), ``result``
(IngestResult and its summary), ``sources`` (where the raw files come from: a local directory or file, the
hub download and its zip extraction; ``ingest`` picks one by format) and ``write`` (the output files).
"""

from __future__ import annotations

from mdpo_pipeline.core.ingest.config import (
    FORMATS,
    IMAGE_CHECKS,
    IMAGES_DIR,
    IMAGES_ZIP,
    RAW_FILE,
    SOURCE_FILE,
    IngestConfig,
)
from mdpo_pipeline.core.ingest.result import IngestResult
from mdpo_pipeline.core.ingest.sources import DataSourceUnavailable, ingest
from mdpo_pipeline.core.ingest.validation import strip_prompt_template
from mdpo_pipeline.core.ingest.write import write_ingest

__all__ = [
    "FORMATS",
    "IMAGE_CHECKS",
    "IMAGES_DIR",
    "IMAGES_ZIP",
    "RAW_FILE",
    "SOURCE_FILE",
    "DataSourceUnavailable",
    "IngestConfig",
    "IngestResult",
    "ingest",
    "strip_prompt_template",
    "write_ingest",
]
