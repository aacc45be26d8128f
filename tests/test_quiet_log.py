"""A training process's output reaches the run's log once per message: repeats are counted and said once."""

from __future__ import annotations

import subprocess
import sys

from mdpo_pipeline.integrations.launchers import QuietLog, follow

RAY = "[2026-12-05 10:00:0{i},123 W 12{i} 5678] gcs_rpc_client.h:179: Failed to query Ray Train Controller actor state"


def test_a_message_repeated_once_a_second_is_logged_once_with_its_count_and_progress_all_passes():
    lines: list[str] = []
    quiet = QuietLog(lines.append)
    for i in range(5):
        quiet(RAY.format(i=i))
        quiet(f"(RayTrainWorker pid=10{i}) step {i + 1}/5")
    quiet.close()
    assert lines == [RAY.format(i=0), *(f"(RayTrainWorker pid=10{i}) step {i + 1}/5" for i in range(5)),
                     f"(repeated 4 more times: {RAY.format(i=0)})"]


def test_follow_relays_a_process_output_quietly():
    script = "import sys\nfor i in range(80):\n    print('(pid=7) Failed to query Ray Train Controller actor state')\n" \
             "    print(f'step {i}')\n"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    follow(proc, lines.append)
    assert len(lines) == 82 and lines[0].endswith("actor state") and lines[-1].startswith("(repeated 79 more times")
