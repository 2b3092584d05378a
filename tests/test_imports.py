"""Structure of the normref package: no import cycle between its modules, and
no module longer than :data:`MAX_LINES` lines.

The import graph is read from the source with :mod:`ast`, not by importing:
every ``import`` and ``from ... import`` statement counts, at module level
and inside functions (a function-local import only postpones a cycle to the
first call; it does not remove it).  Statements under ``if TYPE_CHECKING:``
are skipped (never executed).  Edges:

* ``import normref.a.b`` -> module ``normref.a.b`` (a package means its
  ``__init__.py``);
* ``from normref.a import b`` -> ``normref.a.b`` if ``b`` is a submodule,
  else ``normref.a``;
* relative imports are resolved against the importing module's package.

Importing a submodule also runs its parents' ``__init__``; those implicit
edges are not added (a package's ``__init__`` importing its own submodules
would otherwise always be a cycle).  ``import normref`` or ``from .. import
x`` of a name defined in ``normref/__init__.py`` is an explicit edge to
``normref`` and is counted: import the precise submodule instead.
Imports by name at run time (``importlib.import_module``: the adapter table,
the claim providers, ``normref.testing.strategies``) are not statements and
are not seen.
"""
from __future__ import annotations

import ast
from pathlib import Path

import normref

ROOT = Path(normref.__file__).resolve().parent
PACKAGE = ROOT.name
MAX_LINES = 600



def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _is_type_checking(test) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree):
    """Every Import / ImportFrom node, at any depth, outside ``if TYPE_CHECKING``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _deepest_module(name: str, modules) -> str | None:
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in modules:
            return cand
        parts.pop()
    return None


def _targets(node, importer: str, is_package: bool, modules, package: str):
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == package:
                yield _deepest_module(alias.name, modules)
        return
    if node.level:
        base = importer.split(".")
        if not is_package:
            base = base[:-1]
        up = node.level - 1
        if up > len(base) - 1:
            raise AssertionError(f"{importer}: relative import beyond the top-level package")
        base = base[:len(base) - up]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
        if mod.split(".")[0] != package:
            return
    for alias in node.names:
        sub = f"{mod}.{alias.name}"
        yield sub if sub in modules else _deepest_module(mod, modules)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: {modules of the package it imports}}`` for every module of
    the package whose directory is ``root``."""
    modules = _modules(root)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in _import_nodes(tree):
            edges.update(t for t in _targets(node, name, is_package, modules, root.name)
                         if t is not None and t != name)
        graph[name] = edges
    return graph


def find_cycles(graph):
    """One cycle (a list of modules, first == last) per strongly connected
    component with more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, sccs = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        sccs.append(comp)
    return [_cycle_in(comp, graph) for comp in sccs]


def _cycle_in(comp, graph):
    """A shortest cycle through the smallest module of ``comp`` (breadth first)."""
    start = min(comp)
    prev = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(comp)}")


def test_cycle_finder_finds_and_reports_cycles():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    cycles = sorted(find_cycles(g))
    assert cycles == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_graph_reads_local_relative_and_submodule_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from . import a\n",
        "a.py": "import os\n\ndef f():\n    from .b import x\n    return x\n",
        "b.py": "from .sub import c\nx = 1\n",
        "sub/__init__.py": "",
        "sub/c.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from ..d import y\nelse:\n    import pkg.sub\n"
                     "class K:\n    def m(self):\n        from .. import a\n"),
        "d.py": "from .sub.c import K\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    g = import_graph(pkg)
    assert g == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub.c"},
                 "pkg.sub": set(), "pkg.sub.c": {"pkg.a", "pkg.sub"},
                 "pkg.d": {"pkg.sub.c"}}
    assert find_cycles(g) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]

    g = import_graph()
    assert f"{PACKAGE}.registry" in g
    # every edge lands on a module that exists
    for mod, edges in g.items():
        assert edges <= set(g), (mod, edges - set(g))
    # a package's __init__ importing its submodules is seen
    assert any(e.startswith(f"{PACKAGE}.") for e in g[PACKAGE])


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles between normref modules:\n" + "\n".join(
        "  " + " -> ".join(c) for c in cycles)


def test_no_module_over_max_lines():
    long = {str(p.relative_to(ROOT.parent)): n for p in sorted(ROOT.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"
