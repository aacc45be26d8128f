"""Object HalBench `official` mode against RLHF-V's own scorer: the conformance fixtures' 300 answers, scored by
eval/eval_gpt_obj_halbench.py (rule-based path) and its summariser, must come out equal to the last digit,
in aggregate and per answer. Also the answers-file reader, the rules on hand-made sentences, and the errors."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from mdpo_pipeline.core.eval.chair import (
    OfficialChairRules,
    load_object_halbench_coco,
    official_nlp,
    official_print_metrics,
    official_truth,
    read_answers,
    read_coco_annotations,
)

from tests.conformance import CONFORMANCE, needs

OBJHAL = CONFORMANCE / "objhal"
COCO = OBJHAL / "coco"
ANSWERS = OBJHAL / "answers.jsonl"
SYNONYMS = CONFORMANCE / "real" / "rlhf-v" / "eval" / "data" / "synonyms_refine.txt"
pytestmark = needs(COCO, ANSWERS, SYNONYMS, OBJHAL / "chair_official.json", CONFORMANCE / "nltk_data")
#: What the official scorer reports per answer, compared field by field.
PER_ITEM_FIELDS = ("image_id", "caption", "words", "mentioned", "hallucinated", "hallucination_idxs",
                   "gt_objects", "correct_classes", "chair_s", "chair_i")


def _unsafe_for_nltk(root: Path) -> bool:
    """nltk ≥ 3.10 refuses data that another (non-root) account owns or that group/others may write."""
    for path in (root, *root.rglob("*")):
        st = path.stat()
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_uid not in (0, os.geteuid()):
            return True
    return False


@pytest.fixture(scope="module")
def nltk_data(tmp_path_factory) -> Path:
    """NLTK_DATA = the fixtures' nltk_data, or a private copy of it when the shared one is writable by others."""
    import nltk

    source = CONFORMANCE / "nltk_data"
    root = source
    if _unsafe_for_nltk(source):
        root = tmp_path_factory.mktemp("nltk") / "nltk_data"
        shutil.copytree(source, root)
        for path in (root, *root.rglob("*")):
            path.chmod(0o700 if path.is_dir() else 0o600)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NLTK_DATA", str(root))
        # nltk reads NLTK_DATA once, at import; another test may have imported it already.
        mp.setattr(nltk.data, "path", [str(root), *nltk.data.path])
        yield root


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((OBJHAL / "chair_official.json").read_text())


@pytest.fixture(scope="module")
def bench(nltk_data):
    return load_object_halbench_coco(ANSWERS, COCO, SYNONYMS, mode="official")


@pytest.fixture(scope="module")
def result(bench):
    start = time.perf_counter()
    out = bench.score_answers_file(ANSWERS)
    print(f"official CHAIR of {out.n_answers} answers: {time.perf_counter() - start:.2f} s")
    return out


def test_aggregate_equals_official(result, expected):
    """Every overall metric and count, the print_metrics table and the summariser's lines, exactly."""
    assert result.mode == "official" and result.extractor == "rule"
    assert result.official == expected["aggregate"]
    assert result.official_summary == expected["official_summary"]
    assert official_print_metrics(result.official) == expected["official_print_metrics"]
    raw = json.loads((OBJHAL / "official_raw" / "hall_obj_halbench_answer_-1.json").read_text())["overall_metrics"]
    assert {k: v for k, v in raw.items() if not k.startswith("all_gpt")} == {
        k: v for k, v in result.official.items() if k != "counts"}
    # The project's own fields are the same numbers under its names.
    agg = expected["aggregate"]
    assert (result.chair_s, result.chair_i, result.recall) == (agg["CHAIRs"], agg["CHAIRi"], agg["obj_rec"])
    assert (result.n_covered, result.n_truth) == (agg["counts"]["correct_classes"], agg["counts"]["gt_classes"])
    stored = result.as_dict()
    assert stored["mode"] == "official" and stored["official_summary"]["Response Hall"] == "44.67"
    assert json.loads(json.dumps(stored))["official"] == expected["aggregate"]


def test_every_item_equals_official(result, expected):
    """300/300 answers: words after merging, [word, class] mentions, hallucinations and their official indices,
    ground truth, correct classes, CHAIRs and CHAIRi."""
    assert len(result.per_answer) == len(expected["per_item"]) == expected["n_items"] == 300
    diffs = []
    for ours, theirs in zip(result.per_answer, expected["per_item"]):
        record = ours.official_record()
        diffs += [(theirs["image_id"], k, record[k], theirs[k]) for k in PER_ITEM_FIELDS if record[k] != theirs[k]]
    assert not diffs, f"{len({d[0] for d in diffs})} items differ, e.g. {diffs[:3]}"
    assert result.per_answer[0].as_dict()["tokens"] == expected["per_item"][0]["words"]


def test_truth_from_instances_alone(bench, expected):
    """The instance half of the ground truth (train2014 + val2014), per image, as the official code builds it."""
    instances, _ = read_coco_annotations(COCO)
    ids = [item["image_id"] for item in expected["per_item"]]
    truth = official_truth(instances, {"annotations": [], "images": instances["images"]}, bench.rules, ids)
    assert {i: sorted(truth[i]) for i in ids} == {it["image_id"]: it["gt_from_instances"] for it in expected["per_item"]}


def test_rules_by_hand(bench):
    """The official quirks on hand-made sentences: merges after lemmatising, the toilet-seat rule with its
    shifted indices, "iPhone" never matching, "baby elephant" and "bow tie"."""
    rules = bench.rules
    out = rules.caption_words("Two hot dogs, a baby elephant and a man in a bow tie.")
    assert out.node_words == [["hot dog", "hot dog"], ["elephant", "elephant"], ["man", "person"], ["tie", "tie"]]
    assert out.raw_words[:3] == ["two", "hot dog", ","]
    assert rules.caption_words("An iPhone next to a cellphone.").words == ["cellphone"]
    seat = rules.caption_words("A seat, a toilet and a dog.")
    # Once "seat" is dropped the official code reads its index list one place early: 3 and 6, not 4 and 7.
    assert seat.words == ["toilet", "dog"] and seat.idxs == [3, 6]
    assert (seat.raw_words.index("toilet"), seat.raw_words.index("dog")) == (4, 7)
    assert rules.caption_words("A seat and a dog.").node_words == [["seat", "chair"], ["dog", "dog"]]


def test_answers_reader_official_layout(tmp_path, bench):
    """{"image_id", "question", "answer"} lines, "text" instead of (and before) "answer", "prompt" for the
    question, string ids; "Assistant:" is removed when scored, as the official reader does."""
    path = tmp_path / "obj_halbench_answer.jsonl"
    rows = [
        {"image_id": 9100001, "question": "Describe.", "answer": "A man and a truck."},
        {"image_id": "9100002", "prompt": "Describe it.", "text": "Assistant: A cake.", "answer": "ignored"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    records = read_answers(path)
    assert [(r.image_id, r.question, r.answer) for r in records] == [
        (9100001, "Describe.", "A man and a truck."), (9100002, "Describe it.", "Assistant: A cake.")]
    scored = bench.score_answers_file(path)
    assert [a.caption for a in scored.per_answer] == ["A man and a truck.", "A cake."]
    assert scored.official["avg_word_len"] == (5 + 2) / 2
    path.write_text(json.dumps({"image_id": 1, "question": "q"}) + "\n")
    with pytest.raises(ValueError, match="'answer' or 'text'"):
        read_answers(path)
    path.write_text(json.dumps({"image_id": "x1", "answer": "a"}) + "\n")
    with pytest.raises(ValueError, match="image_id"):
        read_answers(path)
    with pytest.raises(FileNotFoundError, match="answers file"):
        read_answers(tmp_path / "none.jsonl")


def test_official_mode_refuses_an_extractor(bench):
    """The GPT extraction path is not what official mode reproduces."""
    with pytest.raises(ValueError, match="rule-based"):
        bench.score({9100001: "A man."}, extract=lambda _: ["man"])


def test_missing_nltk_data_says_how_to_install(tmp_path, monkeypatch, nltk_data):
    """Without punkt_tab / wordnet on nltk.data.path, official mode stops with the downloader command."""
    import nltk

    empty = tmp_path / "empty_nltk_data"
    empty.mkdir(mode=0o700)
    monkeypatch.setattr(nltk.data, "path", [str(empty)])
    with pytest.raises(LookupError, match=r"python -m nltk\.downloader punkt_tab wordnet"):
        official_nlp()
    with pytest.raises(LookupError, match="NLTK_DATA"):
        load_object_halbench_coco(ANSWERS, COCO, SYNONYMS, mode="official")


def test_real_layout_errors(tmp_path, nltk_data):
    """Missing COCO files or synonym list name the path and where they come from; images are not needed."""
    partial = tmp_path / "coco"
    partial.mkdir()
    for name in ("instances_val2014.json", "captions_val2014.json", "instances_train2014.json"):
        (partial / name).symlink_to(COCO / name)
    with pytest.raises(FileNotFoundError, match=r"captions_train2014\.json.*COCO 2014 annotations download"):
        load_object_halbench_coco(ANSWERS, partial, SYNONYMS, mode="official")
    with pytest.raises(FileNotFoundError, match=r"none\.txt.*RLHF-V"):
        load_object_halbench_coco(ANSWERS, COCO, tmp_path / "none.txt", mode="official")
    with pytest.raises(FileNotFoundError, match="annotations_trainval2014"):
        load_object_halbench_coco(ANSWERS, tmp_path / "nowhere", SYNONYMS, mode="official")
    with pytest.raises(FileNotFoundError, match="RLHF-V"):
        OfficialChairRules.from_file(tmp_path / "synonyms_refine.txt")


def test_offline_mode_on_the_same_files(nltk_data):
    """The default stays the lemminflect scorer; it reads the same files and says which mode it is."""
    hb = load_object_halbench_coco(ANSWERS, COCO, SYNONYMS)
    r = hb.score_answers_file(ANSWERS)
    assert hb.mode == "offline" and r.mode == "offline" and r.official is None and r.n_answers == 300
