"""The evaluation stages the Dagster assets call: score one model, build the comparison, decide the champion.

Outputs live in ``artifacts/eval/<model>/`` (answers per benchmark, ``scores.json``) and
``artifacts/eval/comparison.{md,png,json}``; the judge's answers are cached in ``artifacts/eval/judgments.jsonl``
so reruns never pay twice. Settings come from ``params.yaml:benchmark_scores``. No Dagster here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mdpo_pipeline.core.io import write_json
from mdpo_pipeline.project import ConfigError, Project

EVAL_DIR = Path("artifacts") / "eval"
BASE = "base"
SHAPEWORLD_BENCHMARKS = "data/shapeworld/benchmarks"


def eval_settings(project: Project) -> dict[str, Any]:
    """params.yaml:benchmark_scores with defaults: benchmark locations, generation, item caps and the gate."""
    defaults: dict[str, Any] = {
        "root": SHAPEWORLD_BENCHMARKS,
        "object_halbench": {},
        "amber": {},
        "mmhal": {},
        "generation": {},
        "max_items": {},
        "gate": {},
    }
    section = project.params().get("benchmark_scores") or {}
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        raise ConfigError(f"params.yaml:benchmark_scores has unknown key(s) {unknown}; known: {sorted(defaults)}")
    return defaults | section


def _bench_path(project: Project, settings: dict, name: str, key: str = "path") -> Path:
    explicit = settings[name].get(key)
    return project.path(explicit) if explicit else project.path(settings["root"]) / name


def _capped(items: list, settings: dict, name: str) -> list:
    cap = settings["max_items"].get(name)
    return items if cap is None else items[: int(cap)]


def model_dir(project: Project, key: str) -> Path:
    """Where one model's answers and scores go."""
    return project.root / EVAL_DIR / key


def adapter_dir(project: Project, key: str, preset: str | None = None) -> Path | None:
    """The adapter of model partition ``key`` (None for the base model); an error if it was never trained, or was
    trained on another base model preset than ``preset``."""
    if key == BASE:
        return None
    path = project.root / "artifacts" / "adapters" / key
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
    """Refuse, naming both, to compare model ``key`` with base scores computed on another base model."""
    mine, theirs = base_identity(record), base_identity(base)
    if mine != theirs or mine == (None, None):
        raise ConfigError(
            f"{key} was scored on {_describe_base(mine)}, the base scores on {_describe_base(theirs)}: scores of "
            f"different base models are not compared; rematerialize benchmark_scores[{BASE}] and "
            f"benchmark_scores[{key}] for the current base model"
        )


def _answers(path: Path, model, processor, prompts, settings, model_sha: str, progress: bool, log) -> dict[str, str]:
    """Stored answers when they were made by this model from these prompts, else newly generated (and stored)."""
    from mdpo_pipeline.evaluation.generation import (
        generate_answers,
        generation_fingerprint,
        read_generations,
        write_generations,
    )

    fingerprint = generation_fingerprint(model_sha, prompts, settings)
    stored = read_generations(path, fingerprint)
    if stored is not None:
        log(f"{path.name}: reusing {len(stored)} stored answers")
        return stored
    log(f"{path.name}: generating {len(prompts)} answers")
    answers = generate_answers(model, processor, prompts, settings, progress=progress)
    write_generations(path, prompts, answers, fingerprint)
    return {p.id: a for p, a in zip(prompts, answers)}


def make_judge(settings: dict[str, Any] | None, shapeworld: bool):
    """(judge: a chat client taking prompts, or the record-aware ShapeWorld rule judge; its label)."""
    settings = settings or {"kind": "auto"}
    kind = settings.get("kind", "auto")
    if kind == "shapeworld" or (kind == "auto" and shapeworld):
        from mdpo_pipeline.core.shapeworld.judge import ShapeWorldJudge

        judge = ShapeWorldJudge()
        return judge, f"{judge.model} (rule-based, knows the ShapeWorld truth; NOT comparable with GPT-4 scores)"
    from mdpo_pipeline.core.eval.judge import ChatCompletionsClient, JudgeConfig

    config = JudgeConfig.resolve(base_url=settings.get("base_url"), model=settings.get("model") or "gpt-4-0613",
                                 api_key_env=settings.get("api_key_env", "OPENAI_API_KEY"))
    client = ChatCompletionsClient(config)
    return client, f"{config.model} via {config.base_url}"


def _object_halbench(project: Project, settings: dict):
    """ShapeWorld's split (``path``), or the real one: RLHF-V's prompts, COCO val2014 annotations and images,
    and CHAIR's synonyms.txt."""
    from mdpo_pipeline.core.eval.chair import load_object_halbench, load_object_halbench_coco

    cfg = settings["object_halbench"]
    if "questions" not in cfg:
        return load_object_halbench(_bench_path(project, settings, "object_halbench"))
    missing = [k for k in ("coco_annotations", "synonyms", "images") if not cfg.get(k)]
    if missing:
        raise ConfigError(f"params.yaml:benchmark_scores.object_halbench needs {missing} with questions")
    return load_object_halbench_coco(project.path(cfg["questions"]), project.path(cfg["coco_annotations"]),
                                     project.path(cfg["synonyms"]), image_dir=project.path(cfg["images"]))


def _mmhal(project: Project, settings: dict, model, processor, gen, model_sha, out: Path, judge_settings, progress, log):
    """(MMHalScores whose ``judge`` names judge_model, prompt, prompt_sha256 and judge_script; the judge label).

    The judge prompt is the official one read from ``benchmark_scores.mmhal.judge_script`` (the user's copy of
    LLaVA-RLHF's Eval/eval_gpt_mmhal.py), else the own prompt, labelled as not the official one.
    """
    from mdpo_pipeline.core.eval.mmhal import (
        MMHalJudgeScriptError,
        load_judge_prompt,
        load_mmhal,
        mmhal_scores,
        parse_rating,
    )
    from mdpo_pipeline.core.shapeworld.judge import ShapeWorldJudge
    from mdpo_pipeline.evaluation.generation import Prompt

    cfg = settings["mmhal"]
    root = _bench_path(project, settings, "mmhal")
    # ``path`` may name response_template.json itself (or RLHF-V's copy of it) rather than its folder.
    template = root if root.is_file() else root / "response_template.json"
    records = _capped(load_mmhal(template), settings, "mmhal")
    shapeworld = project.path(settings["root"]) == project.path(SHAPEWORLD_BENCHMARKS)
    judge, label = make_judge(judge_settings, shapeworld)
    rule_judge = isinstance(judge, ShapeWorldJudge)
    script = project.path(cfg["judge_script"]) if cfg.get("judge_script") else None
    prompt = None
    # Read before generating so a bad path stops the run at once; a configured one is read even for
    # the rule judge (which needs no prompt) so that a wrong setting never goes unnoticed.
    if script is not None or not rule_judge:
        try:
            prompt = load_judge_prompt(script)
        except MMHalJudgeScriptError as exc:
            raise ConfigError(f"params.yaml:benchmark_scores.mmhal.judge_script: {exc}") from exc
    image_dir = Path(cfg.get("images") or template.parent / "images")
    prompts = [Prompt(str(i), str(image_dir / r.image_file), r.question) for i, r in enumerate(records)]
    answers = _answers(out / "generations" / "mmhal.jsonl", model, processor, prompts, gen, model_sha, progress, log)
    if rule_judge:
        texts = [judge.judge(r, answers[p.id]) for r, p in zip(records, prompts)]
        identity = {"judge_model": judge.model, "prompt": judge.prompt_kind, "prompt_sha256": None,
                    "judge_script": None}
    else:
        from mdpo_pipeline.core.eval.judge import JudgmentCache, judge_all

        cache = JudgmentCache(project.root / EVAL_DIR / "judgments.jsonl")
        texts = judge_all(judge, [prompt.build(r, answers[p.id]) for r, p in zip(records, prompts)], cache, progress,
                          template_sha256=prompt.sha256)
        identity = {"judge_model": judge.model, **prompt.identity()}
        label = f"{label}; {prompt.label}"
    ratings = [parse_rating(t) for t in texts]
    scores = mmhal_scores(ratings, [r.question_type for r in records], require_order=len(records) % 8 == 0,
                          judge=identity)
    write_json([{"id": p.id, "question_type": r.question_type, "answer": answers[p.id], "judgment": t,
                 "rating": g.rating} for p, r, t, g in zip(prompts, records, texts, ratings)],
               out / "mmhal_judgments.json")
    return scores, label


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
    """Generate (or reuse) answers of model ``key`` on the three benchmarks, score them, store and log them."""
    from mdpo_pipeline.core.eval.amber import amber_scores, load_amber
    from mdpo_pipeline.evaluation.generation import GenerationSettings, Prompt, load_eval_model
    from mdpo_pipeline.stages import base_model_location, base_model_settings
    from mdpo_pipeline.training.reference import weights_sha256

    settings = eval_settings(project)
    gen = GenerationSettings(**settings["generation"])
    preset, base_path = base_model_location(project)
    adapter = adapter_dir(project, key, preset)
    model, processor, base_sha = load_eval_model(preset, base_path, adapter,
                                                 allow_remote_code=base_model_settings(project)["allow_remote_code"])
    model_sha = weights_sha256(model) if adapter else base_sha
    out = model_dir(project, key)

    ohb = _object_halbench(project, settings)
    items = _capped(list(ohb.items), settings, "object_halbench")
    prompts = [Prompt(str(it.image_id), str(ohb.image_dir / it.image), it.question) for it in items]
    answers = _answers(out / "generations" / "object_halbench.jsonl", model, processor, prompts, gen, model_sha,
                       progress, log)
    extractor = settings["object_halbench"].get("extractor", "rule")
    if extractor not in ("rule", "judge"):
        raise ConfigError(f"params.yaml:benchmark_scores.object_halbench.extractor={extractor!r}: use rule or judge")
    extract = None
    if extractor == "judge":  # the published numbers' setup: an LLM lists the objects, the synonym list maps them
        from mdpo_pipeline.core.eval.chair import llm_extractor
        from mdpo_pipeline.core.eval.judge import JudgmentCache, judge_all

        client, _ = make_judge({**(judge or {}), "kind": "openai"}, shapeworld=False)
        cache = JudgmentCache(project.root / EVAL_DIR / "judgments.jsonl")
        extract = llm_extractor(lambda prompt: judge_all(client, [prompt], cache)[0])
    chair = ohb.score({int(k): v for k, v in answers.items()}, extract=extract)

    amber = load_amber(_bench_path(project, settings, "amber"))
    # The cap applies to each task, so a capped run still has both generative and yes/no items.
    generative = set(amber.ids("generative"))
    queries = [*_capped([q for q in amber.queries if q.id in generative], settings, "amber"),
               *_capped([q for q in amber.queries if q.id not in generative], settings, "amber")]
    prompts = [Prompt(str(q.id), str(amber.image_dir / q.image), q.query) for q in queries]
    answers = _answers(out / "generations" / "amber.jsonl", model, processor, prompts, gen, model_sha, progress, log)
    amb = amber_scores({int(k): v for k, v in answers.items()}, amber)

    mm, judge_label = _mmhal(project, settings, model, processor, gen, model_sha, out, judge, progress, log)

    flat: dict[str, float | None] = {"chair_s": chair.chair_s, "chair_i": chair.chair_i, "recall": chair.recall}
    if amb.generative is not None:
        g = amb.generative
        flat |= {"amber_chair": g.chair, "amber_cover": g.cover, "amber_hal": g.hal, "amber_cog": g.cog}
    if amb.discriminative is not None:
        d = amb.discriminative.overall
        flat |= {"amber_precision": d.precision, "amber_recall": d.recall, "amber_f1": d.f1}
    flat |= {"mmhal_score": mm.score, "mmhal_hallucination_rate": mm.hallucination_rate}
    record = {
        "model": key, "preset": preset, "adapter": str(adapter) if adapter else None, "weights_sha256": model_sha,
        "base_model": {"preset": preset, "weights_sha256": base_sha},
        "scores": flat, "judge": judge_label,
        "object_halbench": chair.as_dict(), "amber": amb.as_dict(), "mmhal": mm.as_dict(),
        "generation": settings["generation"], "max_items": settings["max_items"],
    }
    write_json(record, out / "scores.json")
    run_id = log_scores(project, key, preset, record, out, uri, experiment) if uri else None
    return {"scores": flat, "path": str(out / "scores.json"), "judge": judge_label, "mlflow_run_id": run_id}


def read_scores(project: Project, key: str) -> dict[str, Any] | None:
    """The stored scores.json of model ``key``, or None when it was never scored."""
    path = model_dir(project, key) / "scores.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _latest_version(client, name: str, method: str):
    versions = [v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get("method") == method]
    return max(versions, key=lambda v: int(v.version)) if versions else None


def log_scores(project: Project, key: str, preset: str, record: dict, out: Path, uri: str, experiment: str) -> str:
    """Log the scores to the adapter's training run (its newest registry version), or to a "base" run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from mdpo_pipeline.tracking import experiment_id, registered_model_name

    client = MlflowClient(uri)
    run_id = None
    if key != BASE:
        version = _latest_version(client, registered_model_name(preset), key) if client.search_registered_models(
            filter_string=f"name = '{registered_model_name(preset)}'") else None
        run_id = version.run_id if version else None
    if run_id is None:
        exp_id = experiment_id(client, experiment, project.root / "mlartifacts")
        run_id = client.create_run(exp_id, run_name=f"{key}-eval", tags={"method": key, "base_model": preset}).info.run_id
        client.set_terminated(run_id, "FINISHED")
    metrics = [Metric(f"eval/{k}", float(v), 0, 0) for k, v in record["scores"].items() if v is not None]
    client.log_batch(run_id, metrics=metrics)
    client.set_tag(run_id, "eval.judge", record["judge"][:5000])
    client.log_artifact(run_id, str(out / "scores.json"), artifact_path="eval")
    return run_id


# --- the gate and the report -----------------------------------------------------------------


def gate_policy(project: Project):
    """The registry gate's policy from params.yaml:benchmark_scores.gate."""
    from mdpo_pipeline.evaluation.registry import GatePolicy
    from mdpo_pipeline.project import build_config

    return build_config(GatePolicy, eval_settings(project)["gate"], where="params.yaml:benchmark_scores.gate")


def gate_partition(project: Project, key: str):
    """The gate decision of one model partition against the base model (the base passes by definition)."""
    from mdpo_pipeline.evaluation.registry import Decision, decide

    if key == BASE:
        return Decision(candidate=BASE, passed=True, promote=False, reasons=["the base model is the reference"])
    mine, base = read_scores(project, key), read_scores(project, BASE)
    if mine is None:
        raise ConfigError(f"{key} has no scores yet: materialize benchmark_scores[{key}]")
    if base is None:
        raise ConfigError("the base model has no scores yet: materialize benchmark_scores[base] first")
    same_base_or_raise(key, mine, base)
    return decide(key, mine["scores"], base["scores"], gate_policy(project))


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


def run_comparison_report(project: Project, *, uri: str | None = None, experiment: str = "mdpo") -> dict[str, Any]:
    """The Table-1 comparison of every scored model as markdown, JSON and a bar chart (also an MLflow run)."""
    from mdpo_pipeline.evaluation.report import comparison_chart, comparison_table
    from mdpo_pipeline.stages import base_model_location

    models, left_out = scored_models(project)
    if not models:
        raise ConfigError("no model has benchmark scores yet: materialize benchmark_scores first")
    preset, _ = base_model_location(project)
    table = comparison_table({k: v["scores"] for k, v in models.items()}, preset)
    judges = sorted({v["judge"] for v in models.values()})
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

        from mdpo_pipeline.tracking import experiment_id

        client = MlflowClient(uri)
        run = client.create_run(experiment_id(client, experiment, project.root / "mlartifacts"),
                                run_name="comparison_report", tags={"kind": "comparison_report", "base_model": preset})
        for name in ("comparison.md", "comparison.png", "comparison.json"):
            client.log_artifact(run.info.run_id, str(out / name), artifact_path="report")
        client.set_terminated(run.info.run_id, "FINISHED")
    return {"markdown": markdown, "chart": str(chart), "rows": table.rows, "path": str(out / "comparison.md"),
            "left_out": left_out}


def run_registry_decision(project: Project, *, uri: str) -> dict[str, Any]:
    """Gate every scored adapter; the best one that passes becomes champion if it beats the current champion."""
    from mlflow import MlflowClient

    from mdpo_pipeline.core.eval.metrics import lower_is_better
    from mdpo_pipeline.evaluation.registry import apply_decision, current_champion, decide
    from mdpo_pipeline.stages import base_model_location
    from mdpo_pipeline.tracking import registered_model_name

    policy = gate_policy(project)
    models, left_out = scored_models(project)
    if BASE not in models:
        raise ConfigError("the base model has no scores yet: materialize benchmark_scores[base] first")
    preset, _ = base_model_location(project)
    name = registered_model_name(preset)
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
    return {"decisions": decisions, "left_out": left_out, "champion_before": before,
            "champion_after": new.version if new else None,
            "champion_method": new.tags.get("method") if new else None, "model": name}
