"""The registry gate: pure decisions on hand-picked numbers, then aliases moved in a real (sqlite) MLflow registry."""

from __future__ import annotations

import json

import pytest

from mdpo_pipeline.integrations.tracking import apply_decision, current_champion
from mdpo_pipeline.evaluation.registry import GatePolicy, decide

BASE = {"chair_s": 0.40, "recall": 0.80}


def test_decisions_on_hand_picked_numbers():
    """Base CHAIR_s 0.40, recall 0.80; allowed recall drop 0.05.
    - a: CHAIR_s 0.30 (better), recall 0.78 (drop 0.02 ≤ 0.05) → passes, promoted (no champion yet)
    - b: CHAIR_s 0.20 (better), recall 0.70 (drop 0.10 > 0.05) → fails: it bought CHAIR by saying less
    - c: CHAIR_s 0.45 (worse) → fails
    - d: CHAIR_s 0.35 vs champion a at 0.30 → passes the base gate but is not promoted
    """
    a = decide("a", {"chair_s": 0.30, "recall": 0.78}, BASE)
    assert (a.passed, a.promote) == (True, True)
    b = decide("b", {"chair_s": 0.20, "recall": 0.70}, BASE)
    assert (b.passed, b.promote) == (False, False) and "beyond 0.05" in b.reasons[1]
    c = decide("c", {"chair_s": 0.45, "recall": 0.80}, BASE)
    assert (c.passed, c.promote) == (False, False) and "not better" in c.reasons[0]
    d = decide("d", {"chair_s": 0.35, "recall": 0.80}, BASE, champion={"chair_s": 0.30}, champion_name="a")
    assert (d.passed, d.promote) == (True, False)
    assert d.numbers["champion_chair_s"] == 0.30 and d.numbers["base_chair_s"] == 0.40


def test_higher_is_better_primary_and_required_margin():
    policy = GatePolicy(primary="mmhal_score", coverage="recall", min_improvement=0.1)
    base = {"mmhal_score": 2.0, "recall": 0.8}
    assert decide("x", {"mmhal_score": 2.05, "recall": 0.8}, base, policy).passed is False  # +0.05 < margin 0.1
    assert decide("y", {"mmhal_score": 2.2, "recall": 0.8}, base, policy).passed is True


def test_missing_metric_is_an_error_naming_it():
    with pytest.raises(KeyError, match="'recall'"):
        decide("x", {"chair_s": 0.1}, BASE)


def test_aliases_move_champion_to_previous_and_every_decision_is_recorded(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("tiny")
    versions = [client.create_model_version("tiny", source=f"file:///tmp/a{i}").version for i in range(3)]

    first = apply_decision(client, "tiny", versions[0], decide("dpo", {"chair_s": 0.30, "recall": 0.8}, BASE))
    assert first == {"version": versions[0], "champion_before": None, "champion_after": versions[0]}

    champion = {"chair_s": 0.30}
    worse = decide("mdpo_no_anchor", {"chair_s": 0.35, "recall": 0.8}, BASE, champion=champion, champion_name="dpo")
    second = apply_decision(client, "tiny", versions[1], worse)
    assert second["champion_after"] == versions[0]

    better = decide("mdpo", {"chair_s": 0.20, "recall": 0.79}, BASE, champion=champion, champion_name="dpo")
    third = apply_decision(client, "tiny", versions[2], better)
    assert third == {"version": versions[2], "champion_before": versions[0], "champion_after": versions[2]}
    assert current_champion(client, "tiny").version == versions[2]
    assert client.get_model_version_by_alias("tiny", "previous").version == versions[0]

    tags = client.get_model_version("tiny", versions[1]).tags
    assert tags["gate.passed"] == "true" and tags["gate.promoted"] == "false"
    assert json.loads(tags["gate.decision"])["numbers"]["champion"] == "dpo"
