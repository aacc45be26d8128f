"""The experiment grid: expansion into cells, fingerprints, the probe's arithmetic, and a 2 × 2 grid end to end
through Dagster (cells trained, scored, probed, reused on a rerun, logged to MLflow, and the claims report)."""

from __future__ import annotations

import json
import math

import pytest

from mdpo_pipeline.core.errors import ConfigError
from mdpo_pipeline.core.losses import image_use_probe
from mdpo_pipeline.pipeline.grid import Cell, cell_training_settings, expand, uses_shapeworld_split
from mdpo_pipeline.pipeline.project import Project
from mdpo_pipeline.pipeline.settings import parse_settings
from tests.conftest import pipeline_resources, project_from_base


def test_expand_one_base_per_data_variant_then_methods_by_seeds():
    settings = parse_settings({"experiment": {
        "methods": ["dpo", "mdpo"], "seeds": [0, 1],
        "axes": {"shapeworld.unconditional_share": [0.5, 1.0], "training.beta": [0.1, 0.2]}}})
    keys = [c.key for c in expand(settings)]
    # training.beta does not change the data: 2 base cells (one per unconditional_share), not 4
    assert keys[:5] == ["base@unconditional_share=0.5", "dpo-s0@unconditional_share=0.5@beta=0.1",
                        "dpo-s1@unconditional_share=0.5@beta=0.1", "mdpo-s0@unconditional_share=0.5@beta=0.1",
                        "mdpo-s1@unconditional_share=0.5@beta=0.1"]
    assert len(keys) == 2 + 2 * 2 * 2 * 2
    assert sum(k.startswith("base") for k in keys) == 2
    assert len(set(keys)) == len(keys)


def test_default_grid_is_the_claims_grid():
    keys = [c.key for c in expand(parse_settings({}))]
    assert keys[0] == "base" and len(keys) == 1 + 5 * 3
    assert {"dpo-s0", "mdpo-s2", "mdpo_no_conditional-s1", "mdpo_no_anchor-s0", "dpo_no_image-s2"} <= set(keys)


def test_a_methods_own_corrupted_images_make_its_data_variant():
    settings = parse_settings({"experiment": {"methods": ["mdpo", "chip", "symmpo"], "seeds": [0],
                                              "axes": {"shapeworld.seed": [0, 1]}}})
    cells = {c.key: c for c in expand(settings)}
    # Keys and pairing axes stay the method's; the data follows the method's image term.
    assert {"mdpo-s0@seed=0", "chip-s0@seed=0", "symmpo-s0@seed=1"} <= cells.keys()
    assert cells["mdpo-s0@seed=0"].data_axes == (("shapeworld.seed", 0),)
    assert cells["chip-s0@seed=0"].data_axes == (("shapeworld.seed", 0), ("corrupted_images.strategy", "diffusion_noise"))
    assert cells["symmpo-s0@seed=1"].data_axes[-1] == ("corrupted_images.strategy", "counterfactual")
    assert cells["chip-s0@seed=0"].implied_corruption and not cells["mdpo-s0@seed=0"].implied_corruption
    assert sum(k.startswith("base") for k in cells) == 2  # the base model reads no corrupted image
    # An axis on the strategy wins over the method's own.
    axis = parse_settings({"experiment": {"methods": ["chip"], "seeds": [0],
                                          "axes": {"corrupted_images.strategy": ["crop_1_20"]}}})
    (chip,) = [c for c in expand(axis) if c.method == "chip"]
    assert chip.data_axes == (("corrupted_images.strategy", "crop_1_20"),) and not chip.implied_corruption


def test_a_method_outside_the_grid_refuses_other_corrupted_images(tmp_path):
    from mdpo_pipeline.pipeline.train import train_run_config

    (tmp_path / "params.yaml").write_text("corrupted_images: {strategy: crop_1_20}\n")
    with pytest.raises(ConfigError, match="chip: its image term is defined over corrupted_images.strategy "
                                          "'diffusion_noise'.*experiment grid"):
        train_run_config(Project(tmp_path), "chip", tmp_path / "out")


@pytest.mark.parametrize("bad, match", [
    ({"methods": ["dpo", "dpo"]}, "without repeats"),
    ({"methods": ["ppo"]}, "unknown"),
    ({"axes": {"base_model.preset": ["a"]}}, "an axis is"),
    ({"axes": {"training.beta": []}}, "non-empty"),
    ({"name": "a b"}, "folder"),
])
def test_bad_experiment_settings_name_the_key(bad, match):
    with pytest.raises(ConfigError, match=match):
        parse_settings({"experiment": bad})


def test_cell_training_settings_override_the_methods_own_seed():
    settings = parse_settings({"training": {"seed": 7, "methods": {"mdpo": {"seed": 9, "beta": 0.3}}}})
    cell = Cell("mdpo", 2, (("training.beta", 0.5),))
    values = cell_training_settings(settings, cell).training.values("mdpo")
    assert values["seed"] == 2 and values["beta"] == 0.5
    assert cell_training_settings(settings, cell).training.values("dpo")["seed"] == 7


def test_the_grid_knows_the_shapeworld_split_however_its_path_is_written(tmp_path):
    """The grid scores on its own larger split only when benchmark_scores.root is ShapeWorld's: a string compare
    missed ``./data/...`` and absolute paths, and those grids silently scored on the demo's small split."""
    project = Project(tmp_path)
    (tmp_path / "data" / "shapeworld" / "benchmarks").mkdir(parents=True)
    for root in ("data/shapeworld/benchmarks", "./data/shapeworld/benchmarks", "data/shapeworld/../shapeworld/benchmarks",
                 str(tmp_path / "data" / "shapeworld" / "benchmarks")):
        assert uses_shapeworld_split(project, root), root
    (tmp_path / "real").symlink_to(tmp_path / "data" / "shapeworld")
    assert uses_shapeworld_split(project, "real/benchmarks")  # a link to the split is the split
    for root in ("data/benchmarks", "data/shapeworld", str(tmp_path / "elsewhere" / "benchmarks")):
        assert not uses_shapeworld_split(project, root), root


def test_probe_by_hand():
    # (chosen | image, rejected | image, chosen | corrupted image) summed log-probs
    policy = {"a": (-10.0, -20.0, -16.0), "b": (-8.0, -9.0, -8.5)}
    reference = {"a": (-12.0, -18.0, -14.0), "b": (-8.0, -8.0, -8.0)}
    probe = image_use_probe(policy, reference, beta=0.1)
    # a: 0.1·((−10+12) − (−16+14)) = 0.4; b: 0.1·((0) − (−0.5)) = 0.05
    assert math.isclose(probe["conditional_margin"], (0.4 + 0.05) / 2)
    assert probe["conditional_accuracy"] == 1.0
    # a: 0.1·(2 − (−2)) = 0.4; b: 0.1·(0 − (−1)) = 0.1
    assert math.isclose(probe["reward_margin"], 0.25)
    assert math.isclose(probe["image_gap"], (6.0 + 0.5) / 2)
    assert math.isclose(probe["image_gap_base"], (2.0 + 0.0) / 2)
    with pytest.raises(ValueError, match="same pairs"):
        image_use_probe(policy, {"a": reference["a"]}, beta=0.1)


#: A 2 × 2 grid on the tiny world: a few training steps, small benchmark splits, a small probe.
GRID = {"name": "tiny", "methods": ["dpo", "mdpo"], "seeds": [0, 1], "benchmarks": ["object_halbench", "amber"],
        "eval_sizes": {"object_halbench": 12, "amber_generative": 6, "amber_discriminative": 6, "mmhal": 8, "pope": 4},
        "probe_pairs": 16}
TRAINING = {"max_steps": 4, "per_device_train_batch_size": 4, "logging_steps": 2, "save_steps": 50}


@pytest.mark.slow
def test_two_by_two_grid_end_to_end_through_dagster(shapeworld_base, tmp_path, monkeypatch):
    import dagster as dg
    from mlflow import MlflowClient

    from mdpo_pipeline.defs.assets.grid import claims_report, experiment_grid, grid_cells
    from mdpo_pipeline.integrations.tracking import checkout_store
    from mdpo_pipeline.pipeline.grid import GridPlan
    from mdpo_pipeline.pipeline.project import Project

    root = project_from_base(shapeworld_base, tmp_path / "proj", experiment=GRID, training=TRAINING)
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resources = pipeline_resources(root)
    instance = dg.DagsterInstance.ephemeral()
    assets = [experiment_grid, grid_cells, claims_report]

    assert dg.materialize(assets, selection="experiment_grid", resources=resources, instance=instance).success
    keys = instance.get_dynamic_partitions("grid_cell")
    assert keys == ["base", "dpo-s0", "dpo-s1", "mdpo-s0", "mdpo-s1"]
    for key in keys:
        result = dg.materialize(assets, selection="grid_cells", partition_key=key, resources=resources,
                                instance=instance)
        assert result.success
    report = dg.materialize(assets, selection="claims_report", resources=resources, instance=instance)
    assert report.success

    plan = GridPlan(Project(root))
    records = {r["cell"]: r for r in plan.records()}
    assert sorted(records) == sorted(keys) and plan.pending() == []
    for key in ("dpo-s0", "dpo-s1", "mdpo-s0", "mdpo-s1"):
        rec = records[key]
        # every cell keeps its own adapter, answers and scores: nothing overwritten
        cell_dir = plan.cell_dir(plan.cell(key))
        assert (cell_dir / "adapter" / "adapter_model.safetensors").is_file()
        assert (cell_dir / "generations" / "object_halbench.jsonl").is_file()
        assert json.loads((cell_dir / "adapter" / "run_config.json").read_text())["seed"] == rec["seed"]
        assert rec["training"]["global_step"] == TRAINING["max_steps"]
        assert rec["benchmarks"]["object_halbench"]["n"] == 12
        assert set(rec["probe"]) >= {"conditional_margin", "image_gap", "image_gap_base", "reward_margin"}
        assert rec["probe"]["n"] == 16
        assert rec["answers"]["object_halbench"]["n"] == 12 and rec["answers"]["object_halbench"]["words_mean"] > 0
    # two seeds of one method train differently (LoRA init and data order follow the seed)
    sha = lambda k: records[k]["benchmarks"] and json.loads(  # noqa: E731
        (plan.cell_dir(plan.cell(k)) / "scores.json").read_text())["weights_sha256"]
    assert sha("dpo-s0") != sha("dpo-s1")

    md = (plan.dir / "report" / "claims.md").read_text()
    assert "±" in md and "## Claims" in md and "## Does DPO ignore the image? (probe)" in md
    claims = json.loads((plan.dir / "report" / "claims.json").read_text())["claims"]
    assert {c["verdict"] for c in claims} <= {"reproduced", "not reproduced", "inconclusive", "not tested"}

    # MLflow: one parent run for the grid, a child run per cell
    client = MlflowClient(checkout_store(root))
    runs = client.search_runs([client.get_experiment_by_name("mdpo").experiment_id],
                              filter_string="tags.`mdpo.grid` = 'tiny'")
    parents = [r for r in runs if r.data.tags.get("mdpo.kind") == "grid"]
    children = [r for r in runs if r.data.tags.get("mdpo.kind") == "grid_cell"]
    assert len(parents) == 1 and len(children) == 5
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.tags["mdpo.cell"] for r in children} == set(keys)
    assert all(r.data.tags.get("dagster.run_id") for r in children)
    assert "eval/chair_s" in children[0].data.metrics

    # A rerun reuses the finished cell: no training, the same record, no second MLflow run
    before = (plan.cell_dir(plan.cell("mdpo-s1")) / "cell.json").read_text()
    again = dg.materialize(assets, selection="grid_cells", partition_key="mdpo-s1", resources=resources,
                           instance=instance)
    meta = again.asset_materializations_for_node("grid_cells")[0].metadata
    assert meta["reused"].value is True
    assert (plan.cell_dir(plan.cell("mdpo-s1")) / "cell.json").read_text() == before
    assert len(client.search_runs([parents[0].info.experiment_id],
                                  filter_string="tags.`mdpo.kind` = 'grid_cell'")) == 5


@pytest.mark.slow
def test_data_axis_variant_shares_what_its_inputs_share(shapeworld_base, tmp_path, monkeypatch):
    """An axis on the preference answers (unconditional_share) makes new data and a new reference cache, and keeps
    the base model (its SFT reads the same truths and images); the default value uses the project's own data."""
    from mdpo_pipeline.pipeline.grid import GridPlan, run_cell
    from mdpo_pipeline.pipeline.project import Project

    grid = GRID | {"methods": ["mdpo"], "seeds": [0], "benchmarks": ["object_halbench"],
                   "axes": {"shapeworld.unconditional_share": [0.5, 1.0]}}
    root = project_from_base(shapeworld_base, tmp_path / "proj", experiment=grid, training=TRAINING)
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    plan = GridPlan(Project(root))
    keys = [c.key for c in plan.cells]
    assert keys == ["base@unconditional_share=0.5", "mdpo-s0@unconditional_share=0.5",
                    "base@unconditional_share=1.0", "mdpo-s0@unconditional_share=1.0"]
    one = run_cell(plan, "mdpo-s0@unconditional_share=1.0")
    variant = root / one["variant"]["root"]
    data = variant / "data"
    # shared with the project: the base model; made anew: everything the answers reach
    assert (data / "base_model").resolve() == (root / "data" / "base_model").resolve()
    for stage in ("shapeworld", "raw_silkie", "preference_pairs", "corrupted_images", "reference_logprobs"):
        assert (data / stage).is_symlink()
        assert (data / stage).resolve() != (root / "data" / stage).resolve(), stage
        assert (data / stage).resolve().is_relative_to(root / "artifacts" / "grid" / "stages")
    summary = json.loads((data / "shapeworld" / "summary.json").read_text())
    assert summary["config"]["unconditional_share"] == 1.0
    # the 0.5 variant is params.yaml's own value: the project's data, no variant folder
    half = run_cell(plan, "mdpo-s0@unconditional_share=0.5")
    assert half["variant"]["root"] == "."
    assert one["fingerprint"] != half["fingerprint"]


@pytest.mark.slow
def test_methods_with_their_own_corrupted_images_train_in_the_grid(shapeworld_base, tmp_path, monkeypatch):
    """CHiP trains on diffusion-noised images, SymMPO on contrasting images with their answers: each cell's variant
    makes those and the reference cache over them, shares the base model and the pairs, and is probed with the
    experiment's own corrupted images so its conditional margin compares with the others'."""
    import pyarrow.parquet as pq

    from mdpo_pipeline.pipeline.grid import GridPlan, run_cell
    from mdpo_pipeline.pipeline.project import Project

    grid = GRID | {"methods": ["chip", "symmpo"], "seeds": [0], "benchmarks": ["object_halbench"]}
    root = project_from_base(shapeworld_base, tmp_path / "proj", experiment=grid, training=TRAINING)
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(root))
    plan = GridPlan(Project(root))
    for key, strategy, terms in (("chip-s0", "diffusion_noise", {"loss/conditional"}),
                                 ("symmpo-s0", "counterfactual", {"loss/symmetric", "loss/symmetric_anchor"})):
        record = run_cell(plan, key)
        data = root / record["variant"]["root"] / "data"
        for stage in ("base_model", "preference_pairs"):
            assert (data / stage).resolve() == (root / "data" / stage).resolve(), stage
        corrupted = json.loads((data / "corrupted_images" / "summary.json").read_text())
        assert corrupted["strategy"] == strategy
        assert (data / "reference_logprobs").resolve() != (root / "data" / "reference_logprobs").resolve()
        assert record["training"]["global_step"] == TRAINING["max_steps"]
        history = json.loads((plan.cell_dir(plan.cell(key)) / "adapter" / "summary.json").read_text())
        assert terms <= set(history["final"]) or terms <= {k for h in history.get("log_history", []) for k in h}, (
            key, sorted(history["final"]))
        probe = plan.root / "probe"
        probes = [json.loads(p.read_text()) for p in probe.glob("*/corrupted/summary.json")]
        assert probes and {p["strategy"] for p in probes} == {"crop_1_20"}
        assert record["probe"]["n"] == 16
    manifest = pq.read_table(root / run_cell(plan, "symmpo-s0")["variant"]["root"] / "data" / "corrupted_images"
                             / "manifest.parquet").to_pydict()
    assert all(manifest["contrast_answer"])


def test_grid_cli_lists_cells_and_pending(tmp_path, monkeypatch, capsys):
    import yaml

    from mdpo_pipeline.cli import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"experiment": {"methods": ["mdpo"], "seeds": [3, 4]}}))
    monkeypatch.setenv("MDPO_PROJECT_ROOT", str(tmp_path))
    assert main(["grid", "cells"]) == 0
    assert capsys.readouterr().out.split() == ["base", "mdpo-s3", "mdpo-s4"]
    # a cell.json with another fingerprint is not a finished cell
    done = tmp_path / "artifacts" / "grid" / "claims" / "cells" / "mdpo-s3"
    done.mkdir(parents=True)
    (done / "cell.json").write_text('{"fingerprint": "stale"}')
    assert main(["grid", "pending"]) == 0
    assert capsys.readouterr().out.split() == ["base", "mdpo-s3", "mdpo-s4"]
    # with today's fingerprint it is finished: not run again
    from mdpo_pipeline.pipeline.grid import GridPlan
    from mdpo_pipeline.pipeline.project import Project

    plan = GridPlan(Project(tmp_path))
    (done / "cell.json").write_text(json.dumps({"fingerprint": plan.fingerprint(plan.cell("mdpo-s3"))}))
    assert main(["grid", "pending"]) == 0
    assert capsys.readouterr().out.split() == ["base", "mdpo-s4"]
    assert main(["grid", "path"]) == 0
    assert capsys.readouterr().out.strip().endswith("artifacts/grid/claims/report/claims.md")
    assert main(["grid", "run", "ppo-s0", "--no-mlflow"]) == 2
    assert "not a cell" in capsys.readouterr().err
