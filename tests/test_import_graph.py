"""No import cycle between the packages of ``reasonrl`` (issue 12 item 7).

The graph is built from the source's AST, not from ``sys.modules``: every ``import`` counts, at module
level and inside functions alike, because an import moved into a function to dodge a circular import
still ties the two packages together (change one, and the other breaks at call time). Nodes are the
top-level subpackages (``reasonrl.trainer``) and top-level modules (``reasonrl.config``) of
``reasonrl``; the root ``reasonrl/__init__.py`` is the node ``reasonrl``. Imports under
``if TYPE_CHECKING:`` are skipped: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "reasonrl"

def _node(dotted: str) -> str | None:
    """The graph node of an absolute module name, or None outside reasonrl."""
    parts = dotted.split(".")
    if parts[0] != "reasonrl":
        return None
    return parts[1] if len(parts) > 1 else "reasonrl"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_pkg: bool):
    """Absolute names imported anywhere in a module (``from X import y`` yields ``X.y`` too, so
    ``from reasonrl import bench`` points at ``reasonrl.bench``)."""
    package = module if is_pkg else module.rpartition(".")[0]
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod
            yield from (f"{mod}.{a.name}" for a in node.names if a.name != "*")
        stack.extend(ast.iter_child_nodes(node))


def package_graph(src: Path = SRC) -> dict[str, dict[str, list[str]]]:
    """``graph[a][b]`` = the files of node ``a`` that import something of node ``b`` (a != b)."""
    nodes = {p.name if p.is_dir() else p.stem for p in src.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    nodes.add("reasonrl")
    graph: dict[str, dict[str, list[str]]] = {n: {} for n in nodes}
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src.parent).with_suffix("")
        is_pkg = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_pkg else rel.parts)
        here = _node(module)
        for name in _imports(ast.parse(path.read_text(), str(path)), module, is_pkg):
            if name == "reasonrl":  # ``from reasonrl import x``: the names imported say where it points
                continue
            there = _node(name)
            if there is not None and there not in nodes:  # ``from reasonrl import __version__``: the root
                there = "reasonrl"
            if there is None or there == here:
                continue
            files = graph[here].setdefault(there, [])
            if str(path.relative_to(src.parent)) not in files:
                files.append(str(path.relative_to(src.parent)))
    return graph


def strongly_connected(graph: dict[str, dict[str, list[str]]]) -> list[set[str]]:
    """Tarjan's algorithm; components with more than one node (each holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def a_cycle(graph: dict[str, dict[str, list[str]]], comp: set[str]) -> list[str]:
    """One shortest cycle through the smallest node of a component, as ``a -> b -> ... -> a``."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in comp:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in component {comp}")  # pragma: no cover


def describe(graph: dict[str, dict[str, list[str]]], comps: list[set[str]]) -> str:
    lines = []
    for comp in comps:
        cyc = a_cycle(graph, comp)
        lines.append(f"cycle among {sorted(comp)}: " + " -> ".join(cyc))
        for a, b in zip(cyc, cyc[1:]):
            lines.append(f"    {a} -> {b}: {', '.join(sorted(set(graph[a][b])))}")
    return "\n".join(lines)


def test_the_graph_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "reasonrl"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from reasonrl.b import x\n")
    (pkg / "b" / "__init__.py").write_text("x = 1\n")
    (pkg / "b" / "m.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from reasonrl.c import T\n"
                                    "def f():\n    from .. import a\n")
    (pkg / "c.py").write_text("from . import b\n")
    g = package_graph(pkg)
    assert g["a"] == {"b": ["reasonrl/a/__init__.py"]} and g["b"] == {"a": ["reasonrl/b/m.py"]}
    assert g["c"] == {"b": ["reasonrl/c.py"]}
    comps = strongly_connected(g)
    assert comps == [{"a", "b"}]
    assert "a -> b -> a" in describe(g, comps)


def test_no_import_cycles_between_packages():
    g = package_graph()
    comps = strongly_connected(g)
    assert not comps, "import cycles between reasonrl packages:\n" + describe(g, comps)
