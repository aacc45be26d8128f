"""Where the project lives on disk. No Dagster here.

params.yaml is the single source of the pipeline's settings: DVC tracks it (dvc.yaml `params:`), and
``settings.load_settings`` reads it (the only code that does) for the CLI and the Dagster assets alike, so a
`dvc repro` and a Dagster run compute the same thing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdpo_pipeline.core.errors import ConfigError

PARAMS_FILE = "params.yaml"
ROOT_ENV = "MDPO_PROJECT_ROOT"


def find_project_root(start: str | os.PathLike | None = None) -> Path:
    """The project root: $MDPO_PROJECT_ROOT, else the nearest parent of ``start`` (cwd) holding params.yaml."""
    if env := os.environ.get(ROOT_ENV):
        root = Path(env).expanduser().resolve()
        if not (root / PARAMS_FILE).is_file():
            raise ConfigError(f"{ROOT_ENV}={env} has no {PARAMS_FILE}")
        return root
    here = Path(start or os.getcwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / PARAMS_FILE).is_file() and (candidate / "dvc.yaml").is_file():
            return candidate
    # An editable install run from elsewhere: the checkout the package came from.
    pkg_root = Path(__file__).resolve().parents[3]
    if (pkg_root / PARAMS_FILE).is_file():
        return pkg_root
    raise ConfigError(
        f"cannot find the project root: no {PARAMS_FILE} + dvc.yaml above {here}; "
        f"run from the checkout or set {ROOT_ENV}"
    )


@dataclass(frozen=True)
class Project:
    """Paths of one checkout: where data, params and tool environments live."""

    root: Path

    @classmethod
    def discover(cls, start: str | os.PathLike | None = None) -> "Project":
        """The project found from ``start`` (see find_project_root)."""
        return cls(find_project_root(start))

    @property
    def params_path(self) -> Path:
        """params.yaml of this checkout."""
        return self.root / PARAMS_FILE

    def path(self, rel: str | os.PathLike) -> Path:
        """A params path made absolute: relative paths are relative to the project root."""
        p = Path(rel).expanduser()
        return p if p.is_absolute() else self.root / p

    def same_path(self, a: str | os.PathLike, b: str | os.PathLike) -> bool:
        """Whether two params paths name the same place (``./x``, ``x`` and its absolute form alike; links followed)."""
        return self.path(a).resolve() == self.path(b).resolve()

    def rel(self, path: str | os.PathLike) -> str:
        """``path`` relative to the root when inside it (keeps artifacts portable across clones)."""
        p = Path(path).resolve()
        try:
            return p.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(p)

    def data_dir(self, name: str) -> Path:
        """The output directory of data stage ``name`` (``data/<name>``), as dvc.yaml declares it."""
        return self.root / "data" / name

    def adapter_path(self, method: str) -> Path:
        """Where the adapter trained with ``method`` lives (``artifacts/adapters/<method>``)."""
        return self.root / "artifacts" / "adapters" / method

    def summary(self, stage: str) -> dict[str, Any]:
        """A stage's summary.json, with a clear error when the stage was never materialized."""
        path = self.data_dir(stage) / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: materialize the stage {stage!r} first")
        return json.loads(path.read_text())
