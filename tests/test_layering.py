"""The core and the programs must not need Dagster: they run in the training container and in DVC stages."""

import subprocess
import sys

PURE_MODULES = [
    "mdpo_pipeline.core.schemas",
    "mdpo_pipeline.core.io",
    "mdpo_pipeline.core.images",
    "mdpo_pipeline.core.ingest",
    "mdpo_pipeline.core.pairs",
    "mdpo_pipeline.core.corruption",
    "mdpo_pipeline.core.shapeworld",
    "mdpo_pipeline.project",
    "mdpo_pipeline.stages",
    "mdpo_pipeline.quality",
    "mdpo_pipeline.dvc",
    "mdpo_pipeline.cli",
    "mdpo_pipeline.core.losses",
    "mdpo_pipeline.tracking",
    "mdpo_pipeline.launcher",
    "mdpo_pipeline.training.models",
    "mdpo_pipeline.training.sft",
    "mdpo_pipeline.training.trainer",
    "mdpo_pipeline.training.reference",
    "mdpo_pipeline.training.run",
    "mdpo_pipeline.training.vision",
    "mdpo_pipeline.containers",
    "mdpo_pipeline.core.eval.chair",
    "mdpo_pipeline.core.eval.amber",
    "mdpo_pipeline.core.eval.mmhal",
    "mdpo_pipeline.core.eval.judge",
    "mdpo_pipeline.evaluation.generation",
    "mdpo_pipeline.evaluation.registry",
    "mdpo_pipeline.evaluation.report",
    "mdpo_pipeline.evaluation.stage",
    "mdpo_pipeline.deploy",
    "mdpo_pipeline.training.families",
    "mdpo_pipeline.training.chat",
    "mdpo_pipeline.training.presets",
    "mdpo_pipeline.training.tiny",
    "mdpo_pipeline.core.eval.pope",
    "mdpo_pipeline.core.eval.metrics",
    "mdpo_pipeline.evaluation.answers",
    "mdpo_pipeline.evaluation.benchmarks",
]

#: Real-model and real-data code: ShapeWorld (the offline stand-in) must not leak into it.
NO_SHAPEWORLD = [
    "mdpo_pipeline.training.models",
    "mdpo_pipeline.training.families",
    "mdpo_pipeline.training.chat",
    "mdpo_pipeline.training.presets",
    "mdpo_pipeline.training.data",
    "mdpo_pipeline.training.reference",
    "mdpo_pipeline.training.trainer",
    "mdpo_pipeline.core.eval.chair",
    "mdpo_pipeline.core.eval.amber",
    "mdpo_pipeline.core.eval.mmhal",
    "mdpo_pipeline.core.eval.pope",
    "mdpo_pipeline.core.eval.judge",
    "mdpo_pipeline.core.eval.metrics",
]


def test_core_imports_without_dagster():
    code = (
        "import sys\n"
        f"for m in {PURE_MODULES!r}: __import__(m)\n"
        "bad = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.'))\n"
        "assert not bad, bad[:5]\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_real_model_and_benchmark_code_imports_no_shapeworld():
    code = (
        "import sys\n"
        f"for m in {NO_SHAPEWORLD!r}: __import__(m)\n"
        "bad = sorted(m for m in sys.modules if m.startswith('mdpo_pipeline.core.shapeworld'))\n"
        "assert not bad, bad[:5]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]

