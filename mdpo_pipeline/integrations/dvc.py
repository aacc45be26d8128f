"""A thin client for the DVC command line.

DVC runs from its own environment (.tools/dvc by default): it pins antlr4 4.9 and Dagster needs 4.13
(dagster issue 27487), so the two cannot share one interpreter. We call its CLI, never import it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

DVC_ENV = "MDPO_DVC"


class DvcError(RuntimeError):
    """A DVC command failed or DVC is not installed; the message says which and how to fix it."""


def find_dvc(root: Path, explicit: str | None = None) -> str:
    """The dvc executable: ``explicit``, else $MDPO_DVC, else <root>/.tools/dvc/bin/dvc, else PATH."""
    candidates = [explicit, os.environ.get(DVC_ENV), str(root / ".tools" / "dvc" / "bin" / "dvc")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    if found := shutil.which("dvc"):
        return found
    raise DvcError(
        "the dvc command was not found (looked at the configured path, $MDPO_DVC, "
        f"{root / '.tools/dvc/bin/dvc'} and PATH). Install it into its own environment with "
        "`make dvc-env`, or point MDPO_DVC at a dvc executable."
    )


@dataclass
class Dvc:
    """Runs DVC commands in one project checkout, one at a time (DVC's own repo lock is not a queue)."""

    root: Path
    executable: str | None = None
    timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.executable = find_dvc(self.root, self.executable)

    @contextlib.contextmanager
    def _serialized(self) -> Iterator[None]:
        # Dagster may run two assets' DVC commits at once; DVC would fail one with "unable to acquire lock".
        lock_dir = self.root / ".dvc" / "tmp"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / "mdpo-cli.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def run(self, *args: str) -> str:
        """Run ``dvc <args>`` in the project root and return stdout; raise DvcError with stderr on failure."""
        env = dict(os.environ, DVC_NO_ANALYTICS="1")
        # The DVC environment must not see our interpreter's packages.
        env.pop("PYTHONPATH", None)
        with self._serialized():
            proc = subprocess.run(
                [self.executable, *args],
                cwd=self.root,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
            )
        if proc.returncode != 0:
            raise DvcError(
                f"`dvc {' '.join(args)}` failed in {self.root} (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        return proc.stdout

    def commit(self, stage: str) -> dict[str, str]:
        """Record ``stage``'s current deps and outputs in dvc.lock and the cache; return its out hashes."""
        self.run("commit", "--force", "--quiet", stage)
        return self.out_hashes(stage)

    def push(self, stage: str, remote: str | None = None) -> None:
        """Upload ``stage``'s outputs to the remote (the default remote when ``remote`` is None)."""
        args = ["push", "--quiet", stage]
        if remote:
            args += ["--remote", remote]
        self.run(*args)

    def status(self, *stages: str) -> dict:
        """`dvc status --json` parsed (for ``stages`` and their upstream, else all): empty when up to date."""
        out = self.run("status", "--json", *stages).strip()
        return json.loads(out) if out else {}

    def out_hashes(self, stage: str) -> dict[str, str]:
        """{output path: DVC content hash (md5; '.dir' suffix for directories)} from dvc.lock."""
        lock_path = self.root / "dvc.lock"
        if not lock_path.is_file():
            raise DvcError(f"{lock_path} does not exist: stage {stage!r} was never committed")
        lock = yaml.safe_load(lock_path.read_text()) or {}
        entry = (lock.get("stages") or {}).get(stage)
        if entry is None:
            raise DvcError(f"{lock_path}: no stage {stage!r} (stages: {sorted(lock.get('stages') or {})})")
        return {o["path"]: o.get("md5") or o.get("hash", "") for o in entry.get("outs", [])}


def lock_hashes(root: str | os.PathLike) -> dict[str, str]:
    """{stage: content hash of its first output} from dvc.lock, read directly (no DVC process); {} if absent."""
    lock_path = Path(root) / "dvc.lock"
    if not lock_path.is_file():
        return {}
    stages = (yaml.safe_load(lock_path.read_text()) or {}).get("stages") or {}
    return {
        name: outs[0].get("md5") or outs[0].get("hash", "")
        for name, entry in stages.items()
        if (outs := entry.get("outs"))
    }


def raw_data_version(root: str | os.PathLike, raw_path: str) -> str | None:
    """The DVC content hash of the raw preference data at ``raw_path`` (relative to ``root``), without running DVC.

    Real data is tracked by a ``.dvc`` file (``dvc add data/vlfeedback``; a ``dvc pull`` of a new version
    changes it); generated data by the dvc.lock output that contains it (ShapeWorld's stage). None when the
    data is not under DVC at all."""
    root = Path(root)
    target = Path(raw_path)
    for candidate in (target, *target.parents):
        if str(candidate) in ("", "."):
            break
        dvc_file = root / f"{candidate}.dvc"
        if dvc_file.is_file():
            outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
            if outs:
                return outs[0].get("md5") or outs[0].get("hash")
    lock_path = root / "dvc.lock"
    if lock_path.is_file():
        stages = (yaml.safe_load(lock_path.read_text()) or {}).get("stages") or {}
        for entry in stages.values():
            for out in entry.get("outs") or []:
                if target == Path(out["path"]) or Path(out["path"]) in target.parents:
                    return out.get("md5") or out.get("hash")
    return None
