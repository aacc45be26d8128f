"""Two materializations of one adapter partition at once: the second waits for the first (and says so), so the
adapter directory and its registry version are never written by two runs at the same time. Real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from mdpo_pipeline.pipeline.project import Project
from mdpo_pipeline.pipeline.train import adapter_lock

HOLD = """
import json, sys, time
from pathlib import Path
from mdpo_pipeline.pipeline.project import Project
from mdpo_pipeline.pipeline.train import adapter_lock
lines = []
with adapter_lock(Project(Path(sys.argv[1])), "mdpo", holder=sys.argv[2], log=lines.append):
    start = time.time(); time.sleep(float(sys.argv[3])); end = time.time()
print(json.dumps({"start": start, "end": end, "lines": lines}))
"""


def test_a_second_run_of_one_partition_waits_for_the_first(tmp_path):
    first = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "Dagster run A", "2"],
                             stdout=subprocess.PIPE, text=True)
    holder = tmp_path / "artifacts/adapters/mdpo.lock.holder"
    deadline = time.monotonic() + 60
    while not holder.is_file() and time.monotonic() < deadline:
        assert first.poll() is None, "the first run ended before it held the lock"
        time.sleep(0.05)
    assert "Dagster run A" in holder.read_text()
    second = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path), "Dagster run B", "0"],
                            capture_output=True, text=True, timeout=120)
    a, b = json.loads(first.communicate(timeout=120)[0]), json.loads(second.stdout)
    assert b["start"] >= a["end"], "the second trained only once the first had finished"
    assert len(b["lines"]) == 1 and b["lines"][0].startswith("adapters[mdpo] is being trained by Dagster run A (pid ")
    assert a["lines"] == [] and not holder.exists()


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    project = Project(tmp_path)
    try:
        with adapter_lock(project, "dpo", holder="run 1"):
            raise RuntimeError("training failed")
    except RuntimeError:
        pass
    lines: list[str] = []
    with adapter_lock(project, "dpo", holder="run 2", log=lines.append):
        assert "run 2" in (tmp_path / "artifacts/adapters/dpo.lock.holder").read_text()
    assert lines == []
