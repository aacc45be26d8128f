"""Quality gates on the stages' outputs, as plain functions returning (passed, details). No Dagster here."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mdpo_pipeline.core.corruption import CROP_SCALES, crop_area_ok
from mdpo_pipeline.core.schemas import QuarantineReason, same_answer


def quarantine_gate(summary: dict[str, Any], max_share: float) -> tuple[bool, dict[str, Any]]:
    """Pass when quarantined / read ≤ max_share and every read row is accounted for."""
    n_read, n_kept, n_q = summary["n_read"], summary["n_kept"], summary["n_quarantined"]
    share = n_q / n_read if n_read else 1.0
    details = {
        "n_read": n_read,
        "n_kept": n_kept,
        "n_quarantined": n_q,
        "quarantined_share": round(share, 6),
        "max_quarantine_share": max_share,
        "accounted_for": n_kept + n_q == n_read,
    }
    return (n_read > 0 and n_kept + n_q == n_read and share <= max_share), details


def pairs_gate(pairs_path: Path, image_root: Path, expected_n: int) -> tuple[bool, dict[str, Any]]:
    """Pass when every pair is usable: unique id, non-empty and distinct answers, image present."""
    rows = pq.read_table(pairs_path, columns=["pair_id", "chosen", "rejected", "image"]).to_pylist()
    problems: Counter[str] = Counter()
    seen: set[str] = set()
    for r in rows:
        if r["pair_id"] in seen:
            problems["duplicate_pair_id"] += 1
        seen.add(r["pair_id"])
        if not r["chosen"].strip() or not r["rejected"].strip():
            problems["empty_answer"] += 1
        if same_answer(r["chosen"], r["rejected"]):  # equal once spacing and Unicode form are normalised
            problems["identical_answers"] += 1
    for image in {r["image"] for r in rows}:
        if not (image_root / image).is_file():
            problems["missing_image"] += 1
    details = {"n_pairs": len(rows), "expected_n": expected_n, "problems": dict(problems) or "none"}
    return (len(rows) > 0 and not problems), details


def corruption_gate(
    manifest_path: Path, pairs_path: Path, out_dir: Path, max_quarantine_share: float = 0.05
) -> tuple[bool, dict[str, Any]]:
    """Pass when every sampled instruction has its corrupted image on disk or is quarantined (at most
    max_quarantine_share of them), crops within their area bounds."""
    manifest = pq.read_table(manifest_path).to_pylist()
    wanted = set(pq.read_table(pairs_path, columns=["instruction_id"])["instruction_id"].to_pylist())
    have = {m["sample_id"] for m in manifest}
    quarantine_path = out_dir / "quarantine.parquet"  # written only when a sample was quarantined
    reasons: dict[str, str] = {}
    if quarantine_path.is_file():
        table = pq.read_table(quarantine_path, columns=["sample_id", "reason"])
        reasons = dict(zip(table["sample_id"].to_pylist(), table["reason"].to_pylist()))
    quarantined = set(reasons)
    # An instruction without a contrasting scene (SymMPO's counterfactual strategy: count, colour and relation
    # questions) is left out by design, not a fault of the data: counted, not held against the share.
    by_design = {sid for sid, reason in reasons.items() if reason == QuarantineReason.NO_COUNTERFACTUAL.value}
    problems: Counter[str] = Counter()
    problems["missing_sample"] = len(wanted - have - quarantined)
    share = len((quarantined - by_design) & wanted) / len(wanted) if wanted else 0.0
    if share > max_quarantine_share:
        problems["quarantined_over_share"] = len((quarantined - by_design) & wanted)
    areas = []
    for m in manifest:
        if not (out_dir / m["corrupted_image"]).is_file():
            problems["missing_file"] += 1
        scale = CROP_SCALES.get(m["strategy"])
        params = json.loads(m["params"])
        if scale and "area_fraction" in params:
            a = params["area_fraction"]
            areas.append(a)
            # The bounds the corruption stage kept its crops within, from the one definition of them.
            if not crop_area_ok(a, scale):
                problems["area_out_of_bounds"] += 1
    problems = Counter({k: v for k, v in problems.items() if v})
    details: dict[str, Any] = {
        "n_images": len(manifest),
        "n_instructions": len(wanted),
        "n_quarantined": len(quarantined),
        "quarantined_share": round(share, 6),
    }
    if by_design:
        details["n_without_counterfactual"] = len(by_design & wanted)
    if areas:
        details |= {"area_min": round(min(areas), 4), "area_max": round(max(areas), 4)}
    details["problems"] = dict(problems) or "none"
    return not problems, details
