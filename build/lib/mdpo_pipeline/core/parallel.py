"""Process-pool settings shared by the stages that fan out over cores (image checks, corruption)."""

from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing.context import BaseContext


def available_cores() -> int:
    """Cores this process may use: sched_getaffinity respects container and taskset limits (macOS lacks it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_context() -> BaseContext:
    """forkserver (else spawn), never fork: callers such as Dagster and tqdm run threads, and forking those
    can deadlock. Scripts that start pools therefore need the usual ``if __name__ == "__main__"`` guard."""
    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
