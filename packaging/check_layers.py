"""The layer check: import-linter's contracts (pyproject.toml) and no import cycle anywhere.

    python packaging/check_layers.py

import-linter checks the layers; a cycle between two modules of the same layer (or of the app)
would still pass it, so the strongly connected parts of the whole import graph are checked
too. Function-local imports count as imports in both checks, so a loop cannot hide in one.
"""
from __future__ import annotations

import sys
from typing import Iterable

PACKAGES = ("dtl_engine", "app")


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


def main() -> int:
    from importlinter.cli import lint_imports

    code = lint_imports(no_cache=True, no_logo=True)
    cycles = import_cycles()
    for group in cycles:
        print("Import cycle: " + " <-> ".join(group))
    if not cycles:
        print("No import cycles in " + ", ".join(PACKAGES) + ".")
    return 1 if cycles or code else 0


if __name__ == "__main__":
    sys.exit(main())
