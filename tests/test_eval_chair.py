"""Object HalBench CHAIR: hand-worked scores, phrase precedence, lemmas, COCO rules, loaders and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdpo_pipeline.core.eval.chair import (
    SynonymTable,
    chair_scores,
    load_object_halbench,
    load_object_halbench_coco,
    read_questions,
    tokenize,
)
from mdpo_pipeline.shapeworld import ShapeWorldConfig, generate_benchmarks, synonym_lines

SMALL = {"n_instructions": 1, "image_size": 32, "amber_generative": 10, "amber_discriminative": 40,
         "object_halbench": 6, "mmhal": 8}

#: Plurals deliberately left out ("stars", "dots"), so only lemmatisation can match them.
LINES = [
    "circle, disc, dot, circles",
    "half moon, crescent",
    "moon, full moon",
    "plus sign, plus",
    "star, pentagram",
    "square, box",
]


@pytest.fixture(scope="module")
def table() -> SynonymTable:
    return SynonymTable.from_lines(LINES)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    generate_benchmarks(ShapeWorldConfig(**SMALL), out)
    return out


def _names(table: SynonymTable, text: str) -> list[tuple[str, str]]:
    return [(m.phrase, m.category) for m in table.mentions(text)]


def test_hand_worked_chair(table):
    """Three answers, two truth objects each.

    1. "A red circle and two stars."                 truth {circle, star}
       mentions circle, star ("stars" by lemma)        -> 0 hallucinated; covers circle, star
    2. "A half moon beside a box and a plus sign."   truth {half moon, circle}
       mentions half moon, square (box), plus sign    -> square, plus sign hallucinated; covers half moon
    3. "Three dots, a pentagram and another star."   truth {circle, square}
       mentions circle (dots), star (pentagram), star -> star, star hallucinated; covers circle

    CHAIR_s = 2 answers with a hallucination / 3 = 2/3
    CHAIR_i = (0 + 2 + 2) hallucinated mentions / (2 + 3 + 3) mentions = 4/8 = 0.5
    recall  = (2 + 1 + 1) covered / (2 + 2 + 2) truth objects = 4/6 = 2/3
    """
    answers = [
        "A red circle and two stars.",
        "A half moon beside a box and a plus sign.",
        "Three dots, a pentagram and another star.",
    ]
    truths = [["circle", "star"], ["half moon", "circle"], ["circle", "square"]]
    r = chair_scores(answers, truths, table)
    assert r.chair_s == pytest.approx(2 / 3)
    assert r.chair_i == pytest.approx(0.5)
    assert r.recall == pytest.approx(2 / 3)
    assert (r.n_answers, r.n_hallucinated_answers, r.n_mentions, r.n_hallucinated_mentions) == (3, 2, 8, 4)
    assert (r.n_truth, r.n_covered, r.extractor) == (6, 4, "rule")
    a1, a2, a3 = r.per_answer
    assert a1.mentioned == ("circle", "star") and a1.hallucinated == ()
    assert a2.mentioned == ("half moon", "square", "plus sign")
    assert a2.hallucinated == ("square", "plus sign") and a2.covered == ("half moon",)
    assert a3.words == ("dot", "pentagram", "star") and a3.hallucinated == ("star", "star")
    assert a3.chair_i == pytest.approx(2 / 3)
    flat = r.as_dict()
    assert "per_answer" not in flat and flat["chair_i"] == 0.5
    assert r.as_dict(detail=True)["per_answer"][1]["hallucinated"] == ["square", "plus sign"]


def test_two_word_phrases_win(table):
    """"half moon" is one half-moon mention, never also the separate category "moon"; "full moon" is a moon."""
    assert _names(table, "a half moon") == [("half moon", "half moon")]
    assert _names(table, "a moon and a full moon") == [("moon", "moon"), ("full moon", "moon")]
    assert _names(table, "two half moons") == [("half moon", "half moon")]  # head noun lemmatised
    assert _names(table, "a half-moon") == [("half moon", "half moon")]  # unknown hyphenated word split
    r = chair_scores(["A half moon."], [["half moon"]], table)
    assert r.chair_s == 0 and r.n_mentions == 1


def test_shapeworld_synonyms_two_words_and_lemmas():
    """ShapeWorld's table: "crescent moon" and "x mark" are single mentions; irregular plurals resolve."""
    sw = SynonymTable.from_lines(synonym_lines())
    assert sw.objects("a crescent moon") == ["half moon"]
    assert sw.objects("the X mark and a plus symbol") == ["cross", "plus sign"]
    assert sw.objects("hexes, rhombi and the star's tip") == ["hexagon", "diamond", "star"]
    assert sw.canonical("Moons") == "half moon"


def test_plural_and_lemma(table):
    """"two stars" -> star although "stars" is not in the list; "circles" is matched as written."""
    assert table.objects("two stars") == ["star"]
    assert table.objects("circles") == ["circle"]
    assert table.objects("pentagrams and boxes") == ["star", "square"]
    assert tokenize("The man's dog-house; it can't") == ["the", "man", "dog-house", "it", "can't"]


def test_coco_rules():
    """CHAIR's COCO rules: "baby elephant" is no person, "toilet seat" is the toilet, "seat" with a toilet
    is dropped, and "train track" is no train."""
    lines = ["person, man, baby, passenger", "elephant", "train", "toilet", "chair, seat", "tie, necktie"]
    plain = SynonymTable.from_lines(lines)
    coco = SynonymTable.from_lines(lines, coco_rules=True)
    assert plain.objects("a baby elephant") == ["person", "elephant"]
    assert coco.objects("a baby elephant") == ["elephant"]
    assert coco.objects("two passenger trains") == ["train"]
    assert coco.objects("a toilet seat") == ["toilet"]
    assert [(m.phrase, m.category) for m in coco.mentions("a toilet seat and a seat")] == [("toilet", "toilet")]
    assert coco.objects("the seat of the toilet") == ["toilet"]
    assert coco.objects("a man on a seat") == ["person", "chair"]
    assert coco.objects("a bow tie") == ["tie"]
    assert plain.objects("a train track") == ["train"]
    assert coco.objects("a train track") == []  # names no object of the list


def test_extract_hook(table):
    """An extractor's phrases map through the table; one naming nothing is reported, not counted.

    extractor -> ["stars", "red plus sign", "lamp"]: mentions star, plus sign; truth {star} ->
    CHAIR_i = 1/2, CHAIR_s = 1, recall = 1/1; "lamp" is unmatched.
    """
    r = chair_scores(["ignored text"], [["star"]], table, extract=lambda _: ["stars", "red plus sign", "lamp"])
    assert r.extractor == "custom"
    assert r.per_answer[0].mentioned == ("star", "plus sign")
    assert r.per_answer[0].unmatched == ("lamp",)
    assert (r.chair_i, r.chair_s, r.recall) == (0.5, 1.0, 1.0)
    with pytest.raises(TypeError):
        chair_scores(["x"], [["star"]], table, extract=lambda _: "star")


def test_empty_and_bad_inputs(table):
    """No mentions: CHAIR_i is 0, not a division error; unknown truth words and length mismatches raise."""
    r = chair_scores(["Nothing to see."], [["star"]], table)
    assert (r.chair_s, r.chair_i, r.recall) == (0.0, 0.0, 0.0)
    assert chair_scores([], [], table).n_answers == 0
    with pytest.raises(ValueError, match="not in the synonym list"):
        chair_scores(["a star"], [["lamp"]], table)
    with pytest.raises(ValueError, match="equal length"):
        chair_scores(["a", "b"], [["star"]], table)
    with pytest.raises(TypeError):
        chair_scores(["a"], ["star"], table)


def test_synonym_file_errors(tmp_path):
    """Missing, empty and non-CHAIR synonym files fail with a message naming the file."""
    with pytest.raises(FileNotFoundError, match="synonyms.txt"):
        SynonymTable.from_file(tmp_path / "synonyms.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no synonym lines"):
        SynonymTable.from_file(empty)
    bad = tmp_path / "bad.txt"
    bad.write_text('{"circle": ["disc"]}\n')
    with pytest.raises(ValueError, match=r"bad.txt:1"):
        SynonymTable.from_file(bad)


def test_shapeworld_loader_and_perfect_answers(bench):
    """Generated split: truth = instance categories ∪ caption objects (= the scene's shapes in ShapeWorld);
    answers naming exactly the truth give CHAIR 0 and recall 1; adding an absent shape hallucinates."""
    hb = load_object_halbench(bench / "object_halbench")
    assert len(hb.items) == 6 and hb.image_dir is not None
    instances = json.loads((bench / "object_halbench" / "annotations" / "instances.json").read_text())
    names = {c["id"]: c["name"] for c in instances["categories"]}
    for item in hb.items:
        expected = {names[a["category_id"]] for a in instances["annotations"] if a["image_id"] == item.image_id}
        assert hb.truth[item.image_id] == expected
        assert (hb.image_dir / item.image).is_file()
    perfect = {it.image_id: " ".join(f"There is a {c}." for c in sorted(hb.truth[it.image_id])) for it in hb.items}
    r = hb.score(perfect)
    assert (r.chair_s, r.chair_i, r.recall) == (0.0, 0.0, 1.0)
    extra = {}
    for it in hb.items:
        absent = next(c for c in hb.table.categories if c not in hb.truth[it.image_id])
        extra[it.image_id] = perfect[it.image_id] + f" There is a {absent}."
    r = hb.score(extra)
    n = len(hb.items)
    assert r.chair_s == 1.0 and r.recall == 1.0
    assert r.chair_i == pytest.approx(n / (r.n_truth + n))
    with pytest.raises(KeyError):
        hb.score({1: "a star"})


def test_shapeworld_loader_errors(bench, tmp_path):
    """A missing split folder, prompt file or annotation file is named in the error."""
    with pytest.raises(FileNotFoundError, match="generate_benchmarks"):
        load_object_halbench(tmp_path / "nowhere")
    (tmp_path / "hb").mkdir()
    (tmp_path / "hb" / "synonyms.txt").write_text("\n".join(synonym_lines()))
    with pytest.raises(FileNotFoundError, match="prompts.jsonl"):
        load_object_halbench(tmp_path / "hb")
    (tmp_path / "hb" / "prompts.jsonl").write_text((bench / "object_halbench" / "prompts.jsonl").read_text())
    with pytest.raises(FileNotFoundError, match="instances.json"):
        load_object_halbench(tmp_path / "hb")


def _write_coco(folder: Path) -> dict[str, Path]:
    """Tiny files in the real layout: image 1 has a person and a dog; image 2 has no instances; image 3 is a
    train2014 image with a dog (both splits are read, as the official scorer reads them)."""
    folder.mkdir()
    images = [{"id": 1, "file_name": "COCO_val2014_000000000001.jpg"}, {"id": 2, "file_name": "x.jpg"}]
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 70, "name": "toilet"}]
    instances = {"images": images, "categories": categories, "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1}, {"id": 2, "image_id": 1, "category_id": 18},
    ]}
    captions = {"images": images, "annotations": [
        {"id": 1, "image_id": 1, "caption": "A man throws a Frisbee to his puppy."},
        {"id": 2, "image_id": 2, "caption": "An empty room with a toilet seat."},
    ]}
    train_images = [{"id": 3, "file_name": "COCO_train2014_000000000003.jpg"}]
    train_instances = {"images": train_images, "categories": categories, "annotations": [
        {"id": 3, "image_id": 3, "category_id": 18},
    ]}
    train_captions = {"images": train_images, "annotations": [{"id": 3, "image_id": 3, "caption": "A dog."}]}
    (folder / "instances_val2014.json").write_text(json.dumps(instances))
    (folder / "captions_val2014.json").write_text(json.dumps(captions))
    (folder / "instances_train2014.json").write_text(json.dumps(train_instances))
    (folder / "captions_train2014.json").write_text(json.dumps(train_captions))
    questions = folder / "obj_halbench_300_with_image.jsonl"
    rows = [
        {"org_idx": 0, "image_id": 1, "question": "Provide a thorough description of the given image.",
         "image": "/9j/4AAQ" * 40},
        {"org_idx": 1, "image_id": 2, "question": "Describe the following image in detail.", "image": "/9j/4AAQ"},
    ]
    questions.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    synonyms = folder / "synonyms.txt"
    synonyms.write_text("person, man, woman, people, baby\ndog, puppy\nfrisbee\ntoilet\nchair, seat\n")
    return {"questions": questions, "synonyms": synonyms}


def test_coco_layout_loader(tmp_path):
    """Real layout: truth of image 1 = {person, dog} ∪ caption {person, frisbee, dog}; image 2 has no
    instances, its caption gives the toilet (the seat is part of it, not a chair)."""
    files = _write_coco(tmp_path / "coco")
    hb = load_object_halbench_coco(files["questions"], tmp_path / "coco", files["synonyms"])
    assert hb.truth == {1: frozenset({"person", "dog", "frisbee"}), 2: frozenset({"toilet"})}
    assert [it.image for it in hb.items] == ["COCO_val2014_000000000001.jpg", "COCO_val2014_000000000002.jpg"]
    r = hb.score({1: "A woman and two dogs play with a frisbee.", 2: "A chair next to a toilet."})
    assert r.per_answer[1].hallucinated == ("chair",)
    assert (r.chair_s, r.chair_i) == (0.5, pytest.approx(1 / 5))  # 1 hallucinated of 3 + 2 mentions
    assert r.mode == "offline" and r.official is None and r.as_dict()["mode"] == "offline"
    assert [a.image_id for a in r.per_answer] == [1, 2]
    assert hb.mode == "offline" and hb.image_dir is None  # scoring needs no images


def test_coco_loader_reads_train2014_too(tmp_path):
    """An image annotated only in train2014 gets its truth from there."""
    files = _write_coco(tmp_path / "coco")
    files["questions"].write_text(json.dumps({"image_id": 3, "question": "Describe."}) + "\n")
    hb = load_object_halbench_coco(files["questions"], tmp_path / "coco", files["synonyms"])
    assert hb.truth == {3: frozenset({"dog"})}
    with pytest.raises(FileNotFoundError, match="images"):
        hb.image_path(hb.items[0])


def test_coco_layout_errors(tmp_path):
    """Each missing real file is named with what to supply; prompts for unknown images are refused."""
    files = _write_coco(tmp_path / "coco")
    with pytest.raises(FileNotFoundError, match="synonyms"):
        load_object_halbench_coco(files["questions"], tmp_path / "coco", tmp_path / "none.txt")
    with pytest.raises(FileNotFoundError, match="prompt file"):
        load_object_halbench_coco(tmp_path / "none.jsonl", tmp_path / "coco", files["synonyms"])
    (tmp_path / "coco" / "captions_val2014.json").rename(tmp_path / "captions.json")
    with pytest.raises(FileNotFoundError, match="captions_val2014.json"):
        load_object_halbench_coco(files["questions"], tmp_path / "coco", files["synonyms"])
    (tmp_path / "captions.json").rename(tmp_path / "coco" / "captions_val2014.json")
    (tmp_path / "coco" / "instances_train2014.json").rename(tmp_path / "instances.json")
    with pytest.raises(FileNotFoundError, match=r"instances_train2014.json.*annotations_trainval2014"):
        load_object_halbench_coco(files["questions"], tmp_path / "coco", files["synonyms"])
    (tmp_path / "instances.json").rename(tmp_path / "coco" / "instances_train2014.json")
    with pytest.raises(FileNotFoundError, match=r"nowhere.*COCO 2014 annotations"):
        load_object_halbench_coco(files["questions"], tmp_path / "nowhere", files["synonyms"])
    with pytest.raises(FileNotFoundError, match="RLHF-V"):
        load_object_halbench_coco(files["questions"], tmp_path / "coco", None)
    with pytest.raises(FileNotFoundError, match="COCO 2014 annotations"):
        load_object_halbench_coco(files["questions"], None, files["synonyms"])
    with pytest.raises(ValueError, match="mode"):
        load_object_halbench_coco(files["questions"], tmp_path / "coco", files["synonyms"], mode="fast")
    (tmp_path / "coco" / "instances_val2014.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_object_halbench_coco(files["questions"], tmp_path / "coco", files["synonyms"])
    files["questions"].write_text(json.dumps({"image_id": 999, "question": "Describe."}) + "\n")
    _write_coco(tmp_path / "coco2")
    with pytest.raises(ValueError, match="999"):
        load_object_halbench_coco(files["questions"], tmp_path / "coco2", tmp_path / "coco2" / "synonyms.txt")


def test_read_questions_errors(tmp_path):
    """Prompt lines need image_id and question."""
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"image_id": 1}) + "\n")
    with pytest.raises(ValueError, match="question"):
        read_questions(path)
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="q.jsonl:1"):
        read_questions(path)


def test_llm_object_extraction_mode_maps_the_llms_list_through_the_synonyms():
    """The LLM says "1. Half moons" and "- star."; both go through the same synonym table as rule-based words
    (→ half moon, star); "NONE" and blank lines are dropped; unmatched phrases are reported, not counted."""
    from mdpo_pipeline.core.eval.chair import SynonymTable, chair_scores, llm_extractor, parse_object_list

    assert parse_object_list("1. Half moons\n- star.\n\nNONE\n• a blue tree") == ["Half moons", "star", "a blue tree"]
    table = SynonymTable.from_lines(["half moon, crescent", "star", "ring"])
    seen = []

    def fake_llm(prompt: str) -> str:
        seen.append(prompt)
        return "1. Half moons\n- star.\n- tree"

    result = chair_scores(["anything"], [["star"]], table, extract=llm_extractor(fake_llm))
    assert result.extractor == "custom" and seen[0].endswith("anything")
    assert result.per_answer[0].mentioned == ("half moon", "star") and result.per_answer[0].unmatched == ("tree",)
    assert result.chair_s == 1.0 and result.chair_i == 0.5 and result.recall == 1.0
