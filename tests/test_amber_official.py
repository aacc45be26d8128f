"""AMBER official mode against the conformance fixtures: junyangwang0410/AMBER inference.py's own output on 1,004
generative and 14,216 yes/no answers, with the real AMBER data files, equal to the last digit, aggregate and per item.

The fixtures live outside the repository, in ../shared/conformance (see its README.md); without them these tests
skip, saying so, and fail under CI (tests/conformance.py). NLTK data comes from its nltk_data/ folder."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from mdpo_pipeline.core.eval.amber import (
    AMBER_SOURCE,
    NLTK_INSTALL,
    AmberResult,
    NLTKDataMissing,
    amber_generative,
    amber_scores,
    load_amber,
    nltk_tools,
)

from tests.conformance import CONFORMANCE, needs

REAL = CONFORMANCE / "real" / "amber"
GENERATIVE_FIELDS = ("tokens", "tags", "nouns", "vocab_nouns", "vocab_noun_status", "hallucinated_nouns", "truth",
                     "truth_covered", "covered_truth", "hallu", "hallu_covered", "mentioned_hallu", "counts",
                     "hallucination_free")

pytestmark = needs(CONFORMANCE / "amber", REAL, CONFORMANCE / "nltk_data")


def _read(name: str):
    return json.loads((CONFORMANCE / "amber" / name).read_text(encoding="utf-8"))


def _not_private(top: Path) -> bool:
    """True when nltk >= 3.10 would refuse some of ``top``: owned by another account or group/other-writable."""
    for path in [top, *top.rglob("*")]:
        st = path.lstat()
        if st.st_uid not in (os.geteuid(), 0) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return True
    return False


@pytest.fixture(scope="module")
def nltk_data(tmp_path_factory):
    """NLTK_DATA = the shared nltk_data/, or a private copy of it when its permissions would make NLTK refuse it."""
    import nltk

    source = CONFORMANCE / "nltk_data"
    folder = source
    if _not_private(source):
        folder = tmp_path_factory.mktemp("nltk") / "nltk_data"
        shutil.copytree(source, folder, symlinks=False)
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NLTK_DATA", str(folder))
        # nltk reads NLTK_DATA once, at import: another test may have imported it already.
        mp.setattr(nltk.data, "path", [str(folder), *nltk.data.path])
        nltk_tools._nltk_tools.cache_clear()
        yield folder
    nltk_tools._nltk_tools.cache_clear()


@pytest.fixture(scope="module")
def real_amber():
    return load_amber(REAL)


@pytest.fixture(scope="module")
def official(nltk_data, real_amber):
    """Both fixture answer files scored in one official run (rescue off, as the fixtures were made), timed."""
    answers = _read("generative_answers.json") + _read("discriminative_answers.json")
    start = time.perf_counter()
    result = amber_scores(answers, real_amber, mode="official", vector_rescue=False)
    seconds = time.perf_counter() - start
    print(f"official AMBER scoring of {len(answers)} answers: {seconds:.1f} s (NLTK loading included)")
    return result, seconds


def test_real_release_loads(real_amber):
    """All 15,220 annotations load (689 of type `relation`) without the image folder, which is named, with where
    it comes from, only when images are asked for."""
    types = [a["type"] for a in real_amber.annotations]
    assert len(types) == 15220 and types.count("relation") == 689 and len(real_amber.queries) == 15220
    assert len(real_amber.ids("generative")) == 1004 and len(real_amber.ids("discriminative")) == 14216
    assert real_amber.official_safe_words == ("orange", "snack", "line", "camera", "light", "shoe", "sign", "range",
                                              "individual")
    assert real_amber.relation["car"][0] == "window" and not real_amber.has_images
    with pytest.raises(FileNotFoundError) as err:
        real_amber.image_path(1)
    assert str(REAL / "image") in str(err.value) and AMBER_SOURCE in str(err.value)


def test_missing_relation_json_names_it(tmp_path):
    """A data/ folder without relation.json stops with its path and AMBER's release as the source."""
    data = tmp_path / "amber" / "data"
    data.mkdir(parents=True)
    for entry in (REAL / "data").iterdir():
        if entry.name != "relation.json":
            (data / entry.name).symlink_to(entry)
    with pytest.raises(FileNotFoundError) as err:
        load_amber(tmp_path / "amber")
    assert str(data / "relation.json") in str(err.value) and AMBER_SOURCE in str(err.value)


def test_generative_aggregate(official):
    """CHAIR, Cover, Hal, Cog (and the official counters) equal inference.py's, to the last digit."""
    result, _ = official
    expected = _read("generative_official.json")["aggregate"]
    g = result.generative
    assert g.mode == "official" and g.extractor == "nltk" and result.mode == "official"
    assert g.similarity_rescue == "not applied: off (vector_rescue=False)"
    assert {k: g.official[k] for k in ("CHAIR", "Cover", "Hal", "Cog")} == {
        k: expected[k] for k in ("CHAIR", "Cover", "Hal", "Cog")
    }
    assert g.official == expected
    c = expected["counts"]
    assert (g.n_nouns, g.n_hallucinated_nouns, g.n_truth, g.n_covered) == (
        c["chair_num"], c["chair_score"], c["safe_cover_num"], c["safe_cover_score"]
    )
    assert g.chair == pytest.approx(c["chair_score"] / c["chair_num"])
    printed = AmberResult(g, None, "official").official_stdout()
    assert printed == _read("generative_official.json")["official_stdout"]


def test_generative_per_item(official):
    """Every answer's tokens, tags, nouns, vocabulary nouns and their status, covered truth, mentioned hallu and
    counter increments equal the official run's."""
    result, _ = official
    expected = _read("generative_official.json")["per_item"]
    mine = [a.as_dict() for a in result.generative.per_answer]
    assert [a["id"] for a in mine] == [e["id"] for e in expected]
    differing = [(a["id"], f) for a, e in zip(mine, expected) for f in GENERATIVE_FIELDS if a[f] != e[f]]
    equal = len(expected) - len({i for i, _ in differing})
    print(f"generative per item: {equal}/{len(expected)} equal")
    assert not differing[:20]
    assert equal == 1004


def test_discriminative_aggregate(official):
    """Accuracy, Precision, Recall, F1 overall and per dimension (and the counters) equal inference.py's."""
    result, _ = official
    expected = _read("discriminative_official.json")["aggregate"]
    d = result.discriminative
    assert d.mode == "official"
    for section in ("overall", "existence", "attribute", "state", "number", "action", "relation"):
        assert d.official[section] == expected[section], section
    assert d.official == expected
    assert d.overall.n == 14216 and d.by_dimension["relation"].n == 1664
    printed = AmberResult(None, d, "official").official_stdout()
    assert printed == _read("discriminative_official.json")["official_stdout"]


def test_discriminative_per_item(official):
    """Every yes/no answer's correctness, "No"-ness and counter increments equal the official run's."""
    result, _ = official
    expected = _read("discriminative_official.json")["per_item"]
    mine = result.discriminative.per_item
    assert [p.id for p in mine] == [e["id"] for e in expected]
    differing = [
        p.id for p, e in zip(mine, expected)
        if (p.type, p.truth, p.response, p.correct, p.answer_is_no, dict(p.counters))
        != (e["type"], e["truth"], e["response"], e["official_correct"], e["official_answer_is_no"], e["counters"])
    ]
    print(f"discriminative per item: {len(expected) - len(differing)}/{len(expected)} equal")
    assert differing == []


def test_official_scoring_takes_seconds(official):
    """1,004 + 14,216 answers in well under a minute (NLTK's tagger and WordNet load once; measured ~15 s)."""
    _, seconds = official
    assert seconds < 90


def test_rescue_applied_where_official_puts_it(nltk_data, real_amber):
    """Image 1: truth sky, forest, grass (~ground), person, lake, mountain, road (~ground); hallu cloud, sun,
    bird (~bill), dog, flower. Answer "A cat and a horse.": both nouns hallucinated without the rescue.

    With a similarity where cat ~ bill 0.9, cat ~ dog 0.95, cat ~ ground 0.81, horse ~ person 0.8 (threshold 0.8,
    strict): cat marks the first similar hallu word's object (bill -> bird: associations come before the objects,
    so not dog), then the first similar truth word, ground, which is grass's association before road's -> grass is
    covered and cat is not hallucinated; horse at exactly 0.8 stays hallucinated.
    """
    table = {("cat", "bill"): 0.9, ("cat", "dog"): 0.95, ("cat", "ground"): 0.81, ("horse", "person"): 0.8}

    def toy_vectors(a: str, b: str) -> float:
        return table.get((a, b), 0.0)

    answer = {1: "A cat and a horse."}
    off = amber_generative(answer, real_amber, mode="official", vector_rescue=False).per_answer[0]
    assert off.vocab_nouns == ("cat", "horse") and off.hallucinated_nouns == ("cat", "horse")
    assert sum(off.truth_covered) == 0 and sum(off.hallu_covered) == 0
    r = amber_generative(answer, real_amber, mode="official", similarity=toy_vectors)
    assert r.similarity_rescue == "applied (toy_vectors)" and r.vector_rescue_applied
    a = r.per_answer[0]
    assert a.vocab_noun_status == ("rescued", "hallucinated") and a.rescued_nouns == ("cat",)
    assert a.hallucinated_nouns == ("horse",) and a.covered_truth == ("grass",) and a.mentioned_hallu == ("bird",)
    assert a.counts == {"chair_score": 1, "chair_num": 2, "safe_cover_score": 1, "safe_cover_num": 7,
                        "hallu_cover_score": 1, "hallu_cover_num": 5, "non_hallu_score": 0, "non_hallu_num": 1}
    assert r.official["CHAIR"] == round(1 / 2.001 * 100, 1) and r.official["Hal"] == 100.0
    # By default official mode tries the spaCy model; one that is not there is reported, and nothing is rescued.
    missing = amber_generative(answer, real_amber, mode="official", spacy_model="no_such_spacy_model")
    assert missing.similarity_rescue.startswith("not applied: ") and missing.per_answer[0] == off


def test_missing_nltk_data_says_how_to_install(nltk_data, real_amber, tmp_path, monkeypatch):
    """Without NLTK data, official generative scoring stops naming the packages, the downloader command and
    NLTK_DATA (and a folder NLTK refused for its permissions); yes/no scoring needs no NLTK data."""
    import nltk

    refused = tmp_path / "shared_nltk"
    refused.mkdir()
    refused.chmod(0o777)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "none"), str(refused)])
    nltk_tools._nltk_tools.cache_clear()
    try:
        with pytest.raises(NLTKDataMissing) as err:
            amber_generative({1: "A dog."}, real_amber, mode="official", vector_rescue=False)
        message = str(err.value)
        assert NLTK_INSTALL in message and "NLTK_DATA" in message and "chmod go-w" in message
        assert all(p in message for p in ("punkt_tab", "averaged_perceptron_tagger_eng", "wordnet"))
        d = amber_scores({1005: "Yes"}, real_amber, mode="official").discriminative  # id 1005: truth "yes"
        assert d.official["overall"]["Accuracy"] == 99.9 and d.overall.accuracy == 1.0
    finally:
        nltk_tools._nltk_tools.cache_clear()
