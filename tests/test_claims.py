"""The claims report on hand-built grid records: verdicts worked by hand, the axis sections and their plots, and
claims whose inputs the grid lacks."""

from __future__ import annotations

import json

import pytest

from mdpo_pipeline.evaluation.claims import claims_report

SEEDS = (1, 2, 3)
TRUTH = [["cat", "car"], ["bus"]]
#: Object mentions per answer: DPO covers everything but hallucinates dog and cow on the way; mDPO says less.
MENTIONS = {
    "base": [["cat", "dog", "car"], ["bus"]],
    "dpo": [["cat", "dog", "car"], ["bus", "cow"]],
    "mdpo": [["cat"], ["bus"]],
}


def record(method, seed=None, axes=None, probe=None, mentions=None, **scores):
    axes = axes or {}
    suffix = "".join(f"-{v}" for v in axes.values())
    mentions = mentions or MENTIONS.get(method, MENTIONS["dpo"])
    rec = {
        "cell": method + ("" if seed is None else f"-s{seed}") + suffix,
        "method": method,
        "seed": seed,
        "axes": axes,
        "scores": scores,
        "answers": {"object_halbench": {"n": 2, "words_mean": 10.0 + 5 * len(mentions[0]),
                                        "objects_mean": sum(map(len, mentions)) / 2}},
        "per_answer": {"object_halbench": [{"mentioned": m, "truth": t} for m, t in zip(mentions, TRUTH)]},
    }
    if probe is not None:
        rec["probe"] = {"n": 300, **probe}
    return rec


def probe(margin, gap=1.0):
    return {"conditional_margin": margin, "image_gap": gap, "image_gap_base": 0.5, "reward_margin": 0.3,
            "conditional_accuracy": 0.7}


#: Per method and seed: (CHAIR_s, CHAIR_i, AMBER CHAIR, recall, conditional margin).
VALUES = {
    # (a) CHAIR_s: mdpo − dpo = −.10, −.11, −.11: interval entirely below 0 → reproduced
    # (b) CHAIR_i: mdpo − dpo = +.02, +.03, +.04 → [+.005, +.055], above 0 → not reproduced
    # (c) AMBER CHAIR: mdpo − dpo = −.01, +.01, −.02 → contains 0 → inconclusive
    "dpo": [(0.40, 0.10, 0.08, 0.78, 0.10), (0.42, 0.10, 0.09, 0.80, 0.20), (0.44, 0.10, 0.10, 0.82, 0.30)],
    "mdpo": [(0.30, 0.12, 0.07, 0.70, 0.70), (0.31, 0.13, 0.10, 0.72, 0.80), (0.33, 0.14, 0.08, 0.74, 0.90)],
    # (f) no_conditional − mdpo = +.10 each seed: a zero-width interval above 0 → reproduced
    "mdpo_no_conditional": [(0.40, 0.1, 0.1, 0.7, 0.3), (0.41, 0.1, 0.1, 0.7, 0.3), (0.43, 0.1, 0.1, 0.7, 0.3)],
    # (g) no_anchor − mdpo = −.01, +.02, −.01 → inconclusive; (h) no_conditional − no_anchor = .11, .08, .11
    "mdpo_no_anchor": [(0.29, 0.1, 0.1, 0.7, 0.6), (0.33, 0.1, 0.1, 0.7, 0.6), (0.32, 0.1, 0.1, 0.7, 0.6)],
    # (i) dpo − dpo_no_image margin = −.05, +.05, −.05: contains 0; mdpo − dpo = +.6 each → reproduced
    "dpo_no_image": [(0.5, 0.2, 0.1, 0.7, 0.15), (0.5, 0.2, 0.1, 0.7, 0.15), (0.5, 0.2, 0.1, 0.7, 0.35)],
}


def full_grid(methods=tuple(VALUES)):
    cells = [record("base", chair_s=0.45, chair_i=0.11, amber_chair=0.10, recall=0.80, mmhal_score=2.0)]
    for method in methods:
        for seed, (cs, ci, ac, rec_, margin) in zip(SEEDS, VALUES[method]):
            cells.append(record(method, seed, probe=probe(margin), chair_s=cs, chair_i=ci, amber_chair=ac,
                                recall=rec_, mmhal_score=2.5, mmhal_hallucination_rate=None))
    return cells


def by_id(out):
    return {c["id"]: c for c in out["claims"]}


def test_verdicts_by_hand(tmp_path):
    out = claims_report(full_grid(), tmp_path)
    claims = by_id(out)
    assert claims["a"]["verdict"] == "reproduced"
    # the numbers are in table units: −10.67 CHAIR_s points, interval half-width t(.975,2)·0.577/√3 = 1.434
    assert claims["a"]["mean"] == pytest.approx(-10.6667, abs=1e-3)
    assert claims["a"]["high"] - claims["a"]["mean"] == pytest.approx(1.434, abs=1e-3)
    assert claims["b"]["verdict"] == "not reproduced"
    assert (claims["b"]["low"], claims["b"]["high"]) == pytest.approx((0.5159, 5.4841), abs=1e-3)
    assert claims["c"]["verdict"] == "inconclusive"
    # Its power line: Δ = −.01, +.01, −.02 has mean −0.00667 and std 0.01528, |mean|/std = 0.4364; t_{n−1}/√n first
    # falls below it at n = 23 (t_21/√22 = 0.4435, t_22/√23 = 0.4324).
    assert claims["c"]["decides_at"] == 23 and "≈ 23 pairs would decide it" in claims["c"]["numbers"]
    # With the items too (per_answer, the same for every seed): DPO's two answers each hallucinate, mDPO's none, so
    # every resample of pairs and items differs by −100 CHAIR_s points; CHAIR_i: DPO 2 of 5 mentions, mDPO 0 of 2.
    assert claims["a"]["with_items"] == {"mean": -100.0, "low": -100.0, "high": -100.0}
    assert "with item sampling too [-100.0" in claims["a"]["numbers"]
    assert claims["b"]["with_items"]["mean"] == pytest.approx(-40.0) and "with_items" not in claims["c"]
    assert claims["a"]["decides_at"] is None
    # (d) common recall 2/3 (mDPO's): DPO truncated there hallucinates 1 of 2 mentions, mDPO none → Δ −50 points
    assert claims["d"]["verdict"] == "reproduced" and claims["d"]["mean"] == pytest.approx(-50.0)
    # (e1) recall mdpo − base = −.10, −.08, −.06 → reproduced; (e2) AMBER Cover was not scored
    assert claims["e1"]["verdict"] == "reproduced" and claims["e1"]["mean"] == pytest.approx(-8.0)
    assert claims["e2"]["verdict"] == "not tested" and "Cover" in claims["e2"]["why"]
    assert claims["f"]["verdict"] == "reproduced"
    assert claims["g"]["verdict"] == "inconclusive"
    assert claims["h"]["verdict"] == "reproduced" and claims["h"]["mean"] == pytest.approx(10.0)
    assert claims["i"]["verdict"] == "reproduced"
    assert claims["i"]["parts"]["dpo_minus_dpo_no_image"]["low"] < 0 < claims["i"]["parts"]["dpo_minus_dpo_no_image"][
        "high"]
    assert claims["j1"]["verdict"] == claims["j2"]["verdict"] == "not tested"
    assert "experiment.axes" in claims["j1"]["why"]


def test_report_files_tables_and_markdown(tmp_path):
    out = claims_report(full_grid(), tmp_path, title="Grid X")
    md = (tmp_path / "claims.md").read_text()
    assert out["path"] == tmp_path / "claims.md" and md == out["markdown"] and md.startswith("# Grid X")
    # Table 1: rows in order, percent columns ×100 as mean ± std, base's single value, recall and length beside
    assert [r["method"] for r in out["tables"]["table1"]] == ["base", "dpo", "mdpo", "mdpo_no_conditional",
                                                              "mdpo_no_anchor", "dpo_no_image"]
    assert ("| mdpo | 3 | 2.50 ± 0.00 | 31.3 ± 1.5 | 13.0 ± 1.0 | 72.0 ± 2.0 | 8.3 ± 1.5 | 15.0 ± 0.0 | 1.00 ± 0.00 |"
            in md)
    assert "| base | 1 | 2.00 | 45.0 | 11.0 | 80.0 | 10.0 | 25.0 | 2.00 |" in md
    # Methods with 95 % intervals: mDPO's CHAIR_s .30/.31/.33 → 31.3, std 1.528, half-width t(.975,2)·1.528/√3 =
    # 3.795; its probe margin .7/.8/.9 → 0.80 ± 4.303·0.1/√3 = 0.248
    methods = md.split("## Methods with 95 % intervals")[1].split("\n## ")[0]
    mdpo_row = next(line for line in methods.splitlines() if line.startswith("| mdpo |"))
    assert "| 31.3 [27.5, 35.1] |" in mdpo_row and mdpo_row.endswith("| 0.80 [0.55, 1.05] |")
    assert [r["method"] for r in out["tables"]["methods"]][:3] == ["base", "dpo", "mdpo"]
    assert "HalRate" not in md.split("## Table 1")[1].split("##")[0]  # a metric without values gets no column
    # paired differences, Table 2 with the paper beside, the probe and matched recall
    assert "### mdpo − dpo" in md and "### dpo_no_image − dpo" in md and "### mdpo − base" in md
    assert "| CHAIR_s ↓ | 3 | -10.7 [-12.1, -9.2] | mdpo better |" in md
    assert "| mdpo_no_conditional |" in md.split("## Table 2")[1] and "40.3" in md.split("## Table 2")[1]
    assert "r = 66.7 %" in md
    assert "| base (image_gap_base) | – | 0.50 ± 0.00 | – | – |" in md
    assert "| mdpo | 0.80 ± 0.10 |" in md
    assert "did not vary `corrupted_images.strategy`" in md and "did not vary `preference_pairs.n`" in md
    assert "reproduced when" not in md and "**reproduced** when" in md
    # machine-readable twin
    data = json.loads((tmp_path / "claims.json").read_text())
    assert {c["id"] for c in data["claims"]} == {c["id"] for c in out["claims"]}
    assert data["matched_recall"]["recall"] == pytest.approx(2 / 3)
    assert {"table1", "paired_differences", "table2", "table3", "data_size", "probe"} <= set(data["tables"])
    diff = next(d for d in data["tables"]["paired_differences"] if (d["a"], d["b"], d["key"]) == ("mdpo", "dpo",
                                                                                                  "chair_s"))
    assert diff["n"] == 3 and diff["mean"] == pytest.approx(-0.106667, abs=1e-5)
    # plots
    assert [p.name for p in out["figures"]] == ["claims_bars.png"]
    assert (tmp_path / "claims_bars.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_methods_are_not_tested(tmp_path):
    out = claims_report(full_grid(methods=("dpo", "mdpo")), tmp_path)
    claims = by_id(out)
    assert claims["a"]["verdict"] == "reproduced"
    for cid, method in (("f", "mdpo_no_conditional"), ("g", "mdpo_no_anchor"), ("h", "mdpo_no_conditional"),
                        ("i", "dpo_no_image")):
        assert claims[cid]["verdict"] == "not tested" and method in claims[cid]["why"]
    assert [r["method"] for r in out["tables"]["table2"]] == ["mdpo", "dpo"]
    assert "not tested" in out["markdown"] and "### mdpo_no_anchor − mdpo" not in out["markdown"]


def test_matched_recall_is_set_by_mdpo_and_dpo(tmp_path):
    """An ablation that mentions nothing (recall 0) does not drag the common recall to 0: it shows – instead."""
    cells = full_grid(methods=("dpo", "mdpo"))
    cells += [record("mdpo_no_anchor", seed, probe=probe(0.5), mentions=[[], []], chair_s=0.0, chair_i=0.0, recall=0.0)
              for seed in SEEDS]
    out = claims_report(cells, tmp_path)
    assert out["tables"]["matched_recall"]["recall"] == pytest.approx(2 / 3)
    assert out["tables"]["matched_recall"]["cells"]["mdpo_no_anchor-s1"]["chair_i"] is None
    assert by_id(out)["d"]["verdict"] == "reproduced"
    assert "| mdpo_no_anchor | 0.0 ± 0.0 | 0.0 ± 0.0 | – |" in out["markdown"]


def size_grid():
    # seed 1: gain (dpo − mdpo CHAIR_s) .05 at n=750, .10 at n=1500; seed 2: .06 → .12
    chair = {(1, 750): (0.40, 0.35), (1, 1500): (0.40, 0.30), (2, 750): (0.42, 0.36), (2, 1500): (0.42, 0.30)}
    cells = []
    for n in (750, 1500):
        cells.append(record("base", axes={"preference_pairs.n": n}, chair_s=0.5, chair_i=0.1, recall=0.8))
        for seed in (1, 2):
            dpo, mdpo = chair[seed, n]
            cells.append(record("dpo", seed, {"preference_pairs.n": n}, probe(0.1), chair_s=dpo, chair_i=0.1,
                                recall=0.8))
            cells.append(record("mdpo", seed, {"preference_pairs.n": n}, probe(0.5), chair_s=mdpo, chair_i=0.1,
                                recall=0.7))
    return cells


def test_data_size_axis(tmp_path):
    out = claims_report(size_grid(), tmp_path)
    rows = out["tables"]["data_size"]
    assert [r["n"] for r in rows] == [750, 1500]
    assert rows[1]["mdpo"]["mean"] == pytest.approx(0.30) and rows[1]["gain"]["mean"] == pytest.approx(0.11)
    # Table 1 at the first value listed, 750
    t1 = {r["method"]: r for r in out["tables"]["table1"]}
    assert t1["mdpo"]["values"]["chair_s"]["mean"] == pytest.approx(0.355)
    # slopes per seed .05/log10(2) and .06/log10(2): mean 18.27 points per ×10; two seeds → wide t interval
    j2 = by_id(out)["j2"]
    assert j2["mean"] == pytest.approx(100 * 0.055 / 0.30103, rel=1e-4) and j2["verdict"] == "inconclusive"
    assert (tmp_path / "data_size.png").stat().st_size > 5_000
    assert "## Data size" in out["markdown"] and "| 1500 | 41.0 ± 1.4 | 30.0 ± 0.0 |" in out["markdown"]
    explicit = claims_report(size_grid(), tmp_path / "at1500", defaults={"preference_pairs.n": 1500})
    t1 = {r["method"]: r for r in explicit["tables"]["table1"]}
    assert t1["mdpo"]["values"]["chair_s"]["mean"] == pytest.approx(0.30)
    with pytest.raises(ValueError):
        claims_report(size_grid(), tmp_path / "bad", defaults={"preference_pairs.n": 3000})


def test_strategy_axis_and_sweep(tmp_path):
    # mDPO CHAIR_s: crop_1_20 .30/.31/.32, random_image .40/.40/.41 → random − crop = .10, .09, .09 → reproduced
    cells = []
    for strategy, values in (("crop_1_20", (0.30, 0.31, 0.32)), ("random_image", (0.40, 0.40, 0.41))):
        for share in (0.5, 1.0):
            axes = {"corrupted_images.strategy": strategy, "shapeworld.unconditional_share": share}
            cells.append(record("base", axes=axes, chair_s=0.5, chair_i=0.1, recall=0.8))
            for seed, v in zip(SEEDS, values):
                cells.append(record("mdpo", seed, axes, probe(0.5 + share), chair_s=v + share / 10, chair_i=0.1,
                                    recall=0.7, mmhal_score=2.9))
                cells.append(record("dpo", seed, axes, probe(0.1), chair_s=0.45, chair_i=0.1, recall=0.8))
    out = claims_report(cells, tmp_path)
    j1 = by_id(out)["j1"]
    assert j1["verdict"] == "reproduced" and "random_image − crop_1_20" in j1["numbers"]
    assert [r["strategy"] for r in out["tables"]["table3"]] == ["crop_1_20", "random_image"]
    assert out["tables"]["table3"][1]["paper"]["chair_s"] == 40.7
    sweep = out["tables"]["sweeps"]["shapeworld.unconditional_share"]
    assert [(r["value"], r["method"]) for r in sweep] == [(0.5, "dpo"), (0.5, "mdpo"), (1.0, "dpo"), (1.0, "mdpo")]
    assert sweep[3]["values"]["probe.conditional_margin"]["mean"] == pytest.approx(1.5)
    names = sorted(p.name for p in out["figures"])
    assert names == ["claims_bars.png", "sweep_shapeworld_unconditional_share.png"]
    assert "## Mechanism sweep: `shapeworld.unconditional_share`" in out["markdown"]


def test_bad_records(tmp_path):
    with pytest.raises(ValueError):
        claims_report([], tmp_path)
    with pytest.raises(ValueError):
        claims_report([record("dpo", 1), record("dpo", 1)], tmp_path)
    with pytest.raises(ValueError):
        claims_report([{"method": "dpo"}], tmp_path)


def test_base_models_are_replicates_pooled_and_paired_within_their_own(tmp_path):
    # Two worlds (shapeworld.seed 0 and 7), each its own base model; mDPO − DPO on CHAIR_s is −.10 in world 0 and
    # −.12 in world 7 for every seed: 6 pairs, none across worlds, mean −.11.
    cells = []
    for world, shift in ((0, 0.0), (7, 0.02)):
        axes = {"shapeworld.seed": world}
        cells.append(record("base", axes=axes, chair_s=0.5, chair_i=0.1, recall=0.8))
        for seed in SEEDS:
            cells.append(record("dpo", seed, axes=axes, chair_s=0.40 + seed / 100 + shift, chair_i=0.1, recall=0.8))
            cells.append(record("mdpo", seed, axes=axes, chair_s=0.30 + seed / 100, chair_i=0.1,
                                recall=0.8))
            cells.append(record("mpo", seed, axes=axes, chair_s=0.35 + seed / 100, chair_i=0.1, recall=0.8))
    out = claims_report(cells, tmp_path)
    claims = by_id(out)
    assert claims["a"]["n"] == 6 and claims["a"]["mean"] == pytest.approx(-11.0)
    table1 = {row["method"]: row for row in out["tables"]["table1"]}
    assert table1["mdpo"]["n_cells"] == 6, "both base models' cells are pooled, not the default one's"
    # Every method against both references.
    pairs = {(d["a"], d["b"]) for d in out["tables"]["paired_differences"]}
    assert {("mpo", "mdpo"), ("mpo", "dpo"), ("mdpo", "dpo")} <= pairs
    mpo_mdpo = [d for d in out["tables"]["paired_differences"] if (d["a"], d["b"], d["key"]) == ("mpo", "mdpo",
                                                                                                  "chair_s")]
    assert mpo_mdpo[0]["n"] == 6 and mpo_mdpo[0]["mean"] == pytest.approx(0.05)
