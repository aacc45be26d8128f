"""Preference pairs: Silkie's rule, one pair per instruction, fixed pairs, source filter, sampling, TRL records."""

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mdpo_pipeline.core.ingest import IngestConfig, ingest
from mdpo_pipeline.core.pairs import (
    SKIP_REASONS,
    PairsConfig,
    build_pairs,
    filter_sources,
    make_pairs,
    pair_stats,
    sample_pairs,
    to_trl_record,
    write_pairs,
)
from mdpo_pipeline.core.schemas import (
    ASPECTS,
    PAIRS_SCHEMA,
    Completion,
    Instruction,
    normalised_answer,
    same_answer,
)
from mdpo_pipeline.pipeline import quality


def _c(model: str, response: str, *ratings):
    return Completion(model=model, response=response, ratings=dict(zip(ASPECTS, ratings)))


def _rated(iid="i1", source="llava"):
    """Five completions; VLFeedback's string ratings "5","5","4" etc. parsed to numbers (None = "N/A").

    c0 (5,5,4) -> 4.667   c1 (3,4,2) -> 3.0   c2 (4,5,5) -> 4.667   c3 (2,2,2) -> 2.0   c4 (5,5,None) unusable
    Silkie's rule over the usable four: 0>1, 0=2 tie (skipped), 0>3, 2>1, 1>3, 2>3  =>  5 pairs.
    """
    return Instruction(
        id=iid,
        source=source,
        prompt="What is shown?",
        image=f"merged_images/{iid}.jpg",
        completions=(
            _c("m0", "a red circle", 5, 5, 4),
            _c("m1", "a blue square next to a red circle", 3, 4, 2),
            _c("m2", "one red circle", 4, 5, 5),
            _c("m3", "a cat", 2, 2, 2),
            _c("m4", "perfect but unrated", 5, 5, None),
        ),
    )


def _preferred(iid="p1"):
    return Instruction(
        id=iid,
        source="llava",
        prompt="Describe the image.",
        image=f"imgs/{iid}.jpg",
        completions=(_c("", "rejected text", None, None, None), _c("", "chosen text", None, None, None)),
        preferred=(1, 0),
    )


def test_all_pairs_follows_silkies_rule():
    pairs = build_pairs([_rated()], PairsConfig(strategy="all_pairs"))
    assert [(p.pair_id, p.chosen_model, p.rejected_model) for p in pairs] == [
        ("i1:0-1", "m0", "m1"),
        ("i1:0-3", "m0", "m3"),
        ("i1:1-3", "m1", "m3"),
        ("i1:2-1", "m2", "m1"),
        ("i1:2-3", "m2", "m3"),
    ]
    p = pairs[0]
    assert p.chosen == "a red circle" and p.rejected == "a blue square next to a red circle"
    assert p.chosen_score == pytest.approx(14 / 3) and p.rejected_score == pytest.approx(3.0)
    assert all(p.chosen_score > p.rejected_score for p in pairs)
    assert all("m4" not in (p.chosen_model, p.rejected_model) for p in pairs)


def test_ties_unusable_and_margin_are_counted():
    result = make_pairs([_rated()], PairsConfig(strategy="all_pairs", n=100))
    s = result.summary
    assert (s["pairs_built"], s["ties_skipped"], s["unusable_completions"]) == (5, 1, 1)
    # min_margin 1.5 drops only 1>3 (margin 1.0); the others have margins 5/3 or 8/3.
    pairs = build_pairs([_rated()], PairsConfig(min_margin=1.5))
    assert [p.pair_id for p in pairs] == ["i1:0-1", "i1:0-3", "i1:2-1", "i1:2-3"]


def test_identical_texts_and_too_few_usable_yield_no_pair():
    same = Instruction("s", "llava", "q", "s.jpg", (_c("a", "same", 5, 5, 5), _c("b", "same", 1, 1, 1)))
    lonely = Instruction("l", "llava", "q", "l.jpg", (_c("a", "x", 5, 5, 5), _c("b", "y", None, 1, 1)))
    for strategy in ("all_pairs", "one_per_instruction"):
        s = make_pairs([same, lonely], PairsConfig(strategy=strategy)).summary
        assert (s["pairs_built"], s["identical_skipped"], s["too_few_usable"]) == (0, 1, 1)


def test_one_per_instruction_is_best_versus_a_strictly_lower_one():
    seen = set()
    for seed in range(40):
        pairs = build_pairs([_rated()], PairsConfig(strategy="one_per_instruction", seed=seed))
        assert len(pairs) == 1
        chosen, rejected = pairs[0].pair_id.split(":")[1].split("-")
        assert chosen in {"0", "2"} and rejected in {"1", "3"}  # a best one vs a strictly lower one
        seen.add((chosen, rejected))
        again = build_pairs([_rated()], PairsConfig(strategy="one_per_instruction", seed=seed))
        assert again == pairs
    assert seen == {("0", "1"), ("0", "3"), ("2", "1"), ("2", "3")}  # the seed reaches every allowed choice


def test_one_per_instruction_skips_all_tied():
    tied = Instruction("t", "llava", "q", "t.jpg", (_c("a", "x", 3, 3, 3), _c("b", "y", 4, 3, 2)))
    s = make_pairs([tied], PairsConfig(strategy="one_per_instruction")).summary
    assert (s["pairs_built"], s["ties_skipped"]) == (0, 1)


def test_preferred_pair_passes_through_either_strategy():
    for strategy in ("all_pairs", "one_per_instruction"):
        (p,) = build_pairs([_preferred()], PairsConfig(strategy=strategy))
        assert (p.pair_id, p.chosen, p.rejected) == ("p1:1-0", "chosen text", "rejected text")
        assert p.chosen_score is None and p.rejected_score is None


def test_filter_sources_is_case_insensitive_and_empty_keeps_all():
    ins = [_rated("a", "LLaVA"), _rated("b", "svit"), _rated("c", "llava")]
    assert [i.id for i in filter_sources(ins, ("llava",))] == ["a", "c"]
    assert [i.id for i in filter_sources(ins, ())] == ["a", "b", "c"]
    s = make_pairs(ins, PairsConfig(sources=("LLaVA",), n=100)).summary
    assert s["instructions_in"] == 3 and s["instructions_after_source_filter"] == 2
    assert s["per_source"]["svit"] == {"instructions": 1, "pairs_built": 0, "pairs_sampled": 0}
    assert s["per_source"]["llava"] == {"instructions": 2, "pairs_built": 10, "pairs_sampled": 10}


def test_sampling_is_seeded_order_free_and_nested():
    pairs = build_pairs([_rated(f"i{k}") for k in range(30)], PairsConfig())  # 150 pairs
    shuffled = pairs[:]
    random.Random(7).shuffle(shuffled)
    a = sample_pairs(pairs, 40, seed=1)
    assert a == sample_pairs(shuffled, 40, seed=1)
    assert [p.pair_id for p in a] == sorted(p.pair_id for p in a) and len({p.pair_id for p in a}) == 40
    assert a != sample_pairs(pairs, 40, seed=2)
    assert set(p.pair_id for p in sample_pairs(pairs, 20, seed=1)) <= set(p.pair_id for p in a)


def test_sampling_more_than_available_keeps_all_and_reports_it():
    result = make_pairs([_rated(), _preferred()], PairsConfig(n=1000))
    assert len(result.pairs) == 6
    assert result.summary["sample_short"] is True and result.summary["pairs_sampled"] == 6


def test_length_and_margin_stats():
    pairs = build_pairs([_rated()], PairsConfig())
    stats = pair_stats(pairs)
    # Rejected is longer in 0>1 and 2>1 only ("a blue square ..." is the longest answer).
    assert stats["rejected_longer_share"] == pytest.approx(2 / 5)
    assert stats["mean_margin"] == pytest.approx((5 / 3 + 8 / 3 + 1 + 5 / 3 + 8 / 3) / 5, abs=1e-6)
    assert stats["chosen_mean_chars"] == pytest.approx((12 + 12 + 34 + 14 + 14) / 5)


def test_to_trl_record_shape():
    (p,) = build_pairs([_preferred()], PairsConfig())
    assert to_trl_record(p) == {
        "pair_id": "p1:1-0",
        "image": "imgs/p1.jpg",
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "chosen text"}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "rejected text"}]}],
    }


def test_write_pairs_files_and_deterministic_bytes(tmp_path):
    result = make_pairs([_rated(f"i{k}") for k in range(5)] + [_preferred()], PairsConfig(n=12, seed=3))
    names = ("pairs.parquet", "pairs_trl.jsonl", "summary.json")
    write_pairs(result, tmp_path / "a")
    write_pairs(result, tmp_path / "b")
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    table = pq.read_table(tmp_path / "a" / "pairs.parquet")
    assert table.schema.equals(PAIRS_SCHEMA) and table.num_rows == 12
    lines = (tmp_path / "a" / "pairs_trl.jsonl").read_text().splitlines()
    assert [json.loads(x)["pair_id"] for x in lines] == table["pair_id"].to_pylist()
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["pairs_sampled"] == 12


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "best"},
        {"sources": "llava"},
        {"sources": 3},
        {"sources": ("llava", "")},
        {"n": 0},
        {"n": True},
        {"seed": 1.5},
        {"min_margin": -1},
        {"min_margin": float("nan")},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        PairsConfig(**kwargs)


def test_config_normalizes_sources():
    assert PairsConfig(sources=["LLaVA ", "SVIT"]).sources == ("llava", "svit")


# ------------------------------------------------------------ answers equal once spacing and Unicode are normalised


def _fixed(iid, chosen, rejected):
    return Instruction(iid, "llava", "q", f"{iid}.jpg",
                       (_c("", chosen, None, None, None), _c("", rejected, None, None, None)), preferred=(0, 1))


def test_answers_equal_after_normalisation_are_skipped_and_counted():
    """"A cat." / "A  cat. " and "café" in NFC / NFD are one answer: a zero-gradient pair, skipped under its own
    reason in every strategy and for fixed pairs, with pairs built + skipped = candidates."""
    spaced = Instruction("w", "llava", "q", "w.jpg", (_c("a", "A cat.", 5, 5, 5), _c("b", "A  cat. ", 1, 1, 1)))
    accents = Instruction("u", "llava", "q", "u.jpg", (_c("a", "caf\u00e9", 5, 5, 5), _c("b", "cafe\u0301", 1, 1, 1)))
    kept = Instruction("k", "llava", "q", "k.jpg", (_c("a", "A cat.", 5, 5, 5), _c("b", "A dog.", 1, 1, 1)))
    fixed = [_fixed("f1", "A cat.", "A cat.\n"), _fixed("f2", "cafe\u0301 au lait", "caf\u00e9  au lait"),
             _fixed("f3", "Two dogs.", "Three dogs.")]
    for strategy in ("all_pairs", "one_per_instruction"):
        result = make_pairs([spaced, accents, kept, *fixed], PairsConfig(strategy=strategy, n=100))
        s = result.summary
        assert sorted(p.pair_id for p in result.pairs) == ["f3:0-1", "k:0-1"]
        assert (s["pairs_built"], s["equal_after_normalisation_skipped"], s["identical_skipped"]) == (2, 4, 0)
        assert s["pair_candidates"] == 6 == s["pairs_built"] + sum(s[r] for r in SKIP_REASONS)
        assert s["preferred_pairs"] == 1


def test_candidates_add_up_with_ties_margins_and_identical_texts():
    """_rated(): 6 completion pairs of the 4 usable answers, 1 tied: 5 built + 1 skipped = 6 candidates; with
    min_margin 1.5 one more is skipped (1>3, margin 1.0)."""
    same = Instruction("s", "llava", "q", "s.jpg", (_c("a", "same", 5, 5, 5), _c("b", "same", 1, 1, 1)))
    s = make_pairs([_rated(), same], PairsConfig(n=100)).summary
    assert (s["pair_candidates"], s["pairs_built"], s["ties_skipped"], s["identical_skipped"]) == (7, 5, 1, 1)
    s = make_pairs([_rated()], PairsConfig(n=100, min_margin=1.5)).summary
    assert (s["pair_candidates"], s["pairs_built"], s["below_margin_skipped"]) == (6, 4, 1)


def test_same_answer_normalises_whitespace_and_unicode_only():
    assert normalised_answer(" A \t cat.\n") == "A cat." and normalised_answer("cafe\u0301") == "caf\u00e9"
    assert same_answer("A cat.", "A  cat. ") and same_answer("caf\u00e9", "cafe\u0301")
    assert not same_answer("A cat.", "a cat.") and not same_answer("A cat.", "A cat")


def test_the_pairs_gate_refuses_answers_equal_after_normalisation(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"jpeg")
    pq.write_table(pa.table({"pair_id": ["p"], "chosen": ["A cat."], "rejected": ["A  cat. "], "image": ["x.jpg"]}),
                   tmp_path / "pairs.parquet")
    passed, details = quality.pairs_gate(tmp_path / "pairs.parquet", tmp_path, 1)
    assert not passed and details["problems"] == {"identical_answers": 1}


def test_mdpo_json_rows_with_answers_equal_after_normalisation_are_quarantined(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.jpg")
    rows = [{"img_path": "images/a.jpg", "prompt": "USER: <image>\nq ASSISTANT:", "chosen": c, "rejected": r}
            for c, r in (("A cat.", "A  cat. "), ("caf\u00e9", "cafe\u0301"), ("Two dogs.", "Three dogs."))]
    (tmp_path / "pairs.json").write_text(json.dumps(rows))
    res = ingest(IngestConfig(format="mdpo_json", path=tmp_path / "pairs.json", workers=1))
    assert (res.n_read, len(res.instructions)) == (3, 1)
    assert [(q.line, q.reason.value) for q in res.quarantine] == [(1, "identical_pair"), (2, "identical_pair")]
    assert "once spacing and Unicode form are normalised" in res.quarantine[0].detail
