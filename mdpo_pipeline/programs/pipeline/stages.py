"""The data stages as plain functions: read params, call the core, write ``data/<stage>/``.

One function per stage. The CLI (and so `dvc repro`) and the Dagster assets both call these, so the
two routes cannot drift apart. No Dagster import here.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from mdpo_pipeline.core import corruption, ingest, pairs
from mdpo_pipeline.core.plots import contact_sheet
from mdpo_pipeline.core.schemas import instruction_from_row
from mdpo_pipeline.shapeworld import ShapeWorldConfig, generate_benchmarks, generate_vlfeedback
from mdpo_pipeline.programs.pipeline.project import ConfigError, Project, build_config

if TYPE_CHECKING:
    from mdpo_pipeline.programs.training.run import TrainRunConfig

STAGES = ("shapeworld", "raw_silkie", "preference_pairs", "corrupted_images", "base_model", "reference_logprobs")

#: raw_silkie params that steer the stage itself rather than the reader.
_RAW_STAGE_KEYS = ("max_quarantine_share",)


def _section(project: Project, name: str) -> dict[str, Any]:
    return dict(project.params().get(name) or {})


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
    share = stage["max_quarantine_share"]
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ConfigError(f"params.yaml:raw_silkie.max_quarantine_share must be a number in [0, 1], got {share!r}")
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
    project.summary("raw_silkie")  # a clear error when raw_silkie was never materialized
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
    image_root = project.path(project.summary("raw_silkie")["image_root"])
    table = pq.read_table(pairs_dir / "pairs.parquet", columns=["instruction_id", "image"])
    # One corrupted image per instruction: every pair of an instruction shares its image.
    samples = sorted(set(zip(table["instruction_id"].to_pylist(), table["image"].to_pylist())))
    out = project.data_dir("corrupted_images")
    result = corruption.corrupt_images(samples, image_root, out, cfg, progress=progress)
    return result.summary


def base_model_settings(project: Project) -> dict[str, Any]:
    """params.yaml:base_model with defaults: the preset, its local path, and the SFT settings (tiny model)."""
    section = {"preset": "shapeworld-tiny", "path": None, "allow_remote_code": False, "sft": {}}
    section |= _section(project, "base_model")
    unknown = sorted(set(section) - {"preset", "path", "allow_remote_code", "sft"})
    if unknown:
        raise ConfigError(f"params.yaml:base_model: unknown key(s) {unknown}")
    return section


def raw_data_path(project: Project) -> str:
    """The raw VLFeedback directory params.yaml:raw_silkie.path names, relative to the project."""
    return str(_section(project, "raw_silkie").get("path", "data/shapeworld/vlfeedback"))


def run_base_model(project: Project, progress: bool = False) -> dict[str, Any]:
    """The base model: SFT of the tiny VLM on ShapeWorld, or a pointer to a real preset's local weights."""
    from mdpo_pipeline.programs.training.models import resolve_model_path
    from mdpo_pipeline.programs.training.presets import get_preset

    settings = base_model_settings(project)
    preset = get_preset(settings["preset"])
    out = project.data_dir("base_model")
    if preset.hf_id is None:  # built by the pipeline itself
        from mdpo_pipeline.programs.training.presets import SFTSettings
        from mdpo_pipeline.shapeworld.sft import train_base_model

        sft = build_config(SFTSettings, settings["sft"], where="params.yaml:base_model.sft")
        world = project.path(raw_data_path(project))
        metrics = train_base_model(
            world / "shapeworld_truth.jsonl", world / "merged_images", out, sft, progress=progress
        )
        return {"preset": preset.name, "path": project.rel(out), **metrics}
    path = resolve_model_path(preset, project.path(settings["path"]) if settings["path"] else None)
    summary = {"preset": preset.name, "hf_id": preset.hf_id, "path": path}
    out.mkdir(parents=True, exist_ok=True)
    (out / "preset.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def base_model_location(project: Project) -> tuple[str, str]:
    """(preset name, local path of its weights) as the base_model stage recorded them."""
    out = project.data_dir("base_model")
    pointer = out / "preset.json"
    if pointer.is_file():
        info = json.loads(pointer.read_text())
        return info["preset"], info["path"]
    if not (out / "config.json").is_file():
        raise FileNotFoundError(f"{out} holds no model: materialize base_model first")
    return base_model_settings(project)["preset"], str(out)


def run_reference_logprobs(project: Project, progress: bool = False) -> dict[str, Any]:
    """The base model's summed log-probs for every pair's three views, computed once for every training run."""
    from mdpo_pipeline.programs.training.data import load_preference_dataset
    from mdpo_pipeline.programs.training.models import load_model_and_processor
    from mdpo_pipeline.programs.training.presets import get_preset
    from mdpo_pipeline.programs.training.reference import compute_reference_logprobs

    settings = {"batch_size": 32, "max_length": None} | _section(project, "reference_logprobs")
    preset, path = base_model_location(project)
    allow = base_model_settings(project)["allow_remote_code"]
    model, processor = load_model_and_processor(preset, path, allow_remote_code=allow)
    dataset = load_preference_dataset(*_training_data_dirs(project))
    max_length = settings["max_length"] or get_preset(preset).training.max_length
    out = project.data_dir("reference_logprobs") / "reference.parquet"
    summary = compute_reference_logprobs(
        model, processor, dataset, settings["batch_size"], out, progress=progress, max_length=max_length
    )
    summary = {"preset": preset, **summary}
    (out.parent / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return summary


def _training_data_dirs(project: Project) -> tuple[Path, Path, Path]:
    image_root = project.path(project.summary("raw_silkie")["image_root"])
    return project.data_dir("preference_pairs"), image_root, project.data_dir("corrupted_images")


def train_run_config(project: Project, method: str, output_dir: Path) -> "TrainRunConfig":
    """The run config of one adapter: params.yaml:training (+ per-method overrides) and the stage outputs."""
    from mdpo_pipeline.programs.training.run import TrainRunConfig

    section = _section(project, "training")
    overrides = (section.pop("methods", None) or {}).get(method, {})
    preset, path = base_model_location(project)
    pairs_dir, image_root, corrupted_dir = _training_data_dirs(project)
    cache = project.data_dir("reference_logprobs") / "reference.parquet"
    fixed = {
        "method": method,
        "pairs_dir": str(pairs_dir),
        "image_root": str(image_root),
        "corrupted_dir": str(corrupted_dir),
        "output_dir": str(output_dir),
        "base_model": preset,
        "base_model_path": path,
        "allow_remote_code": base_model_settings(project)["allow_remote_code"],
        # The cache holds image-conditioned log-probs only: the image-withheld probe needs a live reference.
        "reference_cache": str(cache) if cache.is_file() and method != "dpo_no_image" else None,
    }
    return build_config(TrainRunConfig, section | overrides, where="params.yaml:training", **fixed)


def record_adapter(project: Project, cfg: "TrainRunConfig", uri: str, experiment: str) -> dict[str, Any]:
    """Log a finished adapter as an MLflow run and a new registry version; draw its curves beside it."""
    from mdpo_pipeline.core.plots import training_curves
    from mdpo_pipeline.integrations.dvc import lock_hashes
    from mdpo_pipeline.integrations.tracking import TrainingRecord, git_commit, log_training_run

    out = Path(cfg.output_dir)
    history = json.loads((out / "log_history.json").read_text())
    curves = training_curves(history, out.parent / f"{cfg.method}.curves.png", title=cfg.method)
    record = TrainingRecord(cfg.method, cfg.base_model, out, asdict(cfg), history, lock_hashes(project.root),
                            curves=curves)
    run_id, version = log_training_run(
        record, uri, experiment, artifact_root=project.root / "mlartifacts", git_sha=git_commit(project.root)
    )
    return {"mlflow_run_id": run_id, "registered_version": version, "curves": curves}


def validate_params(project: Project) -> None:
    """Check every section of params.yaml (types, ranges, names) before any stage does work; errors name the key."""
    from mdpo_pipeline.programs.evaluation.answers import GenerationSettings
    from mdpo_pipeline.programs.evaluation.benchmarks import benchmark
    from mdpo_pipeline.programs.pipeline.evaluate import eval_settings, gate_policy
    from mdpo_pipeline.programs.training.presets import get_preset
    from mdpo_pipeline.programs.training.run import TrainRunConfig

    shapeworld_config(project)
    raw_silkie_config(project)
    pairs_config(project)
    corruption_config(project)
    settings = base_model_settings(project)
    try:
        preset = get_preset(settings["preset"])
    except KeyError as e:
        raise ConfigError(f"params.yaml:base_model.preset: {e.args[0]}") from None
    if preset.hf_id is None:
        from mdpo_pipeline.programs.training.presets import SFTSettings

        build_config(SFTSettings, settings["sft"], where="params.yaml:base_model.sft")
    section = _section(project, "training")
    placeholders = {"pairs_dir": ".", "image_root": ".", "corrupted_dir": ".", "output_dir": "."}
    for method, overrides in {"dpo": {}, **(section.pop("methods", None) or {})}.items():
        build_config(TrainRunConfig, section | (overrides or {}), where=f"params.yaml:training (method {method})",
                     method=method, **placeholders)
    evaluation = eval_settings(project)
    gate_policy(project)
    try:
        GenerationSettings(**evaluation["generation"])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params.yaml:benchmark_scores.generation: {e}") from e
    from mdpo_pipeline.programs.pipeline.evaluate import eval_context

    ctx = eval_context(project, evaluation)
    for name in evaluation["benchmarks"]:
        benchmark(name)
        ctx.mode(name)


RUNNERS = {
    "shapeworld": run_shapeworld,
    "raw_silkie": run_raw_silkie,
    "preference_pairs": run_preference_pairs,
    "corrupted_images": run_corrupted_images,
    "base_model": run_base_model,
    "reference_logprobs": run_reference_logprobs,
}
