"""Image placeholders written as text in a prompt or an answer: ingest quarantines the common spellings, and training
drops rows holding the base model's own image tokens, so one such row no longer stops every training run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from PIL import Image

from mdpo_pipeline.core.placeholders import IMAGE_PLACEHOLDERS, describe_placeholders, placeholders_in
from mdpo_pipeline.core.schemas import QuarantineReason as R
from mdpo_pipeline.pipeline.project import Project
from mdpo_pipeline.training.data import (
    DataCollatorForMDPO,
    drop_image_token_rows,
    load_preference_dataset,
    model_image_tokens,
)
from tests.conftest import write_tiny_training_data
from tests.test_ingest import GOOD, make_vlf, row, run

BAD = R.IMAGE_PLACEHOLDER_IN_TEXT


def test_placeholders_are_found_with_counts_in_order():
    text = "Is <image> here? [IMG_BREAK] and <image> again, <img>x</img>, not <images> nor [IMG"
    assert placeholders_in(text) == {"<image>": 2, "[IMG_BREAK]": 1, "<img>": 1, "</img>": 1}
    assert describe_placeholders(placeholders_in(text)) == "'<image>' (2 times), '[IMG_BREAK]', '<img>', '</img>'"
    assert placeholders_in("A cat on a mat.") == {} and placeholders_in("<|image_pad|>", ()) == {}
    # The longer of two overlapping spellings is the one found (a tokenizer matches that one).
    assert placeholders_in("<start_of_image>", ("<start_of_image>", "<start_of_")) == {"<start_of_image>": 1}
    for family_token in ("<|image_pad|>", "<start_of_image>", "<IMG_CONTEXT>", "[IMG]", "<|IMG_PATCH|>", "<|image|>"):
        assert family_token in IMAGE_PLACEHOLDERS


# --------------------------------------------------------------------------------------------------- ingest


def test_vlfeedback_prompt_with_a_placeholder_is_quarantined(tmp_path):
    rows = [row("a"), row("b", prompt="What is in <image>?"), row("c", prompt="<image>\n<image>\nCompare them.")]
    res = run(make_vlf(tmp_path, rows))
    assert [i.id for i in res.instructions] == ["a"]
    assert [(q.id, q.reason, q.line) for q in res.quarantine] == [("b", BAD, 2), ("c", BAD, 3)]
    assert "field 'prompt' holds the image placeholder '<image>' as text" in res.quarantine[0].detail
    assert "'<image>' (2 times)" in res.quarantine[1].detail
    assert res.counts_by_reason() == {"image_placeholder_in_text": 2}
    assert len(res.instructions) + len(res.quarantine) == res.n_read == 3


def test_vlfeedback_answers_with_a_placeholder_are_dropped_then_the_row(tmp_path):
    """An answer is a completion: dropped and counted like an empty one; a row left with one usable answer is
    quarantined for the defect that removed most."""
    one = row("a", responses=["fine", "it shows [IMG] here", "fine too", "also fine"])
    three = row("b", responses=["<|image_pad|>", "x <start_of_image>", "<IMG_CONTEXT>", "the only clean one"])
    res = run(make_vlf(tmp_path, [one, three]))
    assert [(i.id, len(i.completions)) for i in res.instructions] == [("a", 3)]
    assert res.completions_dropped == {BAD: 1}
    (q,) = res.quarantine
    assert (q.id, q.reason) == ("b", BAD) and "1 of 4 completions usable" in q.detail
    assert "completions[0] (m0): the response holds the image placeholder '<|image_pad|>'" in q.detail


def test_mdpo_json_rows_with_a_placeholder_are_quarantined_the_template_is_not(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.jpg")
    vicuna = "USER: <image>\n{} ASSISTANT:"
    rows = [
        {"prompt": vicuna.format("How many dogs?"), "chosen": "Two.", "rejected": "Three."},
        {"prompt": "How many dogs?\n<image>", "chosen": "Two.", "rejected": "Three."},  # LLaVA's trailing image
        {"prompt": vicuna.format("<image>\nHow many dogs?"), "chosen": "Two.", "rejected": "Three."},
        {"prompt": vicuna.format("How many?"), "chosen": "Two <image>.", "rejected": "Three."},
        {"prompt": vicuna.format("How many?"), "chosen": "Two.", "rejected": "Three <|image|>."},
    ]
    (tmp_path / "pairs.json").write_text(json.dumps([{"img_path": "images/a.jpg", **r} for r in rows]))
    res = run(tmp_path / "pairs.json", format="mdpo_json")
    assert [i.prompt for i in res.instructions] == ["How many dogs?", "How many dogs?"]
    assert [(q.line, q.reason) for q in res.quarantine] == [(3, BAD), (4, BAD), (5, BAD)]
    assert [q.detail.split(" holds")[0] for q in res.quarantine] == [
        "field 'prompt'", "field 'chosen'", "field 'rejected'"]


def test_placeholder_rows_are_counted_in_the_summary(tmp_path):
    res = run(make_vlf(tmp_path, [row("a"), row("b", prompt="Look: [IMG]"), row("c", ratings=GOOD)]))
    s = res.summary()
    assert (s["n_read"], s["n_kept"], s["n_quarantined"]) == (3, 2, 1)
    assert s["quarantined_by_reason"] == {"image_placeholder_in_text": 1}


# ------------------------------------------------------------------------------ the base model's own tokens


def test_model_image_tokens_are_the_processors_named_and_added_ones():
    tokenizer = SimpleNamespace(
        image_token="<|image_pad|>",
        added_tokens_decoder={1: "<|vision_pad|>", 2: "<|im_start|>", 3: "image", 4: "<my_img_tag>", 5: "<s>"},
    )
    processor = SimpleNamespace(tokenizer=tokenizer, image_token="<|image_pad|>", video_token="<|video_pad|>",
                                boi_token="<start_of_image>", eoi_token=None)
    assert model_image_tokens(processor) == (
        "<my_img_tag>", "<start_of_image>", "<|image_pad|>", "<|video_pad|>", "<|vision_pad|>")
    assert model_image_tokens(SimpleNamespace()) == ()


@pytest.fixture(scope="module")
def tiny_llava():
    from mdpo_pipeline.shapeworld.tiny import build_tiny_llava

    return build_tiny_llava(image_size=32)[1]


def _with_texts(dataset, prompts: dict[int, str], rejected: dict[int, str]):
    def edit(r, i):
        if i in prompts:
            r["prompt"] = [{**r["prompt"][0], "content": [{"type": "image"}, {"type": "text", "text": prompts[i]}]}]
        if i in rejected:
            r["rejected"] = [{**r["rejected"][0], "content": [{"type": "text", "text": rejected[i]}]}]
        return r

    return dataset.map(edit, with_indices=True)


def test_rows_with_the_models_image_token_are_dropped_and_counted(tmp_path, tiny_llava):
    """The tiny LLaVA's image token is "<image>": a prompt saying it twice makes the processor refuse the batch
    (3 image tokens and 1 image); the filter drops that row and the one whose answer holds it, naming both."""
    processor = tiny_llava
    assert model_image_tokens(processor) == ("<image>",)
    data = write_tiny_training_data(tmp_path, n_pairs=5, image_size=32)
    dataset = load_preference_dataset(data["pairs"], data["images"], data["corrupted"])
    dataset = _with_texts(dataset, {1: "Is <image> like <image>?"}, {3: "A cat <image>."})
    with pytest.raises(ValueError, match="image"):
        DataCollatorForMDPO(processor)([dataset[i] for i in range(len(dataset))])
    kept, dropped = drop_image_token_rows(dataset, processor)
    assert len(kept) + len(dropped) == len(dataset) == 5
    assert [d["pair_id"] for d in dropped] == [dataset[1]["pair_id"], dataset[3]["pair_id"]]
    assert {d["reason"] for d in dropped} == {"text_has_image_token"}
    assert dropped[0]["detail"].startswith("prompt holds '<image>' (2 times): the base model's image token")
    assert dropped[1]["detail"].startswith("rejected holds '<image>'")
    batch = DataCollatorForMDPO(processor)([kept[i] for i in range(len(kept))])
    assert batch["input_ids"].shape[0] == 3 * len(kept)
    assert drop_image_token_rows(kept, processor) == (kept, [])


def test_a_set_where_every_row_holds_the_token_stops_with_the_reason(tmp_path, tiny_llava):
    data = write_tiny_training_data(tmp_path, n_pairs=2, image_size=32)
    dataset = load_preference_dataset(data["pairs"], data["images"], data["corrupted"])
    dataset = _with_texts(dataset, {0: "<image>?", 1: "<image>!"}, {})
    with pytest.raises(ValueError, match=r"every pair holds the base model's image tokens \['<image>'\] as text"):
        drop_image_token_rows(dataset, tiny_llava)


def test_the_reference_stage_drops_those_rows_before_computing_and_counts_them(tmp_path, monkeypatch, tiny_llava):
    """reference_logprobs drops the rows training drops, before the cache (and its fingerprint) is computed."""
    from pathlib import Path

    from mdpo_pipeline.pipeline import train
    from mdpo_pipeline.training import data as training_data, models, reference
    from tests.conftest import REPO

    data = write_tiny_training_data(tmp_path / "data", n_pairs=3, image_size=32)
    dataset = load_preference_dataset(data["pairs"], data["images"], data["corrupted"])
    dataset = _with_texts(dataset, {}, {2: "Not <image> this."})
    seen = {}
    monkeypatch.setattr(train, "base_model_location", lambda project, settings=None: ("shapeworld-tiny", "base"))
    monkeypatch.setattr(train, "_training_data_dirs", lambda project: (Path("p"), Path("i"), Path("c")))
    monkeypatch.setattr(models, "load_model_and_processor", lambda *a, **kw: (None, tiny_llava))
    monkeypatch.setattr(training_data, "load_preference_dataset", lambda *a: dataset)

    def compute(model, processor, rows, batch_size, out, progress=False, max_length=None, packed_rows=True):
        seen["pair_ids"] = list(rows["pair_id"])
        out.parent.mkdir(parents=True, exist_ok=True)
        return {"n": len(rows)}

    monkeypatch.setattr(reference, "compute_reference_logprobs", compute)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    summary = train.run_reference_logprobs(Project(tmp_path))
    assert seen["pair_ids"] == list(dataset["pair_id"])[:2]
    assert (summary["pairs_read"], summary["pairs_dropped"], summary["n"]) == (3, {"text_has_image_token": 1}, 2)
