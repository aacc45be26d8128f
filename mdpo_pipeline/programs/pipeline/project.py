"""Where the project lives on disk and what its params.yaml says. No Dagster here.

params.yaml is the single source of the data stages' settings: DVC tracks it (dvc.yaml `params:`),
the CLI and the Dagster assets read it, so a `dvc repro` and a Dagster run compute the same thing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from mdpo_pipeline.core.errors import ConfigError

PARAMS_FILE = "params.yaml"
ROOT_ENV = "MDPO_PROJECT_ROOT"
#: The model key of the base model itself (no adapter): a partition of adapters and benchmark_scores.
BASE = "base"


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


def load_params(path: str | os.PathLike) -> dict[str, Any]:
    """Read params.yaml into a dict of sections, with a clear error for a missing or malformed file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: params file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def build_config(cls: type, section: dict[str, Any] | None, *, where: str, **overrides: Any):
    """Instantiate dataclass ``cls`` from a params section; unknown keys are an error naming ``where``."""
    section = dict(section or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    section.update(overrides)
    for f in fields(cls):
        # YAML has no tuples; dataclasses declare tuple-typed fields for immutability.
        if isinstance(section.get(f.name), list) and "tuple" in str(f.type):
            section[f.name] = tuple(section[f.name])
    try:
        return cls(**section)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


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

    def params(self) -> dict[str, Any]:
        """The parsed params.yaml."""
        return load_params(self.params_path)

    def path(self, rel: str | os.PathLike) -> Path:
        """A params path made absolute: relative paths are relative to the project root."""
        p = Path(rel).expanduser()
        return p if p.is_absolute() else self.root / p

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
