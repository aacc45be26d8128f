"""`dagster dev` (what `make dev` runs) serves the project's assets on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import stop_process_group

pytestmark = pytest.mark.slow

QUERY = "{ assetNodes { assetKey { path } hasAssetChecks } }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dagster_dev_lists_the_data_assets(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = _free_port()
    dagster = Path(sys.executable).parent / "dagster"
    # Its own session: `dagster dev` ignores SIGTERM from a non-interactive parent otherwise
    # (docs/environment.md, "`dagster dev` and signals").
    proc = subprocess.Popen(
        [str(dagster), "dev", "-m", "mdpo_pipeline.definitions", "-h", "127.0.0.1", "-p", str(port)],
        env=dict(os.environ, DAGSTER_HOME=str(home)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        body = json.dumps({"query": QUERY}).encode()
        deadline, nodes = time.monotonic() + 120, None
        while time.monotonic() < deadline and nodes is None:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=5) as resp:
                    nodes = json.load(resp)["data"]["assetNodes"]
            except (OSError, KeyError, TypeError):
                assert proc.poll() is None, "dagster dev exited early"
                time.sleep(1)
        assert nodes is not None, "dagster dev did not answer within 120 s"
        found = {"/".join(n["assetKey"]["path"]): n["hasAssetChecks"] for n in nodes}
        assert {"shapeworld", "raw_silkie", "preference_pairs", "corrupted_images"} <= set(found)
        assert found["raw_silkie"] and found["corrupted_images"]
    finally:
        stop_process_group(proc, signal.SIGINT)
