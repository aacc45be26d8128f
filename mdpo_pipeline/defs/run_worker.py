"""Run workers that Dagster's run monitoring can see die, and steps that die with them.

Dagster's DefaultRunLauncher (a run worker process per run, started by the code server) cannot tell the daemon's
run monitoring whether a worker still lives, so a worker killed with SIGKILL (the OOM killer, ``kill -9``) leaves
its run STARTED forever, and the step process under it — training — goes on unseen. Here:

- ``MonitoredRunLauncher`` is that launcher plus ``check_run_worker_health``: the worker's pid is the one it
  reports at start ("Started process for run (pid: N)"), judged alive only if that process existed then (a reused
  pid is not the worker) and only on the machine that launched it (tag ``LAUNCHED_ON``; elsewhere it answers
  "running", not knowing better). Run monitoring then marks a dead worker's run failed (docker/dagster.yaml and
  .dagster_home/dagster.yaml enable it, with no resume attempts: this launcher cannot resume a run in place).
- ``die_with_run_worker`` arms a step process of the multiprocess executor to be killed with its run worker; the
  training process below it already dies with it (integrations/processes.py). The rerun then resumes from the
  newest checkpoint (training/run.py) under the adapter's lock, which no orphan holds.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus

from mdpo_pipeline.integrations.processes import alive_since, die_with_parent

#: Run tag naming the machine (host name and boot) whose launcher started the run's worker.
LAUNCHED_ON = "mdpo/launched_on"
#: How a run worker announces itself in the event log (Dagster's code server and `dagster api execute_run`).
_STARTED = "Started process for run (pid: "


def machine_id() -> str:
    """This machine as a process table sees it: host name and boot id (a container has a host name of its own)."""
    boot = Path("/proc/sys/kernel/random/boot_id")
    return f"{socket.gethostname()}/{boot.read_text().strip() if boot.is_file() else 'unknown-boot'}"


def run_worker(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid a run's worker reported at start and when (epoch seconds); None before it has."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, ascending=False).records
    for record in records:
        entry = record.event_log_entry
        message = (entry.dagster_event.message if entry.dagster_event else None) or entry.user_message
        if message.startswith(_STARTED):
            pid = message[len(_STARTED):].split(")", 1)[0]
            if pid.isdigit():
                return int(pid), entry.timestamp
    return None


class MonitoredRunLauncher(dg.DefaultRunLauncher):
    """Dagster's DefaultRunLauncher whose run workers the daemon's run monitoring checks (see the module doc)."""

    def launch_run(self, context: LaunchRunContext) -> None:
        self._instance.add_run_tags(context.dagster_run.run_id, {LAUNCHED_ON: machine_id()})
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        launched_on = run.tags.get(LAUNCHED_ON)
        if launched_on != machine_id():
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"not judged here: launched on {launched_on}")
        found = run_worker(self._instance, run.run_id)
        if found is None:  # STARTED comes after the worker's pid: a run without one was not started by a worker
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker pid reported")
        pid, since = found
        if alive_since(pid, since):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run worker (pid {pid}) died without ending the run (killed: out of memory, or SIGKILL); "
            "its steps died with it. Rerun the same selection: training resumes from its newest checkpoint.")


def die_with_run_worker(context: dg.AssetExecutionContext) -> bool:
    """In a step process of the multiprocess executor (whose parent is the run worker), be killed with the run
    worker; True when armed. In-process execution (``dg.materialize``, one-process runs) is left alone: there the
    parent is the caller's own, a shell or a code server that may restart while its runs go on."""
    found = run_worker(context.instance, context.run_id)
    return found is not None and found[0] == os.getppid() and die_with_parent()
