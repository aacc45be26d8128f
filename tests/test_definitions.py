"""The Dagster definitions load and declare what the pipeline promises."""

import dagster as dg

from mdpo_pipeline.definitions import defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"shapeworld", "raw_silkie", "preference_pairs", "corrupted_images"} <= keys
    # Lineage: each data asset depends on the one before it.
    parents = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys} for k in graph.get_all_asset_keys()}
    assert parents["raw_silkie"] == {"shapeworld"}
    assert parents["preference_pairs"] == {"raw_silkie"}
    assert parents["corrupted_images"] == {"preference_pairs"}


def test_quality_gates_are_blocking_checks():
    specs = {}
    for check_def in defs.asset_checks or []:
        for spec in check_def.check_specs:
            specs[spec.key.name] = spec
    assert {"quarantine_share_below_threshold", "pairs_are_usable", "every_pair_has_its_corrupted_image"} <= set(specs)
    assert all(s.blocking for s in specs.values())
