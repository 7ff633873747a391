"""The layer check: import-linter's contracts (pyproject.toml) and no import cycle anywhere.

    python packaging/check_layers.py

import-linter checks the layers; a cycle between two modules of the same layer (or of the app)
would still pass it, so the strongly connected parts of the whole import graph are checked
too. Function-local imports count as imports in both checks, so a loop cannot hide in one.

A function-local import is allowed in one case (CONTRIBUTING.md): a torch-free module deferring a
module that loads torch, so `import dtl_engine`, the CLI's `--help` and the app's GUI thread stay
fast. Every other one is reported, unless ALLOWED_LOCAL_IMPORTS names it with a reason.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

PACKAGES = ("dtl_engine", "app")
ROOT = Path(__file__).resolve().parents[1]

# What makes a module slow to import: a module that loads one of these (at its top, or through the
# project modules it imports at their top) "loads torch" in the sense of CONTRIBUTING.md.
HEAVY = ("torch", "torchvision", "timm", "numpy", "PIL")

# The one allow-list of function-local imports the rule alone would refuse:
# (importing module, imported module) -> why it stays local. "*" stands for any module; an imported
# name matches its sub-modules too ("onnx" matches "onnx.checker").
ALLOWED_LOCAL_IMPORTS: dict[tuple[str, str], str] = {
    # optional dependencies: the engine runs without them, and says so when they are asked for
    ("*", "onnx"): "optional (the ONNX export): imported where an ONNX file is made or checked",
    ("*", "onnxruntime"): "optional (the ONNX export): imported where an ONNX file is run",
    ("*", "peft"): "optional (the LoRA peer of the benchmark): imported where that peer is built",
    # modules of one platform: imported where that platform is known
    ("*", "resource"): "Unix only: imported in the benchmark's child process, which runs on Unix",
    ("*", "multiprocessing.forkserver"): "Unix only: imported when the fork server is the workers' start method",
    ("dtl_engine.model.weights", "huggingface_hub"): "timm's hub library, used only if it is there: a missing or "
                                                     "changed one must not stop a run (imported inside a try)",
    # entry points that choose what to load: only the path taken is imported
    ("app.main", "*"): "the entry point: the CLI must not load Qt, and the window's process marks triton absent "
                       "before its first heavy import (keep_triton_out), so each path imports its own modules",
    ("app.self_test", "*"): "the bundle's self-test: each check imports what it checks, so a missing library fails "
                            "that check with a sentence instead of the whole self-test",
}


def import_cycles(packages: Iterable[str] = PACKAGES) -> list[list[str]]:
    """Each group of modules that import each other, directly or through others (sorted names)."""
    import grimp

    graph = grimp.build_graph(*packages)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & graph.modules for m in graph.modules}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(root: str) -> None:
        # Tarjan's algorithm, iterative so a deep graph cannot hit the recursion limit.
        work = [(root, iter(sorted(edges[root])))]
        order[root] = low[root] = len(order)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in order:
                    order[child] = low[child] = len(order)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], order[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == order[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    for module in sorted(edges):
        if module not in order:
            visit(module)
    return sorted(groups)


class _Module:
    """One module of the tree: what it imports at its top, and inside its functions (with line numbers)."""

    def __init__(self, name: str, path: Path, is_package: bool) -> None:
        self.name, self.path, self.is_package = name, path, is_package
        self.top: list[str] = []
        self.local: list[tuple[int, str]] = []


def _modules(packages: Iterable[str], root: Path) -> dict[str, _Module]:
    found: dict[str, _Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = _Module(".".join(parts), path, is_package)
    return found


def _imported(node: ast.Import | ast.ImportFrom, module: _Module, known: dict[str, _Module]) -> Iterator[str]:
    """The modules an import statement loads (a project sub-module named by ``from X import name`` included)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:      # a relative import, resolved against the importing module's package
        package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
        package = package[:len(package) - node.level + 1]
        base = ".".join([*package, *([base] if base else [])])
    project = base.split(".")[0] in {name.split(".")[0] for name in known}
    for alias in node.names:
        # another package's name may be a module or not: kept whole, so the allow-list can name a sub-module
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known or not project else base


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _read_imports(module: _Module, known: dict[str, _Module]) -> None:
    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue                # only for the type checker: never imported when the program runs
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                names = list(_imported(child, module, known))
                if in_function:
                    module.local += [(child.lineno, name) for name in names]
                else:
                    module.top += names
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(module.path.read_text(encoding="utf-8")), False)


def _loads_heavy(name: str, known: dict[str, _Module], memo: dict[str, bool]) -> bool:
    """Whether importing ``name`` loads torch, numpy, timm or PIL (through the top-level imports)."""
    if name.split(".")[0] in HEAVY:
        return True
    if name not in known:
        parent = name.rpartition(".")[0]
        return bool(parent) and parent in known and _loads_heavy(parent, known, memo)
    if name in memo:
        return memo[name]
    memo[name] = False                  # a loop of top-level imports (reported as a cycle) ends here
    parents = [name[:i] for i in range(len(name)) if name[i] == "."]     # their __init__ runs first
    memo[name] = any(_loads_heavy(other, known, memo) for other in [*parents, *known[name].top] if other != name)
    return memo[name]


def _allowed(importer: str, imported: str) -> bool:
    for who, what in ALLOWED_LOCAL_IMPORTS:
        if who in ("*", importer) and (what == "*" or imported == what or imported.startswith(what + ".")):
            return True
    return False


class LocalImport(NamedTuple):
    """A function-local import the rule refuses."""

    path: Path
    line: int
    importer: str
    imported: str
    why: str


def local_imports_refused(packages: Iterable[str] = PACKAGES, root: Path = ROOT) -> list[LocalImport]:
    """Each function-local import that CONTRIBUTING.md does not allow.

    Allowed: a torch-free module deferring a module that loads torch (numpy, timm, PIL), or an entry
    of ALLOWED_LOCAL_IMPORTS. Anything else belongs at the top of its module.
    """
    known = _modules(packages, root)
    for module in known.values():
        _read_imports(module, known)
    memo: dict[str, bool] = {}
    refused = []
    for name, module in sorted(known.items()):
        importer_heavy = _loads_heavy(name, known, memo)
        for line, imported in module.local:
            if _allowed(name, imported):
                continue
            if importer_heavy:
                why = f"{name} loads torch already; import {imported} at its top"
            elif not _loads_heavy(imported, known, memo):
                why = f"{imported} does not load torch; import it at the top of {name}"
            else:
                continue
            refused.append(LocalImport(module.path, line, name, imported, why))
    return refused


def local_import_problems(packages: Iterable[str] = PACKAGES, root: Path = ROOT) -> list[str]:
    """The refused function-local imports as 'path:line: sentence'."""
    return [f"{r.path.relative_to(root).as_posix()}:{r.line}: {r.why}" for r in local_imports_refused(packages, root)]


def main() -> int:
    from importlinter.cli import lint_imports

    code = lint_imports(no_cache=True, no_logo=True)
    cycles = import_cycles()
    for group in cycles:
        print("Import cycle: " + " <-> ".join(group))
    if not cycles:
        print("No import cycles in " + ", ".join(PACKAGES) + ".")
    problems = local_import_problems()
    for problem in problems:
        print("Function-local import: " + problem)
    if not problems:
        print("Every function-local import defers torch from a torch-free module, or is allowed.")
    return 1 if cycles or code or problems else 0


if __name__ == "__main__":
    sys.exit(main())
