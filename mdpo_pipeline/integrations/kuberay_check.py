"""Checking the KubeRay manifests (docker/kuberay/*.yaml) before a cluster sees them. No Dagster here.

Kubernetes itself cannot run here, so ``validate_manifests`` checks what `kubectl apply` would refuse and what would
make the cluster disagree with the pipeline:

- the ray.io/v1 fields the manifests use, typed as the KubeRay CRDs type them (an unknown or misspelt key is an error,
  as the API server's structural schema pruning would silently drop it);
- pod templates: every container named and on the training image, resource quantities well formed, every volume
  mount backed by a volume, a GPU worker group's ``num-gpus`` equal to its ``nvidia.com/gpu`` limit;
- the Ray version the cluster runs equal to the one the pipeline pins (constraints.txt), and a RayJob's entrypoint
  the Ray driver of `mdpo train` with launcher settings the launcher knows (LauncherSettings' variables).

    python -m mdpo_pipeline.integrations.kuberay_check docker/kuberay/*.yaml
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mdpo_pipeline.integrations.containers import TRAIN_IMAGE
from mdpo_pipeline.integrations.launcher_settings import LauncherSettings

API_VERSION = "ray.io/v1"
#: The keys of each ray.io/v1 object this project writes, as the KubeRay CRDs define them (a subset of each).
CLUSTER_SPEC_KEYS = {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec",
                     "workerGroupSpecs", "headServiceAnnotations", "suspend", "managedBy"}
HEAD_KEYS = {"rayStartParams", "template", "serviceType", "headService", "enableIngress"}
WORKER_KEYS = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template", "scaleStrategy",
               "numOfHosts", "suspend", "idleTimeoutSeconds"}
JOB_SPEC_KEYS = {"entrypoint", "rayClusterSpec", "clusterSelector", "shutdownAfterJobFinishes",
                 "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit", "runtimeEnvYAML",
                 "submissionMode", "suspend", "jobId", "metadata", "entrypointNumCpus", "entrypointNumGpus",
                 "entrypointResources", "submitterPodTemplate", "managedBy"}
_INT_KEYS = {"replicas", "minReplicas", "maxReplicas", "numOfHosts", "idleTimeoutSeconds", "ttlSecondsAfterFinished",
             "activeDeadlineSeconds", "backoffLimit"}
_BOOL_KEYS = {"enableInTreeAutoscaling", "suspend", "shutdownAfterJobFinishes", "enableIngress"}
#: Kubernetes resource quantities (the CRDs' pattern).
QUANTITY = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)"
                      r"|(\.[0-9]+))))?$")
GPU = "nvidia.com/gpu"
DRIVER = "mdpo_pipeline.cli train --ray"
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def pinned_ray_version(constraints: Path) -> str | None:
    """The ray version constraints.txt pins, or None."""
    for line in constraints.read_text().splitlines():
        if m := re.fullmatch(r"ray(\[[^\]]*\])?==(\S+)", line.strip()):
            return m.group(2)
    return None


def _unknown(obj: Mapping[str, Any], known: set[str], where: str) -> list[str]:
    return [f"{where}.{k}: not a field of {API_VERSION} (known: {sorted(known)})" for k in obj if k not in known]


def _typed(obj: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    for key, value in obj.items():
        if key in _INT_KEYS and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{where}.{key}: must be an integer, got {value!r}")
        if key in _BOOL_KEYS and not isinstance(value, bool):
            problems.append(f"{where}.{key}: must be true or false, got {value!r}")
    return problems


def _start_params(params: Any, where: str) -> list[str]:
    if not isinstance(params, Mapping):
        return [f"{where}: must be a mapping of `ray start` flags to strings"]
    # The CRD types every value as a string: a bare 1 is refused by the API server.
    return [f"{where}.{k}: must be a string (quote it), got {v!r}" for k, v in params.items() if not isinstance(v, str)]


def _template(template: Any, where: str) -> list[str]:
    """Pod template checks: named containers on the training image, quantities, mounts backed by volumes."""
    if not isinstance(template, Mapping) or not isinstance(template.get("spec"), Mapping):
        return [f"{where}: a pod template needs spec"]
    spec = template["spec"]
    containers = spec.get("containers") or []
    problems = [] if containers else [f"{where}.spec.containers: at least one container"]
    volumes = {v.get("name") for v in spec.get("volumes") or []}
    for i, c in enumerate(containers):
        here = f"{where}.spec.containers[{i}]"
        if not c.get("name") or not _NAME.fullmatch(str(c["name"])):
            problems.append(f"{here}.name: a DNS-1123 label is required, got {c.get('name')!r}")
        image = str(c.get("image") or "")
        if image.rsplit("/", 1)[-1].split(":")[0] != TRAIN_IMAGE:
            problems.append(f"{here}.image: {image!r} is not the training image {TRAIN_IMAGE!r} (it holds the package "
                            "the workers import)")
        for kind in ("requests", "limits"):
            for res, qty in ((c.get("resources") or {}).get(kind) or {}).items():
                if not QUANTITY.match(str(qty)):
                    problems.append(f"{here}.resources.{kind}.{res}: {qty!r} is not a Kubernetes quantity")
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                problems.append(f"{here}.volumeMounts: {m.get('name')!r} has no volume in the pod spec")
    return problems


def _gpus(container_limits: Mapping[str, Any]) -> int:
    return int(container_limits.get(GPU, 0))


def _cluster_spec(spec: Any, where: str, ray_version: str | None) -> list[str]:
    if not isinstance(spec, Mapping):
        return [f"{where}: must be a mapping"]
    problems = _unknown(spec, CLUSTER_SPEC_KEYS, where) + _typed(spec, where)
    if ray_version and str(spec.get("rayVersion")) != ray_version:
        problems.append(f"{where}.rayVersion: {spec.get('rayVersion')!r}, but the pipeline pins ray {ray_version} "
                        "(constraints.txt): driver and cluster must run one Ray version")
    head = spec.get("headGroupSpec")
    if not isinstance(head, Mapping):
        problems.append(f"{where}.headGroupSpec: required")
    else:
        problems += _unknown(head, HEAD_KEYS, f"{where}.headGroupSpec") + _typed(head, f"{where}.headGroupSpec")
        problems += _start_params(head.get("rayStartParams", {}), f"{where}.headGroupSpec.rayStartParams")
        problems += _template(head.get("template"), f"{where}.headGroupSpec.template")
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        here = f"{where}.workerGroupSpecs[{i}]"
        problems += _unknown(group, WORKER_KEYS, here) + _typed(group, here)
        problems += [f"{here}.{k}: required" for k in ("groupName", "template") if k not in group]
        problems += _start_params(group.get("rayStartParams", {}), f"{here}.rayStartParams")
        problems += _template(group.get("template"), f"{here}.template")
        lo, n, hi = group.get("minReplicas", 0), group.get("replicas", 0), group.get("maxReplicas", 0)
        if all(isinstance(x, int) for x in (lo, n, hi)) and not lo <= n <= hi:
            problems.append(f"{here}: needs minReplicas <= replicas <= maxReplicas, got {lo}, {n}, {hi}")
        containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or [{}]
        limits = (containers[0].get("resources") or {}).get("limits") or {}
        declared = (group.get("rayStartParams") or {}).get("num-gpus")
        if declared is not None and str(declared).isdigit() and int(declared) != _gpus(limits):
            problems.append(f"{here}: rayStartParams num-gpus={declared} but the container's {GPU} limit is "
                            f"{_gpus(limits)}: Ray would schedule GPUs the pod does not have")
    return problems


def _job(spec: Mapping[str, Any], where: str, ray_version: str | None) -> list[str]:
    problems = _unknown(spec, JOB_SPEC_KEYS, where) + _typed(spec, where)
    entry = spec.get("entrypoint")
    if not isinstance(entry, str) or DRIVER not in entry or "--config" not in entry:
        problems.append(f"{where}.entrypoint: must run the Ray driver of `mdpo train` (`python -m {DRIVER} --config "
                        f"<run.json>`), got {entry!r}")
    known = set(LauncherSettings.env_vars().values())
    if "runtimeEnvYAML" in spec:
        try:
            runtime = yaml.safe_load(spec["runtimeEnvYAML"]) or {}
        except yaml.YAMLError as e:
            return problems + [f"{where}.runtimeEnvYAML: not YAML: {e}"]
        for name, value in (runtime.get("env_vars") or {}).items():
            if name.startswith("MDPO_") and name not in known:
                problems.append(f"{where}.runtimeEnvYAML.env_vars.{name}: no launcher setting reads it (known: "
                                f"{sorted(known)})")
            if not isinstance(value, str):
                problems.append(f"{where}.runtimeEnvYAML.env_vars.{name}: must be a string, got {value!r}")
        gpus = (runtime.get("env_vars") or {}).get("MDPO_RAY_GPUS_PER_WORKER")
        cluster = spec.get("rayClusterSpec") or {}
        offered = {_gpus(((g.get("template") or {}).get("spec") or {}).get("containers", [{}])[0].get("resources", {})
                         .get("limits") or {}) for g in cluster.get("workerGroupSpecs") or []}
        if gpus is not None and offered and int(gpus) > max(offered):
            problems.append(f"{where}: MDPO_RAY_GPUS_PER_WORKER={gpus} but no worker group offers that many GPUs per "
                            f"pod ({sorted(offered)}): the run would wait for resources forever")
    if "rayClusterSpec" in spec:
        problems += _cluster_spec(spec["rayClusterSpec"], f"{where}.rayClusterSpec", ray_version)
    elif "clusterSelector" not in spec:
        problems.append(f"{where}: needs rayClusterSpec (a cluster for the job) or clusterSelector (an existing one)")
    return problems


def validate_manifests(docs: list[Any], ray_version: str | None = None) -> list[str]:
    """What is wrong with these manifest documents (empty: nothing found)."""
    problems: list[str] = []
    for i, doc in enumerate(d for d in docs if d is not None):
        kind = doc.get("kind") if isinstance(doc, Mapping) else None
        where = f"{kind or 'document'}[{i}]"
        if kind not in ("RayCluster", "RayJob"):
            continue  # plain Kubernetes objects (a PersistentVolumeClaim): kubectl's own dry run checks them
        if doc.get("apiVersion") != API_VERSION:
            problems.append(f"{where}.apiVersion: {doc.get('apiVersion')!r}, expected {API_VERSION!r}")
        name = str((doc.get("metadata") or {}).get("name", ""))
        if not _NAME.fullmatch(name):
            problems.append(f"{where}.metadata.name: a DNS-1123 name is required, got {name!r}")
        spec = doc.get("spec") or {}
        problems += (_cluster_spec(spec, f"{where}.spec", ray_version) if kind == "RayCluster"
                     else _job(spec, f"{where}.spec", ray_version))
    return problems


def main(argv: list[str] | None = None) -> int:
    """Check manifest files; print each problem, exit 1 when there is one."""
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    constraints = Path(__file__).resolve().parents[2] / "constraints.txt"
    version = pinned_ray_version(constraints) if constraints.is_file() else None
    problems = []
    for path in paths:
        problems += [f"{path}: {p}" for p in validate_manifests(list(yaml.safe_load_all(path.read_text())), version)]
    print("\n".join(problems) or f"{len(paths)} manifest file(s): no problem found")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
