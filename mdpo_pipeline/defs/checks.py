"""Blocking quality gates on the data assets: a failing check stops downstream assets in the same run."""

from __future__ import annotations

import dagster as dg

from mdpo_pipeline.defs.assets.data import corrupted_images, preference_pairs, raw_silkie
from mdpo_pipeline.defs.metadata import summary_metadata
from mdpo_pipeline.defs.resources import ProjectResource
from mdpo_pipeline.pipeline import quality
from mdpo_pipeline.pipeline.settings import load_settings


def _result(passed: bool, details: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=passed, metadata=summary_metadata(details))


@dg.asset_check(asset=raw_silkie, blocking=True)
def quarantine_share_below_threshold(project: ProjectResource) -> dg.AssetCheckResult:
    """Fails when more than params.yaml's raw_silkie.max_quarantine_share of the rows were quarantined."""
    proj = project.project()
    summary = proj.summary("raw_silkie")
    return _result(*quality.quarantine_gate(summary, load_settings(proj).raw_silkie.max_quarantine_share))


@dg.asset_check(asset=preference_pairs, blocking=True)
def pairs_are_usable(project: ProjectResource) -> dg.AssetCheckResult:
    """Fails on duplicate pair ids, empty or identical answers, or a missing image."""
    proj = project.project()
    image_root = proj.path(proj.summary("raw_silkie")["image_root"])
    expected = load_settings(proj).preference_pairs.n
    return _result(*quality.pairs_gate(proj.data_dir("preference_pairs") / "pairs.parquet", image_root, expected))


@dg.asset_check(asset=corrupted_images, blocking=True)
def every_pair_has_its_corrupted_image(project: ProjectResource) -> dg.AssetCheckResult:
    """Fails when a sampled instruction lacks its corrupted image or a crop is outside its area bounds."""
    proj = project.project()
    out = proj.data_dir("corrupted_images")
    return _result(
        *quality.corruption_gate(out / "manifest.parquet", proj.data_dir("preference_pairs") / "pairs.parquet", out)
    )


data_checks = [quarantine_share_below_threshold, pairs_are_usable, every_pair_has_its_corrupted_image]
