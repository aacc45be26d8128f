"""Dagster resources: where the project lives, and DVC. Each has a local default and is swappable in tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from mdpo_pipeline.dvc import Dvc
from mdpo_pipeline.project import PARAMS_FILE, ConfigError, Project
from mdpo_pipeline.tracking import tracking_uri


class ProjectResource(dg.ConfigurableResource):
    """The project checkout the assets read params.yaml from and write data/ into."""

    root: str | None = Field(
        default=None,
        description="Project root; unset: $MDPO_PROJECT_ROOT, else the checkout found from the working directory.",
    )

    def project(self) -> Project:
        """The resolved Project."""
        if not self.root:
            return Project.discover()
        root = Path(self.root).expanduser().resolve()
        if not (root / PARAMS_FILE).is_file():
            raise ConfigError(f"ProjectResource.root={self.root}: no {PARAMS_FILE} there")
        return Project(root)


class DvcResource(dg.ConfigurableResource):
    """Records each data asset's output as a DVC stage (dvc.lock + cache) and pushes it to the remote."""

    executable: str | None = Field(
        default=None, description="Path to dvc; unset: $MDPO_DVC, <root>/.tools/dvc/bin/dvc, then PATH."
    )
    enabled: bool = Field(default=True, description="Set false to skip DVC entirely (outputs stay unversioned).")
    push: bool = Field(default=True, description="Push each committed stage to the remote.")
    remote: str | None = Field(default=None, description="DVC remote name; unset: the repo's default remote.")

    def record(self, project: Project, stage: str) -> dict[str, Any]:
        """Commit ``stage`` (and push it), returning Dagster metadata with its content hashes."""
        if not self.enabled:
            return {"dvc": "disabled"}
        dvc = Dvc(project.root, self.executable)
        hashes = dvc.commit(stage)
        if self.push:
            dvc.push(stage, self.remote)
        meta: dict[str, Any] = {"dvc_stage": stage}
        for path, md5 in hashes.items():
            meta["dvc_md5" if len(hashes) == 1 else f"dvc_md5:{path}"] = md5
        return meta


class MlflowResource(dg.ConfigurableResource):
    """Where training runs and registered adapters go: a sqlite file in the project unless a URI is set."""

    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; unset: $MLFLOW_TRACKING_URI, else sqlite:///<root>/mlflow.db."
    )
    experiment: str = Field(default="mdpo", description="MLflow experiment of the training runs.")

    def uri(self, project: Project) -> str:
        """The resolved tracking URI."""
        return tracking_uri(project.root, self.tracking_uri)


class TrainingLauncher(dg.ConfigurableResource):
    """Starts `mdpo train` as its own process. mode=local: a subprocess with this interpreter."""

    mode: str = Field(default="local", description="How to start training: 'local' (subprocess).")
    threads: int | None = Field(default=None, description="torch CPU threads of the training process.")

    def launch(self, cfg, log) -> dict[str, Any]:
        """Run one training config to completion; return the adapter's summary."""
        from mdpo_pipeline.launcher import launch_local

        if self.mode != "local":
            raise ConfigError(f"TrainingLauncher.mode={self.mode!r}: only 'local' is available")
        if self.threads and not cfg.threads:
            cfg.threads = self.threads
        return launch_local(cfg, log=log)
