"""Command-line entry points: ``mdpo data <stage>`` (what `dvc repro` calls), ``mdpo train`` (what the launcher runs)
and ``mdpo params`` (the settings as resolved)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from mdpo_pipeline import use_private_defaults
from mdpo_pipeline.core.errors import CLI_ERROR, OutOfSpace
from mdpo_pipeline.core.eval.common import MODES
from mdpo_pipeline.core.eval.settings import BENCHMARK_NAMES
from mdpo_pipeline.pipeline.project import ConfigError, Project
from mdpo_pipeline.pipeline.settings import PIPELINE_SET
from mdpo_pipeline.pipeline.stages import STAGES, run_stage


def ray_train_loop(config: dict) -> None:
    """The loop each Ray Train worker runs (``mdpo train --ray`` submits it): ``config["run"]`` trained as one rank of
    the torch.distributed group Ray has set up (Ray sets RANK and WORLD_SIZE, the Trainer's accelerate state joins
    that group), resuming when the worker was restarted. A worker process is an entry point of its own."""
    use_private_defaults()
    # Ray ships this function by value when the driver runs as `python -m mdpo_pipeline.cli` (it is __main__ then):
    # the worker never imports this module, so the loop registers the ShapeWorld preset a run may name itself.
    from mdpo_pipeline.shapeworld.preset import SHAPEWORLD_TINY  # noqa: F401
    from mdpo_pipeline.training.run import TrainRunConfig, run_training

    run_training(TrainRunConfig(config["run"]))


def _cmd_data(args: argparse.Namespace) -> int:
    # The settings check reaches TRL's MDPOConfig: not one of the stage's code deps (lineage.py).
    from mdpo_pipeline.pipeline.validate import validate_params

    project = Project.discover()
    validate_params(project)
    summary = run_stage(args.stage, project, progress=not args.no_progress)
    print(json.dumps(summary, indent=2, sort_keys=True, default=str)[: args.max_print])
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    import yaml

    from mdpo_pipeline.core.typed import field_docs
    from mdpo_pipeline.pipeline.settings import Settings, load_settings

    if args.help_fields:
        from mdpo_pipeline.training.config import MDPOConfig
        from mdpo_pipeline.training.run import RunArguments

        rows = [r for r in field_docs(Settings) if r[0] != "params.yaml:training.common"]
        training = [r for cls in (RunArguments, MDPOConfig) for r in field_docs(cls, "params.yaml:training")
                    if r[0].rsplit(".", 1)[1] not in PIPELINE_SET]
        for key, kind, default, text in rows:
            print(f"{key}  ({kind}; default {json.dumps(default, default=str)})\n    {text}")
        print("# params.yaml:training.<key> and training.methods.<method>.<key>: any of the run arguments and MDPOConfig"
              " fields below. The defaults shown are the classes' own: the model preset's TrainingDefaults and the"
              " pipeline's RUN_DEFAULTS come before them (`mdpo params` shows what each method resolves to).")
        for key, kind, default, text in training:
            print(f"{key}  ({kind}; default {json.dumps(default, default=str)})\n    {text}")
        return 0
    from mdpo_pipeline.core.methods import METHODS
    from mdpo_pipeline.pipeline.train import model_preset, training_run_config

    project = Project.discover()
    settings = load_settings(project)
    resolved = settings.as_dict()
    preset = model_preset(settings.base_model.preset)
    methods = {}
    for method in args.method or METHODS:
        placeholders = {"method": method, "output_dir": project.rel(project.adapter_path(method)), "pairs_dir": "-",
                        "image_root": "-", "corrupted_dir": "-", "base_model": preset.name,
                        "max_length": settings.reference_logprobs.resolved_max_length(preset)}
        cfg = training_run_config(settings, method, placeholders)
        values = cfg.resolved(cuda=args.cuda)
        _, mdpo = cfg.parse(cuda=args.cuda)
        methods[method] = {k: v for k, v in values.items() if k not in PIPELINE_SET or k == "base_model"} | (
            mdpo.objective())
    resolved["reference_logprobs"]["max_length"] = settings.reference_logprobs.resolved_max_length(preset)
    resolved["training"] = {"methods": methods}
    print(yaml.safe_dump(resolved, sort_keys=False, width=120), end="")
    return 0


def _pipes():
    """A Dagster Pipes session when a Pipes client started this process (the Docker launcher), else nothing.

    Only rank 0 of an ``accelerate launch`` reports, so the orchestrator sees one summary per run."""
    if "DAGSTER_PIPES_CONTEXT" not in os.environ or os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext(None)
    from dagster_pipes import open_dagster_pipes

    return open_dagster_pipes()


def _die_with_agent() -> None:
    """Under torchrun, be killed with the launcher agent that started this rank rather than outlive it.

    torchrun starts each rank in a session of its own, so killing the launcher's process group (SIGKILL,
    OOM killer) would otherwise leave the ranks training on, racing a restarted run for the same checkpoints."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    agent = os.getppid()  # not compared with 1: in a container the agent itself is PID 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Died in between: no signal will come. (Died even earlier: this rank cannot join, the store lives in the agent.)
    if os.getppid() != agent:
        os._exit(1)


def _cmd_train(args: argparse.Namespace) -> int:
    from mdpo_pipeline.training.run import TrainRunConfig, run_training

    if args.ray is not None:
        return _train_on_ray(args)
    _die_with_agent()
    with _pipes() as pipes:
        summary = run_training(TrainRunConfig.from_json(args.config))
        if pipes is not None:
            pipes.report_custom_message({k: summary[k] for k in ("method", "global_step", "train_loss", "device")})
    if os.environ.get("RANK", "0") == "0":  # the other ranks' summaries are rank 0's, and not the one written
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0


def _train_on_ray(args: argparse.Namespace) -> int:
    """``mdpo train --ray``: this process is the Ray driver; the workers run the same training (run_training)."""
    from pathlib import Path

    from mdpo_pipeline.integrations.launcher_settings import LauncherSettings
    from mdpo_pipeline.integrations.launchers import TrainingFailed
    from mdpo_pipeline.integrations.ray_launcher import train_on_ray
    from mdpo_pipeline.training.run import TrainRunConfig

    settings = (LauncherSettings(**json.loads(Path(args.ray).read_text())) if args.ray
                else LauncherSettings.from_env())
    with _pipes() as pipes:
        try:
            summary = train_on_ray(TrainRunConfig.from_json(args.config), settings, ray_train_loop)
        except TrainingFailed as e:
            print(f"{CLI_ERROR}{e}", file=sys.stderr)  # the workers' tracebacks are in the message and above
            return 1
        if pipes is not None:
            # What Dagster records of the run beside its log: the outcome and the last logged training metrics.
            pipes.report_custom_message(
                {k: summary.get(k) for k in ("method", "global_step", "train_loss", "device", "num_processes",
                                             "seconds")} | {"final": summary.get("final", {})})
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0


def _cmd_image(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mdpo_pipeline.integrations.containers import CPU_TAG, DEFAULT_TAG, build_training_image

    root = Project.discover().root if args.root is None else Path(args.root)
    tag = args.tag or (CPU_TAG if args.offline else DEFAULT_TAG)
    print(build_training_image(root, tag, base_image=args.base_image, offline=args.offline))
    return 0


def _cmd_checkpoint(args: argparse.Namespace) -> int:
    from mdpo_pipeline.training.builder import build_tiny
    from mdpo_pipeline.training.families import FAMILIES, CheckpointError, build_checkpoint, describe

    try:
        if args.family in FAMILIES:
            model, _ = build_checkpoint(args.family, args.out, size=args.size, seed=args.seed,
                                        image_size=args.image_size)
        elif args.size != "tiny":
            raise CheckpointError(f"--size {args.size}: only the families {sorted(FAMILIES)} have mid and full sizes; "
                                  f"a model type ({args.family!r}) is built tiny")
        else:
            model, _ = build_tiny(args.family, args.out, seed=args.seed, image_size=args.image_size)
    except CheckpointError as e:
        print(f"mdpo checkpoint: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"family": args.family, "size": args.size, "path": args.out, **describe(model)}))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mdpo_pipeline.evaluation.model_sweep import sweep, table

    page = table(sweep(args.model_type or None, progress=lambda line: print(line, file=sys.stderr, flush=True)))
    if args.write:
        Path(args.write).write_text(page)
    print(page, end="")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mdpo_pipeline.core.io import write_json
    from mdpo_pipeline.evaluation.benchmarks import benchmark
    from mdpo_pipeline.shapeworld.judge import ShapeWorldJudge

    bench = benchmark(args.benchmark)
    answers = Path(args.answers)
    data = Path(args.data) if args.data else answers.parent
    options = {"synonyms": args.synonyms and Path(args.synonyms), "split": args.split,
               "judge_script": args.judge_script, "rule_judge": ShapeWorldJudge}
    try:
        metrics = bench.score_file(answers, data, args.mode, options)
    except (FileNotFoundError, LookupError, ValueError, ConfigError) as e:
        print(f"mdpo score {args.benchmark}: {e}", file=sys.stderr)
        return 2
    metrics = {"benchmark": args.benchmark, "answers": str(answers), **metrics}
    write_json(metrics, Path(args.out))
    printable = {k: v for k, v in metrics.items() if k not in ("stdout", "scores")}
    print(json.dumps(printable, indent=2, default=str)[:4000])
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    """The experiment grid of params.yaml:experiment: list its cells, run one, or write the claims report."""
    # only this command plans the grid (reading params.yaml) or runs a cell
    from mdpo_pipeline.pipeline.grid import GridPlan, run_and_log_cell, run_claims_report
    from mdpo_pipeline.pipeline.project import Project

    project = Project.discover()
    if args.action == "path":
        print(GridPlan(project).dir / "report" / "claims.md")
        return 0
    if args.action in ("cells", "pending"):
        plan = GridPlan(project)
        for cell in plan.pending() if args.action == "pending" else plan.cells:
            print(cell.key)
        return 0
    # mlflow's URI: the project's store unless MLFLOW_TRACKING_URI says otherwise
    from mdpo_pipeline.integrations.tracking import tracking_uri

    uri = None if args.no_mlflow else tracking_uri(project.root)
    if args.action == "run":
        if not args.cell:
            print("mdpo grid run: name the cell (`mdpo grid cells` lists them)", file=sys.stderr)
            return 2
        record = run_and_log_cell(project, args.cell, uri=uri, force=args.force)
        print(json.dumps({k: record.get(k) for k in ("cell", "scores", "probe", "timing")}, indent=2, default=str))
        return 0
    result = run_claims_report(project, uri=uri)
    print(result["markdown"])
    return 0


def _cmd_mlflow(args: argparse.Namespace) -> int:
    """Log the adapters whose MLflow run is still pending (the tracking server was down when they finished)."""
    from mdpo_pipeline.integrations.tracking import tracking_uri
    from mdpo_pipeline.pipeline.train import PENDING_DIR, replay_pending

    project = Project.discover()
    done = replay_pending(project, tracking_uri(project.root, args.tracking_uri), args.experiment)
    left = sorted((project.root / PENDING_DIR).glob("*.json"))
    print(f"{len(done)} logged, {len(left)} still pending" + (f": {', '.join(p.name for p in left)}" if left else ""))
    return 1 if left else 0


def build_parser() -> argparse.ArgumentParser:
    """The ``mdpo`` argument parser."""
    parser = argparse.ArgumentParser(prog="mdpo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="run one data stage with the settings in params.yaml")
    data.add_argument("stage", choices=STAGES)
    data.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in logs)")
    data.add_argument("--max-print", type=int, default=4000, help="characters of the summary to print")
    data.set_defaults(func=_cmd_data)
    params = sub.add_parser("params", help="print params.yaml's settings as every stage resolves them (training: "
                            "each method's MDPOConfig values, the model preset's defaults filled in)")
    params.add_argument("--help-fields", action="store_true", help="list every key with its type, default and help")
    params.add_argument("--method", action="append", help="only this method's training values (repeatable)")
    params.add_argument("--cuda", action="store_true",
                        help="resolve as on a CUDA device (bf16 and gradient checkpointing per the preset)")
    params.set_defaults(func=_cmd_params)
    train = sub.add_parser("train", help="train one adapter from a run config (what the launcher runs)")
    train.add_argument("--config", required=True, help="run config: one flat JSON object of RunArguments and MDPOConfig "
                       "fields, output_dir the adapter (mdpo_pipeline.training.run)")
    train.add_argument("--ray", nargs="?", const="", metavar="SETTINGS",
                       help="train as Ray Train workers on a Ray cluster, this process the driver; the launcher "
                            "settings (ray_address, num_workers, ...) come from SETTINGS, a JSON file, or without it "
                            "from the environment (MDPO_RAY_ADDRESS, MDPO_RAY_NUM_WORKERS, ...)")
    train.set_defaults(func=_cmd_train)
    ckpt = sub.add_parser("checkpoint", help="write a random-initialised checkpoint of a real VLM family or model type "
                          "in the hub's layout (an offline stand-in for real weights: tests, benchmarks, trying the "
                          "pipeline)")
    # Names are checked by the builders (which list the known ones): importing transformers here would slow
    # down every `mdpo data` call that dvc makes.
    ckpt.add_argument("family", help="a family (llava-1.5, qwen2.5-vl, gemma-3: every size) or a transformers model "
                      "type (llava, qwen3_vl, idefics3, mllama, ...: tiny; training.builder.MODEL_TYPES)")
    ckpt.add_argument("--out", required=True, help="directory to write (config.json, safetensors, processor files)")
    ckpt.add_argument("--size", default="tiny", help="tiny: tests; mid: CPU benchmarks; full: the release's own "
                      "dimensions (LLaVA-1.5-7B, Qwen2.5-VL-7B, Gemma-3-4B; needs a GPU's memory)")
    ckpt.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    ckpt.add_argument("--image-size", type=int, help="input image side in pixels (default: the size's own)")
    ckpt.set_defaults(func=_cmd_checkpoint)
    models = sub.add_parser("models", help="try every image-text-to-text model type of this transformers as a user's "
                            "checkpoint would be (works / refused with the reason / not built here / bug) and print "
                            "the table")
    models.add_argument("model_type", nargs="*", help="only these model types (default: all of them)")
    models.add_argument("--write", metavar="FILE", help="also write the table there (docs/model_types.md)")
    models.set_defaults(func=_cmd_models)
    score = sub.add_parser("score", help="score an answer file made anywhere, in the benchmark's official layout")
    score.add_argument("benchmark", choices=BENCHMARK_NAMES, help="the benchmark whose official layout the files have")
    score.add_argument("--answers", required=True,
                       help="answers: AMBER [{id, response}] json; Object HalBench {image_id, question, answer} jsonl; "
                            "MMHal's template with model_answer; POPE {question_id, text} jsonl (one split)")
    score.add_argument("--mode", choices=MODES, default="official",
                       help="official: the official scorer reproduced (default); offline: the rule-based scorer")
    score.add_argument("--data", help="the benchmark's files: AMBER's release root (holding data/); COCO 2014 "
                                      "annotations for Object HalBench; POPE's question files (default: beside --answers)")
    score.add_argument("--synonyms", help="Object HalBench: RLHF-V's synonyms_refine.txt (default: in --data)")
    score.add_argument("--split", help="POPE: the split the answers belong to (random, popular, adversarial)")
    score.add_argument("--judge-script", help="MMHal official: your copy of LLaVA-RLHF's Eval/eval_gpt_mmhal.py; the "
                                              "judge is MDPO_JUDGE_BASE_URL / MDPO_JUDGE_MODEL with OPENAI_API_KEY")
    score.add_argument("--out", required=True, help="metrics JSON to write (official metric names)")
    score.set_defaults(func=_cmd_score)
    grid = sub.add_parser("grid", help="the experiment grid of params.yaml:experiment (what `make reproduce` runs "
                          "through Dagster): list its cells, run one, write the claims report")
    grid.add_argument("action", choices=("cells", "pending", "run", "report", "path"),
                      help="cells: every cell; pending: the cells still to run; run: one cell; report: write the "
                           "claims report; path: where the claims report is")
    grid.add_argument("cell", nargs="?", help="the cell to run (e.g. mdpo-s1)")
    grid.add_argument("--force", action="store_true", help="run the cell again even when it finished")
    grid.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    grid.set_defaults(func=_cmd_grid)
    mlflow = sub.add_parser("mlflow", help="replay: log the adapters whose MLflow run waits because the tracking "
                            "server was unreachable when they finished (artifacts/mlflow_pending)")
    mlflow.add_argument("action", choices=("replay",), help="replay: log every pending adapter, oldest first")
    mlflow.add_argument("--tracking-uri", help="the tracking server (default: $MLFLOW_TRACKING_URI, else the "
                        "project's sqlite store)")
    mlflow.add_argument("--experiment", default="mdpo", help="experiment of entries that name none (default mdpo)")
    mlflow.set_defaults(func=_cmd_mlflow)
    image = sub.add_parser("image", help="build the training image (docker/Dockerfile.train)")
    image.add_argument("--offline", action="store_true",
                       help="no registry: a local Debian base (debootstrap) and wheels downloaded on this host; CPU only")
    from mdpo_pipeline.integrations.containers import CPU_TAG, DEFAULT_TAG  # constants only: no docker import

    image.add_argument("--tag", help=f"image tag (default {DEFAULT_TAG}, {CPU_TAG} when offline)")
    image.add_argument("--base-image", help="base image (default: the CUDA runtime, or the local Debian one offline)")
    image.add_argument("--root", help="project root (default: discovered from the working directory)")
    image.set_defaults(func=_cmd_image)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the command; configuration errors exit 2 with the message only."""
    use_private_defaults()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"{CLI_ERROR}{e}", file=sys.stderr)
        return 2
    except OutOfSpace as e:
        print(f"{CLI_ERROR}{e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
