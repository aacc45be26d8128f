"""Command-line entry points: ``mdpo data <stage>`` (what `dvc repro` calls) and ``mdpo train`` (what the launcher runs)."""

from __future__ import annotations

import argparse
import json
import sys

from mdpo_pipeline.project import ConfigError, Project
from mdpo_pipeline.stages import STAGES


def _cmd_data(args: argparse.Namespace) -> int:
    from mdpo_pipeline import stages

    project = Project.discover()
    summary = stages.RUNNERS[args.stage](project, progress=not args.no_progress)
    print(json.dumps(summary, indent=2, sort_keys=True, default=str)[: args.max_print])
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mdpo_pipeline.training.run import TrainRunConfig, run_training

    summary = run_training(TrainRunConfig.from_json(args.config))
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
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
