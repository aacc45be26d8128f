"""The real VLFeedback rows (shared conformance copy) through ingest, pairs and corruption, with counts at each
stage; and an image that passes a header-only ingest but cannot be decoded when it is corrupted."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from mdpo_pipeline.core.corruption import CorruptionConfig, corrupt_images
from mdpo_pipeline.core.ingest import IngestConfig, ingest, write_ingest
from mdpo_pipeline.core.pairs import PairsConfig, make_pairs

from tests.conformance import CONFORMANCE, needs

REAL_VLF = CONFORMANCE / "real" / "vlfeedback"
EXPORT = REAL_VLF / "train-00000-of-00001.parquet"
IDS = ("svit-detail-90001", "llava-reasoning-90002", "lrv-instruction-90003", "m3it-coco-90004")

pytestmark = needs(EXPORT)


def stand_in_images(root: Path) -> Path:
    """96x64 JPEGs for the four ids under root/merged_images (the shared copy is never written to)."""
    (root / "merged_images").mkdir(parents=True)
    for k, i in enumerate(IDS):
        Image.effect_noise((96, 64), 40 + k).convert("RGB").save(root / "merged_images" / f"{i}.jpg", quality=90)
    return root


def chain(tmp_path: Path, image_root: Path, image_check: str) -> tuple[dict, dict, dict]:
    res = ingest(IngestConfig(path=EXPORT, image_root=image_root, image_check=image_check, workers=1))
    raw = write_ingest(res, tmp_path / "raw_silkie")
    pairs = make_pairs(res.instructions, PairsConfig(strategy="all_pairs", sources=(), n=100, seed=0))
    samples = sorted({(p.instruction_id, p.image) for p in pairs.pairs})
    corrupted = corrupt_images(samples, image_root, tmp_path / "corrupted_images", CorruptionConfig(workers=1))
    return raw, pairs.summary, corrupted.summary


def test_export_through_every_data_stage(tmp_path):
    root = REAL_VLF if (REAL_VLF / "merged_images").is_dir() else stand_in_images(tmp_path / "images")
    raw, pairs, corrupted = chain(tmp_path, root, "full")
    assert (raw["n_read"], raw["n_kept"], raw["n_quarantined"]) == (4, 3, 1)
    assert raw["quarantined_by_reason"] == {"ratings_tied": 1}
    assert raw["completions_dropped"] == {"empty_response": 1, "non_numeric_rating": 1}
    # svit: 4 distinct means -> 6 pairs; llava-reasoning: 3 -> 3; m3it: 2 -> 1.
    assert (pairs["instructions_with_pairs"], pairs["pairs_built"]) == (3, 10)
    assert corrupted["n_images"] == 3 and "n_quarantined" not in corrupted


def test_image_undecodable_at_corruption_is_quarantined_and_counted(tmp_path):
    root = stand_in_images(tmp_path / "images")
    victim = root / "merged_images" / f"{IDS[0]}.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # header intact, entropy stream cut short
    raw, _, corrupted = chain(tmp_path, root, "header")  # a header-only ingest cannot see the truncation
    assert raw["n_kept"] == 3
    assert (corrupted["n_read"], corrupted["n_images"], corrupted["n_quarantined"]) == (3, 2, 1)
    assert corrupted["quarantined_by_reason"] == {"undecodable_image": 1}
    q = pq.read_table(tmp_path / "corrupted_images" / "quarantine.parquet").to_pylist()
    assert [(r["sample_id"], r["reason"]) for r in q] == [(IDS[0], "undecodable_image")]
    manifest = pq.read_table(tmp_path / "corrupted_images" / "manifest.parquet").to_pylist()
    assert IDS[0] not in {m["sample_id"] for m in manifest}
