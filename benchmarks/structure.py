"""The package's structure in numbers: import cycles between modules, and the longest functions.

    python benchmarks/structure.py            # needs the dev extra (grimp comes with import-linter)

`lint-imports` (run by `make test`) checks the layer, independence and no-cycle contracts in
pyproject.toml; this prints what a restructuring changes: the strongly connected groups of modules
in the import graph (a package's `__init__` counts as a module of its own, lazy imports included),
and the functions with the most lines.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def import_cycles(package: str = "sightsound") -> list[list[str]]:
    """Groups of modules that import each other, directly or not (Tarjan's strongly connected components)."""
    graph = grimp.build_graph(package, cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in edges[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return groups


def function_lengths(folder: Path) -> list[tuple[int, str]]:
    """(lines, file:function) for every function under `folder`, longest first."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT)}:{node.name}"))
    return sorted(found, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=8, help="how many of the longest functions to print")
    args = parser.parse_args()
    cycles = import_cycles()
    print(f"import cycles: {len(cycles)}")
    for group in cycles:
        print("  " + " ↔ ".join(group))
    lengths = function_lengths(ROOT / "sightsound")
    median = sorted(n for n, _ in lengths)[len(lengths) // 2]
    print(f"functions: {len(lengths)}, median {median} lines; the longest:")
    for lines, name in lengths[: args.top]:
        print(f"  {lines:4d}  {name}")


if __name__ == "__main__":
    main()
