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
from mdpo_pipeline.core.errors import ConfigError
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
    """One seeded corrupted image per sampled instruction, plus the manifest and a preview grid; for strategy
    counterfactual, SymMPO's contrasting image and its answer instead (``counterfactual_provider``)."""
    settings = load_settings(project)
    cfg = settings.corrupted_images
    pairs_dir = project.data_dir("preference_pairs")
    image_root = project.path(project.summary("raw_silkie")["image_root"])
    table = pq.read_table(pairs_dir / "pairs.parquet", columns=["instruction_id", "image"])
    # One corrupted image per instruction: every pair of an instruction shares its image.
    samples = sorted(set(zip(table["instruction_id"].to_pylist(), table["image"].to_pylist())))
    provider = counterfactual_provider(project, settings) if cfg.strategy == "counterfactual" else None
    out = project.data_dir("corrupted_images")
    result = corruption.corrupt_images(samples, image_root, out, cfg, progress=progress, counterfactual=provider)
    return result.summary


#: The setting strategy counterfactual reads on real data, as errors name it.
COUNTERFACTUAL_KEY = "params.yaml:corrupted_images.counterfactual_path"


def counterfactual_provider(project: Project, settings: Settings) -> corruption.CounterfactualProvider:
    """Where strategy counterfactual (SymMPO, arXiv 2506.11712) gets each instruction's contrasting image and answer:
    the file params.yaml:corrupted_images.counterfactual_path names (relative to the project) when set, else the
    ShapeWorld world raw_silkie reads (its shapeworld_truth.jsonl sidecar marks it), which renders them. Neither is a
    ConfigError, raised before any image is written."""
    cfg = settings.corrupted_images
    if cfg.counterfactual_path:  # an explicit file wins, on ShapeWorld too: it is what the user asked for
        try:
            return corruption.CounterfactualFile.read(project.path(cfg.counterfactual_path), cfg.max_image_pixels)
        except corruption.CounterfactualError as e:
            raise ConfigError(f"{COUNTERFACTUAL_KEY}: {e}") from None
    world = project.path(settings.raw_silkie.reader.path)
    truth = world / "shapeworld_truth.jsonl"
    if not truth.is_file():
        raise ConfigError(
            f"{COUNTERFACTUAL_KEY}: strategy counterfactual needs SymMPO's contrasting image and its answer for each "
            f"instruction; raw_silkie.path ({settings.raw_silkie.reader.path}) is not a ShapeWorld world (no "
            "shapeworld_truth.jsonl), so nothing can render them: set counterfactual_path to a JSONL file of "
            '{"id": instruction id, "image": path relative to the file, "answer": the correct answer for that image} '
            "rows, or choose another strategy")
    from mdpo_pipeline.shapeworld.counterfactual import ShapeWorldCounterfactual

    pairs_table = pq.read_table(project.data_dir("preference_pairs") / "pairs.parquet",
                                columns=["pair_id", "instruction_id", "chosen", "chosen_score"])
    try:
        return ShapeWorldCounterfactual.from_files(settings.shapeworld, truth, pairs_table.to_pylist())
    except corruption.CounterfactualError as e:
        raise ConfigError(f"params.yaml:raw_silkie.path: {e}") from None


def raw_data_path(project: Project) -> str:
    """The raw VLFeedback directory params.yaml:raw_silkie.path names, relative to the project."""
    return str(load_settings(project).raw_silkie.reader.path)

