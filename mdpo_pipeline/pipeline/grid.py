"""The experiment grid: params.yaml:experiment expanded into cells, each trained, scored and probed on its own.

A cell is (method, training seed, axis values); "base" cells (the base model itself) are one per data variant. Each
cell keeps its adapter, answers, scores and probe in ``artifacts/grid/<name>/cells/<cell>/`` and is done when its
``cell.json`` carries the fingerprint of everything it was made from: a rerun skips it, a changed setting redoes it.

Data variants: an axis on shapeworld, preference_pairs or corrupted_images changes the data. Each stage of a
variant lives in ``artifacts/grid/stages/<stage>/<key>``, where the key hashes the settings the stage reads (and,
for the tiny base model, the content of the files its SFT reads): two variants whose inputs to a stage are equal
share it, and a stage whose key equals the project's own uses the project's ``data/<stage>`` (the demo's). A
variant's folder holds its params.yaml and ``data/<stage>`` links, so the stage functions run on it unchanged.
No Dagster here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from filelock import FileLock

from mdpo_pipeline.core import corruption, pairs
from mdpo_pipeline.core.io import canonical_json, write_json
from mdpo_pipeline.core.methods import BASE, METHOD_CORRUPTION
from mdpo_pipeline.core.schemas import instruction_from_row
from mdpo_pipeline.evaluation.benchmarks import PER_ANSWER_FILE
from mdpo_pipeline.core.eval.settings import DESCRIPTION_BENCHMARKS, EvalSettings
from mdpo_pipeline.integrations.experiments import log_cell, log_report
from mdpo_pipeline.integrations.launchers import launch_local
from mdpo_pipeline.pipeline.evaluate import score_model
from mdpo_pipeline.pipeline.project import ConfigError, Project
from mdpo_pipeline.pipeline.settings import (
    DATA_SECTIONS,
    SHAPEWORLD_BENCHMARKS,
    Settings,
    load_settings,
    parse_settings,
    read_params,
)
from mdpo_pipeline.pipeline.stages import RUNNERS, run_stage
from mdpo_pipeline.pipeline.train import base_model_location, model_preset, train_run_config
from mdpo_pipeline.shapeworld import generate_benchmarks
from mdpo_pipeline.shapeworld.preset import SHAPEWORLD_TINY
from mdpo_pipeline.training.run import trained_image_use_probe

GRID_DIR = Path("artifacts") / "grid"
#: The axis a method's own corrupted images set (core/methods.METHOD_CORRUPTION).
CORRUPTION_AXIS = "corrupted_images.strategy"
CELL_FILE = "cell.json"
#: Each data stage, the params sections it reads (its own and its inputs').
STAGE_SECTIONS = {
    "shapeworld": ("shapeworld",),
    "raw_silkie": ("shapeworld", "raw_silkie"),
    "preference_pairs": ("shapeworld", "raw_silkie", "preference_pairs"),
    "corrupted_images": ("shapeworld", "raw_silkie", "preference_pairs", "corrupted_images"),
}


def _hash(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


def _short(axis: str) -> str:
    return axis.split(".", 1)[1]


def _fmt(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a method (or the base model) at a training seed and axis values."""

    method: str
    seed: int | None  #: None for the base model (nothing is trained)
    axes: tuple[tuple[str, Any], ...] = ()  #: (dotted params key, value) in the grid's axis order

    @property
    def key(self) -> str:
        """The cell's name: its Dagster partition key and folder, e.g. ``mdpo-s1`` or ``mdpo-s1@n=750``."""
        head = self.method if self.seed is None else f"{self.method}-s{self.seed}"
        return "@".join([head, *(f"{_short(a)}={_fmt(v)}" for a, v in self.axes)])

    @property
    def data_axes(self) -> tuple[tuple[str, Any], ...]:
        """The axis values that change the data (the cell's data variant), with the corrupted images its method's
        image term is defined over (METHOD_CORRUPTION: CHiP's noised image, SymMPO's contrasting one) unless an
        axis sets them."""
        own = tuple((a, v) for a, v in self.axes if a.split(".", 1)[0] in DATA_SECTIONS)
        implied = METHOD_CORRUPTION.get(self.method)
        if implied is None or CORRUPTION_AXIS in dict(own):
            return own
        return (*own, (CORRUPTION_AXIS, implied))

    @property
    def implied_corruption(self) -> bool:
        """Whether the cell's corrupted images are its method's own (METHOD_CORRUPTION), not the experiment's."""
        return dict(self.data_axes).get(CORRUPTION_AXIS) != dict(self.axes).get(CORRUPTION_AXIS)

    @property
    def training_axes(self) -> dict[str, Any]:
        """The ``training.<key>`` axis values: MDPOConfig fields or run arguments of this cell's run."""
        return {_short(a): v for a, v in self.axes if a.startswith("training.")}


def expand(settings: Settings) -> list[Cell]:
    """Every cell of params.yaml:experiment: one base cell per data variant, then methods × seeds per axis value."""
    exp = settings.experiment
    names = list(exp.axes)
    cells: list[Cell] = []
    seen_bases: set[tuple] = set()
    for values in itertools.product(*(exp.axes[n] for n in names)):
        axes = tuple(zip(names, values))
        base = Cell(BASE, None, Cell(BASE, None, axes).data_axes)
        if base.axes not in seen_bases:
            seen_bases.add(base.axes)
            cells.append(base)
        cells += [Cell(m, s, axes) for m in exp.methods for s in exp.seeds]
    return cells


def variant_params(project: Project, data_axes: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """params.yaml as read, with the data axes' values set."""
    params = read_params(project.params_path)
    for axis, value in data_axes:
        section, name = axis.split(".", 1)
        params[section] = {**(params.get(section) or {}), name: value}
    return params


def variant_settings(project: Project, data_axes: tuple[tuple[str, Any], ...]) -> Settings:
    """The typed settings of a data variant; a bad axis value is an error naming the axis."""
    try:
        return parse_settings(variant_params(project, data_axes))
    except ConfigError as e:
        raise ConfigError(f"params.yaml:experiment.axes {dict(data_axes)}: {e}") from e


def _sections(settings: Settings, names: tuple[str, ...]) -> dict[str, Any]:
    laid_out = settings.as_dict()
    return {n: laid_out[n] for n in names}


def _files_sha(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _sft_inputs_sha(world: Path) -> str:
    """What the tiny model's SFT reads from ShapeWorld: the truths' fields it uses and the images (not the preference
    answers, so an axis on the answers alone, e.g. unconditional_share, keeps the base model)."""
    from mdpo_pipeline.shapeworld.sft import read_truths

    digest = hashlib.sha256(canonical_json(read_truths(world / "shapeworld_truth.jsonl")).encode()).hexdigest()
    return _hash([digest, _files_sha(sorted((world / "merged_images").glob("*")))])


@dataclass(frozen=True)
class Variant:
    """One data variant, ready: a project folder whose data/ holds (links to) every stage."""

    project: Project
    settings: Settings
    keys: dict[str, str]  #: stage -> key of the stage's inputs (equal keys: equal outputs)


class GridPlan:
    """params.yaml:experiment of ``project``, expanded, with the places of everything the grid writes."""

    def __init__(self, project: Project, settings: Settings | None = None):
        self.project = project
        self.settings = settings or load_settings(project)
        self.experiment = self.settings.experiment
        self.cells = expand(self.settings)
        self.root = project.root / GRID_DIR
        self.dir = self.root / self.experiment.name

    def cell(self, key: str) -> Cell:
        """The cell named ``key``, or an error listing the grid's cells."""
        for c in self.cells:
            if c.key == key:
                return c
        raise ConfigError(f"{key!r} is not a cell of experiment {self.experiment.name!r} (params.yaml:experiment); "
                          f"cells: {[c.key for c in self.cells]}")

    def cell_dir(self, cell: Cell) -> Path:
        """Where a cell's adapter, answers, scores and cell.json live."""
        return self.dir / "cells" / cell.key

    def fingerprint(self, cell: Cell) -> str:
        """What a cell's results depend on: its settings (the variant's data sections, model, reference,
        training, evaluation), its method, seed and axes. A finished cell with this fingerprint is reused."""
        settings = variant_settings(self.project, cell.data_axes) if cell.data_axes else self.settings
        sections = ("shapeworld", "raw_silkie", "preference_pairs", "corrupted_images", "base_model",
                    "reference_logprobs", "benchmark_scores")
        parts = _sections(settings, sections)
        exp = self.experiment
        parts["experiment"] = {"eval_sizes": dict(exp.eval_sizes), "benchmarks": list(exp.benchmarks),
                               "probe_pairs": exp.probe_pairs}
        if cell.method != BASE:
            parts["training"] = {"common": dict(settings.training.common),
                                 "method": dict(settings.training.methods.get(cell.method) or {})}
        return _hash({"cell": [cell.method, cell.seed, [list(a) for a in cell.axes]], **parts})

    def done(self, cell: Cell) -> dict[str, Any] | None:
        """The cell's record when it finished with today's fingerprint, else None."""
        path = self.cell_dir(cell) / CELL_FILE
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return record if record.get("fingerprint") == self.fingerprint(cell) else None

    def pending(self) -> list[Cell]:
        """The cells still to run (never finished, or finished with other settings)."""
        return [c for c in self.cells if self.done(c) is None]

    def records(self) -> list[dict[str, Any]]:
        """Every finished cell's record, in grid order."""
        return [r for c in self.cells if (r := self.done(c)) is not None]

    # --- data variants ----------------------------------------------------------------------

    def stage_key(self, stage: str, settings: Settings, project: Project, keys: dict[str, str]) -> str | None:
        """The key of ``stage``'s inputs under ``settings`` (``keys``: its upstream stages' keys); for the tiny base
        model it hashes the ShapeWorld files its SFT reads in ``project`` (None when they are not there yet)."""
        if stage in STAGE_SECTIONS:
            return _hash(_sections(settings, STAGE_SECTIONS[stage]))
        if stage == "base_model":
            base = _sections(settings, ("base_model",))
            if settings.base_model.preset == SHAPEWORLD_TINY.name:
                world = project.path(settings.raw_silkie.reader.path)
                if not (world / "shapeworld_truth.jsonl").is_file():
                    return None
                base["sft_inputs"] = _sft_inputs_sha(world)
            return _hash(base)
        if keys.get("base_model") is None:
            return None
        return _hash({"base_model": keys["base_model"], "data": keys["corrupted_images"],
                      **_sections(settings, ("reference_logprobs",))})

    def variant(self, cell: Cell, progress: bool = False, log: Callable[[str], None] = print) -> Variant:
        """The cell's data variant, every stage made (or shared) first; the project itself when no axis changes
        the data."""
        settings = variant_settings(self.project, cell.data_axes) if cell.data_axes else self.settings
        if settings.as_dict() == self.settings.as_dict():  # no axis, or every axis at params.yaml's own value
            for stage in RUNNERS:
                if not _stage_done(self.project.data_dir(stage), stage):
                    raise ConfigError(f"{self.project.data_dir(stage)} is missing: materialize {stage} first "
                                      "(`make demo`, or the Dagster assets up to reference_logprobs)")
            return Variant(self.project, self.settings, self._keys(self.settings, self.project))
        # A lock per variant: cells of one variant run side by side and must build its stages once.

        root = self.root / "variants" / _hash(_sections(settings, STAGE_SECTIONS["corrupted_images"] + (
            "base_model", "reference_logprobs")))
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root) + ".lock"):
            write_json(variant_params(self.project, cell.data_axes), root / "params.yaml")  # JSON is YAML
            write_json(dict(cell.data_axes), root / "axes.json")
            project = Project(root)
            keys: dict[str, str] = {}
            own: dict[str, str | None] = {}
            for stage in RUNNERS:
                keys[stage] = self.stage_key(stage, settings, project, keys)
                own[stage] = self.stage_key(stage, self.settings, self.project, own)
                self._link_stage(project, stage, keys[stage], shared=own[stage] == keys[stage],
                                 progress=progress, log=log)
            return Variant(project, settings, keys)

    def _keys(self, settings: Settings, project: Project) -> dict[str, str]:
        keys: dict[str, str] = {}
        for stage in RUNNERS:
            keys[stage] = self.stage_key(stage, settings, project, keys)
        return keys

    def _link_stage(self, project: Project, stage: str, key: str, shared: bool, progress: bool,
                    log: Callable[[str], None]) -> None:
        """Make ``project``/data/``stage`` a link to the project's own stage (equal inputs), to a stored one, or to
        one made now."""
        link = project.data_dir(stage)
        own = self.project.data_dir(stage)
        store = self.root / "stages" / stage / key
        if shared and _stage_done(own, stage):
            target = own
        elif _stage_done(store, stage):
            target = store
        else:
            if link.is_symlink() or link.exists():
                _remove(link)
            log(f"grid: making {stage} for variant {project.root.name} ({key})")
            run_stage(stage, project, progress=progress)
            if store.exists():
                shutil.rmtree(store)
            store.parent.mkdir(parents=True, exist_ok=True)
            os.replace(link, store)
            target = store
        # Relative links: a copied checkout's variants point into the copy.
        relative = os.path.relpath(target, link.parent)
        if link.is_symlink() and os.readlink(link) == relative:
            return  # already right: cells of this variant may be reading through it
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() and not link.is_symlink():
            _remove(link)
        # Swapped in one rename: a cell reading through the old link never finds it missing.
        tmp = link.with_name(f".{link.name}.{os.getpid()}.link")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(relative, target_is_directory=True)
        os.replace(tmp, link)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


#: The file each stage writes last (its output is whole when it exists).
_STAGE_MARKERS = {
    "shapeworld": "summary.json",
    "raw_silkie": "summary.json",
    "preference_pairs": "summary.json",
    "corrupted_images": "summary.json",
    "base_model": "config.json",
    "reference_logprobs": "summary.json",
}


def _stage_done(path: Path, stage: str) -> bool:
    return (path / _STAGE_MARKERS[stage]).is_file() or (stage == "base_model" and (path / "preset.json").is_file())


# --- what every cell of a variant shares: the evaluation split and the probe pairs ----------------


def uses_shapeworld_split(project: Project, root: str) -> bool:
    """Whether params.yaml:benchmark_scores.root names the project's ShapeWorld split, however it is written: then
    the grid scores on a larger split of its own, real benchmark files are used as they are."""
    return project.same_path(root, SHAPEWORLD_BENCHMARKS)


def eval_benchmarks(plan: GridPlan, variant: Variant) -> tuple[EvalSettings, Path | None]:
    """(the benchmarks' settings of every cell, the rule judge's root): ShapeWorld's benchmark split of the
    variant's world at the grid's sizes (made once, shared by equal worlds), or params.yaml's real benchmark files
    as they are."""
    settings = variant.settings
    bench = replace(settings.benchmark_scores, benchmarks=tuple(plan.experiment.benchmarks))
    if not uses_shapeworld_split(plan.project, settings.benchmark_scores.root):
        return bench, None
    world = replace(settings.shapeworld, **dict(plan.experiment.eval_sizes))
    out = plan.root / "benchmarks" / _hash(asdict(world))
    # Several cells start at once: one makes the split, the others wait for it.
    with FileLock(str(out) + ".lock"):
        if not (out / "summary.json").is_file():
            summary = generate_benchmarks(world, out)
            write_json({"shapeworld": asdict(world), **summary}, out / "summary.json")
    return replace(bench, root=str(out)), out


def probe_pairs(plan: GridPlan, variant: Variant, log: Callable[[str], None] = print,
                corrupted: corruption.CorruptionConfig | None = None) -> Path:
    """Held-out pairs of the variant (instructions never sampled for training), their corrupted images
    (``corrupted``, default the variant's) and the base model's log-probs of their three views: what the
    image-use probe scores every adapter on."""
    project, settings = variant.project, variant.settings
    corrupted = corrupted or settings.corrupted_images
    out = plan.root / "probe" / _hash({"reference": variant.keys["reference_logprobs"], "n": plan.experiment.probe_pairs,
                                       "corrupted": corrupted.strategy})
    with FileLock(str(out) + ".lock"):
        if (out / "summary.json").is_file():
            return out
        log(f"grid: making {plan.experiment.probe_pairs} held-out probe pairs ({out.name})")
        trained = set(pq.read_table(project.data_dir("preference_pairs") / "pairs.parquet",
                                    columns=["instruction_id"])["instruction_id"].to_pylist())
        rows = pq.read_table(project.data_dir("raw_silkie") / "instructions.parquet").to_pylist()
        held_out = [inst for r in rows if (inst := instruction_from_row(r)).id not in trained]
        # Every source: ShapeWorld draws an instruction independently of its source label.
        cfg = replace(settings.preference_pairs, sources=(), n=plan.experiment.probe_pairs)
        result = pairs.make_pairs(held_out, cfg)
        if not result.pairs:
            raise ConfigError("no held-out instruction is left for the probe: every one was sampled for training "
                              "(lower preference_pairs.n or raise shapeworld.n_instructions)")
        pairs.write_pairs(result, out / "pairs")
        image_root = project.path(project.summary("raw_silkie")["image_root"])
        samples = sorted({(p.instruction_id, p.image) for p in result.pairs})
        # A few hundred images: in this process (a worker pool would cost more than it saves).
        corruption.corrupt_images(samples, image_root, out / "corrupted", replace(corrupted, workers=1))
        reference = _probe_logps(variant, None, out)
        write_json({"n": len(result.pairs), "image_root": str(image_root), "reference": reference}, out / "summary.json")
    return out


def _probe_dataset(variant: Variant, probe_dir: Path):
    from mdpo_pipeline.training.data import load_preference_dataset

    image_root = variant.project.path(variant.project.summary("raw_silkie")["image_root"])
    return load_preference_dataset(probe_dir / "pairs", image_root, probe_dir / "corrupted")


def _probe_logps(variant: Variant, adapter: Path | None, probe_dir: Path, name: str = "reference") -> str:
    """Summed log-probs of the probe pairs' three views under the base model (+ ``adapter``), as a parquet."""
    from mdpo_pipeline.evaluation.generation import load_eval_model
    from mdpo_pipeline.training.data import drop_image_token_rows
    from mdpo_pipeline.training.reference import compute_reference_logprobs

    preset, path = base_model_location(variant.project, variant.settings)
    model, processor, _ = load_eval_model(preset, path, adapter,
                                          allow_remote_code=variant.settings.base_model.allow_remote_code)
    max_length = variant.settings.reference_logprobs.resolved_max_length(model_preset(preset))
    out = (probe_dir if adapter is None else adapter.parent) / f"probe_{name}.parquet"
    # As training: a pair holding the model's own image token as text would stop the batch (the same rows each time).
    dataset, _ = drop_image_token_rows(_probe_dataset(variant, probe_dir), processor)
    compute_reference_logprobs(model, processor, dataset, variant.settings.reference_logprobs.batch_size, out,
                               max_length=max_length)
    return str(out)


def answer_stats(cell_dir: Path, benchmarks: list[str]) -> dict[str, dict[str, float]]:
    """Per benchmark with free-text answers: answers, mean words per answer and (Object HalBench) mean objects
    mentioned per answer: what a shorter answer would change in the hallucination metrics."""

    stats: dict[str, dict[str, float]] = {}
    for name in DESCRIPTION_BENCHMARKS:
        path = cell_dir / "generations" / f"{name}.jsonl"
        if name not in benchmarks or not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        # AMBER's yes/no items are not descriptions: count only its generative ("Describe ...") answers.
        answers = [r["answer"] for r in rows if "answer" in r and (name != "amber" or _generative(r))]
        if answers:
            stats[name] = {"n": len(answers), "words_mean": sum(len(a.split()) for a in answers) / len(answers)}
    per_answer = cell_dir / PER_ANSWER_FILE
    if "object_halbench" in stats and per_answer.is_file():
        items = json.loads(per_answer.read_text())
        stats["object_halbench"]["objects_mean"] = sum(len(a["mentioned"]) for a in items) / max(1, len(items))
    return stats


def _generative(row: dict[str, Any]) -> bool:
    return str(row.get("question") or "").lower().startswith("describe")


# --- one cell -------------------------------------------------------------------------------------


def cell_training_settings(settings: Settings, cell: Cell) -> Settings:
    """``settings`` with the cell's seed and training axes set for its method (over params.yaml's own values)."""
    training = settings.training
    own = {**(training.methods.get(cell.method) or {}), **cell.training_axes, "seed": cell.seed}
    return replace(settings, training=replace(training, methods={**training.methods, cell.method: own}))


def run_cell(
    plan: GridPlan,
    key: str,
    *,
    launch: Callable[[Any], dict[str, Any]] | None = None,
    judge: dict[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
    force: bool = False,
) -> dict[str, Any]:
    """Train (``launch``: a run config in, the adapter's summary out; default a local subprocess), score and probe
    one cell; write its cell.json. A cell that already finished with today's settings is returned as it is."""
    from mdpo_pipeline.training.reference import load_reference_cache

    cell = plan.cell(key)
    if not force and (done := plan.done(cell)) is not None:
        log(f"grid: {key} already finished: reused")
        return done | {"reused": True}
    started = time.time()
    out = plan.cell_dir(cell)
    out.mkdir(parents=True, exist_ok=True)
    variant = plan.variant(cell, progress=progress, log=log)
    bench, rule_root = eval_benchmarks(plan, variant)
    # A method's own corrupted images (CHiP's, SymMPO's) train it; the probe measures every method with the
    # experiment's, so the conditional margins compare.
    probe_dir = probe_pairs(plan, variant, log, corrupted=plan.settings.corrupted_images if cell.implied_corruption
                            else None)
    timing: dict[str, float] = {"prepare_s": time.time() - started}

    adapter, training, config = None, None, None
    if cell.method != BASE:
        settings = cell_training_settings(variant.settings, cell)
        adapter = out / "adapter"
        config = train_run_config(variant.project, cell.method, adapter, settings=settings)
        t0 = time.time()
        if not (adapter / "adapter_config.json").is_file() or force:
            training = (launch or launch_local)(config)
        else:
            # Trained, but scoring or the probe did not finish: the adapter is kept.
            training = json.loads((adapter / "summary.json").read_text())
        timing["train_s"] = time.time() - t0

    t0 = time.time()
    record = score_model(variant.project, key, adapter=adapter, out=out, settings=variant.settings, bench=bench,
                         rule_judge_root=rule_root, judge=judge, progress=progress, log=log)
    timing["score_s"] = time.time() - t0

    t0 = time.time()
    probe = None
    if adapter is not None:
        policy = load_reference_cache(_probe_logps(variant, adapter, probe_dir, name="policy"))
        reference = load_reference_cache(probe_dir / "probe_reference.parquet")
        probe = trained_image_use_probe(adapter, policy, reference)
    timing["probe_s"] = time.time() - t0
    timing["total_s"] = time.time() - started

    result = {
        "cell": key,
        "experiment": plan.experiment.name,
        "method": cell.method,
        "seed": cell.seed,
        "axes": dict(cell.axes),
        "fingerprint": plan.fingerprint(cell),
        "variant": {"root": plan.project.rel(variant.project.root), "keys": variant.keys},
        "scores": record["scores"],
        "answers": answer_stats(out, list(bench.benchmarks)),
        "probe": probe,
        "training": training,
        "judge": record["judge"],
        "benchmarks": record["benchmarks"],
        "eval_root": bench.root if rule_root is None else plan.project.rel(rule_root),
        "adapter": plan.project.rel(adapter) if adapter else None,
        "started": started,
        "timing": {k: round(v, 2) for k, v in timing.items()},
    }
    write_json(result, out / CELL_FILE)
    return result


def run_and_log_cell(project: Project, key: str, *, uri: str | None = None, experiment: str = "mdpo",
                     tags: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """``run_cell`` on params.yaml's grid, then its MLflow child run under the grid's parent run (when ``uri``)."""
    plan = GridPlan(project)
    record = run_cell(plan, key, **kwargs)
    if uri:
        record["mlflow"] = log_cell(uri, experiment, project.root / "mlartifacts", record,
                                    plan.cell_dir(plan.cell(key)), tags=tags)
    return record


def run_claims_report(project: Project, *, uri: str | None = None, experiment: str = "mdpo") -> dict[str, Any]:
    """The claims report over every finished cell of params.yaml's grid (``artifacts/grid/<name>/report/``), and
    on the grid's MLflow parent run."""
    from mdpo_pipeline.evaluation.claims import claims_report

    plan = GridPlan(project)
    records = plan.records()
    for record in records:
        # Kept beside the scores (one file per cell), read only for the report's recall-matched CHAIR.
        path = plan.cell_dir(plan.cell(record["cell"])) / PER_ANSWER_FILE
        if path.is_file():
            record["per_answer"] = {"object_halbench": json.loads(path.read_text())}
    if not records:
        raise ConfigError(f"no cell of experiment {plan.experiment.name!r} has finished: materialize grid_cells "
                          "(`make reproduce`)")
    defaults = {axis: values[0] for axis, values in plan.experiment.axes.items()}
    out = plan.dir / "report"
    result = claims_report(records, out, title=f"mDPO's claims, experiment {plan.experiment.name!r}",
                           defaults=defaults)
    result["pending"] = [c.key for c in plan.pending()]
    result["cells"] = len(records)
    if uri:
        result["mlflow"] = log_report(uri, experiment, project.root / "mlartifacts", plan.experiment.name, out,
                                      metrics={"cells_finished": len(records), "cells_pending": len(result["pending"])})
    return result
