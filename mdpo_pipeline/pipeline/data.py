"""The data phase: ShapeWorld (or real VLFeedback) → raw rows → preference pairs → corrupted images.

One function per stage: the typed settings (settings.py) in, the core called, ``data/<stage>/`` out. The CLI (and so
`dvc repro`) and the Dagster assets both run them through ``stages.RUNNERS``, so the two routes cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

import pyarrow.parquet as pq

from mdpo_pipeline.core import corruption, ingest, pairs
from mdpo_pipeline.core.plots import contact_sheet
from mdpo_pipeline.core.schemas import instruction_from_row
from mdpo_pipeline.pipeline.project import Project
from mdpo_pipeline.pipeline.settings import Settings, load_settings
from mdpo_pipeline.shapeworld import generate_benchmarks, generate_vlfeedback


def run_shapeworld(project: Project, progress: bool = False) -> dict[str, Any]:
    """Generate ShapeWorld: raw VLFeedback files under vlfeedback/ and the benchmark splits under benchmarks/."""
    cfg = load_settings(project).shapeworld
    out = project.data_dir("shapeworld")
    feedback = generate_vlfeedback(cfg, out / "vlfeedback", progress=progress)
    benchmarks = generate_benchmarks(cfg, out / "benchmarks", progress=progress)
    summary = {"config": asdict(cfg), "vlfeedback": feedback, "benchmarks": benchmarks}
    sample = sorted((out / "vlfeedback" / "merged_images").glob("*.jpg"))[:16]
    if sample:
        contact_sheet(sample, out / "preview.png", labels=[p.stem for p in sample])
    (out / "summary.json").write_text(json.dumps(summary, sort_keys=True, indent=2, default=str) + "\n")
    return summary


def raw_silkie_config(project: Project, settings: Settings | None = None) -> ingest.IngestConfig:
    """The reader settings of params.yaml:raw_silkie, their paths made absolute against the project."""
    reader = (settings or load_settings(project)).raw_silkie.reader
    return replace(reader, path=str(project.path(reader.path)),
                   image_root=str(project.path(reader.image_root)) if reader.image_root else None)


def run_raw_silkie(project: Project, progress: bool = False) -> dict[str, Any]:
    """Read and validate raw VLFeedback; write kept rows, the quarantine table and a summary."""
    settings = load_settings(project)
    result = ingest.ingest(raw_silkie_config(project, settings), progress=progress)
    out = project.data_dir("raw_silkie")
    summary = ingest.write_ingest(result, out, image_root=project.rel(result.image_root))
    summary["max_quarantine_share"] = settings.raw_silkie.max_quarantine_share
    return summary


def run_preference_pairs(project: Project, progress: bool = False) -> dict[str, Any]:
    """Build preference pairs from raw_silkie's kept rows, filter by source and sample N."""
    cfg = load_settings(project).preference_pairs
    raw_dir = project.data_dir("raw_silkie")
    project.summary("raw_silkie")  # a clear error when raw_silkie was never materialized
    instructions = [instruction_from_row(r) for r in pq.read_table(raw_dir / "instructions.parquet").to_pylist()]
    result = pairs.make_pairs(instructions, cfg)
    summary = pairs.write_pairs(result, project.data_dir("preference_pairs"))
    return summary


def run_corrupted_images(project: Project, progress: bool = False) -> dict[str, Any]:
    """One seeded corrupted image per sampled instruction, plus the manifest and a preview grid."""
    cfg = load_settings(project).corrupted_images
    pairs_dir = project.data_dir("preference_pairs")
    image_root = project.path(project.summary("raw_silkie")["image_root"])
    table = pq.read_table(pairs_dir / "pairs.parquet", columns=["instruction_id", "image"])
    # One corrupted image per instruction: every pair of an instruction shares its image.
    samples = sorted(set(zip(table["instruction_id"].to_pylist(), table["image"].to_pylist())))
    out = project.data_dir("corrupted_images")
    result = corruption.corrupt_images(samples, image_root, out, cfg, progress=progress)
    return result.summary


def raw_data_path(project: Project) -> str:
    """The raw VLFeedback directory params.yaml:raw_silkie.path names, relative to the project."""
    return str(load_settings(project).raw_silkie.reader.path)

