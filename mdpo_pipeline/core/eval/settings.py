"""The evaluation's settings, typed: which benchmarks, where their files are, how answers are generated, the registry
gate. params.yaml:benchmark_scores is ``EvalSettings`` (``pipeline/settings.py`` gives ``root`` ShapeWorld's split as
its default) and the benchmarks read it as ``evaluation.benchmarks.EvalContext.settings``, checked once when
params.yaml is read (``core/typed.py``).

Plain data beside the scorers, like the data stages' configs (IngestConfig, PairsConfig, CorruptionConfig): typing
params.yaml imports this module, so a data stage's derived code deps (dvc.yaml) hold no evaluation code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from mdpo_pipeline.core.errors import shown
from mdpo_pipeline.core.eval.common import Mode
from mdpo_pipeline.core.eval.metrics import lower_is_better
from mdpo_pipeline.core.typed import meta

#: The benchmarks, in the order they run and report (``benchmarks.BENCHMARKS`` holds one class of each).
BENCHMARK_NAMES = ("object_halbench", "amber", "mmhal", "pope")
Benchmark = Literal[BENCHMARK_NAMES]
PopeSplit = Literal["random", "popular", "adversarial"]
#: The benchmarks that ask for free-text descriptions (the others ask yes/no or short questions): their answers'
#: length and object count are what a shorter answer would change in the hallucination metrics.
DESCRIPTION_BENCHMARKS = ("object_halbench", "amber")


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are generated: greedy, batched, left-padded, with the KV cache."""

    batch_size: int = 32  #: prompts per generate() call
    max_new_tokens: int = 128  #: answer length cap in tokens

    def __post_init__(self):
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be >= 1")


@dataclass(frozen=True)
class GatePolicy:
    """What an adapter must show to pass the gate and to become champion."""

    primary: str = "chair_s"  #: the hallucination metric that decides (Object HalBench CHAIR_s by default)
    coverage: str = "recall"  #: the coverage metric that must not drop too far (object recall)
    max_coverage_drop: float = 0.05  #: allowed absolute drop of ``coverage`` vs the base model
    min_improvement: float = 0.0  #: required improvement of ``primary`` over the base model (absolute)

    def __post_init__(self):
        try:
            lower_is_better(self.primary)  # known, and with a direction to rank by
            lower_is_better(self.coverage)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if lower_is_better(self.coverage):
            raise ValueError(f"coverage must be a higher-is-better metric (e.g. recall), got {shown(self.coverage)}")

    def better(self, a: float, b: float, margin: float = 0.0) -> bool:
        """Whether ``a`` beats ``b`` on the primary metric by more than ``margin``."""
        return a < b - margin if lower_is_better(self.primary) else a > b + margin


@dataclass(frozen=True)
class ObjectHalBenchSettings:
    """params.yaml:benchmark_scores.object_halbench."""

    mode: Mode = field(default="offline", metadata=meta(
        "offline: rule-based CHAIR; official: RLHF-V's scorer reproduced (needs the real files)"))
    path: str | None = field(default=None, metadata=meta("ShapeWorld-layout split; null: <root>/object_halbench"))
    extractor: Literal["rule", "judge"] = field(default="rule", metadata=meta(
        "how objects are found in an answer: rule (synonym list) or judge (an LLM lists them; offline mode)"))
    questions: str | None = field(default=None, metadata=meta(
        "the real questions file (RLHF-V's obj_halbench_300_with_image.jsonl)"))
    images: str | None = field(default=None, metadata=meta(
        "COCO images of the real questions; null: the questions' embedded base64 images"))
    coco_annotations: str | None = field(default=None, metadata=meta(
        "COCO 2014 annotations folder (instances_/captions_{train,val}2014.json), with questions"))
    synonyms: str | None = field(default=None, metadata=meta("RLHF-V's synonyms_refine.txt, with questions"))


@dataclass(frozen=True)
class AmberSettings:
    """params.yaml:benchmark_scores.amber."""

    mode: Mode = field(default="offline", metadata=meta("offline: rule-based; official: AMBER's scorer reproduced"))
    path: str | None = field(default=None, metadata=meta("AMBER's release root (holding data/); null: <root>/amber"))
    images: str | None = field(default=None, metadata=meta("AMBER's images; null: the release's image/ folder"))


@dataclass(frozen=True)
class MMHalSettings:
    """params.yaml:benchmark_scores.mmhal."""

    mode: Mode = field(default="offline", metadata=meta("offline or official (the official judge prompt)"))
    path: str | None = field(default=None, metadata=meta(
        "response_template.json or its folder; null: <root>/mmhal"))
    images: str | None = field(default=None, metadata=meta("the images; null: images/ beside the template"))
    judge_script: str | None = field(default=None, metadata=meta(
        "your copy of LLaVA-RLHF's Eval/eval_gpt_mmhal.py: the official judge prompt is read from it"))


@dataclass(frozen=True)
class PopeSettings:
    """params.yaml:benchmark_scores.pope."""

    mode: Mode = field(default="offline", metadata=meta("offline or official (the same yes/no parsing)"))
    path: str | None = field(default=None, metadata=meta(
        "folder of coco_pope_{random,popular,adversarial}.json; null: <root>/pope"))
    images: str | None = field(default=None, metadata=meta("the images; null: images/ in the path"))
    splits: tuple[PopeSplit, ...] | None = field(default=None, metadata=meta(
        "the splits to ask; null: random, popular and adversarial"))


@dataclass(frozen=True)
class EvalSettings:
    """Which benchmarks, where their files are, generation, caps and the gate."""

    root: str = field(metadata=meta("folder of benchmark splits in ShapeWorld's layout (<root>/<benchmark>)"))
    benchmarks: tuple[Benchmark, ...] = field(default=BENCHMARK_NAMES, metadata=meta(
        "the benchmarks to run, in this order"))
    object_halbench: ObjectHalBenchSettings = field(default_factory=ObjectHalBenchSettings,
                                                    metadata=meta("Object HalBench (CHAIR)"))
    amber: AmberSettings = field(default_factory=AmberSettings, metadata=meta("AMBER"))
    mmhal: MMHalSettings = field(default_factory=MMHalSettings, metadata=meta("MMHal-Bench"))
    pope: PopeSettings = field(default_factory=PopeSettings, metadata=meta("POPE"))
    generation: GenerationSettings = field(default_factory=GenerationSettings, metadata=meta(
        "how answers are generated: batch_size, max_new_tokens"))
    max_items: Mapping[Benchmark, int] = field(default_factory=dict, metadata=meta(
        "cap a benchmark's items while iterating, e.g. {amber: 200}", ge=1))
    gate: GatePolicy = field(default_factory=GatePolicy, metadata=meta(
        "the registry gate: primary, coverage, max_coverage_drop, min_improvement"))
