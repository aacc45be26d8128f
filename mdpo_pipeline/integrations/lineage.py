"""The code each data stage runs, derived from the import graph, and kept in dvc.yaml as the stage's code deps.

A stage's code is: ``cli.py`` and ``stages.py`` (module level), the module holding the stage's runner (module level),
the runner with every function of that module it calls, and every project module those import, transitively (imports
inside functions included: they run too). Parameter checks (``pipeline/validate.py``) are left out: they can stop a
stage, never change its output. ``python -m mdpo_pipeline.integrations.lineage --check`` says whether dvc.yaml matches; ``--write`` rewrites its
code deps. No DVC or Dagster import here.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import yaml

PACKAGE = "mdpo_pipeline"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The stage entry points: the CLI that dvc.yaml runs and the module holding the table of runners.
STAGES_MODULE = f"{PACKAGE}.pipeline.stages"
ENTRY_MODULES = (f"{PACKAGE}.cli", STAGES_MODULE)


def module_file(module: str) -> Path | None:
    """The source file of a project module (a package's ``__init__.py``), or None when it is not one."""
    if module != PACKAGE and not module.startswith(f"{PACKAGE}."):
        return None
    rel = Path(*module.split(".")[1:])
    for candidate in (PACKAGE_DIR / rel / "__init__.py", (PACKAGE_DIR / rel).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (never executed)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
            else:
                todo.append(child)


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Project modules imported anywhere in ``tree`` (``from a import b`` counts a.b when that is a module)."""
    found = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node, module, is_package)
            names = [source, *(f"{source}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            # Importing a.b.c runs a and a.b first.
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in found if module_file(m) is not None}


@cache
def _module_imports(module: str) -> frozenset[str]:
    path = module_file(module)
    tree = ast.parse(path.read_text(), filename=str(path))
    return frozenset(_imports(tree, module, path.name == "__init__.py"))


def closure(modules: Iterable[str]) -> set[str]:
    """``modules`` and every project module they import, transitively."""
    todo, seen = list(modules), set()
    while todo:
        module = todo.pop()
        if module in seen or module_file(module) is None:
            continue
        seen.add(module)
        todo.extend(_module_imports(module))
    return seen


def _stage_functions(tree: ast.Module, runner: str) -> list[ast.FunctionDef]:
    """``runner`` and every function of its module it calls, transitively."""
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    todo, seen = [runner], {}
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen[name] = functions[name]
        todo.extend(n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name) and n.id in functions)
    return list(seen.values())


def _runner_names() -> dict[str, tuple[str, str]]:
    """stage → (module, function) of its runner, read from stages.py's RUNNERS table and the imports naming them."""
    tree = ast.parse(module_file(STAGES_MODULE).read_text())
    origin = {alias.asname or alias.name: (_resolve(node, STAGES_MODULE, False), alias.name)
              for node in tree.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "RUNNERS" for t in node.targets):
            return {k.value: origin.get(v.id, (STAGES_MODULE, v.id)) for k, v in zip(node.value.keys, node.value.values)}
    raise ValueError("stages.py has no RUNNERS table")


def _top_level(tree: ast.Module) -> ast.Module:
    return ast.Module(body=[n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.ClassDef)], type_ignores=[])


def stage_modules(stage: str) -> set[str]:
    """Every project module whose code runs when ``stage`` runs."""
    runners = _runner_names()
    if stage not in runners:
        raise KeyError(f"unknown stage {stage!r}; known: {sorted(runners)}")
    module, runner = runners[stage]
    # cli.py, stages.py and every runner's module are entered through their top level only; of the stage's own
    # module, the runner and what it calls also run. Other functions' imports are other stages' (and commands')
    # business, so they are not followed.
    entered = {*ENTRY_MODULES, *(m for m, _ in runners.values())}
    entry = set(entered)
    for name in entered:
        entry |= _imports(_top_level(ast.parse(module_file(name).read_text())), name, False)
    for function in _stage_functions(ast.parse(module_file(module).read_text()), runner):
        entry |= _imports(function, module, False)
    return closure(entry - entered) | entered


def stage_code_deps(stage: str, root: Path | None = None) -> list[str]:
    """The stage's code deps as dvc.yaml lists them: source files relative to the project root, sorted."""
    root = root or PACKAGE_DIR.parent
    return sorted(module_file(m).relative_to(root).as_posix() for m in stage_modules(stage))


def _is_code(dep: str) -> bool:
    return dep.startswith(f"{PACKAGE}/")


def check(dvc_yaml: Path) -> dict[str, dict[str, list[str]]]:
    """{stage: {"missing": [...], "extra": [...]}} for every stage whose code deps differ from the derived ones."""
    spec = yaml.safe_load(dvc_yaml.read_text())
    problems = {}
    for stage, body in spec["stages"].items():
        listed = {d for d in body.get("deps", []) if _is_code(d)}
        derived = set(stage_code_deps(stage, dvc_yaml.parent))
        if listed != derived:
            problems[stage] = {"missing": sorted(derived - listed), "extra": sorted(listed - derived)}
    return problems


def write(dvc_yaml: Path) -> None:
    """Rewrite dvc.yaml's code deps from the import graph; data deps, params, outs and the header stay."""
    text = dvc_yaml.read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    spec = yaml.safe_load(text)
    for stage, body in spec["stages"].items():
        data = [d for d in body.get("deps", []) if not _is_code(d)]
        body["deps"] = [*data, *stage_code_deps(stage, dvc_yaml.parent)]
    dvc_yaml.write_text(header + yaml.safe_dump(spec, sort_keys=False, width=120))


def main(argv: list[str] | None = None) -> int:
    """``--check`` (exit 1 and name what differs) or ``--write`` dvc.yaml's code deps."""
    parser = argparse.ArgumentParser(prog="python -m mdpo_pipeline.integrations.lineage", description=__doc__)
    parser.add_argument("--dvc-yaml", default=str(PACKAGE_DIR.parent / "dvc.yaml"))
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml's code deps are not the derived ones")
    mode.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps from the import graph")
    args = parser.parse_args(argv)
    path = Path(args.dvc_yaml)
    if args.write:
        write(path)
        return 0
    problems = check(path)
    for stage, diff in problems.items():
        print(f"{stage}: missing {diff['missing']}, extra {diff['extra']}", file=sys.stderr)
    if problems:
        print("run `python -m mdpo_pipeline.integrations.lineage --write` and commit dvc.yaml", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
