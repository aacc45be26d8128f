"""params.yaml as one typed settings model, loaded once by ``load_settings``: the only code that reads the file.

Every section is a dataclass; every field has a one-line help (``mdpo params --help-fields`` lists them) and a type,
and out-of-range values are refused, all with an error naming the key::

    params.yaml:raw_silkie.max_quarantine_share: must be a number in [0, 1], got '0.05'

Defaults live in exactly one place. A section the core already defines is that dataclass itself, not a copy:
``shapeworld`` is ShapeWorldConfig, ``raw_silkie`` is IngestConfig (plus the stage's quarantine gate),
``preference_pairs`` PairsConfig, ``corrupted_images`` CorruptionConfig, ``base_model.sft`` SFTSettings; the
registry gate and the generation settings of ``benchmark_scores`` are the evaluation's GatePolicy and
GenerationSettings (typed by ``pipeline.evaluate``, so the data stages never import the evaluation). The
dataclasses declared here (RawSilkieGate, BaseModelSettings, ReferenceSettings, TrainingSettings, the benchmark
sections) hold settings nothing else declares. Their help is the field's ``help`` metadata, or for the core's
dataclasses the field's own source comment.

``training`` is not re-declared either: its keys are MDPOConfig fields (any of them: beta, delta, the loss-weight
overrides, learning_rate, per_device_train_batch_size, num_train_epochs, max_steps, seed, ...) and the run-level
RunArguments (quantization, lora_r, lora_alpha, threads, resume), shared by every method, with per-method
overrides under ``methods``. A key it does not set comes from the model preset's TrainingDefaults, then the
pipeline's RUN_DEFAULTS (training/run.py). Here the section is checked for its shape and for the keys
the pipeline sets itself; parsing each method's values into its MDPOConfig (typed, unknown keys named) needs TRL and
happens in ``stages.train_run_config`` and ``stages.validate_params``. The exception is ``max_length``: one
setting, ``reference_logprobs.max_length``, which the reference cache is computed with and every training run
trains with (``ReferenceSettings.resolved_max_length``), so it is not set under ``training``. It lives with the
cache because DVC tracks that section for the reference_logprobs stage: a new max_length recomputes the cache.

A default is what a key means when params.yaml leaves it out; a key params.yaml sets is a value, the pipeline's
choice. Some choices differ from the dataclass default on purpose (the offline demo's ``preference_pairs.n: 1500``
against PairsConfig's paper-sized 10000, ``shapeworld.n_instructions: 6400`` sized for that sample against
ShapeWorldConfig's 3000); SFTSettings' defaults are the values the demo's SFT uses, so ``base_model.sft`` restates
them. params.yaml keeps such keys even where the value equals the default (``base_model.sft``,
``reference_logprobs.batch_size``, ``training.seed``, ...): DVC records each tracked section's values in dvc.lock,
so dropping one would mark its stage changed although nothing changed, and the file stays the list of the knobs a
person turns. ``mdpo params`` shows every value as resolved. A null under ``training`` means "not set here".
"""

from __future__ import annotations

import ast
import difflib
import inspect
import io
import math
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, is_dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from mdpo_pipeline.core import corruption, ingest, pairs
from mdpo_pipeline.core.errors import ConfigError
from mdpo_pipeline.core.methods import METHODS
from mdpo_pipeline.pipeline.project import PARAMS_FILE, Project
from mdpo_pipeline.shapeworld import ShapeWorldConfig
from mdpo_pipeline.shapeworld.preset import SHAPEWORLD_TINY
from mdpo_pipeline.shapeworld.sft_settings import SFTSettings

#: Where the ShapeWorld stage writes its raw VLFeedback files and its benchmark splits.
SHAPEWORLD_VLFEEDBACK = "data/shapeworld/vlfeedback"
SHAPEWORLD_BENCHMARKS = "data/shapeworld/benchmarks"
#: The benchmarks (evaluation/benchmarks.py BENCHMARKS, in its order) and their scoring modes (MODES).
BENCHMARK_NAMES = ("object_halbench", "amber", "mmhal", "pope")
Mode = Literal["offline", "official"]
PopeSplit = Literal["random", "popular", "adversarial"]


def _meta(help: str, **bounds: Any) -> dict[str, Any]:
    """Field metadata: its help and optional bounds ge / gt / le."""
    return {"help": help, **bounds}


# --- sections declared here ----------------------------------------------------------------------


@dataclass(frozen=True)
class RawSilkieGate:
    """The raw_silkie stage's own setting beside the reader's (IngestConfig) in the same section."""

    max_quarantine_share: float = field(default=0.05, metadata=_meta(
        "the blocking asset check fails when more than this share of the rows were quarantined", ge=0, le=1))


@dataclass(frozen=True)
class RawSilkieSettings:
    """params.yaml:raw_silkie: where raw VLFeedback comes from and how it is read (IngestConfig), and the gate."""

    reader: ingest.IngestConfig = field(
        default_factory=lambda: ingest.IngestConfig(path=SHAPEWORLD_VLFEEDBACK),
        metadata={"help": "IngestConfig's fields, flat in the section", "flatten": True,
                  "defaults": {"path": SHAPEWORLD_VLFEEDBACK}})
    gate: RawSilkieGate = field(default_factory=RawSilkieGate,
                                metadata={"help": "the stage's quarantine gate, flat in the section", "flatten": True})

    @property
    def max_quarantine_share(self) -> float:
        """The quarantine gate's threshold."""
        return self.gate.max_quarantine_share


@dataclass(frozen=True)
class BaseModelSettings:
    """params.yaml:base_model: the model to align, and for the tiny ShapeWorld model its SFT."""

    preset: str = field(default=SHAPEWORLD_TINY.name, metadata=_meta(
        "model preset: shapeworld-tiny (built here), llava-1.5-7b, qwen2.5-vl-3b, qwen2.5-vl-7b or gemma-3-4b"))
    path: str | None = field(default=None, metadata=_meta(
        "local weights of a real preset; null: $MDPO_MODEL_DIR/<preset> or the offline hub cache"))
    allow_remote_code: bool = field(default=False, metadata=_meta(
        "let a preset that runs the checkpoint's own Python code (trust_remote_code) load"))
    sft: SFTSettings = field(default_factory=SFTSettings, metadata=_meta(
        "the tiny model's supervised fine-tune (SFTSettings); unused by real presets"))


@dataclass(frozen=True)
class ReferenceSettings:
    """params.yaml:reference_logprobs: the base model's log-probs, computed once for every training run."""

    batch_size: int = field(default=32, metadata=_meta("pairs per forward pass", ge=1))
    max_length: int | None = field(default=None, metadata=_meta(
        "tokens per sequence, image tokens included, of this cache and of every training run (one setting: the "
        "cache must be computed with the max_length the runs use); null: the model preset's (256 for "
        "shapeworld-tiny, 2048 for real models)", ge=1))

    def resolved_max_length(self, preset) -> int:
        """The one max_length of the reference cache and of every run on ``preset`` (a ModelPreset)."""
        return self.max_length if self.max_length is not None else preset.training.max_length


#: Run config keys the pipeline sets itself, and where they come from.
PIPELINE_SET = {
    "output_dir": "the adapter's place, artifacts/adapters/<method>",
    "method": "the partition: one adapter per method",
    "reference_cache": "the reference_logprobs stage's output (a live reference for dpo_no_image)",
    "pairs_dir": "the preference_pairs stage's output",
    "image_root": "the raw_silkie stage's image root",
    "corrupted_dir": "the corrupted_images stage's output",
    "base_model": "base_model.preset",
    "base_model_path": "the base_model stage's output (base_model.path for a real preset)",
    "allow_remote_code": "base_model.allow_remote_code",
}


@dataclass(frozen=True)
class TrainingSettings:
    """params.yaml:training: MDPOConfig fields and run arguments for every method, and per-method overrides."""

    common: Mapping[str, Any] = field(default_factory=dict, metadata=_meta(
        "every key: an MDPOConfig field (beta, delta, conditional_weight, learning_rate, "
        "per_device_train_batch_size, num_train_epochs, max_steps, seed, ...; max_length is "
        "reference_logprobs.max_length) or a run argument (quantization, lora_r, lora_alpha, threads, resume), for "
        "every method", flatten=True))
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, metadata=_meta(
        "per-method overrides of those keys, e.g. {dpo: {learning_rate: 1.0e-4}, mdpo: {delta: 0.1}}"))

    def located(self, method: str) -> dict[str, tuple[Any, str]]:
        """key -> (value, where params.yaml sets it) of ``method``'s run: the common keys under its overrides
        (null values are "not set here" and left out)."""
        out = {k: (v, f"params.yaml:training.{k}") for k, v in self.common.items() if v is not None}
        for k, v in (self.methods.get(method) or {}).items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = (v, f"params.yaml:training.methods.{method}.{k}")
        return out

    def values(self, method: str) -> dict[str, Any]:
        """The keys params.yaml sets for ``method``'s run (its max_length is reference_logprobs.max_length)."""
        return {k: v for k, (v, _) in self.located(method).items()}


@dataclass(frozen=True)
class ObjectHalBenchSettings:
    """params.yaml:benchmark_scores.object_halbench."""

    mode: Mode = field(default="offline", metadata=_meta(
        "offline: rule-based CHAIR; official: RLHF-V's scorer reproduced (needs the real files)"))
    path: str | None = field(default=None, metadata=_meta("ShapeWorld-layout split; null: <root>/object_halbench"))
    extractor: Literal["rule", "judge"] = field(default="rule", metadata=_meta(
        "how objects are found in an answer: rule (synonym list) or judge (an LLM lists them; offline mode)"))
    questions: str | None = field(default=None, metadata=_meta(
        "the real questions file (RLHF-V's obj_halbench_300_with_image.jsonl)"))
    images: str | None = field(default=None, metadata=_meta(
        "COCO images of the real questions; null: the questions' embedded base64 images"))
    coco_annotations: str | None = field(default=None, metadata=_meta(
        "COCO 2014 annotations folder (instances_/captions_{train,val}2014.json), with questions"))
    synonyms: str | None = field(default=None, metadata=_meta("RLHF-V's synonyms_refine.txt, with questions"))


@dataclass(frozen=True)
class AmberSettings:
    """params.yaml:benchmark_scores.amber."""

    mode: Mode = field(default="offline", metadata=_meta("offline: rule-based; official: AMBER's scorer reproduced"))
    path: str | None = field(default=None, metadata=_meta("AMBER's release root (holding data/); null: <root>/amber"))
    images: str | None = field(default=None, metadata=_meta("AMBER's images; null: the release's image/ folder"))


@dataclass(frozen=True)
class MMHalSettings:
    """params.yaml:benchmark_scores.mmhal."""

    mode: Mode = field(default="offline", metadata=_meta("offline or official (the official judge prompt)"))
    path: str | None = field(default=None, metadata=_meta(
        "response_template.json or its folder; null: <root>/mmhal"))
    images: str | None = field(default=None, metadata=_meta("the images; null: images/ beside the template"))
    judge_script: str | None = field(default=None, metadata=_meta(
        "your copy of LLaVA-RLHF's Eval/eval_gpt_mmhal.py: the official judge prompt is read from it"))


@dataclass(frozen=True)
class PopeSettings:
    """params.yaml:benchmark_scores.pope."""

    mode: Mode = field(default="offline", metadata=_meta("offline or official (the same yes/no parsing)"))
    path: str | None = field(default=None, metadata=_meta(
        "folder of coco_pope_{random,popular,adversarial}.json; null: <root>/pope"))
    images: str | None = field(default=None, metadata=_meta("the images; null: images/ in the path"))
    splits: tuple[PopeSplit, ...] | None = field(default=None, metadata=_meta(
        "the splits to ask; null: random, popular and adversarial"))


@dataclass(frozen=True)
class BenchmarkScoresSettings:
    """params.yaml:benchmark_scores: which benchmarks, where their files are, generation, caps and the gate."""

    root: str = field(default=SHAPEWORLD_BENCHMARKS, metadata=_meta(
        "folder of benchmark splits in ShapeWorld's layout (<root>/<benchmark>); ShapeWorld's by default"))
    benchmarks: tuple[Literal[BENCHMARK_NAMES], ...] = field(default=BENCHMARK_NAMES, metadata=_meta(
        "the benchmarks to run, in this order"))
    object_halbench: ObjectHalBenchSettings = field(default_factory=ObjectHalBenchSettings,
                                                    metadata=_meta("Object HalBench (CHAIR)"))
    amber: AmberSettings = field(default_factory=AmberSettings, metadata=_meta("AMBER"))
    mmhal: MMHalSettings = field(default_factory=MMHalSettings, metadata=_meta("MMHal-Bench"))
    pope: PopeSettings = field(default_factory=PopeSettings, metadata=_meta("POPE"))
    generation: Mapping[str, Any] = field(default_factory=dict, metadata=_meta(
        "GenerationSettings (evaluation/answers.py): batch_size, max_new_tokens", typed_by="generation"))
    max_items: Mapping[Literal[BENCHMARK_NAMES], int] = field(default_factory=dict, metadata=_meta(
        "cap a benchmark's items while iterating, e.g. {amber: 200}", ge=1))
    gate: Mapping[str, Any] = field(default_factory=dict, metadata=_meta(
        "GatePolicy (evaluation/registry.py): primary, coverage, max_coverage_drop, min_improvement",
        typed_by="gate"))

    def context(self) -> dict[str, Any]:
        """The settings as the benchmarks' EvalContext reads them: a dict, unset paths left out."""
        out: dict[str, Any] = {"root": self.root, "benchmarks": list(self.benchmarks),
                               "generation": dict(self.generation), "max_items": dict(self.max_items),
                               "gate": dict(self.gate)}
        for name in BENCHMARK_NAMES:
            out[name] = {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in asdict(getattr(self, name)).items() if v is not None}
        return out


#: The grid axes that change the data (each value combination is a data variant with its own data stages, base
#: model and reference cache where their inputs differ); "training.<key>" axes change only the runs.
DATA_SECTIONS = ("shapeworld", "preference_pairs", "corrupted_images")
#: The ShapeWorld benchmark sizes (ShapeWorldConfig fields) of the grid's own evaluation split.
EVAL_SIZE_KEYS = ("object_halbench", "amber_generative", "amber_discriminative", "mmhal", "pope")


@dataclass(frozen=True)
class ExperimentSettings:
    """params.yaml:experiment: the grid of `make reproduce` and Dagster's grid_cells partitions: every combination
    of methods × seeds × axes is one cell with its own adapter, answers, scores and probe."""

    name: str = field(default="claims", metadata=_meta(
        "the grid's name: its cells live in artifacts/grid/<name>/ and its MLflow parent run is named after it"))
    methods: tuple[str, ...] = field(default=("dpo", "mdpo", "mdpo_no_conditional", "mdpo_no_anchor", "dpo_no_image"),
                                     metadata=_meta("the methods (core/methods.py); the base model is always scored"))
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=_meta(
        "training seeds (LoRA init and data order); cells of one seed are paired in the claims report", ge=0))
    axes: Mapping[str, tuple[Any, ...]] = field(default_factory=dict, metadata=_meta(
        "optional axes, each a dotted params key and its values, e.g. {shapeworld.unconditional_share: [0.0, 0.5, "
        "1.0]}, {preference_pairs.n: [375, 750, 1500]}, {corrupted_images.strategy: [crop_1_20, crop_20_50]}, "
        "{training.beta: [0.1, 0.5]}; the first value of each is its default in the claims tables"))
    eval_sizes: Mapping[Literal[EVAL_SIZE_KEYS], int] = field(default_factory=lambda: {
        "object_halbench": 600, "amber_generative": 400, "amber_discriminative": 600, "mmhal": 96, "pope": 100},
        metadata=_meta("items of the grid's own ShapeWorld benchmark split (larger than the demo's, so sampling "
                       "error does not swamp the effects); unused when benchmark_scores points at real files", ge=1))
    benchmarks: tuple[Literal[BENCHMARK_NAMES], ...] = field(default=("object_halbench", "amber", "mmhal"),
                                                              metadata=_meta("the benchmarks every cell is scored on"))
    probe_pairs: int = field(default=300, metadata=_meta(
        "held-out pairs (instructions never sampled for training) of the image-use probe", ge=1))

    def __post_init__(self):
        # the base model is always in the grid; methods must be known; no repeats (a cell key each)
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; known: {sorted(METHODS)}")
        for name in ("methods", "seeds"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{name}: must be a non-empty list without repeats, got {list(values)}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(f"name: letters, digits, '_', '.', '-' only (it names a folder), got {self.name!r}")
        for axis, values in self.axes.items():
            section, _, rest = axis.partition(".")
            if section not in (*DATA_SECTIONS, "training") or not rest:
                raise ValueError(f"axes.{axis}: an axis is '<section>.<key>' with section one of "
                                 f"{[*DATA_SECTIONS, 'training']}")
            if not isinstance(values, list | tuple) or not values or len(set(map(repr, values))) != len(values):
                raise ValueError(f"axes.{axis}: must be a non-empty list of distinct values, got {values!r}")


@dataclass(frozen=True)
class Settings:
    """params.yaml, every section typed."""

    shapeworld: ShapeWorldConfig = field(default_factory=ShapeWorldConfig, metadata=_meta(
        "the offline synthetic world that stands in for VLFeedback and the benchmarks (ShapeWorldConfig)"))
    raw_silkie: RawSilkieSettings = field(default_factory=RawSilkieSettings, metadata=_meta(
        "where raw VLFeedback comes from (IngestConfig) and the quarantine gate"))
    preference_pairs: pairs.PairsConfig = field(default_factory=pairs.PairsConfig, metadata=_meta(
        "pair building and sampling (PairsConfig)"))
    corrupted_images: corruption.CorruptionConfig = field(default_factory=corruption.CorruptionConfig, metadata=_meta(
        "the corrupted image per sampled instruction (CorruptionConfig)"))
    base_model: BaseModelSettings = field(default_factory=BaseModelSettings, metadata=_meta("the model to align"))
    reference_logprobs: ReferenceSettings = field(default_factory=ReferenceSettings, metadata=_meta(
        "the reference log-prob cache"))
    training: TrainingSettings = field(default_factory=TrainingSettings, metadata=_meta(
        "preference training: MDPOConfig fields and run arguments, per-method overrides"))
    benchmark_scores: BenchmarkScoresSettings = field(default_factory=BenchmarkScoresSettings, metadata=_meta(
        "the hallucination benchmarks and the registry gate"))
    experiment: ExperimentSettings = field(default_factory=ExperimentSettings, metadata=_meta(
        "the experiment grid (methods × seeds × axes) of `make reproduce` and the claims report"))

    def as_dict(self) -> dict[str, Any]:
        """Every section's resolved values laid out as in params.yaml, as plain data (paths as strings, tuples as
        lists)."""
        return _plain(_layout(self))


# --- loading ---------------------------------------------------------------------------------------

#: Keys that moved, and where they live now.
MOVED = {
    "params.yaml:training.epochs": "training.num_train_epochs (MDPOConfig's name)",
    "params.yaml:training.per_device_batch_size": "training.per_device_train_batch_size (MDPOConfig's name)",
    "params.yaml:training.grad_accum": "training.gradient_accumulation_steps (MDPOConfig's name)",
}


def read_params(path: str | Path) -> dict[str, Any]:
    """params.yaml as a dict of sections, with a clear error for a missing or malformed file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: params file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def parse_settings(data: Mapping[str, Any]) -> Settings:
    """The typed settings of an already-read params.yaml; errors name the key."""
    return build(Settings, data, "params.yaml")


def load_settings(project: Project) -> Settings:
    """Read ``project``'s params.yaml (once) and type every section."""
    return parse_settings(read_params(project.root / PARAMS_FILE))


# --- typing a mapping into a dataclass ------------------------------------------------------------


def build(cls: type, data: Any, where: str):
    """An instance of dataclass ``cls`` from ``data`` (a params mapping): unknown keys, wrong types and values out
    of range are ConfigErrors naming ``where``.<key>; keys it lacks take the dataclass's defaults."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a mapping of keys to values, got {data!r}")
    if cls is TrainingSettings:
        return _training(data, where)
    own = {f.name: f for f in fields(cls) if f.init}
    flat = {name: f for name, f in own.items() if f.metadata.get("flatten")}
    known = {name for name in own if name not in flat}
    for f in flat.values():
        known |= set(_field_names(type_hints(cls)[f.name]))
    _refuse_unknown(data, known, where)
    hints = type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in own.items():
        if f.metadata.get("flatten"):
            part = hints[name]
            sub = {k: v for k, v in data.items() if k in _field_names(part)}
            kwargs[name] = build(part, {**f.metadata.get("defaults", {}), **sub}, where)
        elif name in data:
            tp = hints[name]
            kwargs[name] = (build(tp, data[name], key(where, name)) if is_dataclass(tp)
                            else check(data[name], tp, f.metadata, key(where, name)))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def _training(data: Mapping[str, Any], where: str) -> TrainingSettings:
    data = dict(data)
    methods = data.pop("methods", None) or {}
    if not isinstance(methods, Mapping):
        raise ConfigError(f"{where}.methods: must be a mapping of method names to their settings, got {methods!r}")
    _refuse_pipeline_keys(data, where)
    checked = {}
    for method, overrides in methods.items():
        here = f"{where}.methods.{method}"
        if overrides is None:
            overrides = {}
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"{here}: must be a mapping of keys to values, got {overrides!r}")
        _refuse_pipeline_keys(overrides, here)
        checked[str(method)] = dict(overrides)
    return TrainingSettings(common=data, methods=checked)


def _refuse_pipeline_keys(data: Mapping[str, Any], where: str) -> None:
    for name in data:
        if not isinstance(name, str):
            raise ConfigError(f"{where}: keys must be names, got {name!r}")
        here = key(where, name)
        if here in MOVED:
            raise ConfigError(f"{here}: moved to {MOVED[here]}")
        if name == "max_length":
            raise ConfigError(f"{here}: max_length is one setting, reference_logprobs.max_length: the reference "
                              "cache and every method's run must use the same")
        if name in PIPELINE_SET:
            raise ConfigError(f"{here}: set by the pipeline ({PIPELINE_SET[name]}), not in params.yaml")


def _refuse_unknown(data: Mapping[str, Any], known: set[str], where: str) -> None:
    for name in data:
        if name in known:
            continue
        here = key(where, str(name))
        if here in MOVED:
            raise ConfigError(f"{here}: moved to {MOVED[here]}")
        what = "section" if where == "params.yaml" else "key"
        raise ConfigError(f"{here}: unknown {what}{did_you_mean(str(name), known)}; known: {sorted(known)}")


def key(where: str, name: str) -> str:
    """The dotted place of ``name`` under ``where``: params.yaml:section, params.yaml:section.key."""
    return f"{where}:{name}" if where == "params.yaml" else f"{where}.{name}"


def did_you_mean(name: str, known) -> str:
    """' (did you mean X?)' for the known name closest to ``name``, or ''."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.init]


@cache
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of dataclass ``cls``."""
    return typing.get_type_hints(cls)


def check(value: Any, tp: Any, meta: Mapping[str, Any], where: str) -> Any:
    """``value`` if it has type ``tp`` and lies within ``meta``'s bounds (ge / gt / le), else a ConfigError
    naming ``where``; YAML lists become tuples where ``tp`` says tuple."""
    ok, converted = _conforms(value, tp)
    if ok and _in_bounds(converted, meta):
        return converted
    hint = ""
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+[eE][+-]?\d+", value.strip()):
        hint = f" (YAML reads {value} as text: write {value.lower().replace('e', '.0e', 1)})"
    raise ConfigError(f"{where}: must be {describe(tp, meta)}, got {value!r}{hint}")


def _in_bounds(value: Any, meta: Mapping[str, Any]) -> bool:
    if isinstance(value, Mapping):
        return all(_in_bounds(v, meta) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_in_bounds(v, meta) for v in value)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return True
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (("ge" not in meta or value >= meta["ge"]) and ("gt" not in meta or value > meta["gt"])
            and ("le" not in meta or value <= meta["le"]))


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _conforms(value: Any, tp: Any) -> tuple[bool, Any]:
    """(whether ``value`` is a ``tp``, the value with YAML lists made tuples where ``tp`` wants one)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return True, value
    if _is_union(tp):
        for member in args:
            ok, converted = _conforms(value, member)
            if ok:
                return True, converted
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is Literal:
        return (not isinstance(value, bool) and value in args), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    if tp is Path:
        return isinstance(value, str | Path), value
    if isinstance(tp, type) and issubclass(tp, Enum):
        return isinstance(value, tp) or value in {m.value for m in tp}, value
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, list | tuple):
            return False, value
        item = args[0] if args else Any
        converted = []
        for v in value:
            ok, c = _conforms(v, item)
            if not ok:
                return False, value
            converted.append(c)
        return True, tuple(converted) if (origin or tp) is tuple else converted
    if origin in (dict, Mapping) or tp in (dict, Mapping) or origin is typing.Mapping:
        if not isinstance(value, Mapping):
            return False, value
        key_tp, value_tp = args if len(args) == 2 else (Any, Any)
        out = {}
        for k, v in value.items():
            ok_k, _ = _conforms(k, key_tp)
            ok_v, c = _conforms(v, value_tp)
            if not (ok_k and ok_v):
                return False, value
            out[k] = c
        return True, out
    if is_dataclass(tp):
        return isinstance(value, tp), value
    return True, value  # a type the checks here do not know (callables, classes): the dataclass checks it


_NOUNS = {Any: "any value", bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path",
          type(None): "null"}


def describe(tp: Any, meta: Mapping[str, Any] | None = None) -> str:
    """What ``tp`` (within ``meta``'s bounds) reads as in an error: "a number in [0, 1]", "an integer or null"."""
    meta = meta or {}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        parts = [describe(a, meta) for a in args if a is not type(None)]
        return " or ".join(parts + (["null"] if type(None) in args else []))
    if origin is Literal:
        return f"one of {list(args)}"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return f"one of {[m.value for m in tp]}"
    if origin in (tuple, list):
        return f"a list of {_plural(args[0]) if args else 'values'}"
    if origin in (dict, Mapping) or origin is typing.Mapping:
        return f"a mapping of {_plural(args[0])} to {_plural(args[1], meta)}" if len(args) == 2 else "a mapping"
    noun = _NOUNS.get(tp) or getattr(tp, "__name__", str(tp))
    if tp in (int, float):
        lo, hi = meta.get("ge", meta.get("gt")), meta.get("le")
        lo_bracket = "[" if "ge" in meta else "("
        if lo is not None and hi is not None:
            return f"{noun} in {lo_bracket}{lo}, {hi}]"
        if lo is not None:
            return f"{noun} {'>=' if 'ge' in meta else '>'} {lo}"
        if hi is not None:
            return f"{noun} <= {hi}"
    return noun


def _plural(tp: Any, meta: Mapping[str, Any] | None = None) -> str:
    if typing.get_origin(tp) is Literal:
        return f"{list(typing.get_args(tp))}"
    text = describe(tp, meta)
    for singular, plural in (("an integer", "integers"), ("a number", "numbers"), ("a string", "strings"),
                             ("a path", "paths")):
        if text.startswith(singular):
            return plural + text[len(singular):]
    return text


# --- help -------------------------------------------------------------------------------------------


@cache
def _source_comments(cls: type) -> dict[str, str]:
    """field -> the comment beside it (or the comment lines right above it) in ``cls``'s source."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        lines = src.splitlines()
        comments = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(src).readline)
                    if tok.type == tokenize.COMMENT}
        body = ast.parse(src).body[0].body
        for node in body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            parts = [comments[node.end_lineno]] if node.end_lineno in comments else []
            line = node.lineno - 1
            while not parts[-1:] and line >= 1 and lines[line - 1].lstrip().startswith("#"):
                above = []
                while line >= 1 and lines[line - 1].lstrip().startswith("#"):
                    above.insert(0, comments.get(line, ""))
                    line -= 1
                parts = above
            text = " ".join(p.lstrip("#:").strip() for p in parts).strip()
            if text:
                out[node.target.id] = text
    return out


def field_help(cls: type, f: Field) -> str:
    """A field's one-line help: its ``help`` metadata, else its source comment."""
    text = f.metadata.get("help") or _source_comments(cls).get(f.name, "")
    return " ".join(text.split())


def field_docs(cls: type = Settings, where: str = "params.yaml", typed: Mapping[str, type] | None = None,
               defaults: Mapping[str, Any] | None = None) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) of every field of ``cls``, nested sections and flat parts expanded; ``typed``
    names the classes of the mappings other modules type (``typed_by``: gate, generation)."""
    out = []
    hints = type_hints(cls)
    for f in fields(cls):
        if not f.init:
            continue
        tp, here = hints[f.name], key(where, f.name)
        if f.metadata.get("flatten") and is_dataclass(tp):
            out += field_docs(tp, where, typed, f.metadata.get("defaults"))
            continue
        if is_dataclass(tp):
            out += field_docs(tp, here, typed)
            continue
        typed_by = f.metadata.get("typed_by")
        if typed_by and typed and typed_by in typed:
            out += field_docs(typed[typed_by], here, typed)
            continue
        if defaults and f.name in defaults:
            default = defaults[f.name]
        elif f.default is not MISSING:
            default = f.default
        else:
            default = f.default_factory() if f.default_factory is not MISSING else "(required)"
        out.append((here, describe(tp, f.metadata), _plain(default), field_help(cls, f)))
    return out


def _layout(obj: Any) -> Any:
    """A dataclass as params.yaml lays it out: nested sections as mappings, flat parts and ``common`` merged."""
    if not is_dataclass(obj):
        return obj
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = _layout(getattr(obj, f.name))
        if f.metadata.get("flatten"):
            out |= value if isinstance(value, Mapping) else {}
        else:
            out[f.name] = value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value
