"""The comparison report: paper layout, units, row order, the paper's rows, and the chart file."""

from __future__ import annotations

from mdpo_pipeline.evaluation.report import comparison_chart, comparison_table

SCORES = {
    "mdpo": {"mmhal_score": 3.0, "mmhal_hallucination_rate": 0.4, "chair_s": 0.25, "chair_i": 0.05,
             "amber_chair": 0.049, "amber_cover": 0.674, "amber_hal": 0.377, "amber_cog": 0.024,
             "pope_f1": 0.85, "pope_accuracy": 0.84},
    "base": {"mmhal_score": 2.0, "mmhal_hallucination_rate": 0.6, "chair_s": 0.5, "chair_i": 0.1,
             "amber_chair": 0.1, "amber_cover": 0.7, "amber_hal": 0.6, "amber_cog": 0.06},
    "dpo": {"chair_s": 0.45, "chair_i": None},
}


def test_rows_in_paper_order_with_percent_columns():
    """CHAIR_s 0.25 → 25.0 (%); MMHal score and rate stay as they are; a missing value prints as –; POPE after
    the paper's columns."""
    table = comparison_table(SCORES, "shapeworld-tiny")
    assert [n for n, _ in table.rows] == ["base", "dpo", "mdpo"]
    assert table.rows[2][1] == [3.0, 0.4, 25.0, 5.0, 4.9, 67.4, 37.7, 2.4, 85.0, 84.0]
    md = table.markdown(judge_note="rule-based judge")
    assert md.startswith("| model | MMHal ↑ | HalRate ↓ | CHAIR_s ↓ | CHAIR_i ↓ | AMBER CHAIR ↓ | Cover ↑ | Hal ↓ | "
                         "Cog ↓ | POPE F1 ↑ | POPE Acc. ↑ |")
    assert "| mdpo | 3.00 | 0.40 | 25.0 | 5.0 | 4.9 | 67.4 | 37.7 | 2.4 | 85.0 | 84.0 |" in md
    assert "| dpo | – | – | 45.0 | – |" in md
    assert not table.paper_rows and "paper" not in md and md.endswith("rule-based judge")


def test_paper_rows_for_a_paper_model_and_chart(tmp_path):
    table = comparison_table(SCORES, "llava-1.5-7b")
    assert [n for n, _ in table.paper_rows] == ["base", "dpo", "mdpo"]
    assert "| paper mdpo | 2.39 | 0.54 | 35.7 | 9.8 | 4.4 | 52.4 | 24.5 | 2.4 | – | – |" in table.markdown()
    png = comparison_chart(table, tmp_path / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
