"""ShapeWorld: determinism, the exact VLFeedback and benchmark layouts, and the designed data properties."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mdpo_pipeline.core.schemas import ASPECTS
from mdpo_pipeline.shapeworld import (
    CATEGORIES,
    COOCCURRENCE,
    LOOKALIKES,
    MMHAL_TYPES,
    MODELS,
    OBJECT_HALBENCH_PROMPTS,
    VOCABULARY,
    Scene,
    SceneObject,
    ShapeWorldConfig,
    generate_benchmarks,
    generate_vlfeedback,
    has_text_cue,
    render_scene,
    sample_scene,
    synonym_lines,
)

TINY = dict(n_instructions=40, image_size=32, bad_rating_share=0.0, amber_generative=10, amber_discriminative=40, object_halbench=6, pope=5)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _score(completion: dict) -> float:
    return sum(int(a["Rating"]) for a in completion["annotations"].values()) / 3


@pytest.fixture(scope="module")
def vlf(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("vlf")
    return out, generate_vlfeedback(ShapeWorldConfig(**TINY), out)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    return out, generate_benchmarks(ShapeWorldConfig(**TINY), out)


# --- vocabulary and rendering -------------------------------------------------------------------


def test_vocabulary_has_synonyms_plurals_and_two_word_names():
    assert len(CATEGORIES) >= 14
    assert sum(" " in c for c in CATEGORIES) >= 2, "two-word categories exercise CHAIR's phrase matching"
    for name, entry in VOCABULARY.items():
        assert entry["synonyms"], name
        assert set(entry["plurals"]) == {name, *entry["synonyms"]}
    assert VOCABULARY["cross"]["plurals"]["cross"] == "crosses"
    assert VOCABULARY["diamond"]["plurals"]["rhombus"] == "rhombi"
    assert VOCABULARY["half moon"]["plurals"]["half moon"] == "half moons"
    assert "box" in VOCABULARY["square"]["synonyms"] and "donut" in VOCABULARY["ring"]["synonyms"]
    # The CHAIR list: canonical first, and no word names two categories.
    lines = [line.split(", ") for line in synonym_lines()]
    assert [words[0] for words in lines] == list(CATEGORIES)
    all_words = [w for words in lines for w in words]
    assert len(all_words) == len(set(all_words))
    assert len(COOCCURRENCE) >= 4 and all(a in VOCABULARY and b in VOCABULARY for a, b in COOCCURRENCE)
    assert all(c in LOOKALIKES[lk] for c in CATEGORIES for lk in LOOKALIKES[c]), "look-alikes are symmetric"


def _single(category: str, **kw) -> Scene:
    """One large red object in the middle; with_category gives it its category's proper aspect ratio."""
    obj = SceneObject(category="circle", colour="red", size="large", bbox=(0.3, 0.3, 0.7, 0.7), **kw)
    return Scene(objects=(obj,), background="grey", texture_seed=7).with_category(0, category)


def test_every_category_renders_visibly_and_distinctly():
    empty = np.asarray(render_scene(Scene((), "grey", 7), 64), dtype=float)
    seen = []
    for cat in CATEGORIES:
        img = np.asarray(render_scene(_single(cat), 64), dtype=float)
        assert img.shape == (64, 64, 3)
        diff = np.abs(img - empty).sum(axis=2)
        assert (diff > 60).sum() > 40, f"{cat} is not visible"
        assert all(np.abs(img - other).mean() > 1 for other in seen), f"{cat} looks like an earlier category"
        seen.append(img)
    faint = np.abs(np.asarray(render_scene(_single("square", low_contrast=True), 64), dtype=float) - empty).sum()
    assert faint < 0.5 * np.abs(seen[CATEGORIES.index("square")] - empty).sum()


def test_scene_sampling_respects_settings_and_swaps_keep_the_cell():
    cfg = ShapeWorldConfig(min_objects=2, max_objects=3, weak_evidence_share=1.0)
    for i in range(30):
        scene = sample_scene(random.Random(i), cfg)
        assert 2 <= len(scene.objects) <= 3
        assert all(o.weak for o in scene.objects)
        assert all(0 <= v <= 1 for o in scene.objects for v in o.bbox)
    circle = _single("circle")
    ellipse = circle.with_category(0, "ellipse").objects[0]
    assert ellipse.center == pytest.approx(circle.objects[0].center)
    w, h = ellipse.bbox[2] - ellipse.bbox[0], ellipse.bbox[3] - ellipse.bbox[1]
    assert max(w, h) == pytest.approx(0.4) and min(w, h) < 0.8 * max(w, h), "an ellipse is not a circle"


# --- VLFeedback ---------------------------------------------------------------------------------


def test_generation_is_byte_identical_across_runs(tmp_path):
    cfg = ShapeWorldConfig(**TINY)
    for name in ("a", "b"):
        generate_vlfeedback(cfg, tmp_path / name / "vlfeedback")
        generate_benchmarks(cfg, tmp_path / name / "benchmarks")
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert sum(k.endswith(".jpg") for k in first) == 40 + 10 + 6 + 96 + 5
    assert first == second
    generate_vlfeedback(replace(cfg, seed=1), tmp_path / "c")
    assert (tmp_path / "c" / "vlfeedback_80k.jsonl").read_bytes() != first["vlfeedback/vlfeedback_80k.jsonl"]


def test_vlfeedback_rows_have_the_release_shape(vlf):
    out, summary = vlf
    rows = _jsonl(out / "vlfeedback_80k.jsonl")
    assert len(rows) == summary["n_instructions"] == 40
    for row in rows:
        assert set(row) == {"id", "prompt", "models", "completions"}
        assert row["prompt"].strip() and len(row["completions"]) == 4
        assert row["models"] == [c["model"] for c in row["completions"]] and len(set(row["models"])) == 4
        assert set(row["models"]) <= set(MODELS)
        for comp in row["completions"]:
            assert comp["response"].strip()
            assert set(comp["annotations"]) == set(ASPECTS)
            for aspect in comp["annotations"].values():
                assert isinstance(aspect["Rating"], str) and aspect["Rating"] in {"1", "2", "3", "4", "5"}
                assert aspect["Rationale"].strip()
        with Image.open(out / "merged_images" / f"{row['id']}.jpg") as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (32, 32)
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    sources = _jsonl(out / "instruction_source.jsonl")
    assert [s["id"] for s in sources] == ids and {s["source"] for s in sources} <= set(ShapeWorldConfig().source_mix)
    assert [t["id"] for t in _jsonl(out / "shapeworld_truth.jsonl")] == ids
    assert sorted(p.stem for p in (out / "merged_images").iterdir()) == sorted(ids)


def test_bad_ratings_are_non_numeric_and_change_nothing_else(tmp_path, vlf):
    out, _ = vlf
    summary = generate_vlfeedback(ShapeWorldConfig(**{**TINY, "bad_rating_share": 0.3}), tmp_path)
    clean, noisy = _jsonl(out / "vlfeedback_80k.jsonl"), _jsonl(tmp_path / "vlfeedback_80k.jsonl")
    ratings = [a["Rating"] for r in noisy for c in r["completions"] for a in c["annotations"].values()]
    assert summary["non_numeric_ratings"] == ratings.count("N/A") and 0.15 < ratings.count("N/A") / len(ratings) < 0.45
    strip = lambda rows: [[c["response"] for c in r["completions"]] for r in rows]  # noqa: E731
    assert strip(clean) == strip(noisy)


def test_annotator_rates_faithful_answers_above_hallucinated_ones(tmp_path):
    generate_vlfeedback(ShapeWorldConfig(n_instructions=300, image_size=16, bad_rating_share=0.0), tmp_path)
    rows, truth = _jsonl(tmp_path / "vlfeedback_80k.jsonl"), _jsonl(tmp_path / "shapeworld_truth.jsonl")
    vf = {name: [] for name in MODELS}
    for row, t in zip(rows, truth):
        for comp in row["completions"]:
            vf[comp["model"]].append(int(comp["annotations"]["Visual Faithfulness"]["Rating"]))
            if comp["model"] == "sw-accurate-7b":
                assert comp["response"] == t["expected_answer"]
        if t["kind"] == "count":
            assert t["answer"] == max(Counter(o["category"] for o in t["objects"]).values())
        if t["kind"] == "colour":
            named = [o for o in t["objects"] if f"the {o['category']} in" in t["question"]]
            assert [o["colour"] for o in named] == [t["answer"]]
    assert set(vf["sw-accurate-7b"]) == {5}
    assert max(vf["sw-halluc-13b"]) <= 3
    assert np.mean(vf["sw-accurate-7b"]) > np.mean(vf["sw-attr-7b"]) > np.mean(vf["sw-halluc-13b"])


def _text_cue_share(rows: list[dict]) -> float:
    hits = total = 0
    for row in rows:
        scores = [_score(c) for c in row["completions"]]
        best, worst = scores.index(max(scores)), scores.index(min(scores))
        if scores[best] > scores[worst]:
            total += 1
            hits += has_text_cue(row["completions"][best]["response"], row["completions"][worst]["response"])
    return hits / total


def test_unconditional_share_controls_text_only_cues(tmp_path):
    shares = {}
    for share in (0.0, 1.0):
        summary = generate_vlfeedback(ShapeWorldConfig(**{**TINY, "n_instructions": 120}, unconditional_share=share),
                                      tmp_path / str(share))
        assert summary["unconditional_share"] == share
        shares[share] = _text_cue_share(_jsonl(tmp_path / str(share) / "vlfeedback_80k.jsonl"))
    assert shares[0.0] <= 0.05, "conditional pairs must be matched in length and style"
    assert shares[1.0] >= 0.9


def test_conditional_pairs_use_each_phrase_on_both_sides(tmp_path):
    generate_vlfeedback(ShapeWorldConfig(n_instructions=400, image_size=16, unconditional_share=0.0, bad_rating_share=0.0),
                        tmp_path)
    truth = [t for t in _jsonl(tmp_path / "shapeworld_truth.jsonl") if t["contrast"]]
    shown = Counter(t["contrast"]["shown"] for t in truth)
    absent = Counter(t["contrast"]["absent"] for t in truth)
    assert sum(bool(shown[c] and absent[c]) for c in CATEGORIES) >= 12, "drawn in some images, hallucinated in others"
    # The co-occurrence partner of a shown object is the true object as often as the hallucination,
    # so "mention B when A is there" is no text-only rule.
    partner_shown = partner_absent = 0
    for t in truth:
        c = t["contrast"]
        context = {o["category"] for i, o in enumerate(t["objects"]) if i != c["slot"]}
        partners = {b for a, b in COOCCURRENCE if a in context}
        partner_shown += c["shown"] in partners
        partner_absent += c["absent"] in partners
    assert partner_absent > 20 and 0.6 < partner_shown / partner_absent < 1 / 0.6


# --- benchmarks ---------------------------------------------------------------------------------


def test_mmhal_has_96_records_in_type_order(bench):
    out, summary = bench
    records = json.loads((out / "mmhal" / "response_template.json").read_text())
    assert len(records) == summary["mmhal"]["records"] == 96
    fields = {"question_type", "question_topic", "image_id", "image_src", "image_content", "question", "gt_answer",
              "model_answer"}
    for i, rec in enumerate(records):
        assert set(rec) == fields and rec["question_type"] == MMHAL_TYPES[i % 8] and rec["model_answer"] == ""
        assert rec["image_content"] and rec["question"] and rec["gt_answer"]
        assert (out / "mmhal" / "images" / rec["image_src"].rsplit("/", 1)[-1]).is_file()
        assert rec["image_src"].endswith(f"/{rec['image_id']}.jpg")
    assert len({r["question_topic"] for r in records}) == 12


def test_amber_layout_ids_and_existence_truth(bench):
    out, _ = bench
    data = out / "amber" / "data"
    ann = json.loads((data / "annotations.json").read_text())
    assert [a["id"] for a in ann] == list(range(1, len(ann) + 1)), "the scorer indexes annotations[id - 1]"
    vocab = json.loads((data / "relation.json").read_text())
    generative = [a for a in ann if a["type"] == "generative"]
    assert len(generative) == 10
    for a in generative:
        assert a["truth"] and a["hallu"] and not set(a["truth"]) & set(a["hallu"])
        assert set(a["truth"]) | set(a["hallu"]) <= set(vocab)
    disc = [a for a in ann if a["type"] != "generative"]
    assert len(disc) == 40 and {a["truth"] for a in disc} == {"yes", "no"}
    existence = [a for a in ann if a["type"] == "discriminative-hallucination"]
    assert existence and all(a["truth"] == "no" for a in existence)
    queries = json.loads((data / "query" / "query_all.json").read_text())
    assert [q["id"] for q in queries] == [a["id"] for a in ann]
    assert all((out / "amber" / "image" / q["image"]).is_file() for q in queries)
    assert all(q["query"] == "Describe this image." for q in queries[:10])
    assert (data / "safe_words.txt").is_file() and "chair_num=0.001" in (data / "metrics.txt").read_text()


def test_object_halbench_is_coco_shaped(bench):
    out, _ = bench
    root = out / "object_halbench"
    inst = json.loads((root / "annotations" / "instances.json").read_text())
    caps = json.loads((root / "annotations" / "captions.json").read_text())
    image_ids = {im["id"] for im in inst["images"]}
    names = {c["id"]: c["name"] for c in inst["categories"]}
    assert len(image_ids) == 6 and set(names.values()) == set(CATEGORIES)
    assert all((root / "images" / im["file_name"]).is_file() for im in inst["images"])
    assert inst["annotations"] and all(
        a["image_id"] in image_ids and a["category_id"] in names and len(a["bbox"]) == 4 for a in inst["annotations"]
    )
    assert Counter(c["image_id"] for c in caps["annotations"]) == {i: 5 for i in image_ids}
    prompts = _jsonl(root / "prompts.jsonl")
    assert {p["image_id"] for p in prompts} == image_ids
    assert all(p["question"] in OBJECT_HALBENCH_PROMPTS for p in prompts)
    assert OBJECT_HALBENCH_PROMPTS[0] == "Provide a thorough description of the given image."
    assert (out / "synonyms.txt").read_text().splitlines() == synonym_lines()


def test_benchmark_images_are_held_out_from_training(vlf, bench):
    digest = lambda root: {hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.jpg")}  # noqa: E731
    assert not digest(vlf[0]) & digest(bench[0])


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_instructions": 0}, "n_instructions"),
        ({"image_size": 8}, "image_size"),
        ({"min_objects": 3, "max_objects": 2}, "min_objects"),
        ({"max_objects": 7}, "max_objects"),
        ({"unconditional_share": 1.5}, "unconditional_share"),
        ({"bad_rating_share": -0.1}, "bad_rating_share"),
        ({"source_mix": {"svit": 1.0}}, "llava"),
        ({"source_mix": {"LLaVA": 1.0}}, "lowercase"),
        ({"source_mix": {"llava": -1.0}}, "weight"),
        ({"kind_mix": {"poetry": 1.0}}, "unknown key"),
        ({"max_objects": 1, "min_objects": 1}, "relation"),
        ({"mmhal": 100}, "multiple of 8"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_config_rejects_bad_settings(overrides, message):
    with pytest.raises(ValueError, match=message):
        ShapeWorldConfig(**overrides)
