"""The library's modules import each other without cycles (issue 12 part 6).

Every ``import`` statement counts, at module level or inside a function: a function-level import only
hides a cycle. Importing a name from a package also runs the package's ``__init__``, so an edge to
``slt_interp.theory.zoo`` from outside ``slt_interp.theory`` is also an edge to ``slt_interp.theory``.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"slt_interp": "slt_interp", "theory": "slt_interp.theory", "estimators": "slt_interp.estimators",
           "bilinear": "slt_interp.bilinear"}


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            is_pkg = rel[-1] == "__init__"
            name = ".".join((package, *rel[:-1])) if is_pkg else ".".join((package, *rel))
            mods[name] = (path, is_pkg)
    return mods


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}``, restricted to the library."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in mods]
                targets.update(subs)
                if len(subs) < len(node.names):
                    targets.add(module)
        own = set(_ancestors(name)) | {name}
        for t in targets:
            if t not in mods:
                continue
            for m in _ancestors(t) + [t]:
                if m in mods and m not in own:
                    graph[name].add(m)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def test_graph_sees_the_library():
    graph = import_graph()
    assert "slt_interp.estimators.llc_estimate" in graph
    assert "slt_interp.estimators.sgld" in graph["slt_interp.estimators.llc_estimate"] or any(
        "slt_interp.estimators." in t for t in graph["slt_interp.estimators.llc_estimate"])
    # the detector finds a planted cycle
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_import_cycles_among_library_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (give the shared pieces a public home): " + "; ".join(
        " ↔ ".join(c) for c in cycles)


def test_no_private_module_imported_across_packages():
    """A private module (``_name``) is used only inside its own subpackage; tests and experiments use
    public homes."""
    offenders = []
    for folder in ("experiments",):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("slt_interp."):
                    if any(part.startswith("_") for part in node.module.split(".")):
                        offenders.append(f"{path.relative_to(ROOT)}: from {node.module}")
    graph = import_graph()
    for name, targets in graph.items():
        for t in targets:
            if any(p.startswith("_") and p != "__init__" for p in t.split(".")):
                if t.split(".")[1] != name.split(".")[1]:
                    offenders.append(f"{name} imports {t}")
    assert not offenders, offenders
