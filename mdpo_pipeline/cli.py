"""Command-line entry points: ``mdpo data <stage>`` (what `dvc repro` calls) and ``mdpo train`` (what the launcher runs)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from mdpo_pipeline.project import ConfigError, Project
from mdpo_pipeline.stages import STAGES


def _cmd_data(args: argparse.Namespace) -> int:
    from mdpo_pipeline import stages

    project = Project.discover()
    summary = stages.RUNNERS[args.stage](project, progress=not args.no_progress)
    print(json.dumps(summary, indent=2, sort_keys=True, default=str)[: args.max_print])
    return 0


def _pipes():
    """A Dagster Pipes session when a Pipes client started this process (the Docker launcher), else nothing.

    Only rank 0 of an ``accelerate launch`` reports, so the orchestrator sees one summary per run."""
    if "DAGSTER_PIPES_CONTEXT" not in os.environ or os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext(None)
    from dagster_pipes import open_dagster_pipes

    return open_dagster_pipes()


def _cmd_train(args: argparse.Namespace) -> int:
    from mdpo_pipeline.training.run import TrainRunConfig, run_training

    with _pipes() as pipes:
        summary = run_training(TrainRunConfig.from_json(args.config))
        if pipes is not None:
            pipes.report_custom_message({k: summary[k] for k in ("method", "global_step", "train_loss", "device")})
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0


def _cmd_image(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mdpo_pipeline.containers import CPU_TAG, DEFAULT_TAG, build_training_image

    root = Project.discover().root if args.root is None else Path(args.root)
    tag = args.tag or (CPU_TAG if args.offline else DEFAULT_TAG)
    print(build_training_image(root, tag, base_image=args.base_image, offline=args.offline))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``mdpo`` argument parser."""
    parser = argparse.ArgumentParser(prog="mdpo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="run one data stage with the settings in params.yaml")
    data.add_argument("stage", choices=STAGES)
    data.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in logs)")
    data.add_argument("--max-print", type=int, default=4000, help="characters of the summary to print")
    data.set_defaults(func=_cmd_data)
    train = sub.add_parser("train", help="train one adapter from a run config (what the launcher runs)")
    train.add_argument("--config", required=True, help="run config JSON (mdpo_pipeline.training.run.TrainRunConfig)")
    train.set_defaults(func=_cmd_train)
    image = sub.add_parser("image", help="build the training image (docker/Dockerfile.train)")
    image.add_argument("--offline", action="store_true",
                       help="no registry: a local Debian base (debootstrap) and wheels downloaded on this host; CPU only")
    image.add_argument("--tag", help="image tag (default mdpo-pipeline-train:latest, :cpu when offline)")
    image.add_argument("--base-image", help="base image (default: the CUDA runtime, or the local Debian one offline)")
    image.add_argument("--root", help="project root (default: discovered from the working directory)")
    image.set_defaults(func=_cmd_image)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the command; configuration errors exit 2 with the message only."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"mdpo: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
