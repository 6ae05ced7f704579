"""The shape of src/disk_snapshots, from its import graph (docs/architecture.md).

- No import cycle, counting every import a module states (also inside functions, so a
  late import cannot hide one; not the package ``__init__`` each import runs implicitly).
- No library module imports an entry point (cli, __main__, commands/*, operator/*): the logic an
  entry point runs lives in the library, so that hooks, errands, the daemon and tests
  all reach it the same way.
- No module over 600 lines, no function over 60.

Each rule is a function of a graph or a tree, and each is shown to fire on a broken
example before it is trusted with the real one.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from support.release import REPO

PACKAGE = REPO / "src" / "disk_snapshots"
ENTRY_POINTS = (
    "disk_snapshots.__main__",
    "disk_snapshots.cli",
    "disk_snapshots.commands",
    "disk_snapshots.operator",
)
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60

Graph = Mapping[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(source: str, name: str, modules: set[str]) -> set[str]:
    """The package's modules ``source`` imports when it runs (TYPE_CHECKING blocks aside)."""
    found: set[str] = set()
    package = name if name in modules and _is_package(name, modules) else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return {m for m in found if m in modules and m != name}


def _is_package(name: str, modules: set[str]) -> bool:
    return any(m.startswith(name + ".") for m in modules)


def graph_of(root: Path) -> dict[str, set[str]]:
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(p.read_text(), name, modules) for name, p in paths.items()}


def cycles(graph: Graph) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def is_entry_point(name: str) -> bool:
    return any(name == e or name.startswith(e + ".") for e in ENTRY_POINTS)


def library_imports_of_entry_points(graph: Graph) -> list[str]:
    return sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        if not is_entry_point(name)
        for target in targets
        if is_entry_point(target)
    )


def too_long(root: Path) -> list[str]:
    """Modules over MAX_MODULE_LINES and functions over MAX_FUNCTION_LINES."""
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(root.parent)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            problems.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{where}:{node.lineno}: {node.name} is {length} lines")
    return problems


# -- the rules fire on broken examples ---------------------------------------------------


def write_package(root: Path, files: Mapping[str, str]) -> Path:
    package = root / "disk_snapshots"
    for relative, text in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return package


def test_a_cycle_is_found_also_through_a_late_import(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "sets.py": "def late():\n    from disk_snapshots.errands import coordinator\n",
            "errands.py": "from disk_snapshots.sets import late\n",
            "leaf.py": "import json\n",
        },
    )
    assert cycles(graph_of(package)) == [["disk_snapshots.errands", "disk_snapshots.sets"]]


def test_type_checking_imports_and_relative_imports_are_read_right(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n",
            "b.py": "from .sub import c\n",
            "sub/__init__.py": "",
            "sub/c.py": "from .. import a\n",
        },
    )
    graph = graph_of(package)
    assert graph["disk_snapshots.a"] == set()
    assert graph["disk_snapshots.b"] == {"disk_snapshots.sub", "disk_snapshots.sub.c"}
    assert graph["disk_snapshots.sub.c"] == {"disk_snapshots", "disk_snapshots.a"}
    assert cycles(graph) == []


def test_a_library_module_importing_an_entry_point_is_found(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "cli.py": "from disk_snapshots.commands import hooks\n",
            "commands/__init__.py": "",
            "commands/hooks.py": "from disk_snapshots.snapshotter import take\n",
            "snapshotter.py": "from disk_snapshots.commands.hooks import SNAPSHOT_ERRORS\n",
        },
    )
    assert library_imports_of_entry_points(graph_of(package)) == [
        "disk_snapshots.snapshotter imports disk_snapshots.commands.hooks"
    ]


def test_long_modules_and_functions_are_found(tmp_path: Path) -> None:
    body = "\n".join(f"    x{n} = {n}" for n in range(MAX_FUNCTION_LINES))
    package = write_package(
        tmp_path,
        {"long.py": f"def f():\n{body}\n" + "\n" * MAX_MODULE_LINES, "short.py": "x = 1\n"},
    )
    assert too_long(package) == [
        f"disk_snapshots/long.py: {MAX_FUNCTION_LINES + 1 + MAX_MODULE_LINES} lines",
        f"disk_snapshots/long.py:1: f is {MAX_FUNCTION_LINES + 1} lines",
    ]


# -- the package itself ------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return graph_of(PACKAGE)


def test_the_graph_covers_the_package(graph: dict[str, set[str]]) -> None:
    assert "disk_snapshots.snapshot.snapshotter" in graph
    assert "disk_snapshots.commands.hooks" in graph["disk_snapshots.cli"]
    assert "disk_snapshots.snapshot.quiesce" in graph["disk_snapshots.snapshot.snapshotter"]


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_no_library_module_imports_an_entry_point(graph: dict[str, set[str]]) -> None:
    assert library_imports_of_entry_points(graph) == []


def test_modules_and_functions_stay_short() -> None:
    assert too_long(PACKAGE) == []
