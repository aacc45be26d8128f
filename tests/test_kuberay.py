"""The KubeRay manifests: the ray.io/v1 fields they use, consistency with the pipeline's settings, and
`kubectl apply --dry-run=client` where kubectl is installed (Kubernetes itself cannot run here)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mdpo_pipeline.integrations.kuberay_check import main, pinned_ray_version, validate_manifests

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((REPO / "docker" / "kuberay").glob("*.yaml"))
VERSION = pinned_ray_version(REPO / "constraints.txt")


def _docs(name: str) -> list:
    return list(yaml.safe_load_all((REPO / "docker" / "kuberay" / name).read_text()))


def test_manifests_exist_and_pass():
    assert {p.name for p in MANIFESTS} == {"raycluster.yaml", "rayjob.yaml"}
    assert VERSION, "constraints.txt pins ray"
    for path in MANIFESTS:
        assert validate_manifests(list(yaml.safe_load_all(path.read_text())), VERSION) == [], path
    assert main([str(p) for p in MANIFESTS]) == 0


def _mutated(name: str, change) -> list[str]:
    docs = copy.deepcopy(_docs(name))
    change(docs[0]["spec"])
    return validate_manifests(docs, VERSION)


def _worker(spec):
    return (spec.get("rayClusterSpec") or spec)["workerGroupSpecs"][0]


@pytest.mark.parametrize("name, change, expected", [
    ("raycluster.yaml", lambda s: s.update(workerGroupSpec=[]), "workerGroupSpec: not a field of ray.io/v1"),
    ("raycluster.yaml", lambda s: s.update(rayVersion="2.9.0"), "one Ray version"),
    ("raycluster.yaml", lambda s: _worker(s)["rayStartParams"].update({"num-gpus": "2"}), "num-gpus=2"),
    ("raycluster.yaml", lambda s: _worker(s)["rayStartParams"].update({"num-cpus": 8}), "must be a string"),
    ("raycluster.yaml", lambda s: _worker(s).update(replicas=9), "minReplicas <= replicas <= maxReplicas"),
    ("raycluster.yaml", lambda s: _worker(s)["template"]["spec"]["containers"][0].update(image="rayproject/ray:2.60.0"),
     "is not the training image"),
    ("raycluster.yaml", lambda s: _worker(s)["template"]["spec"].update(volumes=[]), "has no volume"),
    ("raycluster.yaml",
     lambda s: _worker(s)["template"]["spec"]["containers"][0]["resources"]["limits"].update(memory="64 GB"),
     "not a Kubernetes quantity"),
    ("rayjob.yaml", lambda s: s.update(entrypoint="python train.py"), "Ray driver of `mdpo train`"),
    ("rayjob.yaml", lambda s: s.update(runtimeEnvYAML="env_vars:\n  MDPO_RAY_WORKERS: '4'\n"),
     "no launcher setting reads it"),
    ("rayjob.yaml", lambda s: s.update(runtimeEnvYAML="env_vars:\n  MDPO_RAY_GPUS_PER_WORKER: '2'\n"),
     "wait for resources forever"),
    ("rayjob.yaml", lambda s: s.pop("rayClusterSpec"), "needs rayClusterSpec"),
])
def test_each_mistake_is_named(name, change, expected):
    problems = _mutated(name, change)
    assert any(expected in p for p in problems), problems


def test_kubectl_dry_run_where_a_cluster_is_configured():
    """With a cluster that has the KubeRay CRDs (kubectl's current context), the API server checks the manifests
    against the CRDs' own schema (a server-side dry run: nothing is created)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the field checks above stand in for the CRD schema")
    probe = subprocess.run([kubectl, "api-resources", "--api-group=ray.io", "-o", "name", "--request-timeout=5s"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or "rayjobs" not in probe.stdout:
        pytest.skip("no Kubernetes API server with the KubeRay CRDs is reachable from kubectl's context (Kubernetes "
                    "cannot run on this machine): the field checks above stand in for the CRD schema")
    for path in MANIFESTS:
        result = subprocess.run([kubectl, "apply", "--dry-run=server", "-f", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
