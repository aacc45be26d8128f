"""The data stages as plain functions: read params, call the core, write ``data/<stage>/``.

One function per stage. The CLI (and so `dvc repro`) and the Dagster assets both call these, so the
two routes cannot drift apart. No Dagster import here.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mdpo_pipeline.core import corruption, ingest, pairs
from mdpo_pipeline.core.plots import contact_sheet
from mdpo_pipeline.core.schemas import instruction_from_row
from mdpo_pipeline.core.shapeworld import ShapeWorldConfig, generate_benchmarks, generate_vlfeedback
from mdpo_pipeline.project import ConfigError, Project, build_config

STAGES = ("shapeworld", "raw_silkie", "preference_pairs", "corrupted_images")

#: raw_silkie params that steer the stage itself rather than the reader.
_RAW_STAGE_KEYS = ("max_quarantine_share",)


def _section(project: Project, name: str) -> dict[str, Any]:
    return dict(project.params().get(name) or {})


def _read_summary(stage_dir: Path) -> dict[str, Any]:
    path = stage_dir / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: materialize the upstream stage {stage_dir.name!r} first")
    return json.loads(path.read_text())


def shapeworld_config(project: Project) -> ShapeWorldConfig:
    """The ShapeWorld generator settings from params.yaml."""
    return build_config(ShapeWorldConfig, _section(project, "shapeworld"), where="params.yaml:shapeworld")


def run_shapeworld(project: Project, progress: bool = False) -> dict[str, Any]:
    """Generate ShapeWorld: raw VLFeedback files under vlfeedback/ and the benchmark splits under benchmarks/."""
    cfg = shapeworld_config(project)
    out = project.data_dir("shapeworld")
    feedback = generate_vlfeedback(cfg, out / "vlfeedback", progress=progress)
    benchmarks = generate_benchmarks(cfg, out / "benchmarks", progress=progress)
    summary = {"config": asdict(cfg), "vlfeedback": feedback, "benchmarks": benchmarks}
    sample = sorted((out / "vlfeedback" / "merged_images").glob("*.jpg"))[:16]
    if sample:
        contact_sheet(sample, out / "preview.png", labels=[p.stem for p in sample])
    (out / "summary.json").write_text(json.dumps(summary, sort_keys=True, indent=2, default=str) + "\n")
    return summary


def raw_silkie_config(project: Project) -> tuple[ingest.IngestConfig, dict[str, Any]]:
    """The reader settings and the stage settings (quarantine threshold) from params.yaml."""
    section = _section(project, "raw_silkie")
    stage = {k: section.pop(k) for k in _RAW_STAGE_KEYS if k in section}
    stage.setdefault("max_quarantine_share", 0.05)
    if "path" not in section:
        raise ConfigError("params.yaml:raw_silkie: 'path' is required (a directory or file of raw VLFeedback)")
    section["path"] = str(project.path(section["path"]))
    if section.get("image_root"):
        section["image_root"] = str(project.path(section["image_root"]))
    cfg = build_config(ingest.IngestConfig, section, where="params.yaml:raw_silkie")
    return cfg, stage


def run_raw_silkie(project: Project, progress: bool = False) -> dict[str, Any]:
    """Read and validate raw VLFeedback; write kept rows, the quarantine table and a summary."""
    cfg, stage = raw_silkie_config(project)
    result = ingest.ingest(cfg, progress=progress)
    out = project.data_dir("raw_silkie")
    summary = ingest.write_ingest(result, out, image_root=project.rel(result.image_root))
    summary["max_quarantine_share"] = stage["max_quarantine_share"]
    return summary


def pairs_config(project: Project) -> pairs.PairsConfig:
    """The pair-building settings from params.yaml."""
    return build_config(pairs.PairsConfig, _section(project, "preference_pairs"), where="params.yaml:preference_pairs")


def run_preference_pairs(project: Project, progress: bool = False) -> dict[str, Any]:
    """Build preference pairs from raw_silkie's kept rows, filter by source and sample N."""
    cfg = pairs_config(project)
    raw_dir = project.data_dir("raw_silkie")
    _read_summary(raw_dir)  # a clear error when raw_silkie was never materialized
    instructions = [instruction_from_row(r) for r in pq.read_table(raw_dir / "instructions.parquet").to_pylist()]
    result = pairs.make_pairs(instructions, cfg)
    summary = pairs.write_pairs(result, project.data_dir("preference_pairs"))
    return summary


def corruption_config(project: Project) -> corruption.CorruptionConfig:
    """The corruption settings from params.yaml."""
    return build_config(
        corruption.CorruptionConfig, _section(project, "corrupted_images"), where="params.yaml:corrupted_images"
    )


def run_corrupted_images(project: Project, progress: bool = False) -> dict[str, Any]:
    """One seeded corrupted image per sampled instruction, plus the manifest and a preview grid."""
    cfg = corruption_config(project)
    pairs_dir = project.data_dir("preference_pairs")
    image_root = project.path(_read_summary(project.data_dir("raw_silkie"))["image_root"])
    table = pq.read_table(pairs_dir / "pairs.parquet", columns=["instruction_id", "image"])
    # One corrupted image per instruction: every pair of an instruction shares its image.
    samples = sorted(set(zip(table["instruction_id"].to_pylist(), table["image"].to_pylist())))
    out = project.data_dir("corrupted_images")
    result = corruption.corrupt_images(samples, image_root, out, cfg, progress=progress)
    return result.summary


RUNNERS = {
    "shapeworld": run_shapeworld,
    "raw_silkie": run_raw_silkie,
    "preference_pairs": run_preference_pairs,
    "corrupted_images": run_corrupted_images,
}
