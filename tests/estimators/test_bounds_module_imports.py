"""The curvature / bounds modules import each other without cycles (issue 12 part 6).

Every import statement counts, including those inside functions (a function-level import that dodges
a cycle at import time is still a cycle).
"""
import ast
from pathlib import Path

ESTIMATORS = Path(__file__).resolve().parents[2] / "estimators"
MODULES = ("curvature", "curvature_plots", "flat", "higher_order", "lanczos", "llc_bounds", "llc_bounds_result",
           "losses", "model_losses", "rank_curve", "slq", "spectrum", "taylor")


def _relative_imports(name: str) -> set[str]:
    tree = ast.parse((ESTIMATORS / f"{name}.py").read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("slt_interp.estimators."):
            out.add(node.module.split(".")[2])
    return out


def test_no_import_cycle_among_the_bounds_modules():
    graph = {m: _relative_imports(m) for m in MODULES}
    assert "llc_bounds" not in graph["higher_order"] and "higher_order" in graph["llc_bounds"]

    def visit(node, path):
        for dep in graph.get(node, ()):
            assert dep not in path, f"import cycle: {' → '.join(path + [dep])}"
            visit(dep, path + [dep])

    for m in MODULES:
        visit(m, [m])


def test_no_private_estimators_module_is_imported_by_the_bounds_modules_or_experiments():
    for name in MODULES:
        assert not any(dep.startswith("_") for dep in _relative_imports(name)), name
    root = ESTIMATORS.parent / "experiments"
    for path in list(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("slt_interp.estimators"):
                assert not any(part.startswith("_") for part in node.module.split(".")), (path, node.module)
