"""params.yaml as one typed settings model, loaded once by ``load_settings``: the only code that reads the file.

Every section is a dataclass; every field has a one-line help (``mdpo params --help-fields`` lists them) and a type,
and out-of-range values are refused, all with an error naming the key (the typing engine is ``core/typed.py``)::

    params.yaml:raw_silkie.max_quarantine_share: must be a number in [0, 1], got '0.05'

Each layer types its own section and defaults live in exactly one place: a section another layer defines is that
dataclass itself, not a copy. ``shapeworld`` is ShapeWorldConfig, ``raw_silkie`` is IngestConfig (plus the stage's
quarantine gate), ``preference_pairs`` PairsConfig, ``corrupted_images`` CorruptionConfig, ``base_model.sft``
SFTSettings, ``benchmark_scores`` the evaluation's EvalSettings (benchmarks, generation, the registry gate; ShapeWorld's
split as its default root), and those objects travel on as they are. The dataclasses declared here (RawSilkieGate,
BaseModelSettings, ReferenceSettings, TrainingSettings, ExperimentSettings) hold settings nothing else declares. Their
help is the field's ``help`` metadata, or the field's own source comment.

``training`` is not re-declared either: its keys are MDPOConfig fields (any of them: beta, delta, the loss-weight
overrides, learning_rate, per_device_train_batch_size, num_train_epochs, max_steps, seed, ...) and the run-level
RunArguments (quantization, lora_r, lora_alpha, threads, resume), shared by every method, with per-method
overrides under ``methods``. A key it does not set comes from the model preset's TrainingDefaults, then the
pipeline's RUN_DEFAULTS (training/run.py). Here the section is checked for its shape and for the keys
the pipeline sets itself; parsing each method's values into its MDPOConfig (typed, unknown keys named) needs TRL and
happens in ``train.training_run_config`` (for a run and for ``validate.validate_params``). The exception is ``max_length``: one
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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mdpo_pipeline.core import corruption, ingest, pairs
from mdpo_pipeline.core.errors import ConfigError, shown
from mdpo_pipeline.core.methods import METHODS
from mdpo_pipeline.core.typed import build, key, layout, meta, plain
from mdpo_pipeline.core.yamlfile import read_yaml
from mdpo_pipeline.core.eval.settings import BENCHMARK_NAMES, EvalSettings
from mdpo_pipeline.pipeline.project import PARAMS_FILE, Project
from mdpo_pipeline.shapeworld import ShapeWorldConfig
from mdpo_pipeline.shapeworld.preset import SHAPEWORLD_TINY
from mdpo_pipeline.training.presets import GENERIC, PRESETS
from mdpo_pipeline.shapeworld.sft_settings import SFTSettings

#: Where the ShapeWorld stage writes its raw VLFeedback files and its benchmark splits.
SHAPEWORLD_VLFEEDBACK = "data/shapeworld/vlfeedback"
SHAPEWORLD_BENCHMARKS = "data/shapeworld/benchmarks"


# --- sections declared here ----------------------------------------------------------------------


@dataclass(frozen=True)
class RawSilkieGate:
    """The raw_silkie stage's own setting beside the reader's (IngestConfig) in the same section."""

    max_quarantine_share: float = field(default=0.05, metadata=meta(
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

    preset: str | None = field(default=None, metadata=meta(
        "model preset: shapeworld-tiny (built here), auto (any image-text-to-text checkpoint at path, read from its "
        "own files), a family's (llava-1.5-7b, qwen2.5-vl-3b, qwen2.5-vl-7b, gemma-3-4b) or a proven model type's "
        "(qwen3-vl-8b, qwen2-vl-7b, internvl3.5-8b, llava-onevision-7b, idefics3-8b, llama-3.2-11b-vision, "
        "aya-vision-8b); null: auto when path is set, else shapeworld-tiny"))
    path: str | None = field(default=None, metadata=meta(
        "local weights (a hub snapshot directory); null: $MDPO_MODEL_DIR/<preset> or the offline hub cache"))
    allow_remote_code: bool = field(default=False, metadata=meta(
        "let a preset that runs the checkpoint's own Python code (trust_remote_code) load"))
    sft: SFTSettings = field(default_factory=SFTSettings, metadata=meta(
        "the tiny model's supervised fine-tune (SFTSettings); unused by real presets"))

    def __post_init__(self):
        # A given path is never ignored: without a preset it is trained as it is (auto), and a model the pipeline
        # builds itself cannot be pointed elsewhere.
        if self.preset is None:
            object.__setattr__(self, "preset", GENERIC if self.path else SHAPEWORLD_TINY.name)
        elif self.path and self.preset in PRESETS and PRESETS[self.preset].built_here:
            raise ValueError(
                f"path: preset {self.preset!r} is built by the pipeline and reads no path, so {shown(self.path)} "
                f"would be ignored; set preset: {GENERIC} (or the checkpoint's preset) to train that checkpoint, "
                "or remove path")


@dataclass(frozen=True)
class ReferenceSettings:
    """params.yaml:reference_logprobs: the base model's log-probs, computed once for every training run."""

    batch_size: int = field(default=32, metadata=meta("pairs per forward pass", ge=1))
    max_length: int | None = field(default=None, metadata=meta(
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

    common: Mapping[str, Any] = field(default_factory=dict, metadata=meta(
        "every key: an MDPOConfig field (beta, delta, conditional_weight, learning_rate, "
        "per_device_train_batch_size, num_train_epochs, max_steps, seed, ...; max_length is "
        "reference_logprobs.max_length) or a run argument (quantization, lora_r, lora_alpha, threads, resume), for "
        "every method", flatten=True))
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, metadata=meta(
        "per-method overrides of those keys, e.g. {dpo: {learning_rate: 1.0e-4}, mdpo: {delta: 0.1}}"))

    def located(self, method: str) -> dict[str, tuple[Any, str]]:
        """key -> (value, where params.yaml sets it) of ``method``'s run: the common keys under its overrides
        (null values are "not set here" and left out)."""
        out = {k: (v, key("params.yaml:training", k)) for k, v in self.common.items() if v is not None}
        for k, v in (self.methods.get(method) or {}).items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = (v, key(key("params.yaml:training.methods", method), k))
        return out

    def values(self, method: str) -> dict[str, Any]:
        """The keys params.yaml sets for ``method``'s run (its max_length is reference_logprobs.max_length)."""
        return {k: v for k, (v, _) in self.located(method).items()}

    @classmethod
    def from_params(cls, data: Mapping[str, Any], where: str) -> "TrainingSettings":
        """The section as params.yaml writes it: common keys beside ``methods``; the values are typed later, against
        RunArguments and MDPOConfig (TRL's classes), when a method's run config is made (``pipeline/train.py``)."""
        data = dict(data)
        methods = data.pop("methods", None) or {}
        if not isinstance(methods, Mapping):
            raise ConfigError(f"{where}.methods: must be a mapping of method names to their settings, "
                              f"got {shown(methods)}")
        _refuse_pipeline_keys(data, where)
        checked = {}
        for method, overrides in methods.items():
            here = key(f"{where}.methods", str(method))
            if overrides is None:
                overrides = {}
            if not isinstance(overrides, Mapping):
                raise ConfigError(f"{here}: must be a mapping of keys to values, got {shown(overrides)}")
            _refuse_pipeline_keys(overrides, here)
            checked[str(method)] = dict(overrides)
        return cls(common=data, methods=checked)


@dataclass(frozen=True)
class BenchmarkScoresSettings(EvalSettings):
    """params.yaml:benchmark_scores: which benchmarks, where their files are, generation, caps and the gate (the
    evaluation's own EvalSettings), on ShapeWorld's split unless ``root`` says otherwise."""

    root: str = field(default=SHAPEWORLD_BENCHMARKS, metadata=meta(
        "folder of benchmark splits in ShapeWorld's layout (<root>/<benchmark>); ShapeWorld's by default"))


#: The grid axes that change the data (each value combination is a data variant with its own data stages, base
#: model and reference cache where their inputs differ); "training.<key>" axes change only the runs.
DATA_SECTIONS = ("shapeworld", "preference_pairs", "corrupted_images")
#: The ShapeWorld benchmark sizes (ShapeWorldConfig fields) of the grid's own evaluation split.
EVAL_SIZE_KEYS = ("object_halbench", "amber_generative", "amber_discriminative", "mmhal", "pope")


@dataclass(frozen=True)
class ExperimentSettings:
    """params.yaml:experiment: the grid of `make reproduce` and Dagster's grid_cells partitions: every combination
    of methods × seeds × axes is one cell with its own adapter, answers, scores and probe."""

    name: str = field(default="claims", metadata=meta(
        "the grid's name: its cells live in artifacts/grid/<name>/ and its MLflow parent run is named after it"))
    methods: tuple[str, ...] = field(default=("dpo", "mdpo", "mdpo_no_conditional", "mdpo_no_anchor", "dpo_no_image"),
                                     metadata=meta("the methods (core/methods.py); the base model is always scored"))
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=meta(
        "training seeds (LoRA init and data order); cells of one seed are paired in the claims report", ge=0))
    axes: Mapping[str, tuple[Any, ...]] = field(default_factory=dict, metadata=meta(
        "optional axes, each a dotted params key and its values, e.g. {shapeworld.unconditional_share: [0.0, 0.5, "
        "1.0]}, {preference_pairs.n: [375, 750, 1500]}, {corrupted_images.strategy: [crop_1_20, crop_20_50]}, "
        "{training.beta: [0.1, 0.5]}; the first value of each is its default in the claims tables"))
    eval_sizes: Mapping[Literal[EVAL_SIZE_KEYS], int] = field(default_factory=lambda: {
        "object_halbench": 600, "amber_generative": 400, "amber_discriminative": 600, "mmhal": 96, "pope": 100},
        metadata=meta("items of the grid's own ShapeWorld benchmark split (larger than the demo's, so sampling "
                       "error does not swamp the effects); unused when benchmark_scores points at real files", ge=1))
    benchmarks: tuple[Literal[BENCHMARK_NAMES], ...] = field(default=("object_halbench", "amber", "mmhal"),
                                                              metadata=meta("the benchmarks every cell is scored on"))
    probe_pairs: int = field(default=300, metadata=meta(
        "held-out pairs (instructions never sampled for training) of the image-use probe", ge=1))

    def __post_init__(self):
        # the base model is always in the grid; methods must be known; no repeats (a cell key each)
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"methods: unknown {shown(unknown)}; known: {sorted(METHODS)}")
        for name in ("methods", "seeds"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{name}: must be a non-empty list without repeats, got {shown(list(values))}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(f"name: letters, digits, '_', '.', '-' only (it names a folder), got {shown(self.name)}")
        for axis, values in self.axes.items():
            section, _, rest = axis.partition(".")
            if section not in (*DATA_SECTIONS, "training") or not rest:
                raise ValueError(f"axes.{shown(axis)}: an axis is '<section>.<key>' with section one of "
                                 f"{[*DATA_SECTIONS, 'training']}")
            if not isinstance(values, list | tuple) or not values or len(set(map(repr, values))) != len(values):
                raise ValueError(f"axes.{shown(axis)}: must be a non-empty list of distinct values, "
                                 f"got {shown(values)}")


@dataclass(frozen=True)
class Settings:
    """params.yaml, every section typed."""

    shapeworld: ShapeWorldConfig = field(default_factory=ShapeWorldConfig, metadata=meta(
        "the offline synthetic world that stands in for VLFeedback and the benchmarks (ShapeWorldConfig)"))
    raw_silkie: RawSilkieSettings = field(default_factory=RawSilkieSettings, metadata=meta(
        "where raw VLFeedback comes from (IngestConfig) and the quarantine gate"))
    preference_pairs: pairs.PairsConfig = field(default_factory=pairs.PairsConfig, metadata=meta(
        "pair building and sampling (PairsConfig)"))
    corrupted_images: corruption.CorruptionConfig = field(default_factory=corruption.CorruptionConfig, metadata=meta(
        "the corrupted image per sampled instruction (CorruptionConfig)"))
    base_model: BaseModelSettings = field(default_factory=BaseModelSettings, metadata=meta("the model to align"))
    reference_logprobs: ReferenceSettings = field(default_factory=ReferenceSettings, metadata=meta(
        "the reference log-prob cache"))
    training: TrainingSettings = field(default_factory=TrainingSettings, metadata=meta(
        "preference training: MDPOConfig fields and run arguments, per-method overrides"))
    benchmark_scores: BenchmarkScoresSettings = field(default_factory=BenchmarkScoresSettings, metadata=meta(
        "the hallucination benchmarks and the registry gate"))
    experiment: ExperimentSettings = field(default_factory=ExperimentSettings, metadata=meta(
        "the experiment grid (methods × seeds × axes) of `make reproduce` and the claims report"))

    def as_dict(self) -> dict[str, Any]:
        """Every section's resolved values laid out as in params.yaml, as plain data (paths as strings, tuples as
        lists)."""
        return plain(layout(self))


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
    data = read_yaml(path)  # within limits: size, alias expansion (a "billion laughs" file), depth
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


# --- what params.yaml:training may not set ------------------------------------------------------


def _refuse_pipeline_keys(data: Mapping[str, Any], where: str) -> None:
    for name in data:
        if not isinstance(name, str):
            raise ConfigError(f"{where}: keys must be names, got {shown(name)}")
        here = key(where, name)
        if here in MOVED:
            raise ConfigError(f"{here}: moved to {MOVED[here]}")
        if name == "max_length":
            raise ConfigError(f"{here}: max_length is one setting, reference_logprobs.max_length: the reference "
                              "cache and every method's run must use the same")
        if name in PIPELINE_SET:
            raise ConfigError(f"{here}: set by the pipeline ({PIPELINE_SET[name]}), not in params.yaml")


