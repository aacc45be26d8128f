"""Process lifetimes on Linux: a child that dies with the process that started it, and whether a pid recorded at
some moment still names that same process.

Why: a Dagster run worker killed with SIGKILL (the OOM killer, ``kill -9``) cannot stop what it started. Its step
process and the training process under it would train on, unseen, and race the rerun for the same checkpoints.
PR_SET_PDEATHSIG hands each of them to the kernel instead: it is killed when its parent dies. Elsewhere (macOS)
these are no-ops and a pid is trusted while it exists."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_LINUX = sys.platform.startswith("linux")
_PR_SET_PDEATHSIG = 1
#: Resolved once, here: a preexec_fn runs between fork and exec and must not import or dlopen (locks of other
#: threads are held forever in the child).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if _LINUX else None


def _set_death_signal() -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` for subprocess.Popen: the child (and what it execs) is SIGKILLed when this thread's process
    dies. None where the system has no such signal. The kernel watches the thread that forks, so call Popen from
    a thread that outlives the child (the one that waits for it)."""
    return _set_death_signal if _prctl is not None else None


def die_with_parent() -> bool:
    """Have the kernel SIGKILL this process when its parent dies; True when armed. A parent already gone (this
    process re-parented meanwhile) exits at once: no signal would come."""
    if _prctl is None:
        return False
    parent = os.getppid()
    _set_death_signal()
    if os.getppid() != parent:
        os._exit(1)
    return True


def _start_time_s(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch, to the clock tick), from /proc; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f.read().decode().splitlines() if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    # The command name (field 2) is parenthesised and may hold spaces: count fields after its closing bracket.
    fields = stat[stat.rindex(")") + 2:].split()
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def alive_since(pid: int, seen_at: float, slack_s: float = 2.0) -> bool:
    """Whether ``pid`` is a live process that already existed at ``seen_at`` (epoch seconds, when something that
    process wrote said its pid): a pid reused by a newer process is not it. Zombies count as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    if not _LINUX:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().decode().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state in ("Z", "X"):
        return False
    started = _start_time_s(pid)
    # /proc/stat's boot time is whole seconds: allow that much (and clock-tick rounding) beside the slack.
    return started is not None and started <= seen_at + slack_s
