"""Strategy counterfactual: SymMPO's (arXiv 2506.11712) contrasting image m' and its answer y' per instruction.

ShapeWorld renders m' (the slot's object swapped for its absent look-alike) and rewrites the chosen answer; real data
reads both from params.yaml:corrupted_images.counterfactual_path. The manifest's corrupted_image is m', its
contrast_answer y'; an instruction with nothing to contrast is quarantined as no_counterfactual.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from mdpo_pipeline.core.corruption import (
    MANIFEST_SCHEMA,
    CorruptionConfig,
    CorruptionError,
    CounterfactualError,
    CounterfactualFile,
    NoCounterfactual,
    corrupt,
    corrupt_images,
)
from mdpo_pipeline.core.errors import ConfigError
from mdpo_pipeline.core.schemas import ASPECTS
from mdpo_pipeline.pipeline.project import Project
from mdpo_pipeline.shapeworld import ShapeWorldConfig, generate_vlfeedback
from mdpo_pipeline.shapeworld.counterfactual import (
    ShapeWorldCounterfactual,
    best_chosen,
    contrast_answer,
    contrast_scene,
    render_world_image,
    swap_category,
    world_instruction,
)
from mdpo_pipeline.shapeworld.generate import save_jpeg
from mdpo_pipeline.shapeworld.world import Scene, SceneObject, render_scene

WORLD = ShapeWorldConfig(seed=0, n_instructions=48, image_size=32, bad_rating_share=0.0)


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 48-instruction world at 32 px, its truths, and one pair per instruction (best vs worst by the ratings)."""
    out = tmp_path_factory.mktemp("world")
    generate_vlfeedback(WORLD, out)
    rows, truths = _jsonl(out / "vlfeedback_80k.jsonl"), _jsonl(out / "shapeworld_truth.jsonl")
    pairs = []
    for row in rows:
        scores = [sum(int(c["annotations"][a]["Rating"]) for a in ASPECTS) / 3 for c in row["completions"]]
        best, worst = scores.index(max(scores)), scores.index(min(scores))
        pairs.append({"pair_id": f"{row['id']}:{best}-{worst}", "instruction_id": row["id"],
                      "chosen": row["completions"][best]["response"], "chosen_score": scores[best]})
    samples = [(r["id"], f"{r['id']}.jpg") for r in rows]
    return out, {t["id"]: t for t in truths}, pairs, samples


# --- y': the chosen answer with the swap made in words ---------------------------------------------


def test_swap_replaces_exactly_the_category_words():
    text = "The image shows a small red circle at the top left and a large blue star in the center."
    assert swap_category(text, "circle", "ellipse") == (
        "The image shows a small red ellipse at the top left and a large blue star in the center.", 1)
    # Plurals and a capital kept, "a" -> "an" right before the noun, other words containing it untouched.
    assert swap_category("A circle and two circles. Circles encircled.", "circle", "ellipse") == (
        "An ellipse and two ellipses. Ellipses encircled.", 3)
    # Two-word names: the full name first, then the head noun alone.
    assert swap_category("a green half moon; the moon and two moons", "half moon", "cross") == (
        "a green cross; the cross and two crosses", 3)
    assert swap_category("a cross, crosses", "cross", "plus sign") == ("a plus sign, plus signs", 2)
    assert swap_category("an orange ellipse", "ellipse", "circle") == ("an orange circle", 1)  # colour's article


def _truth(kind, answer=None, contrast=None):
    objects = [{"category": "star", "colour": "red"}, {"category": "circle", "colour": "blue"}]
    return {"kind": kind, "question": "?", "answer": answer, "objects": objects,
            "contrast": contrast if contrast is not None else {"slot": 1, "shown": "circle", "absent": "ellipse"}}


def test_contrast_answer_for_describe_and_existence():
    chosen = "I can see a small red star at the top and a large blue circle at the bottom in the picture."
    assert contrast_answer(chosen, _truth("describe")) == (
        "I can see a small red star at the top and a large blue ellipse at the bottom in the picture.")
    # Existence: the asked object's presence flips on m', so the answer does ("is there a blue circle?").
    yes = _truth("existence", answer=True)
    assert contrast_answer("Yes, there is a blue circle in the image.", yes) == (
        "No, there is no blue circle in the image.")
    assert contrast_answer("I am not completely sure, but I think yes, there is a blue circle in the image.", yes) == (
        "I am not completely sure, but I think no, there is no blue circle in the image.")
    no = _truth("existence", answer=False)  # asked about the absent ellipse
    assert contrast_answer("No, there is no blue ellipse in the image.", no) == (
        "Yes, there is a blue ellipse in the image.")


@pytest.mark.parametrize("chosen, truth, why", [
    ("The image shows a small red star.", _truth("describe"), "does not mention the circle"),
    ("A blue circle and a red ellipse.", _truth("describe"), "already names the ellipse"),
    ("The circle in the image is blue.", _truth("colour", contrast={}), "no contrast record"),
    ("Yes, there is a blue circle in the image.", _truth("existence", answer=False), "does not state"),
])
def test_answers_that_cannot_be_swapped_have_no_counterfactual(chosen, truth, why):
    with pytest.raises(NoCounterfactual, match=why):
        contrast_answer(chosen, truth)


def test_best_chosen_is_the_highest_rated_then_the_first_pair():
    pairs = [{"pair_id": "a:1-2", "instruction_id": "a", "chosen": "ok", "chosen_score": 4.0},
             {"pair_id": "a:0-2", "instruction_id": "a", "chosen": "best", "chosen_score": 5.0},
             {"pair_id": "a:3-2", "instruction_id": "a", "chosen": "tie", "chosen_score": 5.0},
             {"pair_id": "b:0-1", "instruction_id": "b", "chosen": "unrated", "chosen_score": None}]
    assert best_chosen(pairs) == {"a": ("a:0-2", "best"), "b": ("b:0-1", "unrated")}


# --- m': the same scene, one object swapped ----------------------------------------------------------


def test_the_contrasting_scene_differs_only_in_the_slot_object():
    scene = Scene(objects=(SceneObject("circle", "red", "medium", (0.1, 0.1, 0.4, 0.4)),
                           SceneObject("star", "blue", "medium", (0.55, 0.55, 0.85, 0.85))),
                  background="grey", texture_seed=7)
    swapped = contrast_scene(scene, {"slot": 0, "shown": "circle", "absent": "square"})
    assert swapped.objects[1] == scene.objects[1] and swapped.objects[0].colour == "red"
    a, b = (np.asarray(render_scene(s, 64)).astype(int) for s in (scene, swapped))
    changed = np.abs(a - b).sum(axis=-1) > 0
    # The slot's box is 6.4..25.6 px: the square's corners (outside the circle) changed, nothing else did.
    inside = np.zeros_like(changed)
    inside[6:26, 6:26] = True
    assert changed.any() and not (changed & ~inside).any()
    assert changed[6, 6] and changed[25, 25] and not changed[16, 16]  # corners new, centre red in both
    with pytest.raises(CounterfactualError, match="not the contrast record's ellipse"):
        contrast_scene(scene, {"slot": 0, "shown": "ellipse", "absent": "circle"})


def test_the_world_is_redrawn_exactly(world):
    out, truths, _, _ = world
    inst = world_instruction(WORLD, "sw-000000")
    assert inst["truth"] == truths["sw-000000"]
    buf = io.BytesIO()
    save_jpeg(render_scene(inst["scene"], WORLD.image_size), buf)
    assert buf.getvalue() == (out / "merged_images" / "sw-000000.jpg").read_bytes()  # the very pixels of m


# --- the ShapeWorld provider through corrupt_images --------------------------------------------------


def test_shapeworld_counterfactuals_are_written_quarantined_and_reproducible(world, tmp_path):
    out, truths, pairs, samples = world
    provider = ShapeWorldCounterfactual.from_files(WORLD, out / "shapeworld_truth.jsonl", pairs)
    cfg = CorruptionConfig(strategy="counterfactual", workers=1, image_format="png")
    one = corrupt_images(samples, out / "merged_images", tmp_path / "w1", cfg, counterfactual=provider)
    two = corrupt_images(samples[::-1], out / "merged_images", tmp_path / "w2",
                         CorruptionConfig(strategy="counterfactual", workers=2, image_format="png"),
                         counterfactual=provider)
    assert _files(tmp_path / "w1") == _files(tmp_path / "w2")  # whatever the worker count and order

    no_contrast = {iid for iid, t in truths.items() if not t["contrast"]}
    quarantined = {q["sample_id"] for q in one.quarantine}
    assert no_contrast <= quarantined and {q["reason"] for q in one.quarantine} == {"no_counterfactual"}
    assert len(one.rows) + len(one.quarantine) == one.n_read == len(samples)
    assert one.summary["quarantined_by_reason"] == {"no_counterfactual": len(one.quarantine)}
    assert one.summary["n_read"] == len(samples) and len(one.rows) > len(samples) // 3
    q = pq.read_table(tmp_path / "w1" / "quarantine.parquet").to_pylist()
    assert {r["sample_id"] for r in q} == quarantined

    table = pq.read_table(tmp_path / "w1" / "manifest.parquet")
    assert table.schema.equals(MANIFEST_SCHEMA)
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    assert all(r["contrast_answer"] for r in rows.values())
    # Hand-checked: sw-000000's image shows a small purple diamond on the left (slot 3); m' draws a hexagon there.
    first = rows["sw-000000"]
    assert first["contrast_answer"] == (
        "In this image there is a small purple hexagon on the left, a small white ring in the center, a small green "
        "triangle at the bottom left and a large purple ellipse at the bottom.")
    params = json.loads(first["params"])
    assert (params["shown"], params["absent"], params["slot"]) == ("diamond", "hexagon", 3)
    with Image.open(tmp_path / "w1" / first["corrupted_image"]) as im:
        assert im.size == (32, 32) and (first["width"], first["height"]) == (32, 32)
        expected = world_instruction(WORLD, "sw-000000")["scene"].with_category(3, "hexagon")
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(render_world_image(expected, 32)))


def test_a_world_made_with_other_settings_is_an_error(world, tmp_path):
    out, _, pairs, samples = world
    other = ShapeWorldCounterfactual.from_files(dataclasses.replace(WORLD, seed=1),
                                                out / "shapeworld_truth.jsonl", pairs)
    with pytest.raises(CorruptionError, match="regenerate it"):
        corrupt_images(samples, out / "merged_images", tmp_path / "x",
                       CorruptionConfig(strategy="counterfactual", workers=1), counterfactual=other)
    assert not (tmp_path / "x").exists()


# --- refusals ----------------------------------------------------------------------------------------------


def test_counterfactual_refuses_without_a_provider(world, tmp_path):
    out, _, _, samples = world
    with pytest.raises(ValueError, match="SymMPO's contrasting image and its answer per instruction: ShapeWorld "
                                         "renders them; for real data set corrupted_images.counterfactual_path"):
        corrupt_images(samples, out / "merged_images", tmp_path / "x", CorruptionConfig(strategy="counterfactual"))
    assert not (tmp_path / "x").exists()  # refused before any work
    with pytest.raises(ValueError, match="counterfactual"):
        corrupt(Image.new("RGB", (8, 8)), "counterfactual", random.Random(0))
    with pytest.raises(ValueError, match="only by strategy 'counterfactual'"):
        corrupt_images(samples, out / "merged_images", tmp_path / "x", CorruptionConfig(), counterfactual=print)
    with pytest.raises(ValueError, match="counterfactual_path is read only by strategy 'counterfactual'"):
        CorruptionConfig(counterfactual_path="cf.jsonl")
    with pytest.raises(ValueError, match="must pickle"):
        corrupt_images(samples, out / "merged_images", tmp_path / "x",
                       CorruptionConfig(strategy="counterfactual", workers=2), counterfactual=lambda sid: None)


def test_other_strategies_leave_contrast_answer_null(world, tmp_path):
    out, _, _, samples = world
    res = corrupt_images(samples[:4], out / "merged_images", tmp_path / "c", CorruptionConfig(workers=1))
    table = pq.read_table(tmp_path / "c" / "manifest.parquet")
    assert table.schema.equals(MANIFEST_SCHEMA) and table["contrast_answer"].null_count == 4 == len(res.rows)


# --- real data: the counterfactual_path file ---------------------------------------------------------------


def _real_set(tmp_path: Path) -> tuple[Path, list[tuple[str, str]], Path]:
    """Three originals under root/ and a counterfactual file (cf/cf.jsonl) with rows for two of them."""
    root, cf = tmp_path / "root", tmp_path / "cf"
    (cf / "edited").mkdir(parents=True)
    root.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / f"{k}.png")
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(cf / "edited" / f"{k}.png")
    rows = [{"id": "q0", "image": "edited/0.png", "answer": "A dog on a sofa.", "note": "ignored"},
            {"id": "q1", "image": "edited/1.png", "answer": "Two cups."}]
    (cf / "cf.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return root, [("q0", "0.png"), ("q1", "1.png"), ("q2", "2.png")], cf / "cf.jsonl"


def test_file_counterfactuals_are_read_written_and_missing_rows_quarantined(tmp_path):
    root, samples, path = _real_set(tmp_path)
    cfg = CorruptionConfig(strategy="counterfactual", workers=1, image_format="png", counterfactual_path=str(path))
    res = corrupt_images(samples, root, tmp_path / "out", cfg)  # the file is read from the setting
    rows = {r["sample_id"]: r for r in res.rows}
    assert {k: r["contrast_answer"] for k, r in rows.items()} == {"q0": "A dog on a sofa.", "q1": "Two cups."}
    assert [(q["sample_id"], q["reason"]) for q in res.quarantine] == [("q2", "no_counterfactual")]
    params = json.loads(rows["q1"]["params"])
    digest = hashlib.sha256((path.parent / "edited" / "1.png").read_bytes()).hexdigest()
    assert params == {"source": "file", "line": 2, "image": "edited/1.png", "image_sha256": digest}
    with Image.open(tmp_path / "out" / rows["q1"]["corrupted_image"]) as im:  # PNG: m' exactly as given
        with Image.open(path.parent / "edited" / "1.png") as given:
            assert im.size == (30, 20) and im.tobytes() == given.convert("RGB").tobytes()
    again = corrupt_images(samples, root, tmp_path / "again", cfg)
    assert _files(tmp_path / "out") == _files(tmp_path / "again") and again.summary == res.summary


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("line, why", [
    ('{"id": "q0", "image": "edited/0.png"}', "missing answer"),
    ('{"id": "q0", "image": "edited/0.png", "answer": 3}', "answer must be a non-empty string, got 3"),
    ('{"id": "q0", "image": "edited/0.png", "answer": "  "}', "answer must be a non-empty string"),
    ('{"id": "q0", "image": "../root/0.png", "answer": "x"}', "contains '..'"),
    ('{"id": "q0", "image": "edited/9.png", "answer": "x"}', "not found"),
    ('{"id": "q0", "image": "edited/1.png", "answer": "x"}', "duplicate id 'q0', first on line 1"),
    ('{"id": "q0", "image": ', "not valid JSON"),
    ('["q0", "edited/0.png", "x"]', "expected a JSON object"),
])
def test_file_rows_are_checked_with_file_and_line(tmp_path, line, why):
    _, _, path = _real_set(tmp_path)
    bad = _write(path.parent / "bad.jsonl", ['{"id": "q0", "image": "edited/0.png", "answer": "A dog."}', line])
    with pytest.raises(CounterfactualError, match=why) as e:
        CounterfactualFile.read(bad)
    assert str(e.value).startswith(f"{bad}:2: ")


def test_file_errors_quote_a_bounded_prefix_and_unreadable_images_stop_the_run(tmp_path):
    root, samples, path = _real_set(tmp_path)
    row = {"id": "q0", "image": "edited/0.png", "answer": ["x" * 100_000]}
    huge = _write(path.parent / "huge.jsonl", [json.dumps(row)])
    with pytest.raises(CounterfactualError, match="huge.jsonl:1: answer") as e:
        CounterfactualFile.read(huge)
    assert len(str(e.value)) < 400
    with pytest.raises(CounterfactualError, match="cannot read"):
        CounterfactualFile.read(path.parent / "absent.jsonl")
    (path.parent / "edited" / "1.png").write_bytes(b"not a png")
    cfg = CorruptionConfig(strategy="counterfactual", workers=1, counterfactual_path=str(path))
    with pytest.raises(CorruptionError, match=r"cf.jsonl:2: image 'edited/1.png'"):
        corrupt_images(samples, root, tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()


# --- the pipeline stage on a tiny ShapeWorld project ---------------------------------------------------------


def test_the_corrupted_images_stage_renders_counterfactuals_on_shapeworld(tmp_path):
    from mdpo_pipeline.pipeline.data import run_corrupted_images, run_preference_pairs, run_raw_silkie

    root = tmp_path / "proj"
    params = {
        "shapeworld": {**{k: getattr(WORLD, k) for k in ("seed", "n_instructions", "image_size", "bad_rating_share")}},
        "raw_silkie": {"format": "vlfeedback", "path": "data/shapeworld/vlfeedback", "workers": 1},
        "preference_pairs": {"strategy": "one_per_instruction", "sources": [], "n": 30, "seed": 0},
        "corrupted_images": {"strategy": "counterfactual", "seed": 0, "workers": 1},
    }
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    project = Project(root)
    generate_vlfeedback(WORLD, root / "data" / "shapeworld" / "vlfeedback")  # the shapeworld stage's world part
    run_raw_silkie(project)
    run_preference_pairs(project)
    summary = run_corrupted_images(project)
    out = root / "data" / "corrupted_images"
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    pairs = pq.read_table(root / "data" / "preference_pairs" / "pairs.parquet").to_pylist()
    assert summary["strategy"] == "counterfactual" and summary["n_images"] == len(manifest) > 0
    assert summary["n_read"] == len({p["instruction_id"] for p in pairs})
    chosen = {p["instruction_id"]: p["chosen"] for p in pairs}
    for row in manifest:
        p = json.loads(row["params"])
        assert p["source"] == "shapeworld" and row["contrast_answer"] != chosen[row["sample_id"]]
    # The corruption gate: instructions without a contrasting scene are left out by design, counted, not failed.
    from mdpo_pipeline.pipeline import quality

    ok, details = quality.corruption_gate(out / "manifest.parquet", root / "data" / "preference_pairs" /
                                          "pairs.parquet", out)
    without = summary["quarantined_by_reason"]["no_counterfactual"]
    assert ok and details["n_without_counterfactual"] == without > 0 and details["quarantined_share"] == 0.0
    before = _files(out)

    # Not ShapeWorld and no file: refused, naming the setting, before anything is touched.
    truth = root / "data" / "shapeworld" / "vlfeedback" / "shapeworld_truth.jsonl"
    shutil.move(truth, tmp_path / "truth.jsonl")
    with pytest.raises(ConfigError, match=r"params.yaml:corrupted_images.counterfactual_path: .*not a ShapeWorld"):
        run_corrupted_images(project)
    assert _files(out) == before

    # A file named by the setting, relative to the project, is read instead; a bad one names the setting too.
    images = "data/shapeworld/vlfeedback/merged_images"
    rows = [{"id": r["sample_id"], "image": f"{images}/{r['sample_id']}.jpg", "answer": "Same."} for r in manifest]
    (root / "cf.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params["corrupted_images"]["counterfactual_path"] = "cf.jsonl"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    summary = run_corrupted_images(project)
    assert summary["n_images"] == len(rows)
    (root / "cf.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(ConfigError, match=r"params.yaml:corrupted_images.counterfactual_path: .*cf.jsonl:1: missing"):
        run_corrupted_images(project)
