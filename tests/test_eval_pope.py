"""POPE: the official answer reading and metrics worked by hand, the official file layout, ShapeWorld's split."""

from __future__ import annotations

import json

import pytest

from mdpo_pipeline.core.eval.pope import (
    PopeFileError,
    PopeItem,
    load_pope,
    parse_answer,
    pope_scores,
    read_pope_answers,
)


@pytest.mark.parametrize(("text", "want"), [
    ("Yes, there is a dog in the image.", "yes"),
    ("No, there is no dog.", "no"),
    ("There is not a dog. Yes.", "no"),
    ("Yes. No dog though", "yes"),  # only the first sentence counts
    ("NO", "yes"),  # the official word list is No / no / not, case-sensitive
    ("No.", "no"),
    ("I don't think so", "yes"),  # "don't" is not "not"
    ("", "yes"),
])
def test_official_answer_reading(text, want):
    assert parse_answer(text) == want


def _item(i, label, split="random"):
    return PopeItem(f"{split}-{i}", split, i, f"{i}.jpg", "Is there a dog in the image?", label)


def test_metrics_worked_by_hand():
    # labels:  y y y n n ;  answers: y y n y n  ->  TP 2, FN 1, FP 1, TN 1
    items = [_item(i, label) for i, label in enumerate(["yes", "yes", "yes", "no", "no"], start=1)]
    answers = {it.id: a for it, a in zip(items, ["Yes", "Yes", "No", "Yes", "No"])}
    scores = pope_scores(answers, items)
    m = scores["random"]
    assert (m.n, m.accuracy, m.precision, m.recall, m.yes_ratio) == (5, 3 / 5, 2 / 3, 2 / 3, 3 / 5)
    assert m.f1 == pytest.approx(2 / 3)
    assert scores["all"] == m and set(scores) == {"random", "all"}
    with pytest.raises(KeyError, match="1 POPE questions have no answer"):
        pope_scores({k: v for k, v in answers.items() if k != "random-5"}, items)


def test_official_files_load_and_answers_read(tmp_path):
    for split in ("random", "popular", "adversarial"):
        rows = [{"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the image?",
                 "label": "yes"},
                {"question_id": 2, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a cup in the image?",
                 "label": "no"}]
        (tmp_path / f"coco_pope_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_pope(tmp_path)
    assert len(items) == 6 and items[0].id == "random-1" and items[-1].split == "adversarial"
    (tmp_path / "answers.jsonl").write_text('{"question_id": 1, "text": "Yes"}\n{"question_id": 2, "answer": "No"}\n')
    assert read_pope_answers(tmp_path / "answers.jsonl", "popular") == {"popular-1": "Yes", "popular-2": "No"}
    (tmp_path / "coco_pope_random.json").unlink()
    with pytest.raises(PopeFileError, match="no \\*_pope_random.json: .*AoiDragon/POPE"):
        load_pope(tmp_path)
    with pytest.raises(PopeFileError, match="does not exist"):
        load_pope(tmp_path / "nope")


def test_shapeworld_pope_split(tmp_path):
    from mdpo_pipeline.shapeworld import ShapeWorldConfig
    from mdpo_pipeline.shapeworld.generate import _write_pope

    cfg = ShapeWorldConfig(pope=12, image_size=32)
    summary = _write_pope(cfg, tmp_path / "pope", progress=False)
    items = load_pope(tmp_path / "pope")
    assert summary["images"] == 12 and len(items) == sum(summary["questions"].values())
    for split in ("random", "popular", "adversarial"):
        labels = [it.label for it in items if it.split == split]
        assert labels.count("yes") == labels.count("no") > 0, "balanced, as POPE"
    assert all((tmp_path / "pope" / "images" / it.image).is_file() for it in items)
    again = tmp_path / "again"
    _write_pope(cfg, again, progress=False)
    assert (again / "shapeworld_pope_adversarial.json").read_bytes() == (
        tmp_path / "pope" / "shapeworld_pope_adversarial.json").read_bytes()
