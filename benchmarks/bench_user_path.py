"""The user's path on this machine, timed (not a test): a checkpoint given as ``base_model: {path}``, the data stages
on a small ShapeWorld, the base_model and reference_logprobs stages, one mDPO adapter trained by ``mdpo train`` as
its own process from the pipeline's run config, then its benchmark answers generated and scored — the stage
functions the Dagster assets call, without Dagster (what a GPU box without the orchestrator's wheels can run).

    python benchmarks/bench_user_path.py --family llava-1.5 --size mid --steps 20 --json out.json   # on a GPU
    .venv/bin/python benchmarks/bench_user_path.py --size tiny --steps 2                              # CI
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mdpo_pipeline import use_private_defaults
from mdpo_pipeline.pipeline.evaluate import score_model
from mdpo_pipeline.pipeline.project import Project
from mdpo_pipeline.pipeline.stages import RUNNERS
from mdpo_pipeline.pipeline.train import train_run_config
from mdpo_pipeline.training.families import FAMILIES, build_checkpoint

STAGES = ("shapeworld", "raw_silkie", "preference_pairs", "corrupted_images", "base_model", "reference_logprobs")


def params(checkpoint: Path, steps: int, pairs: int, items: int) -> dict:
    return {
        "shapeworld": {"seed": 0, "n_instructions": max(60, 3 * pairs), "image_size": 64},
        "raw_silkie": {"format": "vlfeedback", "path": "data/shapeworld/vlfeedback"},
        "preference_pairs": {"strategy": "one_per_instruction", "n": pairs, "seed": 0},
        "corrupted_images": {"strategy": "crop_1_20", "seed": 0, "workers": 2},
        "base_model": {"path": str(checkpoint)},
        "reference_logprobs": {"batch_size": 8},
        "training": {"seed": 0, "max_steps": steps, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                     "logging_steps": 1, "save_steps": steps, "learning_rate": 1e-4, "lora_r": 8, "lora_alpha": 16},
        "benchmark_scores": {"generation": {"batch_size": 16, "max_new_tokens": 32},
                             "max_items": {"object_halbench": items, "amber": items, "mmhal": items, "pope": items}},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="llava-1.5", choices=sorted(FAMILIES))
    ap.add_argument("--size", default="tiny", choices=("tiny", "mid", "full"))
    ap.add_argument("--steps", type=int, default=2, help="training steps of the mDPO adapter")
    ap.add_argument("--pairs", type=int, default=40, help="preference pairs")
    ap.add_argument("--items", type=int, default=8, help="items of each benchmark to answer and score")
    ap.add_argument("--json", type=Path, help="also write the timings and scores there")
    args = ap.parse_args()
    use_private_defaults()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="user_path_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        build_checkpoint(args.family, root / "checkpoint", size=args.size)
        timings["checkpoint_s"] = time.perf_counter() - start
        (root / "project").mkdir()
        (root / "project" / "params.yaml").write_text(
            yaml.safe_dump(params(root / "checkpoint", args.steps, args.pairs, args.items)))
        project = Project(root / "project")
        for stage in STAGES:
            start = time.perf_counter()
            RUNNERS[stage](project)
            timings[f"{stage}_s"] = time.perf_counter() - start
        cfg = train_run_config(project, "mdpo", project.adapter_path("mdpo"))
        config = root / "run.json"
        config.write_text(json.dumps(dict(cfg)))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mdpo_pipeline.cli", "train", "--config", str(config)], check=True)
        timings["train_s"] = time.perf_counter() - start
        start = time.perf_counter()
        record = score_model(project, "mdpo", adapter=project.adapter_path("mdpo"),
                             out=project.root / "artifacts" / "eval" / "mdpo")
        timings["score_s"] = time.perf_counter() - start
    result = {"model": f"{args.family} {args.size}", "steps": args.steps,
              "timings_s": {k: round(v, 2) for k, v in timings.items()},
              "scores": {k: round(v, 4) for k, v in record["scores"].items() if isinstance(v, int | float)}}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
