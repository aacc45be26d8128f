"""The benchmarks as one protocol: load items, build the prompts to answer, score answers into metrics.

Every benchmark is one class here and one entry of ``BENCHMARKS``; its metrics (names, directions, units) are
defined in ``core/eval/metrics.py``, which the report, the gate and the tracking read. The evaluation stage
runs them all the same way, and ``mdpo score`` scores answer files made anywhere with the same scorers.
No Dagster here.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mdpo_pipeline.core.errors import ConfigError
from mdpo_pipeline.core.eval.amber import amber_scores, load_amber
from mdpo_pipeline.core.eval.chair import llm_extractor, load_object_halbench, load_object_halbench_coco
from mdpo_pipeline.core.eval.judge import ENV_MODEL, ChatCompletionsClient, JudgeConfig, JudgmentCache, judge_all
from mdpo_pipeline.core.eval.metrics import METRICS
from mdpo_pipeline.core.eval.mmhal import (
    MMHalJudgeScriptError,
    load_judge_prompt,
    load_mmhal,
    mmhal_scores,
    parse_rating,
)
from mdpo_pipeline.core.eval.pope import SPLITS, load_pope, pope_scores, read_pope_answers
from mdpo_pipeline.core.io import atomic_path
from mdpo_pipeline.evaluation.answers import Prompt
from mdpo_pipeline.core.eval.settings import EvalSettings

EVAL_DIR = Path("artifacts") / "eval"


@dataclass
class EvalContext:
    """What a benchmark needs to load and score: the project root, params.yaml:benchmark_scores, the judge."""

    root: Path  #: relative settings paths resolve against this folder
    settings: EvalSettings
    judge: dict[str, Any] | None = None
    progress: bool = False
    log: Callable[[str], None] = print
    #: the record-aware rule judge of a synthetic split (made by the caller: evaluation knows no world), and the
    #: folder whose benchmarks it judges when the judge setting is "auto"
    rule_judge: Callable[[], Any] | None = None
    rule_judge_root: Path | None = None

    def resolve(self, rel: str | os.PathLike) -> Path:
        """A settings path made absolute against ``root``."""
        p = Path(rel).expanduser()
        return p if p.is_absolute() else self.root / p

    def section(self, name: str):
        """params.yaml:benchmark_scores.<name>: that benchmark's typed settings."""
        return getattr(self.settings, name)

    def path(self, name: str) -> Path:
        """A benchmark's file or folder: its own ``path`` setting, else ``root``/<name> (ShapeWorld's layout)."""
        explicit = self.section(name).path
        return self.resolve(explicit) if explicit else self.resolve(self.settings.root) / name

    def optional(self, value: str | None) -> Path | None:
        """A settings path that may be unset, resolved when set."""
        return self.resolve(value) if value else None

    def cap(self, items: list, name: str) -> list:
        """``items`` cut to ``max_items.<name>`` (for quick iterations)."""
        cap = self.settings.max_items.get(name)
        return items if cap is None else items[: int(cap)]

    def rule_judged(self, name: str) -> bool:
        """Whether benchmark ``name`` lies under ``rule_judge_root`` (a synthetic split its rule judge knows)."""
        return self.rule_judge_root is not None and self.path(name).resolve().is_relative_to(
            self.rule_judge_root.resolve())

    @property
    def judgments(self) -> Path:
        """The judge's answer cache, shared by every model and benchmark."""
        return self.root / EVAL_DIR / "judgments.jsonl"


@dataclass
class Scored:
    """One benchmark's result: flat metrics (keys of METRICS), details for scores.json, and its label."""

    metrics: dict[str, float | None]
    details: dict[str, Any]
    label: str | None = None  #: how it was scored, when that matters for comparisons (e.g. the judge)
    identity: dict[str, Any] = field(default_factory=dict)  #: what must match for two scores to be compared
    result: Any = None  #: the scorer's own result object
    artifacts: dict[str, Any] = field(default_factory=dict)  #: file name -> JSON written beside scores.json


def make_judge(settings: dict[str, Any] | None, rule_judge: Callable[[], Any] | None = None,
               rule_by_default: bool = False):
    """(judge: a chat client taking prompts, or the record-aware rule judge ``rule_judge`` makes; its label).
    Kind "auto" picks the rule judge when ``rule_by_default`` (the files are its synthetic split)."""
    settings = settings or {"kind": "auto"}
    kind = settings.get("kind", "auto")
    if kind == "shapeworld" or (kind == "auto" and rule_by_default):
        if rule_judge is None:
            raise ConfigError("judge kind 'shapeworld' needs ShapeWorld's split: these benchmark files have no "
                              "rule judge")
        judge = rule_judge()
        return judge, f"{judge.model} (rule-based, knows the ShapeWorld truth; NOT comparable with GPT-4 scores)"

    # The setting, else $MDPO_JUDGE_MODEL, else GPT-4 as the benchmark's authors judged.
    model = settings.get("model") or os.environ.get(ENV_MODEL) or "gpt-4-0613"
    config = JudgeConfig.resolve(base_url=settings.get("base_url"), model=model,
                                 api_key_env=settings.get("api_key_env") or "OPENAI_API_KEY")
    client = ChatCompletionsClient(config)
    return client, f"{config.model} via {config.base_url}"


def is_rule_judge(judge: Any) -> bool:
    """Whether ``judge`` judges (record, answer) itself rather than answering judge prompts."""
    return callable(getattr(judge, "judge", None))


class Benchmark(Protocol):
    """A benchmark: ``prepare`` loads its items and the prompts to answer, ``score`` turns answers into metrics."""

    name: str

    def prepare(self, ctx: EvalContext) -> tuple[Any, list[Prompt]]: ...

    def score(self, ctx: EvalContext, state: Any, answers: dict[str, str]) -> Scored: ...


# --- Object HalBench ------------------------------------------------------------------------------


def embedded_images(questions: Path, out_dir: Path) -> Path | None:
    """RLHF-V's obj_halbench_300_with_image.jsonl carries each picture as base64 under "image": write them as
    ``COCO_val2014_{image_id:012d}.jpg`` files once and return the folder (None when the file embeds none)."""


    written = 0
    with open(questions) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            image = row.get("image")
            if not isinstance(image, str) or len(image) < 256:  # a file name, not an embedded picture
                continue
            target = out_dir / f"COCO_val2014_{int(row['image_id']):012d}.jpg"
            if not target.is_file():
                try:
                    data = base64.b64decode(image.split(",", 1)[-1], validate=False)
                except binascii.Error as e:
                    raise ValueError(f"{questions}:{n}: the embedded image is not base64: {e}") from e
                with atomic_path(target) as tmp:
                    tmp.write_bytes(data)
            written += 1
    return out_dir if written else None


#: Object HalBench's per-answer detail, written beside scores.json.
PER_ANSWER_FILE = "object_halbench_per_answer.json"
PER_ANSWER_KEYS = ("image_id", "mentioned", "hallucinated", "covered", "truth", "chair_s")


class ObjectHalBench:
    """Object HalBench: detailed descriptions scored with CHAIR (offline rules, or RLHF-V's official scorer)."""

    name = "object_halbench"

    def load(self, ctx: EvalContext):
        """ShapeWorld's split (``path``), or the real one: a questions file, COCO 2014 annotations and synonyms."""
        cfg = ctx.section(self.name)
        mode, extractor = cfg.mode, cfg.extractor
        if mode == "official" and extractor == "judge":
            raise ConfigError("params.yaml:benchmark_scores.object_halbench: mode official reproduces the rule-based "
                              "scorer; extractor judge needs mode offline")
        if not cfg.questions:
            if mode == "official":
                raise ConfigError("params.yaml:benchmark_scores.object_halbench: mode official needs the real files "
                                  "(questions, coco_annotations, synonyms)")
            return load_object_halbench(ctx.path(self.name))
        missing = [k for k in ("coco_annotations", "synonyms") if not getattr(cfg, k)]
        if missing:
            raise ConfigError(f"params.yaml:benchmark_scores.object_halbench needs {missing} with questions")
        questions = ctx.resolve(cfg.questions)
        images = ctx.optional(cfg.images) or embedded_images(questions, ctx.root / EVAL_DIR / "object_halbench_images")
        return load_object_halbench_coco(questions, ctx.resolve(cfg.coco_annotations), ctx.resolve(cfg.synonyms),
                                         image_dir=images, mode=mode)

    def prepare(self, ctx: EvalContext):
        """The benchmark and one prompt per (capped) question."""
        ohb = self.load(ctx)
        items = ctx.cap(list(ohb.items), self.name)
        return ohb, [Prompt(str(it.image_id), str(ohb.image_path(it)), it.question) for it in items]

    def score(self, ctx: EvalContext, state, answers: dict[str, str]) -> Scored:
        """CHAIR of the answers; official mode reports the published "Response Hall" as chair_s."""
        extract = None
        if ctx.section(self.name).extractor == "judge":
            # The published numbers' setup: an LLM lists the objects, the synonym list maps them.

            client, _ = make_judge({**(ctx.judge or {}), "kind": "openai"})
            cache = JudgmentCache(ctx.judgments)
            extract = llm_extractor(lambda prompt: judge_all(client, [prompt], cache)[0])
        result = state.score({int(k): v for k, v in answers.items()}, extract=extract)
        # Per answer, the mentions in order and the truths: what recall-matched CHAIR and objects-per-answer need.
        per_answer = [{k: v for k, v in a.as_dict().items() if k in PER_ANSWER_KEYS} for a in result.per_answer]
        return Scored(self.metrics(result), result.as_dict(), identity={"mode": result.mode},
                      artifacts={PER_ANSWER_FILE: per_answer})

    @staticmethod
    def metrics(result) -> dict[str, float | None]:
        """Flat metrics; in official mode CHAIR_s is RLHF-V's CHAIRs_refine, the number papers print as
        "Response Hall" (hallucinated answers among answers that name an object)."""
        chair_s = result.official["CHAIRs_refine"] if result.mode == "official" else result.chair_s
        return {"chair_s": chair_s, "chair_i": result.chair_i, "recall": result.recall}

    def score_file(self, answers: Path, data: Path, mode: str, options: dict[str, Any]) -> dict[str, Any]:
        """An official-layout answers jsonl ({image_id, question, answer}) against COCO annotations in ``data``."""
        synonyms = options.get("synonyms") or data / "synonyms_refine.txt"
        ohb = load_object_halbench_coco(answers, data, synonyms, mode=mode)
        result = ohb.score_answers_file(answers)
        out: dict[str, Any] = {"mode": mode, "n": result.n_answers}
        if result.official is not None:
            out |= {"metrics": result.official, "summary": dict(result.official_summary or {})}
        else:
            out["metrics"] = {"CHAIRs": result.chair_s, "CHAIRi": result.chair_i, "obj_rec": result.recall}
        return out


# --- AMBER ------------------------------------------------------------------------------------------


class Amber:
    """AMBER: generative CHAIR/Cover/Hal/Cog and yes/no accuracy, precision, recall, F1."""

    name = "amber"

    def prepare(self, ctx: EvalContext):
        """The data and one prompt per (capped) query; the cap applies to each task so both stay."""
        cfg = ctx.section(self.name)
        amber = load_amber(ctx.path(self.name), image_dir=ctx.optional(cfg.images))
        generative = set(amber.ids("generative"))
        queries = [*ctx.cap([q for q in amber.queries if q.id in generative], self.name),
                   *ctx.cap([q for q in amber.queries if q.id not in generative], self.name)]
        return amber, [Prompt(str(q.id), str(amber.image_path(q)), q.query) for q in queries]

    def score(self, ctx: EvalContext, state, answers: dict[str, str]) -> Scored:
        """Both tasks in the configured mode."""
        result = amber_scores({int(k): v for k, v in answers.items()}, state, mode=ctx.section(self.name).mode)
        return Scored(self.metrics(result), result.as_dict(), identity={"mode": result.mode})

    @staticmethod
    def metrics(result) -> dict[str, float | None]:
        """Flat metrics (fractions)."""
        out: dict[str, float | None] = {}
        if result.generative is not None:
            g = result.generative
            out |= {"amber_chair": g.chair, "amber_cover": g.cover, "amber_hal": g.hal, "amber_cog": g.cog}
        if result.discriminative is not None:
            d = result.discriminative.overall
            out |= {"amber_accuracy": d.accuracy, "amber_precision": d.precision, "amber_recall": d.recall,
                    "amber_f1": d.f1}
        return out

    def score_file(self, answers: Path, data: Path, mode: str, options: dict[str, Any]) -> dict[str, Any]:
        """AMBER's official answer layout ([{"id", "response"}]) against the release in ``data``."""
        amber = load_amber(data)
        try:
            rows = json.loads(answers.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{answers} is not AMBER's answer layout (a JSON list of {{id, response}}): {e}") from e
        result = amber_scores(rows, amber, mode=mode)
        out: dict[str, Any] = {"mode": mode}
        for task in ("generative", "discriminative"):
            part = getattr(result, task)
            if part is not None:
                out[task] = part.official if mode == "official" else part.as_dict()
        if mode == "official":
            out["stdout"] = result.official_stdout()
        return out


# --- MMHal-Bench ------------------------------------------------------------------------------------


@dataclass
class _MMHalState:
    records: list
    prompts: list[Prompt]
    judge: Any
    label: str
    prompt: Any  #: the judge prompt (official or own); None for the ShapeWorld rule judge


class MMHal:
    """MMHal-Bench: a judge rates each answer 0–6 against the image contents and a human answer."""

    name = "mmhal"

    def _records(self, ctx: EvalContext):

        root = ctx.path(self.name)
        # ``path`` may name response_template.json itself (or RLHF-V's copy of it) rather than its folder.
        template = root if root.is_file() else root / "response_template.json"
        return template, ctx.cap(load_mmhal(template), self.name)

    def prepare(self, ctx: EvalContext):
        """The records, their prompts, and the judge (its prompt read before anything is generated)."""
        cfg = ctx.section(self.name)
        template, records = self._records(ctx)
        judge, label = make_judge(ctx.judge, ctx.rule_judge, rule_by_default=ctx.rule_judged(self.name))
        rule_judge = is_rule_judge(judge)
        script = ctx.optional(cfg.judge_script)
        prompt = None
        # A configured script is read even for the rule judge (which needs no prompt): a wrong setting never
        # goes unnoticed, and a bad path stops the run before any answer is generated.
        if script is not None or not rule_judge:
            try:
                prompt = load_judge_prompt(script)
            except MMHalJudgeScriptError as exc:
                raise ConfigError(f"params.yaml:benchmark_scores.mmhal.judge_script: {exc}") from exc
        image_dir = Path(cfg.images or template.parent / "images")
        prompts = [Prompt(str(i), str(image_dir / r.image_file), r.question) for i, r in enumerate(records)]
        return _MMHalState(records, prompts, judge, label, None if rule_judge else prompt), prompts

    def score(self, ctx: EvalContext, state: _MMHalState, answers: dict[str, str]) -> Scored:
        """Judge every answer (cached), parse the ratings, and score as the official script does."""
        records, prompts, judge = state.records, state.prompts, state.judge
        label = state.label
        if state.prompt is None:
            texts = [judge.judge(r, answers[p.id]) for r, p in zip(records, prompts)]
            identity = {"judge_model": judge.model, "prompt": judge.prompt_kind, "prompt_sha256": None,
                        "judge_script": None}
        else:

            texts = judge_all(judge, [state.prompt.build(r, answers[p.id]) for r, p in zip(records, prompts)],
                              JudgmentCache(ctx.judgments), ctx.progress, template_sha256=state.prompt.sha256)
            identity = {"judge_model": judge.model, **state.prompt.identity()}
            label = f"{label}; {state.prompt.label}"
        ratings = [parse_rating(t) for t in texts]
        scores = mmhal_scores(ratings, [r.question_type for r in records], require_order=len(records) % 8 == 0,
                              judge=identity)
        judgments = [{"id": p.id, "question_type": r.question_type, "answer": answers[p.id], "judgment": t,
                      "rating": g.rating} for p, r, t, g in zip(prompts, records, texts, ratings)]
        metrics = {"mmhal_score": scores.score, "mmhal_hallucination_rate": scores.hallucination_rate}
        return Scored(metrics, scores.as_dict(), label=label, result=scores,
                      identity={k: identity[k] for k in ("judge_model", "prompt", "prompt_sha256")},
                      artifacts={"mmhal_judgments.json": judgments})

    def score_file(self, answers: Path, data: Path, mode: str, options: dict[str, Any]) -> dict[str, Any]:
        """MMHal's template with ``model_answer`` filled in, judged by the official prompt (official) or the
        ShapeWorld rule judge (offline, ShapeWorld's split only)."""

        records = load_mmhal(answers)
        raw = json.loads(answers.read_text())
        if any(not str(r.get("model_answer") or "").strip() for r in raw):
            empty = [i for i, r in enumerate(raw) if not str(r.get("model_answer") or "").strip()]
            raise ValueError(f"{answers}: records {empty[:10]} have no model_answer to judge")
        texts_in = [str(r["model_answer"]) for r in raw]
        if mode == "offline":
            if options.get("rule_judge") is None:
                raise ConfigError("mdpo score mmhal --mode offline judges ShapeWorld's split only (its rule judge "
                                  "knows the truth): use --mode official for real MMHal-Bench answers")
            judge = options["rule_judge"]()
            texts = [judge.judge(r, a) for r, a in zip(records, texts_in)]
            identity = {"judge_model": judge.model, "prompt": judge.prompt_kind, "prompt_sha256": None}
        else:
            if not options.get("judge_script"):
                raise ConfigError("mdpo score mmhal --mode official needs --judge-script (the official "
                                  "Eval/eval_gpt_mmhal.py of llava-rlhf/LLaVA-RLHF)")
            prompt = load_judge_prompt(Path(options["judge_script"]))
            client, _ = make_judge({"kind": "openai"})
            cache = JudgmentCache(options.get("cache") or answers.with_suffix(".judgments.jsonl"))
            texts = judge_all(client, [prompt.build(r, a) for r, a in zip(records, texts_in)], cache,
                              template_sha256=prompt.sha256)
            identity = {"judge_model": client.model, **prompt.identity()}
        scores = mmhal_scores([parse_rating(t) for t in texts], [r.question_type for r in records],
                              require_order=len(records) % 8 == 0, judge=identity)
        return {"mode": mode, "metrics": scores.official_summary(), "scores": scores.as_dict()}


# --- POPE -------------------------------------------------------------------------------------------


class Pope:
    """POPE: object-existence yes/no questions in random, popular and adversarial splits."""

    name = "pope"

    def prepare(self, ctx: EvalContext):
        """The questions of the configured splits (each capped) and their prompts."""
        cfg = ctx.section(self.name)
        root = ctx.path(self.name)
        splits = tuple(cfg.splits or SPLITS)
        items = [it for split in splits for it in ctx.cap(load_pope(root, [split]), self.name)]
        image_dir = ctx.optional(cfg.images) or root / "images"
        return items, [Prompt(it.id, str(image_dir / it.image), it.question) for it in items]

    def score(self, ctx: EvalContext, state, answers: dict[str, str]) -> Scored:
        """Official POPE metrics per split; the flat metrics pool every split."""
        scores = pope_scores(answers, state)
        overall = scores["all"]
        metrics = {"pope_accuracy": overall.accuracy, "pope_precision": overall.precision,
                   "pope_recall": overall.recall, "pope_f1": overall.f1, "pope_yes_ratio": overall.yes_ratio}
        return Scored(metrics, {split: m.as_dict() for split, m in scores.items()})

    def score_file(self, answers: Path, data: Path, mode: str, options: dict[str, Any]) -> dict[str, Any]:
        """An official answers jsonl ({question_id, text}) of one split against ``data``'s question files."""
        split = options.get("split")
        if not split:
            raise ConfigError("mdpo score pope needs --split (random, popular or adversarial): answer files are per split")
        m = pope_scores(read_pope_answers(answers, split), load_pope(data, [split]))[split]
        return {"mode": "official", "split": split,
                "metrics": {"Accuracy": m.accuracy, "Precision": m.precision, "Recall": m.recall, "F1 score": m.f1,
                            "Yes ratio": m.yes_ratio}, "n": m.n}


#: Every benchmark, in the order they run and appear. Adding one is a class above and an entry here.
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (ObjectHalBench(), Amber(), MMHal(), Pope())}


def benchmark(name: str) -> Benchmark:
    """The benchmark registered under ``name``, or an error listing them."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ConfigError(f"unknown benchmark {name!r}; known: {list(BENCHMARKS)}") from None


def check_metrics(name: str, scored: Scored) -> Scored:
    """``scored`` after checking every metric it reports is defined (direction, title) in METRICS."""
    unknown = sorted(set(scored.metrics) - set(METRICS))
    if unknown:  # a metric without a definition would have no direction for the gate nor a column title
        raise KeyError(f"benchmark {name} reports metrics without a definition in core/eval/metrics.py: {unknown}")
    return scored

