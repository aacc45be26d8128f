"""Dagster resources: where the project lives, and DVC. Each has a local default and is swappable in tests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import dagster as dg
from pydantic import Field

from mdpo_pipeline.integrations import launchers as launcher
from mdpo_pipeline.integrations.dvc import Dvc
from mdpo_pipeline.integrations.launcher_settings import LauncherSettings
from mdpo_pipeline.integrations.ray_launcher import launch_ray
from mdpo_pipeline.integrations.tracking import tracking_uri
from mdpo_pipeline.pipeline.project import PARAMS_FILE, ConfigError, Project


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


class TrainingLauncher(LauncherSettings, dg.ConfigurableResource):
    """Starts `mdpo train` as its own process: a local subprocess (default), a Docker container (GPU box) or the
    driver of Ray Train workers on a Ray cluster.

    Its fields, descriptions and checks are LauncherSettings' (integrations/launcher_settings.py); any of them
    may be a `dg.EnvVar`, checked once Dagster resolves it at run launch (`from_env`)."""

    @classmethod
    def _deferred(cls, value: Any) -> bool:
        return isinstance(value, (dg.EnvVar, type(dg.EnvVar.int("_"))))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "TrainingLauncher":
        """The launcher of a deployment: each setting whose variable (LauncherSettings.env_vars) is set and non-empty
        is a `dg.EnvVar` of it, read by Dagster when a run starts; the others keep their defaults.

        ``environ`` (default os.environ) only decides which variables are wired: an EnvVar of an unset variable
        would fail the run instead of falling back to the default."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, var in cls.env_vars().items():
            if (environ.get(var) or "").strip():
                annotation = cls.model_fields[name].annotation
                values[name] = dg.EnvVar.int(var) if int in (annotation, *get_args(annotation)) else dg.EnvVar(var)
        return cls(**values)

    def launch(self, cfg, context: dg.AssetExecutionContext, project: Project) -> dict[str, Any]:
        """Run one training config (a run config, read as its JSON object) to completion; return the adapter's summary."""
        run = launcher.run_json(cfg)
        if self.threads and not run.get("threads"):
            run["threads"] = self.threads
        if self.mode == "local":
            return launcher.launch_local(run, log=context.log.info, env=dict(self.env) or None,
                                         num_processes=self.num_processes,
                                         accelerate_config=self.accelerate_config and str(project.path(self.accelerate_config)))
        if self.mode == "ray":
            return self._launch_ray(run, context)
        return self._launch_docker(run, context, project)

    def _launch_ray(self, run: dict[str, Any], context: dg.AssetExecutionContext) -> dict[str, Any]:
        if not isinstance(context, dg.AssetExecutionContext | dg.OpExecutionContext):
            return launch_ray(run, self, log=context.log.info)  # called outside a Dagster run: no Pipes session
        # Dagster Pipes: the Ray driver reports its outcome and final metrics as messages of this run; its output
        # (the workers' step lines) streams into the run's log.
        with dg.open_pipes_session(context=context, context_injector=dg.PipesTempFileContextInjector(),
                                   message_reader=dg.PipesTempFileMessageReader()) as session:
            summary = launch_ray(run, self, log=context.log.info, env=session.get_bootstrap_env_vars())
        for message in session.get_custom_messages():
            context.log.info(f"ray driver reported: {message}")
        return summary

    def _launch_docker(self, run: dict[str, Any], context: dg.AssetExecutionContext, project: Project) -> dict[str, Any]:
        # optional: only the Docker launcher needs dagster-docker
        from dagster_docker import PipesDockerLogsMessageReader

        # Dagster Pipes: the context goes in the container's environment; the training program's messages come
        # back in its output, which the reader takes them from.
        reader = PipesDockerLogsMessageReader()
        with dg.open_pipes_session(context=context, context_injector=dg.PipesEnvContextInjector(),
                                   message_reader=reader) as session:
            summary = launcher.launch_docker(run, self, project.root, log=context.log.info,
                                             env=session.get_bootstrap_env_vars(),
                                             follow_logs=reader.consume_docker_logs)
        for message in session.get_custom_messages():
            context.log.info(f"container reported: {message}")
        return summary


class JudgeResource(dg.ConfigurableResource):
    """The MMHal-Bench judge: a rule-based one for ShapeWorld, or an OpenAI-compatible chat API for real data."""

    kind: str = Field(
        default="auto",
        description="'auto': rule-based on ShapeWorld, the API otherwise; 'shapeworld'; or 'openai' (any compatible API).",
    )
    base_url: str | None = Field(default=None, description="Chat API base URL; unset: $MDPO_JUDGE_BASE_URL, else OpenAI's.")
    model: str | None = Field(default=None, description="Judge model; unset: $MDPO_JUDGE_MODEL, else gpt-4-0613 as the paper.")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Name of the environment variable holding the API key.")

    def settings(self) -> dict[str, Any]:
        """Plain settings for the evaluation stage (the key itself stays in the environment)."""
        if self.kind not in ("auto", "shapeworld", "openai"):
            raise ConfigError(f"JudgeResource.kind={self.kind!r}: use 'auto', 'shapeworld' or 'openai'")
        return {"kind": self.kind, "base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env}
