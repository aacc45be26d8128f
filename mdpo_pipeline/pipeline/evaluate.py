"""The evaluation stages the Dagster assets call: score one model, build the comparison, decide the champion.

Outputs live in ``artifacts/eval/<model>/`` (answers per benchmark, ``scores.json``) and
``artifacts/eval/comparison.{md,png,json}``; the judge's answers are cached in ``artifacts/eval/judgments.jsonl``
so reruns never pay twice. Settings come from ``params.yaml:benchmark_scores``, typed as the evaluation's
EvalSettings. No Dagster here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mdpo_pipeline.core.eval.metrics import lower_is_better
from mdpo_pipeline.core.io import write_json
from mdpo_pipeline.core.methods import BASE
from mdpo_pipeline.integrations.tracking import apply_decision, current_champion, experiment_id, registered_model_name
from mdpo_pipeline.evaluation.answers import generation_fingerprint, read_generations, write_generations
from mdpo_pipeline.evaluation.benchmarks import (
    EVAL_DIR,
    EvalContext,
    benchmark,
    check_metrics,
)
from mdpo_pipeline.evaluation.registry import Decision, decide
from mdpo_pipeline.evaluation.report import comparison_chart, comparison_table
from mdpo_pipeline.pipeline.project import ConfigError, Project
from mdpo_pipeline.core.eval.settings import EvalSettings
from mdpo_pipeline.pipeline.settings import SHAPEWORLD_BENCHMARKS, Settings, load_settings
from mdpo_pipeline.pipeline.train import base_model_location, base_model_name
from mdpo_pipeline.shapeworld.judge import ShapeWorldJudge


def eval_context(project: Project, settings: EvalSettings, judge: dict[str, Any] | None = None,
                 progress: bool = False, log: Callable[[str], None] = print,
                 rule_judge_root: Path | None = None) -> EvalContext:
    """The benchmarks' context: paths against the project, ShapeWorld's rule judge for ShapeWorld's splits (the
    demo's by default, or ``rule_judge_root``: an experiment grid's larger split)."""
    return EvalContext(project.root, settings, judge, progress, log, rule_judge=ShapeWorldJudge,
                       rule_judge_root=rule_judge_root or project.path(SHAPEWORLD_BENCHMARKS))


def model_dir(project: Project, key: str) -> Path:
    """Where one model's answers and scores go."""
    return project.root / EVAL_DIR / key


def adapter_dir(project: Project, key: str, preset: str | None = None) -> Path | None:
    """The adapter of model partition ``key`` (None for the base model); an error if it was never trained, or was
    trained on another base model preset than ``preset``."""
    if key == BASE:
        return None
    path = project.adapter_path(key)
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"no adapter for {key!r} at {path}: materialize adapters[{key}] first")
    run_config = path / "run_config.json"
    trained_on = json.loads(run_config.read_text()).get("base_model") if run_config.is_file() else None
    if preset is not None and trained_on not in (None, preset):
        raise ConfigError(
            f"adapters[{key}] at {path} was trained on base model {trained_on!r}, the base model now is {preset!r}: "
            f"rematerialize adapters[{key}] before scoring it"
        )
    return path


def base_identity(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """(preset, sha256 of the base weights) a scores.json was computed on; (None, None) for records from before
    scores carried it."""
    base = record.get("base_model") or {}
    return base.get("preset"), base.get("weights_sha256")


def _describe_base(identity: tuple[str | None, str | None]) -> str:
    preset, sha = identity
    return "an unrecorded base model" if preset is None else f"base model {preset} (weights {sha[:12]})"


def same_base_or_raise(key: str, record: dict[str, Any], base: dict[str, Any]) -> None:
    """Refuse, naming both, to compare model ``key`` with base scores computed on another base model, or scored
    another way (mode, judge model, judge prompt)."""
    mine, theirs = base_identity(record), base_identity(base)
    if mine != theirs or mine == (None, None):
        raise ConfigError(
            f"{key} was scored on {_describe_base(mine)}, the base scores on {_describe_base(theirs)}: scores of "
            f"different base models are not compared; rematerialize benchmark_scores[{BASE}] and "
            f"benchmark_scores[{key}] for the current base model"
        )
    # Scores of one benchmark made with another scoring mode, judge model or judge prompt are not comparable.
    ours, other = record.get("benchmarks") or {}, base.get("benchmarks") or {}
    for name in sorted(set(ours) & set(other)):
        if ours[name]["identity"] != other[name]["identity"]:
            raise ConfigError(
                f"{key}'s {name} scores were made with {ours[name]['identity']}, the base's with "
                f"{other[name]['identity']}: rescore both the same way (rematerialize benchmark_scores[{BASE}] and "
                f"benchmark_scores[{key}])"
            )


def _answers(path: Path, model, processor, prompts, settings, model_sha: str, progress: bool, log) -> dict[str, str]:
    """Stored answers when they were made by this model from these prompts, else newly generated (and stored)."""
    from mdpo_pipeline.evaluation.generation import generate_answers

    fingerprint = generation_fingerprint(model_sha, prompts, settings)
    stored = read_generations(path, fingerprint)
    if stored is not None:
        log(f"{path.name}: reusing {len(stored)} stored answers")
        return stored
    log(f"{path.name}: generating {len(prompts)} answers")
    answers = generate_answers(model, processor, prompts, settings, progress=progress)
    write_generations(path, prompts, answers, fingerprint)
    return {p.id: a for p, a in zip(prompts, answers)}


def score_model(
    project: Project,
    key: str,
    *,
    adapter: Path | None,
    out: Path,
    settings: Settings | None = None,
    bench: EvalSettings | None = None,
    rule_judge_root: Path | None = None,
    judge: dict[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate (or reuse) answers of the base model with ``adapter`` (None: the base itself) on every benchmark of
    ``bench`` (default: params.yaml:benchmark_scores), score them and write ``out``/scores.json; the record."""
    from mdpo_pipeline.evaluation.generation import load_eval_model
    from mdpo_pipeline.training.reference import weights_sha256

    everything = settings or load_settings(project)
    bench = bench or everything.benchmark_scores
    ctx = eval_context(project, bench, judge, progress, log, rule_judge_root)
    # Every benchmark's files (and a judge script) are read before the model loads: a wrong path fails in seconds.
    prepared = {name: benchmark(name).prepare(ctx) for name in bench.benchmarks}
    preset, base_path = base_model_location(project, everything)
    model, processor, base_sha = load_eval_model(preset, base_path, adapter,
                                                 allow_remote_code=everything.base_model.allow_remote_code)
    model_sha = weights_sha256(model) if adapter else base_sha

    flat: dict[str, float | None] = {}
    record: dict[str, Any] = {
        "model": key, "preset": preset, "adapter": str(adapter) if adapter else None, "weights_sha256": model_sha,
        "base_model": {"preset": preset, "weights_sha256": base_sha}, "scores": flat, "judge": None,
        "benchmarks": {}, "generation": asdict(bench.generation), "max_items": dict(bench.max_items),
    }
    for name, (state, prompts) in prepared.items():
        answers = _answers(out / "generations" / f"{name}.jsonl", model, processor, prompts, bench.generation, model_sha,
                           progress, log)
        scored = check_metrics(name, benchmark(name).score(ctx, state, answers))
        flat |= scored.metrics
        record[name] = scored.details
        record["benchmarks"][name] = {"identity": scored.identity, "n": len(prompts)}
        if scored.label:
            record["judge"] = scored.label
        for file_name, content in scored.artifacts.items():
            write_json(content, out / file_name)
    write_json(record, out / "scores.json")
    return record


def run_benchmark_scores(
    project: Project,
    key: str,
    *,
    uri: str | None = None,
    experiment: str = "mdpo",
    judge: dict[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate (or reuse) answers of model partition ``key`` on every configured benchmark, score, store and log
    them."""
    everything = load_settings(project)
    preset, _ = base_model_location(project, everything)
    out = model_dir(project, key)
    record = score_model(project, key, adapter=adapter_dir(project, key, preset), out=out, settings=everything,
                         judge=judge, progress=progress, log=log)
    name = base_model_name(project, everything)
    run_id = log_scores(project, key, name, record, out, uri, experiment) if uri else None
    return {"scores": record["scores"], "path": str(out / "scores.json"), "judge": record["judge"],
            "mlflow_run_id": run_id}


def read_scores(project: Project, key: str) -> dict[str, Any] | None:
    """The stored scores.json of model ``key``, or None when it was never scored."""
    path = model_dir(project, key) / "scores.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _latest_version(client, name: str, method: str):
    versions = [v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get("method") == method]
    return max(versions, key=lambda v: int(v.version)) if versions else None


def log_scores(project: Project, key: str, name: str, record: dict, out: Path, uri: str, experiment: str) -> str:
    """Log the scores to the adapter's training run (the newest version of the registered model ``name``), or to a
    "base" run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from mlflow.utils.time import get_current_time_millis

    client = MlflowClient(uri)
    # The same call as every logging path: it tags the experiment's kind and moves a copied checkout's artifacts.
    exp_id = experiment_id(client, experiment, project.root / "mlartifacts")
    run_id = None
    if key != BASE:
        version = _latest_version(client, registered_model_name(name), key) if client.search_registered_models(
            filter_string=f"name = '{registered_model_name(name)}'") else None
        run_id = version.run_id if version else None
    now = get_current_time_millis()
    if run_id is None:
        run_id = client.create_run(exp_id, start_time=now, run_name=f"{key}-eval",
                                   tags={"method": key, "base_model": name}).info.run_id
        client.set_terminated(run_id, "FINISHED", end_time=now)
    metrics = [Metric(f"eval/{k}", float(v), now, 0) for k, v in record["scores"].items() if v is not None]
    client.log_batch(run_id, metrics=metrics)
    if record.get("judge"):
        client.set_tag(run_id, "eval.judge", record["judge"][:5000])
    client.log_artifact(run_id, str(out / "scores.json"), artifact_path="eval")
    return run_id


# --- the gate and the report -----------------------------------------------------------------


def gate_partition(project: Project, key: str):
    """The gate decision of one model partition against the base model (the base passes by definition)."""
    if key == BASE:
        return Decision(candidate=BASE, passed=True, promote=False, reasons=["the base model is the reference"])
    mine, base = read_scores(project, key), read_scores(project, BASE)
    if mine is None:
        raise ConfigError(f"{key} has no scores yet: materialize benchmark_scores[{key}]")
    if base is None:
        raise ConfigError("the base model has no scores yet: materialize benchmark_scores[base] first")
    same_base_or_raise(key, mine, base)
    return decide(key, mine["scores"], base["scores"], load_settings(project).benchmark_scores.gate)


def scored_models(project: Project) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """({model key: scores.json}, {key: why it is left out}): every model scored on the same base model as the
    base partition, base first; models scored on another base model are left out with the reason."""
    root = project.root / EVAL_DIR
    keys = sorted(p.name for p in root.iterdir() if (p / "scores.json").is_file()) if root.is_dir() else []
    keys.sort(key=lambda k: k != BASE)
    models = {k: read_scores(project, k) for k in keys}
    if BASE not in models:
        return models, {}
    left_out = {}
    for key in [k for k in models if k != BASE]:
        try:
            same_base_or_raise(key, models[key], models[BASE])
        except ConfigError as e:
            left_out[key] = str(e)
            del models[key]
    return models, left_out


def run_comparison_report(project: Project, *, uri: str | None = None, experiment: str = "mdpo",
                          tags: dict[str, str] | None = None) -> dict[str, Any]:
    """The Table-1 comparison of every scored model as markdown, JSON and a bar chart (also an MLflow run, with
    ``tags``)."""
    models, left_out = scored_models(project)
    if not models:
        raise ConfigError("no model has benchmark scores yet: materialize benchmark_scores first")
    preset = base_model_name(project)
    table = comparison_table({k: v["scores"] for k, v in models.items()}, preset)
    judges = sorted({v["judge"] for v in models.values() if v.get("judge")})
    markdown = table.markdown(judge_note="MMHal judge: " + "; ".join(judges))
    if left_out:
        markdown += "\n\nLeft out (scored on another base model):\n" + "\n".join(
            f"- {k}: {why}" for k, why in left_out.items())
    out = project.root / EVAL_DIR
    (out / "comparison.md").write_text(markdown + "\n")
    chart = comparison_chart(table, out / "comparison.png")
    write_json({"rows": [[n, v] for n, v in table.rows], "paper_rows": table.paper_rows, "judges": judges},
               out / "comparison.json")
    if uri:
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        exp_id = experiment_id(client, experiment, project.root / "mlartifacts")
        run = client.create_run(exp_id, run_name="comparison_report",
                                tags={"kind": "comparison_report", "base_model": preset} | dict(tags or {}))
        for name in ("comparison.md", "comparison.png", "comparison.json"):
            client.log_artifact(run.info.run_id, str(out / name), artifact_path="report")
        client.set_terminated(run.info.run_id, "FINISHED")
        logged = {"mlflow_run_id": run.info.run_id, "experiment_id": exp_id}
    return {"markdown": markdown, "chart": str(chart), "rows": table.rows, "path": str(out / "comparison.md"),
            "left_out": left_out, **(logged if uri else {})}


def run_registry_decision(project: Project, *, uri: str) -> dict[str, Any]:
    """Gate every scored adapter; the best one that passes becomes champion if it beats the current champion."""
    from mlflow import MlflowClient


    settings = load_settings(project)
    policy = settings.benchmark_scores.gate
    models, left_out = scored_models(project)
    if BASE not in models:
        raise ConfigError("the base model has no scores yet: materialize benchmark_scores[base] first")
    name = registered_model_name(base_model_name(project, settings))
    client = MlflowClient(uri)
    candidates = {k: v for k, v in models.items() if k != BASE}
    # Best first on the primary metric, so the champion is compared against the strongest passing candidate.
    order = sorted(candidates, key=lambda k: candidates[k]["scores"][policy.primary],
                   reverse=not lower_is_better(policy.primary))
    old = current_champion(client, name)
    champion_scores = json.loads(old.tags["gate.decision"])["numbers"] if old and "gate.decision" in old.tags else None
    champion_name = old.tags.get("method") if old else None
    base_sha = base_identity(models[BASE])[1]
    if champion_scores is not None and champion_scores.get("base_weights_sha256") != base_sha:
        # A champion scored on another base model has no comparable numbers: the best candidate now replaces it.
        champion_scores = None
    before = old.version if old else None
    decisions = []
    for key in order:
        version = _latest_version(client, name, key)
        if version is None:
            continue
        # The champion itself is judged against the base only: comparing it with itself would demote it.
        is_champion = old is not None and str(version.version) == str(old.version)
        current = {policy.primary: champion_scores[policy.primary]} if champion_scores and not is_champion else None
        decision = decide(key, candidates[key]["scores"], models[BASE]["scores"], policy, current, champion_name)
        decision.numbers["base_weights_sha256"] = base_sha
        apply_decision(client, name, version.version, decision)
        decisions.append(decision.as_dict() | {"version": version.version})
        if decision.promote:
            champion_scores, champion_name = decision.numbers, key
    new = current_champion(client, name)
    result = {"decisions": decisions, "left_out": left_out, "champion_before": before,
              "champion_after": new.version if new else None,
              "champion_method": new.tags.get("method") if new else None, "model": name}
    # What `make demo` prints at its end, and a script can read without importing MLflow.
    write_json(result, project.root / EVAL_DIR / "champion.json")
    return result
