"""Starting a training run as its own process. No Dagster here; the Dagster resource wraps this.

The run gets a JSON config file and writes an adapter directory; the launcher only starts it, streams its
output and reads the summary it leaves, so the same program runs locally, in CI or in a container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mdpo_pipeline.core.io import write_json
from mdpo_pipeline.training.run import TrainRunConfig


class TrainingFailed(RuntimeError):
    """The training process exited non-zero; the message carries the end of its output."""


def run_config_path(cfg: TrainRunConfig) -> Path:
    """Where the run's config file is written: beside its adapter directory."""
    return Path(f"{cfg.output_dir}.run.json")


def launch_local(
    cfg: TrainRunConfig, log: Callable[[str], None] = print, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``mdpo train`` in a subprocess with this interpreter; return the adapter's summary.json."""
    path = run_config_path(cfg)
    write_json(asdict(cfg), path)
    cmd = [sys.executable, "-m", "mdpo_pipeline.cli", "train", "--config", str(path)]
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        # Progress bars redraw with \r; only whole lines are worth a log entry.
        text = line.rstrip().rsplit("\r", 1)[-1]
        if text:
            tail.append(text)
            log(text)
    if proc.wait() != 0:
        raise TrainingFailed(f"`{' '.join(cmd)}` exited {proc.returncode}:\n" + "\n".join(tail))
    return json.loads((Path(cfg.output_dir) / "summary.json").read_text())
