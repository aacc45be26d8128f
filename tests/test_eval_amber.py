"""AMBER: hand-worked generative and yes/no scores, noun extraction, word-vector rescue, loaders and their errors.

Offline mode throughout, plus the official yes/no scoring (no NLTK data needed); official generative parity with
the real AMBER files is in test_amber_official.py."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from mdpo_pipeline.core.eval.amber import (
    AMBER_SOURCE,
    amber_discriminative,
    amber_generative,
    amber_nouns,
    amber_scores,
    generative,
    load_amber,
    parse_yes_no,
)
from mdpo_pipeline.shapeworld import ShapeWorldConfig, generate_benchmarks

SMALL = {"n_instructions": 1, "image_size": 32, "amber_generative": 10, "amber_discriminative": 40,
         "object_halbench": 6, "mmhal": 8}

RELATION = {"dog": ["puppy"], "cat": ["kitten"], "person": ["man", "woman"], "car": ["vehicle"], "tree": [], "sky": []}
ANNOTATIONS = [
    {"id": 1, "type": "generative", "truth": ["dog", "person"], "hallu": ["cat", "car"]},
    {"id": 2, "type": "generative", "truth": ["tree"], "hallu": ["dog"]},
    {"id": 3, "type": "generative", "truth": ["car", "car"], "hallu": ["cat"]},
    {"id": 4, "type": "discriminative-hallucination", "truth": "no"},
    {"id": 5, "type": "discriminative-attribute-state", "truth": "yes"},
    {"id": 6, "type": "discriminative-attribute-number", "truth": "no"},
    {"id": 7, "type": "discriminative-relation", "truth": "yes"},
    {"id": 8, "type": "discriminative-relation", "truth": "no"},
    {"id": 9, "type": "relation", "truth": "no"},  # AMBER's release has 689 of these, all truth "no"
]
GENERATIVE = {
    1: "Two puppies under the sky near a kitten.",
    2: "A tree and a dog.",
    3: "The vehicle is red.",
}
DISCRIMINATIVE = {4: "No, there is no cat.", 5: "yes", 6: "Maybe.", 7: "No.", 8: "NO"}
OFFICIAL_YES_NO = {4: "No", 5: "Yes", 6: "no", 7: "No", 8: "No.", 9: "No"}


def _write_amber(root: Path, annotations=ANNOTATIONS, relation=RELATION) -> Path:
    data = root / "data"
    (data / "query").mkdir(parents=True)
    (root / "image").mkdir()
    (data / "relation.json").write_text(json.dumps(relation))
    (data / "safe_words.txt").write_text("sky\n")
    (data / "annotations.json").write_text(json.dumps(annotations))
    queries = [{"id": a["id"], "image": f"AMBER_{a['id']}.jpg", "query": "Describe this image."} for a in annotations]
    (data / "query" / "query_all.json").write_text(json.dumps(queries))
    return root


@pytest.fixture()
def amber(tmp_path):
    return load_amber(_write_amber(tmp_path / "amber"))


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    generate_benchmarks(ShapeWorldConfig(**SMALL), out)
    return out


def test_hand_worked_generative(amber):
    """Three generative answers (safe word: sky).

    1. "Two puppies under the sky near a kitten."  truth {dog, person}, hallu {cat, car}
       nouns puppy (-> dog), sky (safe, dropped), kitten (-> cat): kept [puppy, kitten]
       kitten names no truth object -> hallucinated; it names hallu "cat" -> cognised. Covers dog.
    2. "A tree and a dog."  truth {tree}, hallu {dog}
       kept [tree, dog]: dog hallucinated and cognised; covers tree.
    3. "The vehicle is red."  truth [car, car] -> {car} (de-duplicated), hallu {cat}
       kept [vehicle] (-> car): covers car.

    CHAIR = (1 + 1 + 0) hallucinated / (2 + 2 + 1) kept = 2/5
    Cover = (1 + 1 + 1) covered / (2 + 1 + 1) truth = 3/4
    Hal   = 2 answers with a hallucination / 3 = 2/3
    Cog   = (1 + 1 + 0) cognised / (2 + 1 + 1) hallu = 2/4
    With the official denominator (safe words kept): CHAIR = 2/6.
    """
    r = amber_generative(GENERATIVE, amber)
    assert r.chair == pytest.approx(2 / 5)
    assert r.cover == pytest.approx(3 / 4)
    assert r.hal == pytest.approx(2 / 3)
    assert r.cog == pytest.approx(1 / 2)
    assert (r.n_answers, r.n_nouns, r.n_hallucinated_nouns, r.n_truth, r.n_hallu) == (3, 5, 2, 4, 4)
    a1, a2, a3 = r.per_answer
    assert a1.nouns == ("puppy", "kitten") and a1.hallucinated == ("kitten",) and a1.cognised == ("cat",)
    assert a1.covered == ("dog",) and a2.hallucinated == ("dog",) and a3.covered == ("car",)
    assert r.vector_rescue == "off" and not r.vector_rescue_applied
    official = amber_generative(GENERATIVE, amber, safe_words_in_denominator=True)
    assert official.chair == pytest.approx(2 / 6)
    # The official inference file's list form gives the same numbers; yes/no ids are ignored here.
    rows = [{"id": i, "response": t} for i, t in {**GENERATIVE, **DISCRIMINATIVE}.items()]
    assert amber_generative(rows, amber).as_dict() == r.as_dict()


def test_hand_worked_discriminative(amber):
    """Five yes/no items, "no" positive.

    id 4 existence  truth no,  "No, there is no cat." -> no   (true no)
    id 5 attribute  truth yes, "yes"                  -> yes  (correct)
    id 6 attribute  truth no,  "Maybe."               -> unparseable (missed no)
    id 7 relation   truth yes, "No."                  -> no   (false no)
    id 8 relation   truth no,  "NO"                   -> no   (true no)

    overall: correct 3/5; answered no {4, 7, 8}, truth no {4, 6, 8}, true no {4, 8}
             precision 2/3, recall 2/3, F1 2/3, 1 unparseable
    existence: P 1, R 1, F1 1.  attribute: no "no" answered -> P 0, R 0/1, F1 0, accuracy 1/2.
    relation: P 1/2, R 1/1, F1 2/3.
    """
    r = amber_discriminative(DISCRIMINATIVE, amber)
    o = r.overall
    assert (o.n, o.n_correct, o.n_answer_no, o.n_truth_no, o.n_true_no, o.n_unparseable) == (5, 3, 3, 3, 2, 1)
    assert (o.accuracy, o.precision, o.recall) == (0.6, pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert r.f1 == pytest.approx(2 / 3)
    assert r.unparseable_ids == (6,)
    assert r.by_dimension["existence"].f1 == 1.0
    att = r.by_dimension["attribute"]
    assert (att.precision, att.recall, att.f1, att.accuracy, att.n_unparseable) == (0.0, 0.0, 0.0, 0.5, 1)
    rel = r.by_dimension["relation"]
    assert (rel.precision, rel.recall, rel.f1) == (0.5, 1.0, pytest.approx(2 / 3))
    assert set(r.by_type) == {
        "discriminative-hallucination", "discriminative-attribute-state", "discriminative-attribute-number",
        "discriminative-relation",
    }
    flat = r.as_dict()
    assert flat["f1"] == pytest.approx(2 / 3) and flat["relation_precision"] == 0.5 and flat["n_unparseable"] == 1


def test_amber_scores_splits_tasks(amber):
    """A mixed response set scores both tasks; a set with only one kind leaves the other None."""
    r = amber_scores({**GENERATIVE, **DISCRIMINATIVE}, amber)
    assert r.generative.chair == pytest.approx(2 / 5) and r.discriminative.f1 == pytest.approx(2 / 3)
    flat = r.as_dict()
    assert flat["generative_cover"] == pytest.approx(3 / 4) and flat["discriminative_existence_f1"] == 1.0
    assert amber_scores(DISCRIMINATIVE, amber).generative is None
    with pytest.raises(KeyError):
        amber_scores({99: "Yes"}, amber)
    with pytest.raises(ValueError, match="twice"):
        amber_scores([{"id": 4, "response": "No"}, {"id": 4, "response": "Yes"}], amber)


def test_parse_yes_no():
    """Only a leading yes/no counts."""
    assert parse_yes_no("Yes") == "yes" and parse_yes_no(' "No." ') == "no" and parse_yes_no("no, it is not") == "no"
    assert parse_yes_no("Nothing") is None and parse_yes_no("I think yes") is None and parse_yes_no("") is None


def test_noun_extraction_context():
    """Object words used as verbs are not nouns: modal "can", "to watch", "they rock", "can't rock"."""
    vocab = ["can", "watch", "rock", "man", "air-conditioning", "leave"]
    text = "The man can be seen holding a can of soda; they watch a watch. It can't rock. A rock."
    assert amber_nouns(text, vocab) == ["man", "can", "watch", "rock"]
    assert amber_nouns("An air-conditioning unit, two men and fallen leaves.", vocab) == [
        "air-conditioning", "man", "leave",
    ]


def test_extract_hook(amber):
    """An extractor's nouns replace rule-based ones: ["kitten", "red car"] for answer 1 -> kept [kitten, car],
    both hallucinated, both cognised (cat, car): CHAIR 2/2, Cog 2/2, Cover 0/2."""
    r = amber_generative({1: "ignored"}, amber, extract=lambda _: ["kitten", "red car", "lamp"])
    assert r.extractor == "custom"
    assert (r.chair, r.cog, r.cover) == (1.0, 1.0, 0.0)


def test_vector_rescue(amber):
    """With a similarity saying kitten ~ puppy (0.9 > 0.8), answer 1's kitten covers dog instead of being
    hallucinated (still cognised as cat): CHAIR = 1/5, Hal = 1/3. Without a model it is reported unavailable."""

    def sim(a: str, b: str) -> float:
        return 0.9 if {a, b} == {"kitten", "puppy"} else 0.0

    r = amber_generative(GENERATIVE, amber, vector_rescue=True, similarity=sim)
    assert r.vector_rescue_applied and r.vector_rescue == "applied"
    assert r.chair == pytest.approx(1 / 5) and r.hal == pytest.approx(1 / 3) and r.cog == pytest.approx(1 / 2)
    assert r.per_answer[0].rescued == ("kitten",)
    off = amber_generative(GENERATIVE, amber, vector_rescue=True, spacy_model="no_such_spacy_model")
    assert not off.vector_rescue_applied and off.vector_rescue.startswith("unavailable")
    assert off.chair == pytest.approx(2 / 5)
    assert off.as_dict()["vector_rescue_applied"] is False


def test_loader_errors(tmp_path):
    """Missing files and malformed annotations are named clearly."""
    with pytest.raises(FileNotFoundError, match="AMBER"):
        load_amber(tmp_path / "nowhere")
    root = _write_amber(tmp_path / "a")
    (root / "data" / "relation.json").unlink()
    with pytest.raises(FileNotFoundError, match="relation.json"):
        load_amber(root)
    root = _write_amber(tmp_path / "b")
    (root / "data" / "safe_words.txt").unlink()
    with pytest.raises(FileNotFoundError, match="safe_words.txt"):
        load_amber(root)
    root = _write_amber(tmp_path / "c")
    (root / "data" / "query" / "query_all.json").unlink()
    with pytest.raises(FileNotFoundError, match="query_all.json"):
        load_amber(root)
    with pytest.raises(ValueError, match="ids must run 1..N"):
        load_amber(_write_amber(tmp_path / "d", annotations=ANNOTATIONS[1:]))
    bad = [{**ANNOTATIONS[0], "truth": ["unicorn"]}]
    with pytest.raises(ValueError, match="unicorn"):
        load_amber(_write_amber(tmp_path / "e", annotations=bad))
    bad = [{"id": 1, "type": "discriminative-relation", "truth": "maybe"}]
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        load_amber(_write_amber(tmp_path / "f", annotations=bad))
    root = _write_amber(tmp_path / "g")
    (root / "data" / "annotations.json").write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_amber(root)


def test_shapeworld_amber(bench):
    """Generated split, same layout: truth answers give CHAIR 0, Cover 1, Hal 0 and F1 1; adding one hallu
    object to every description makes every answer hallucinate, with Cog = answers / hallu objects."""
    data = load_amber(bench / "amber")
    gen, dis = data.ids("generative"), data.ids("discriminative")
    assert (len(gen), len(dis)) == (10, 40) and len(data.queries) == 50
    assert data.image_dir is not None and all((data.image_dir / q.image).is_file() for q in data.queries)
    truth_answers = {}
    for i in gen:
        truth_answers[i] = " ".join(f"There is a {w}." for w in data.annotation(i)["truth"])
    for i in dis:
        truth_answers[i] = data.annotation(i)["truth"].capitalize() + "."
    r = amber_scores(truth_answers, data)
    g, d = r.generative, r.discriminative
    assert (g.chair, g.cover, g.hal, g.cog) == (0.0, 1.0, 0.0, 0.0)
    assert d.f1 == 1.0 and d.overall.accuracy == 1.0 and d.overall.n_unparseable == 0
    assert set(d.by_dimension) <= {"existence", "attribute", "relation"} and "existence" in d.by_dimension
    noisy = {i: truth_answers[i] + f" There is a {data.annotation(i)['hallu'][0]}." for i in gen}
    g = amber_generative(noisy, data)
    assert g.hal == 1.0 and g.cover == 1.0
    assert g.chair == pytest.approx(len(gen) / (g.n_truth + len(gen)))
    assert g.cog == pytest.approx(len(gen) / g.n_hallu)


def test_relation_items_and_modes(amber):
    """AMBER's `relation` items load and count under Relation; results say which mode made them; unknown modes and
    offline-only options in official mode are refused."""
    r = amber_scores({**GENERATIVE, **DISCRIMINATIVE, 9: "No"}, amber)
    assert r.mode == "offline" and r.generative.mode == "offline" and r.discriminative.mode == "offline"
    assert r.generative.official is None and r.discriminative.official is None
    rel = r.discriminative.by_dimension["relation"]
    assert (rel.n, rel.n_truth_no, rel.n_true_no) == (3, 2, 2) and "relation" in r.discriminative.by_type
    flat = r.as_dict()
    assert flat["mode"] == "offline" and flat["generative_similarity_rescue"].startswith("not applied")
    with pytest.raises(ValueError, match="mode"):
        amber_scores(GENERATIVE, amber, mode="exact")
    with pytest.raises(ValueError, match="offline mode only"):
        amber_generative(GENERATIVE, amber, mode="official", extract=lambda _: [])


def test_official_discriminative_hand_worked(amber):
    """Official yes/no scoring: only exactly "Yes"/"No" are answers ("no" and "No." are wrong and not "No").

    id 4 existence truth no  "No"  -> correct, answered No      id 7 relation truth yes "No"  -> wrong, answered No
    id 5 state     truth yes "Yes" -> correct                   id 8 relation truth no  "No." -> wrong
    id 6 number    truth no  "no"  -> wrong                     id 9 relation truth no  "No"  -> correct, answered No

    Every denominator starts at 0.001, values ×100 rounded to 1 decimal, F1 from the rounded P and R:
    overall   Accuracy 3/6.001 = 50.0, Precision 2/3.001 = 66.6, Recall 2/4.001 = 50.0,
              F1 = 2·.666·.5/(.666 + .5 + .0001) = 57.1
    existence 1/1.001 = 99.9 for all four (a perfect score prints 99.9 with one item)
    attribute Accuracy 1/(1.001 + 1.001 + 0.001) = 49.9 (state and number pooled), P = R = F1 = 0
    relation  Accuracy 1/3.001 = 33.3, Precision 1/2.001 = 50.0, Recall 1/2.001 = 50.0, F1 = .25/.50005 = 50.0
    """
    r = amber_discriminative(OFFICIAL_YES_NO, amber, mode="official")
    o = r.official
    assert r.mode == "official"
    assert o["overall"] == {"Accuracy": 50.0, "Precision": 66.6, "Recall": 50.0, "F1": 57.1}
    assert o["existence"] == {"Accuracy": 99.9, "Precision": 99.9, "Recall": 99.9, "F1": 99.9}
    assert o["attribute"] == {"Accuracy": 49.9, "Precision": 0.0, "Recall": 0.0, "F1": 0.0}
    assert o["relation"] == {"Accuracy": 33.3, "Precision": 50.0, "Recall": 50.0, "F1": 50.0}
    assert o["counts"]["asso_qa_correct_num"] == 3 and o["counts"]["qa_ans_no_num"] == 3
    assert (r.overall.n, r.overall.n_correct, r.overall.n_answer_no, r.overall.n_unparseable) == (6, 3, 3, 2)
    assert r.unparseable_ids == (6, 8)
    by_id = {p.id: p for p in r.per_item}
    assert (by_id[8].correct, by_id[8].answer_is_no, by_id[7].correct, by_id[7].answer_is_no) == (0, 0, 0, 1)
    assert by_id[9].counters == {"qa_correct_num": 1, "asso_qa_correct_num": 1, "qa_no_num": 1, "asso_qa_no_num": 1,
                                 "qa_correct_score": 1, "asso_qa_correct_score": 1, "qa_no_score": 1,
                                 "asso_qa_no_score": 1, "qa_ans_no_num": 1, "asso_qa_ans_no_num": 1,
                                 "qa_ans_no_score": 1, "asso_qa_ans_no_score": 1}
    detail = r.as_dict(detail=True)
    assert detail["official"] == o and len(detail["per_item"]) == 6
    # Offline mode reads the same answers leniently: "no" and "No." count as "No".
    assert amber_discriminative(OFFICIAL_YES_NO, amber).overall.n_unparseable == 0


def test_images_checked_only_when_needed(tmp_path):
    """Scoring needs data/ alone: a missing image/ folder is an error, naming it and where AMBER's images come
    from, only when images are asked for."""
    root = _write_amber(tmp_path / "a")
    data = load_amber(root)
    (data.image_dir / "AMBER_1.jpg").write_bytes(b"jpg")
    assert data.has_images and data.image_path(1) == root / "image" / "AMBER_1.jpg"
    with pytest.raises(FileNotFoundError, match="AMBER_2.jpg"):
        data.image_path(data.queries[1])
    with pytest.raises(KeyError):
        data.image_path(99)
    (root / "image" / "AMBER_1.jpg").unlink()
    (root / "image").rmdir()
    data = load_amber(root)
    assert not data.has_images
    assert amber_scores({**GENERATIVE, **DISCRIMINATIVE}, data).generative.n_answers == 3
    for use in (lambda: data.image_dir, lambda: data.image_path(1), lambda: load_amber(root, require_images=True)):
        with pytest.raises(FileNotFoundError) as err:
            use()
        assert str(root / "image") in str(err.value) and AMBER_SOURCE in str(err.value)
    elsewhere = tmp_path / "images"
    elsewhere.mkdir()
    assert load_amber(root, image_dir=elsewhere, require_images=True).image_dir == elsewhere


def test_missing_data_names_source(tmp_path):
    """A missing data/ folder or data file names the path and AMBER's GitHub release."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        load_amber(empty)
    assert str(empty / "data") in str(err.value) and AMBER_SOURCE in str(err.value)
    for name in ("relation.json", "annotations.json", "safe_words.txt"):
        root = _write_amber(tmp_path / name)
        (root / "data" / name).unlink()
        with pytest.raises(FileNotFoundError) as err:
            load_amber(root)
        assert str(root / "data" / name) in str(err.value) and AMBER_SOURCE in str(err.value)


class _FakeDoc:
    def __init__(self, text: str, table: dict):
        self.text, self.table = text, table

    def similarity(self, other: _FakeDoc) -> float:
        return self.table.get(frozenset((self.text, other.text)), 1.0 if self.text == other.text else 0.0)


@pytest.fixture()
def fake_spacy(monkeypatch):
    """A stand-in `spacy` module whose models are given by the test: {name: (n_vectors, similarity table)}."""
    models: dict = {}

    def load(name):
        if name not in models:
            raise OSError(f"[E050] Can't find model '{name}'.")
        n_vectors, table = models[name]
        nlp = lambda text: _FakeDoc(text, table)  # noqa: E731
        nlp.vocab = types.SimpleNamespace(vectors=types.SimpleNamespace(shape=(n_vectors, 300 if n_vectors else 0)))
        return nlp

    monkeypatch.setitem(sys.modules, "spacy", types.SimpleNamespace(load=load))
    generative._spacy_vectors.cache_clear()
    yield models
    generative._spacy_vectors.cache_clear()


def test_spacy_rescue_paths(amber, fake_spacy):
    """The rescue loads a spaCy model with vectors by name and reports it; a model without vectors or one that
    does not load is reported with the reason, and the scores stay those without the rescue."""
    fake_spacy["lg"] = (100, {frozenset(("kitten", "puppy")): 0.9})
    fake_spacy["sm"] = (0, {})
    r = amber_generative(GENERATIVE, amber, vector_rescue=True, spacy_model="lg")
    assert r.vector_rescue == "applied" and r.similarity_rescue == "applied (lg)"
    assert r.chair == pytest.approx(1 / 5) and r.per_answer[0].rescued == ("kitten",)
    for model, why in (("sm", "has no word vectors"), ("md", "does not load")):
        r = amber_generative(GENERATIVE, amber, vector_rescue=True, spacy_model=model)
        assert r.vector_rescue.startswith("unavailable") and why in r.vector_rescue
        assert r.similarity_rescue.startswith("not applied") and why in r.similarity_rescue
        assert r.chair == pytest.approx(2 / 5)
