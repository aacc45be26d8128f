"""The layers, checked two ways: import-linter's contracts (pyproject.toml, also run by `make test`) over the
static import graph, and a real import of every non-Dagster module in a fresh interpreter (catching imports the
static graph cannot see)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import mdpo_pipeline

REPO = Path(__file__).resolve().parent.parent
#: The Dagster layer: the only modules allowed to import Dagster.
DAGSTER_LAYER = ("mdpo_pipeline.defs", "mdpo_pipeline.definitions")


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_every_module_below_the_dagster_layer_imports_without_dagster():
    modules = sorted(
        m.name for m in pkgutil.walk_packages(mdpo_pipeline.__path__, "mdpo_pipeline.")
        if not m.name.startswith(DAGSTER_LAYER)
    )
    assert len(modules) > 40  # every module of the package, found by walking it
    code = (
        "import sys\n"
        f"for m in {modules!r}: __import__(m)\n"
        "bad = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.'))\n"
        "assert not bad, bad[:5]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


#: Third-party packages worth deferring: the model stack, tracking, plotting and statistics (seconds to import), and
#: the optional extras (Ray, the Docker SDK, PostgreSQL's driver, NLTK/spaCy) that a base install may lack.
DEFERRED = frozenset({
    "torch", "transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub", "bitsandbytes", "mlflow",
    "matplotlib", "scipy", "ray", "docker", "psycopg2", "nltk", "spacy",
})


def _top_level_imports(module: str) -> set[str]:
    """Modules ``module`` imports at its top level (``from a import b`` also counts a.b), as written."""
    import ast

    from mdpo_pipeline.integrations.lineage import _resolve, module_file

    path = module_file(module)
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node, module, path.name == "__init__.py")
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def _loads_deferred(module: str, seen: dict[str, bool]) -> bool:
    """Whether importing ``module`` imports a DEFERRED package (through project modules' top levels)."""
    from mdpo_pipeline.integrations.lineage import module_file

    if module.split(".")[0] in DEFERRED:
        return True
    if module not in seen:
        seen[module] = False  # a cycle adds nothing
        if module_file(module) is not None:
            parts = module.split(".")
            parents = {".".join(parts[:i]) for i in range(2, len(parts))}
            seen[module] = any(_loads_deferred(m, seen) for m in _top_level_imports(module) | parents)
    return seen[module]


def test_imports_inside_functions_defer_something():
    """Imports sit at module top. One inside a function must defer a heavy or optional dependency (DEFERRED, or a
    project module that imports one), which needs no comment, or say why it cannot sit at the top (a cycle, a
    stage's lineage) on its line or above its run of imports."""
    import ast

    from mdpo_pipeline.integrations.lineage import ENTRY_MODULES, _resolve, _runner_names

    # The CLI and the stage modules import per command and per stage on purpose: a stage's code deps in dvc.yaml
    # (integrations/lineage.py) are its own function's imports, not its neighbours'.
    per_function = {*ENTRY_MODULES, *(module for module, _ in _runner_names().values())}
    seen: dict[str, bool] = {}
    needless = []
    for path in sorted((REPO / "mdpo_pipeline").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        if module in per_function:
            continue
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [_resolve(node, module, path.name == "__init__.py")])
                if any(_loads_deferred(n, seen) for n in names):
                    continue
                above = node.lineno - 2
                while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
                    above -= 1  # the comment of a run of imports sits above its first
                if "#" in lines[node.lineno - 1] or lines[above].strip().startswith("#"):
                    continue
                needless.append(f"{path.relative_to(REPO)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not needless, "move these to the module's top (or say why they cannot be there):\n" + "\n".join(needless)


def test_importing_the_package_leaves_the_environment_alone_and_the_entry_points_go_private():
    """A notebook importing the loss keeps its own environment; `mdpo` (and Dagster's definitions, the Ray loop)
    switch telemetry off and keep the hub offline unless the user set those variables."""
    import os

    from mdpo_pipeline import PRIVATE_DEFAULTS

    env = {k: v for k, v in os.environ.items() if k not in PRIVATE_DEFAULTS} | {"HF_HUB_OFFLINE": "0"}
    code = (
        "import os, sys\n"
        "import mdpo_pipeline.core.losses, mdpo_pipeline.pipeline.settings, mdpo_pipeline.training.models\n"
        f"keys = {sorted(PRIVATE_DEFAULTS)!r}\n"
        "print([k for k in keys if k in os.environ])\n"
        "from mdpo_pipeline.cli import main\n"
        "try:\n    main(['data', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('RESULT', [os.environ.get(k) for k in keys])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "['HF_HUB_OFFLINE']"  # only the user's own setting, untouched by the imports
    after = dict(zip(sorted(PRIVATE_DEFAULTS), eval(lines[-1].removeprefix("RESULT "))))  # noqa: S307
    assert after.pop("HF_HUB_OFFLINE") == "0"  # the user's choice stands
    assert after == {k: v for k, v in PRIVATE_DEFAULTS.items() if k != "HF_HUB_OFFLINE"}


def test_every_directly_imported_package_is_declared():
    """What the package imports, pyproject declares (base dependencies or an extra): an install never works only
    because another dependency happened to pull the package in."""
    import ast
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    declared = {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}
    distributions = packages_distributions()
    imported = set()
    for path in (REPO / "mdpo_pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"mdpo_pipeline"}
    undeclared = {}
    for module in sorted(third_party):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not names & declared:
            undeclared[module] = sorted(names)
    assert not undeclared, f"imported but not declared in pyproject.toml (module: distributions): {undeclared}"
