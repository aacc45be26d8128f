"""Ingest of VLFeedback and the released mDPO pairs: one test per defect, plus the pipeline invariants."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import zipfile
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mdpo_pipeline.core.ingest import (
    DataSourceUnavailable,
    IngestConfig,
    engine,
    ingest,
    readers,
    strip_prompt_template,
    write_ingest,
)
from mdpo_pipeline.core.io import read_parquet_rows
from mdpo_pipeline.core.schemas import ASPECTS, instruction_from_row
from mdpo_pipeline.core.schemas import QuarantineReason as R
from tests.conformance import CONFORMANCE, require

GOOD = ((5, 5, 5), (4, 4, 4), (3, 4, 3), (2, 2, 2))


def completion(model, ratings=(4, 4, 4), response="A dog on a sofa."):
    ann = {}
    for aspect, r in zip(ASPECTS, ratings):
        if r is not ...:  # Ellipsis = aspect absent
            ann[aspect] = {"Rating": r if r is None or isinstance(r, str) else str(r), "Rationale": "because"}
    return {"model": model, "response": response, "annotations": ann}


def row(id, prompt="What is in the image?", ratings=GOOD, responses=None):
    responses = responses or ["answer %d" % i for i in range(len(ratings))]
    comps = [completion(f"m{i}", r, resp) for i, (r, resp) in enumerate(zip(ratings, responses))]
    return {"id": id, "prompt": prompt, "models": [c["model"] for c in comps], "completions": comps}


def make_vlf(tmp_path, rows, sources=None, images=True):
    """A VLFeedback directory: rows (dicts, or raw strings for broken lines), 16x16 images for every id."""
    d = tmp_path / "vlf"
    (d / "merged_images").mkdir(parents=True)
    lines = []
    for r in rows:
        lines.append(r if isinstance(r, str) else json.dumps(r))
        rid = r.get("id") if isinstance(r, dict) else None
        if images and isinstance(rid, str) and "/" not in rid:
            Image.new("RGB", (16, 16), (len(rid) * 10 % 255, 80, 160)).save(d / "merged_images" / f"{rid}.jpg")
    (d / "vlfeedback_80k.jsonl").write_text("\n".join(lines) + "\n")
    if sources is not None:
        (d / "instruction_source.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sources))
    return d


def run(path, **kw):
    res = ingest(IngestConfig(path=path, **{"workers": 1, **kw}))
    assert len(res.instructions) + len(res.quarantine) == res.n_read
    return res


def only_quarantined(res, reason, line, *words):
    """Exactly one row quarantined, for `reason`, at `line`, with every word in its detail."""
    assert [(q.reason, q.line) for q in res.quarantine] == [(reason, line)], res.quarantine
    q = res.quarantine[0]
    for w in words:
        assert w in q.detail, (w, q.detail)
    assert q.file == "vlfeedback_80k.jsonl" and q.raw
    return q


# --------------------------------------------------------------------------------------- row-level rules


def test_clean_rows_kept(tmp_path):
    res = run(make_vlf(tmp_path, [row("a"), row("b")], sources=[{"id": "a", "source": "LLaVA"}]))
    assert [i.id for i in res.instructions] == ["a", "b"] and not res.quarantine
    a = res.instructions[0]
    assert (a.image, a.width, a.height, a.source, len(a.completions)) == ("merged_images/a.jpg", 16, 16, "llava", 4)
    assert a.completions[0].ratings == {x: 5.0 for x in ASPECTS} and a.preferred is None
    assert res.counts_by_source() == {"llava": 1, "unknown": 1}


def test_malformed_json_line(tmp_path):
    res = run(make_vlf(tmp_path, [row("a"), '{"id": "b", "prompt": ', row("c")]))
    only_quarantined(res, R.MALFORMED_JSON, 2, "line 2")
    assert [i.id for i in res.instructions] == ["a", "c"]


def test_absurdly_nested_line_is_malformed(tmp_path):
    res = run(make_vlf(tmp_path, [row("a"), "[" * 100_000 + "]" * 100_000]))
    only_quarantined(res, R.MALFORMED_JSON, 2, "line 2")


def test_non_object_row(tmp_path):
    res = run(make_vlf(tmp_path, [row("a"), "[1, 2]"]))
    only_quarantined(res, R.BAD_FIELD_TYPE, 2, "list", "object")


@pytest.mark.parametrize("field", ["id", "prompt", "completions"])
def test_missing_field(tmp_path, field):
    bad = row("b")
    del bad[field]
    q = only_quarantined(run(make_vlf(tmp_path, [row("a"), bad])), R.MISSING_FIELD, 2, f"'{field}'")
    assert q.id == (None if field == "id" else "b")


def test_wrong_field_type(tmp_path):
    bad = row("b") | {"completions": "four answers"}
    only_quarantined(run(make_vlf(tmp_path, [row("a"), bad])), R.BAD_FIELD_TYPE, 2, "'completions'", "str")


def test_whitespace_prompt(tmp_path):
    res = run(make_vlf(tmp_path, [row("a"), row("b", prompt=" \n\t ")]))
    assert only_quarantined(res, R.EMPTY_PROMPT, 2, "'prompt'").id == "b"


def test_non_numeric_rating(tmp_path):
    bad = row("b", ratings=((5, 5, 5), (4, "N/A", 4), (3, 3, "N/A"), ("N/A", 2, 2)))
    only_quarantined(run(make_vlf(tmp_path, [bad])), R.NON_NUMERIC_RATING, 1, "'N/A'", "Ethical Considerations",
                     "completions[1]", "1 of 4")


def test_missing_rating(tmp_path):
    bad = row("b", ratings=((5, 5, 5), (4, ..., 4), (3, None, 3), ("", 2, 2)))
    only_quarantined(run(make_vlf(tmp_path, [bad])), R.MISSING_RATING, 1, "missing", "completions[2]")


def test_empty_response(tmp_path):
    bad = row("b", responses=["fine", "  ", "", "\n"])
    only_quarantined(run(make_vlf(tmp_path, [bad])), R.EMPTY_RESPONSE, 1, "empty response", "completions[3]")


def test_mixed_defects_most_frequent_then_enum_order(tmp_path):
    two_empty = row("a", ratings=((5, 5, 5), (4, 4, "N/A"), (3, 3, 3), (2, 2, 2)), responses=["ok", "x", "", ""])
    one_each = row("b", ratings=((5, 5, 5), (4, 4, "N/A"), (3, ..., 3), (2, 2, 2)), responses=["ok", "x", "y", ""])
    res = run(make_vlf(tmp_path, [two_empty, one_each]))
    assert [q.reason for q in res.quarantine] == [R.EMPTY_RESPONSE, R.NON_NUMERIC_RATING]


def test_too_few_completions(tmp_path):
    res = run(make_vlf(tmp_path, [row("a", ratings=((5, 5, 5),))]))
    only_quarantined(res, R.TOO_FEW_COMPLETIONS, 1, "1 of 1")


def test_ratings_out_of_range(tmp_path):
    res = run(make_vlf(tmp_path, [row("a", ratings=((5, 5, 5), (4, 4, 9), (0, 3, 3), (2, 2, 7)))]))
    only_quarantined(res, R.RATING_OUT_OF_RANGE, 1, "'9'")


def test_all_ratings_tied(tmp_path):
    res = run(make_vlf(tmp_path, [row("a"), row("b", ratings=((4, 4, 4), (3, 4, 5), ("4.0", " 4 ", 4), (5, 3, 4)))]))
    only_quarantined(res, R.RATINGS_TIED, 2, "mean rating 4")


def test_one_bad_completion_dropped_row_kept(tmp_path):
    res = run(make_vlf(tmp_path, [row("a", ratings=((5, 5, 5), (4, "N/A", 4), (" 3 ", "3.0", 3), (2, 2, 2)))]))
    assert not res.quarantine
    (ins,) = res.instructions
    assert [c.model for c in ins.completions] == ["m0", "m2", "m3"]
    assert ins.completions[1].ratings == {a: 3.0 for a in ASPECTS}
    assert res.completions_dropped == {R.NON_NUMERIC_RATING: 1}


def test_duplicate_id_keeps_first(tmp_path):
    res = run(make_vlf(tmp_path, [row("a"), row("b"), row("a", prompt="different")]))
    q = only_quarantined(res, R.DUPLICATE_ID, 3, "'a'", "vlfeedback_80k.jsonl line 1")
    assert q.id == "a" and [i.prompt for i in res.instructions] == ["What is in the image?"] * 2


def test_id_escaping_image_root(tmp_path):
    res = run(make_vlf(tmp_path, [row("a"), row("../../etc/passwd")]))
    only_quarantined(res, R.PATH_ESCAPE, 2, "..")


# ------------------------------------------------------------------------------------------ image rules


def test_missing_image(tmp_path):
    d = make_vlf(tmp_path, [row("a"), row("b")])
    (d / "merged_images" / "b.jpg").unlink()
    only_quarantined(run(d), R.MISSING_IMAGE, 2, "b.jpg")


def test_truncated_jpeg(tmp_path):
    d = make_vlf(tmp_path, [row("a"), row("b")])
    Image.effect_noise((200, 150), 60).convert("RGB").save(d / "merged_images" / "b.jpg", quality=95)
    data = (d / "merged_images" / "b.jpg").read_bytes()
    (d / "merged_images" / "b.jpg").write_bytes(data[: len(data) // 2])
    only_quarantined(run(d), R.UNDECODABLE_IMAGE, 2, "b.jpg", "truncated")
    assert not run(d, image_check="header").quarantine  # header mode trusts the header


def test_text_file_named_jpg(tmp_path):
    d = make_vlf(tmp_path, [row("a"), row("b")])
    (d / "merged_images" / "b.jpg").write_text("<html>404</html>")
    only_quarantined(run(d), R.NOT_AN_IMAGE, 2, "b.jpg")


def test_image_over_max_pixels(tmp_path):
    d = make_vlf(tmp_path, [row("a")])
    only_quarantined(run(d, max_image_pixels=255), R.IMAGE_TOO_LARGE, 1, "16x16", "255")
    assert not run(d, max_image_pixels=256).quarantine


def test_bomb_image_in_dataset(tmp_path):
    d = make_vlf(tmp_path, [row("a"), row("b")])

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 20001)) + chunk(b"IEND", b"")
    (d / "merged_images" / "b.jpg").write_bytes(png)  # content decides, not the name
    only_quarantined(run(d), R.IMAGE_TOO_LARGE, 2, "b.jpg")


# ----------------------------------------------------------------------------------------- sources, files


def test_instruction_source_keys_and_unknown(tmp_path):
    sources = [{"id": "a", "source": "LLaVA"}, {"id": "b", "instruction_source": "SVIT"},
               {"id": "c", "dataset": " LRV "}, {"id": "d"}, "not json"]
    d = make_vlf(tmp_path, [row(x) for x in "abcde"], sources=[s for s in sources if isinstance(s, dict)])
    with open(d / "instruction_source.jsonl", "a") as f:
        f.write("not json\n")
    res = run(d)
    assert [i.source for i in res.instructions] == ["llava", "svit", "lrv", "unknown", "unknown"]
    assert res.counts_by_source() == {"llava": 1, "lrv": 1, "svit": 1, "unknown": 2}


def test_parquet_equivalent_to_jsonl(tmp_path):
    rows = [row("a"), row("b", prompt="  "), row("c", ratings=((5, 5, 5), (4, "N/A", 4), (3, 3, 3), (2, 2, 2))),
            row("d", ratings=((4, 4, 4),) * 4), row("a")]
    d = make_vlf(tmp_path, rows)
    from_jsonl = run(d)
    (d / "vlfeedback_80k.jsonl").rename(tmp_path / "moved.jsonl")
    pq.write_table(pa.Table.from_pylist(rows), d / "part-0.parquet")
    from_parquet = run(d)
    assert from_parquet.instructions == from_jsonl.instructions
    assert [(q.line, q.id, q.reason) for q in from_parquet.quarantine] == \
           [(q.line, q.id, q.reason) for q in from_jsonl.quarantine] != []
    assert from_parquet.completions_dropped == from_jsonl.completions_dropped
    assert from_parquet.files["data"] == [str((d / "part-0.parquet").resolve())]


def test_missing_path_and_no_data_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="vlfeedback_80k.jsonl") as e:
        ingest(IngestConfig(path=tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no data files"):
        ingest(IngestConfig(path=tmp_path / "empty"))
    d = make_vlf(tmp_path, [row("a")])
    (d / "merged_images" / "a.jpg").unlink()
    (d / "merged_images").rmdir()
    (d / "merged_images.zip").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="unzip"):
        ingest(IngestConfig(path=d))
    assert run(d, image_check="none").instructions[0].width is None


@pytest.mark.parametrize(
    "kw, msg",
    [({"format": "csv"}, "format"), ({"image_check": "fast"}, "image_check"), ({"workers": -1}, "workers"),
     ({"max_image_pixels": 0}, "max_image_pixels"), ({"default_source": " "}, "default_source"),
     ({"path": None}, "path")],
)
def test_config_validation(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=msg):
        IngestConfig(**{"path": tmp_path, **kw})


# ------------------------------------------------------------------------------------- output, parallelism


def mixed_dataset(tmp_path, n=120):
    rows = []
    for i in range(n):
        r = row(f"r{i:03d}")
        if i % 7 == 3:
            r["prompt"] = ""
        if i % 11 == 5:
            r["completions"][1]["annotations"]["Helpfulness"]["Rating"] = "N/A"
        rows.append(r)
    d = make_vlf(tmp_path, rows + ["{broken"], sources=[{"id": f"r{i:03d}", "source": "LLaVA"} for i in range(0, n, 2)])
    for i in range(0, n, 13):
        (d / "merged_images" / f"r{i:03d}.jpg").write_text("nope")
    return d


def test_workers_do_not_change_results(tmp_path):
    d = mixed_dataset(tmp_path)
    one, two = run(d, workers=1), run(d, workers=2)
    assert one.instructions == two.instructions and one.quarantine == two.quarantine
    assert one.completions_dropped == two.completions_dropped
    assert [q.line for q in two.quarantine] == sorted(q.line for q in two.quarantine)
    assert {q.reason for q in two.quarantine} == {R.EMPTY_PROMPT, R.NOT_AN_IMAGE, R.MALFORMED_JSON}
    assert [i.id for i in two.instructions] == sorted(i.id for i in two.instructions)


def test_write_ingest_deterministic_and_roundtrips(tmp_path):
    d = mixed_dataset(tmp_path)
    s1 = write_ingest(ingest(IngestConfig(path=d, workers=2)), tmp_path / "o1")
    s2 = write_ingest(ingest(IngestConfig(path=d, workers=1), progress=True), tmp_path / "o2")
    for name in ("instructions.parquet", "quarantine.parquet", "summary.json"):
        assert (tmp_path / "o1" / name).read_bytes() == (tmp_path / "o2" / name).read_bytes(), name
    assert s1 == s2 == json.loads((tmp_path / "o1" / "summary.json").read_text())
    assert s1["n_read"] == s1["n_kept"] + s1["n_quarantined"] == 121
    assert s1["completions_dropped"] == {"non_numeric_rating": sum(
        1 for i in range(120) if i % 11 == 5 and i % 7 != 3 and i % 13)}
    assert set(s1["quarantined_by_reason"]) == {"empty_prompt", "not_an_image", "malformed_json"}
    assert s1["files"] == {"format": "vlfeedback", "data": ["vlfeedback_80k.jsonl"],
                           "instruction_source": "instruction_source.jsonl"}
    assert s1["image_root"] == str(d.resolve())
    kept = [instruction_from_row(r) for r in read_parquet_rows(tmp_path / "o1" / "instructions.parquet")]
    assert kept == ingest(IngestConfig(path=d)).instructions
    q = read_parquet_rows(tmp_path / "o1" / "quarantine.parquet")
    assert q[0]["reason"] == "not_an_image" and q[-1]["reason"] == "malformed_json"


def test_written_bytes_do_not_depend_on_checkout_location(tmp_path):
    d = mixed_dataset(tmp_path / "one", n=30)
    moved = tmp_path / "two" / "elsewhere"
    shutil.copytree(d, moved)
    write_ingest(run(d), tmp_path / "o1", image_root="data/vlf")
    write_ingest(run(moved), tmp_path / "o2", image_root="data/vlf")
    for name in ("instructions.parquet", "quarantine.parquet", "summary.json"):
        assert (tmp_path / "o1" / name).read_bytes() == (tmp_path / "o2" / name).read_bytes(), name
    assert json.loads((tmp_path / "o1" / "summary.json").read_text())["image_root"] == "data/vlf"


# ---------------------------------------------------------------------------------------------- mDPO json

VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
          "helpful, detailed, and polite answers to the user's questions. ")


def test_strip_prompt_template():
    assert strip_prompt_template(VICUNA + "USER: <image>\nHow many dogs?\nASSISTANT:") == "How many dogs?"
    assert strip_prompt_template("USER: <image>\nWhat is\nthis? ASSISTANT: ") == "What is\nthis?"
    assert strip_prompt_template("<image>\nDescribe it.") == "Describe it."
    assert strip_prompt_template("Describe it.\n<image>") == "Describe it."  # LLaVA's image-after-question form
    assert strip_prompt_template("  Describe it. ") == "Describe it."
    # Only the template's one placeholder goes: one written in the question stays, for ingest to quarantine.
    assert strip_prompt_template("<image>\nIs <image> here?") == "Is <image> here?"


def make_mdpo(tmp_path, records, as_jsonl=False):
    (tmp_path / "images").mkdir(exist_ok=True)
    for name in ("llava-1", "llava-2"):
        Image.new("RGB", (24, 16), "white").save(tmp_path / "images" / f"{name}.jpg")
    path = tmp_path / ("pairs.jsonl" if as_jsonl else "pairs.json")
    path.write_text("".join(json.dumps(r) + "\n" for r in records) if as_jsonl else json.dumps(records, indent=2))
    return path


def pair(img="images/llava-1.jpg", q="How many dogs?", chosen="Two dogs.", rejected="Three dogs and a cat."):
    return {"img_path": img, "prompt": VICUNA + f"USER: <image>\n{q} ASSISTANT:", "chosen": chosen, "rejected": rejected}


@pytest.mark.parametrize("as_jsonl", [False, True])
def test_mdpo_json_rows(tmp_path, as_jsonl):
    records = [pair(), pair("images/llava-2.jpg", "Color?"), pair(chosen="Same.", rejected=" Same. "), pair(),
               pair("../secret.jpg"), pair("/etc/hosts.jpg"), pair(q="  "), {"img_path": "images/llava-1.jpg"},
               pair(rejected=""), pair("images/missing.jpg")]
    res = run(make_mdpo(tmp_path, records, as_jsonl), format="mdpo_json")
    a, b = res.instructions
    assert (a.id, a.prompt, a.source, a.preferred, a.image, a.width) == \
           ("llava-1#1", "How many dogs?", "llava", (0, 1), "images/llava-1.jpg", 24)
    assert [c.response for c in a.completions] == ["Two dogs.", "Three dogs and a cat."]
    assert not any(c.usable for c in a.completions)  # the pair comes from `preferred`, never from ratings
    assert b.id == "llava-2#2" and b.prompt == "Color?"
    got = [(q.line, q.reason) for q in res.quarantine]
    assert got == [(3, R.IDENTICAL_PAIR), (4, R.DUPLICATE_ID), (5, R.PATH_ESCAPE), (6, R.PATH_ESCAPE),
                   (7, R.EMPTY_PROMPT), (8, R.MISSING_FIELD), (9, R.EMPTY_RESPONSE), (10, R.MISSING_IMAGE)]
    assert ("pairs.jsonl line 1" if as_jsonl else "pairs.json record 1") in res.quarantine[1].detail
    assert "'prompt'" in res.quarantine[5].detail and "'rejected'" in res.quarantine[6].detail


def test_mdpo_ids_and_source_from_row(tmp_path):
    records = [pair() | {"id": "x", "source": "SVIT"}, pair("images/llava-2.jpg") | {"id": "x"}]
    res = run(make_mdpo(tmp_path, records), format="mdpo_json", default_source="LLaVA")
    assert [(i.id, i.source) for i in res.instructions] == [("x", "svit")]
    assert res.quarantine[0].reason is R.DUPLICATE_ID and "'x'" in res.quarantine[0].detail


def test_mdpo_json_array_malformed_midway(tmp_path):
    path = make_mdpo(tmp_path, [])
    path.write_text("[" + json.dumps(pair()) + ",\n {\"img_path\": oops}, " + json.dumps(pair()) + "]")
    res = run(path, format="mdpo_json")
    assert len(res.instructions) == 1 and [(q.line, q.reason) for q in res.quarantine] == [(2, R.MALFORMED_JSON)]
    assert "record 2" in res.quarantine[0].detail


def test_json_array_streaming_across_chunk_boundaries(tmp_path):
    values = [{"a": "x" * 30, "b": [1, 2, {"c": "é\\\""}]}, 12345678901234, "str,ing]", None, [], {"d": 1.5e10}]
    p = tmp_path / "a.json"
    p.write_text("\ufeff  [ " + " ,\n".join(json.dumps(v) for v in values) + " ]  \n", encoding="utf-8")
    for chunk in (1, 3, 7, 64, 1 << 16):
        recs = list(readers._iter_json_array(p, chunk=chunk))
        assert [r.obj for r in recs] == values and all(r.error is None for r in recs), chunk
        assert [r.line for r in recs] == list(range(1, len(values) + 1))
    p.write_text("[1, 2")
    assert [r.error is not None for r in readers._iter_json_array(p, chunk=2)] == [False, False, True]


# --------------------------------------------------------------------------------------------------- hub


def test_hub_offline_raises_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataSourceUnavailable) as e:
        ingest(IngestConfig(format="hub", path=tmp_path / "dl"))
    msg = str(e.value)
    for word in ("vlfeedback", "vlfeedback_80k.jsonl", "merged_images.zip", "instruction_source.jsonl",
                 "MMInstruction/VLFeedback"):
        assert word in msg


def test_hub_connection_error_raises(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*a, **k):
        raise LocalEntryNotFoundError("ConnectError: Name or service not known")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(DataSourceUnavailable, match="format='vlfeedback'"):
        ingest(IngestConfig(format="hub", path=tmp_path / "dl"))


def test_hub_download_extracts_and_reads(tmp_path, monkeypatch):
    src = make_vlf(tmp_path, [row("a"), row("b")], sources=[{"id": "a", "source": "LLaVA"}])
    calls = []

    def fake_snapshot(repo_id, *, repo_type, revision, local_dir, allow_patterns):
        calls.append((repo_id, repo_type, revision, sorted(allow_patterns)))
        local_dir.mkdir(parents=True, exist_ok=True)
        for name in ("vlfeedback_80k.jsonl", "instruction_source.jsonl"):
            (local_dir / name).write_bytes((src / name).read_bytes())
        with zipfile.ZipFile(local_dir / "merged_images.zip", "w") as zf:
            for img in sorted((src / "merged_images").iterdir()):
                zf.write(img, f"merged_images/{img.name}")
            zf.writestr("../evil.jpg", b"x")  # zip-slip attempt must stay inside
        return str(local_dir)

    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    res = run(tmp_path / "dl", format="hub", hub_revision="abc")
    assert calls == [("MMInstruction/VLFeedback", "dataset", "abc",
                      ["instruction_source.jsonl", "merged_images.zip", "vlfeedback_80k.jsonl"])]
    assert [(i.id, i.source, i.width) for i in res.instructions] == [("a", "llava", 16), ("b", "unknown", 16)]
    assert res.files["format"] == "hub"
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "dl" / "merged_images" / "evil.jpg").exists()


def test_image_pool_uses_processes_unless_daemonic(monkeypatch):
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    from types import SimpleNamespace

    with engine._image_pool(2) as pool:
        assert isinstance(pool, ProcessPoolExecutor)
    monkeypatch.setattr(engine.mp, "current_process", lambda: SimpleNamespace(daemon=True))
    with engine._image_pool(2) as pool:  # a daemonic process may not start children
        assert isinstance(pool, ThreadPoolExecutor)


def _die(*args):
    os._exit(3)


def test_dead_workers_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "check_images", _die)  # pickled by reference: workers run _die too
    with pytest.raises(RuntimeError, match="workers=1"):
        run(make_vlf(tmp_path, [row(f"r{i}") for i in range(40)]), workers=2)


# ------------------------------------------------------------------------ the `datasets` export, real rows

REAL_VLF = CONFORMANCE / "real" / "vlfeedback"


def columnar(r, nested_annotations=False):
    """A row as Hugging Face `datasets` writes it: `completions` one struct of lists."""
    comps = r["completions"]
    out = {k: [c.get(k) for c in comps] for k in ("annotations", "model", "response")}
    if nested_annotations:  # annotations themselves column-wise, down to Rating / Rationale
        out["annotations"] = {
            a: {f: [c["annotations"].get(a, {}).get(f) for c in comps] for f in ("Rating", "Rationale")}
            for a in ASPECTS
        }
    return r | {"completions": out}


@pytest.mark.parametrize("nested", [False, True])
def test_datasets_export_with_columnar_completions(tmp_path, nested):
    rows = [row("a"), row("b", ratings=((5, 5, 5), (4, "N/A", 4), (3, 3, 3))), row("c", ratings=((4, 4, 4),) * 3),
            row("d", prompt=" ")]
    d = make_vlf(tmp_path, rows)
    from_jsonl = run(d)
    (d / "vlfeedback_80k.jsonl").unlink()
    pq.write_table(pa.Table.from_pylist([columnar(r, nested) for r in rows]), d / "train-00000-of-00001.parquet")
    from_export = run(d)
    assert from_export.instructions == from_jsonl.instructions and len(from_export.instructions) == 2
    assert [(q.line, q.reason) for q in from_export.quarantine] == [(3, R.RATINGS_TIED), (4, R.EMPTY_PROMPT)]
    assert from_export.completions_dropped == from_jsonl.completions_dropped == {R.NON_NUMERIC_RATING: 1}
    # `datasets` can also write the same layout as JSON lines.
    (d / "export.jsonl").write_text("".join(json.dumps(columnar(r, nested)) + "\n" for r in rows))
    assert run(d).instructions == from_jsonl.instructions


def test_columnar_completions_with_unequal_columns(tmp_path):
    bad = columnar(row("b"))
    bad["completions"]["response"].pop()
    res = run(make_vlf(tmp_path, [row("a"), bad, row("c") | {"completions": {}}]))
    assert [(q.line, q.reason) for q in res.quarantine] == [(2, R.BAD_FIELD_TYPE), (3, R.BAD_FIELD_TYPE)]
    assert "unequal lengths (annotations 4, model 4, response 3)" in res.quarantine[0].detail


def test_img_path_column_names_the_image(tmp_path):
    d = make_vlf(tmp_path, [row("a"), row("b"), row("c"), row("e")])
    (d / "other").mkdir()
    Image.new("RGB", (8, 6)).save(d / "other" / "b.png")
    lines = (d / "vlfeedback_80k.jsonl").read_text().splitlines()
    extra = [{"img_path": "merged_images/a.jpg"}, {"img_path": "other/b.png"}, {"img_path": "../c.jpg"},
             {"img_path": 7}]
    (d / "vlfeedback_80k.jsonl").write_text("".join(json.dumps(json.loads(s) | e) + "\n" for s, e in zip(lines, extra)))
    res = run(d)
    assert [(i.id, i.image, i.width) for i in res.instructions] == [("a", "merged_images/a.jpg", 16),
                                                                    ("b", "other/b.png", 8)]
    assert [(q.id, q.reason) for q in res.quarantine] == [("c", R.PATH_ESCAPE), ("e", R.BAD_FIELD_TYPE)]


@pytest.mark.parametrize("name", ["vlfeedback_80k.jsonl", "train-00000-of-00001.parquet"])
def test_real_vlfeedback_rows_both_layouts(tmp_path, name):
    """The real release layout (jsonl) and the real `datasets` export (parquet) give the same kept rows."""
    require(REAL_VLF / name)
    if (REAL_VLF / "merged_images").is_dir():
        res = run(REAL_VLF / name)
    else:  # images absent: stand-ins for the ids, in tmp, never next to the shared data
        (tmp_path / "merged_images").mkdir()
        for i in ("svit-detail-90001", "llava-reasoning-90002", "lrv-instruction-90003", "m3it-coco-90004"):
            Image.new("RGB", (96, 64), "gray").save(tmp_path / "merged_images" / f"{i}.jpg")
        res = run(REAL_VLF / name, image_root=tmp_path)
    assert (res.n_read, len(res.instructions)) == (4, 3)
    assert [i.id for i in res.instructions] == ["svit-detail-90001", "llava-reasoning-90002", "m3it-coco-90004"]
    assert [(q.id, q.reason) for q in res.quarantine] == [("lrv-instruction-90003", R.RATINGS_TIED)]
    assert res.completions_dropped == {R.NON_NUMERIC_RATING: 1, R.EMPTY_RESPONSE: 1}
    first = res.instructions[0]
    assert (first.image, first.width, first.height) == ("merged_images/svit-detail-90001.jpg", 96, 64)
    assert [c.model for c in first.completions] == ["gpt-4v", "qwen-vl-chat", "llava-v1.5-13b", "idefics-9b-instruct"]
    assert run(REAL_VLF / name, image_check="none").instructions == [
        dataclasses.replace(i, width=None, height=None) for i in res.instructions]


# ---------------------------------------------------------------- images that pass ingest in any pixel format


def test_image_modes_pass_or_are_quarantined_by_name(tmp_path):
    d = make_vlf(tmp_path, [row(x) for x in ("rgb", "deep", "pal", "la", "cmyk", "turned", "float")])
    imgs = d / "merged_images"
    Image.fromarray(np.full((5, 7), 40000, np.uint16)).save(imgs / "deep.jpg", format="PNG")  # content decides
    Image.new("P", (7, 5)).save(imgs / "pal.jpg", format="PNG", transparency=0)
    Image.new("LA", (7, 5)).save(imgs / "la.jpg", format="PNG")
    Image.new("CMYK", (7, 5)).save(imgs / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: turn a quarter to be upright
    Image.new("RGB", (7, 5)).save(imgs / "turned.jpg", exif=exif)
    Image.new("F", (7, 5)).save(imgs / "float.jpg", format="TIFF")
    for check in ("full", "header"):
        res = run(d, image_check=check)
        assert [(i.id, i.width, i.height) for i in res.instructions] == [
            ("rgb", 16, 16), ("deep", 7, 5), ("pal", 7, 5), ("la", 7, 5), ("cmyk", 7, 5), ("turned", 5, 7)]
        assert [(q.id, q.reason) for q in res.quarantine] == [("float", R.UNSUPPORTED_IMAGE_MODE)]


# ---------------------------------------------------------------------- the released mDPO file, as released


def test_mdpo_release_layout_paths_relative_to_the_json(tmp_path):
    """{root}/vlfeedback_llava_10k.json with img_path "images/x.jpg" and the images in {root}/images/."""
    root = tmp_path / "mdpo"
    root.mkdir()
    path = make_mdpo(root, [pair(), pair("images/llava-2.jpg"), pair("../llava-1.jpg")])
    path = path.rename(root / "vlfeedback_llava_10k.json")
    res = run(path, format="mdpo_json")  # image_root defaults to the json's folder
    assert [i.image for i in res.instructions] == ["images/llava-1.jpg", "images/llava-2.jpg"]
    assert res.image_root == root.resolve() and [q.reason for q in res.quarantine] == [R.PATH_ESCAPE]
    assert run(path, format="mdpo_json", image_root=root).instructions == res.instructions
    # The old README pointed image_root at images/ itself: every path then doubles the folder, and says so.
    doubled = run(path, format="mdpo_json", image_root=root / "images")
    assert not doubled.instructions
    assert [q.reason for q in doubled.quarantine] == [R.MISSING_IMAGE, R.MISSING_IMAGE, R.PATH_ESCAPE]
    assert f"set image_root to {root.resolve()}" in doubled.quarantine[0].detail
