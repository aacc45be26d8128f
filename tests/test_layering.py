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


def _function_import_groups(tree):
    """The first import of every run of consecutive import statements inside a function."""
    import ast

    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for parent in ast.walk(fn):
                for field in ("body", "orelse", "finalbody"):
                    previous_was_import = False
                    statements = getattr(parent, field, None)
                    for statement in statements if isinstance(statements, list) else []:
                        is_import = isinstance(statement, ast.Import | ast.ImportFrom)
                        if is_import and not previous_was_import:
                            yield statement
                        previous_was_import = is_import


def test_imports_inside_functions_say_why():
    """Imports sit at module top; one inside a function carries a comment (on its line or the line above) saying
    why: an optional or heavy dependency, a stage-scoped import, a cycle."""
    import ast

    unexplained = []
    for path in sorted((REPO / "mdpo_pipeline").rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in _function_import_groups(ast.parse("\n".join(lines))):
            line, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
            if "#" not in line and not above.startswith("#"):
                unexplained.append(f"{path.relative_to(REPO)}:{node.lineno}: {line.strip()}")
    assert not unexplained, "\n".join(unexplained)
