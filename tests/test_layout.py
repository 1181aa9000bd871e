"""The package's layout: imports flow one way (no cycle between modules, counting imports inside
functions too), and the top-level package stays light."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "numpyro_slt"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            # the deepest module of the package that the import names
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _imports(p, modules) for p in paths}
    # a package importing its own submodules (re-exports) is not a dependency of theirs
    return {m: {t for t in targets if not (m == t.rpartition(".")[0] or m == "numpyro_slt")}
            for m, targets in graph.items()}


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_layers_import_downwards():
    """The maths and kernels never import the application layers above them."""
    graph = _graph()
    upper = ("numpyro_slt.study", "numpyro_slt.cli", "numpyro_slt.report.study_report",
             "numpyro_slt.report.plots")
    for module, targets in graph.items():
        if module.startswith(("numpyro_slt.kernels", "numpyro_slt.estimators",
                              "numpyro_slt.handlers", "numpyro_slt.nn", "numpyro_slt.data")):
            wrong = sorted(t for t in targets if t.startswith(upper))
            assert not wrong, f"{module} imports {wrong}"


def test_top_level_import_is_light():
    code = ("import sys, numpyro_slt; heavy = [m for m in ('matplotlib', 'tokenizers', "
            "'datasets') if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=PACKAGE.parent)
    assert done.stdout.strip() == "[]", done.stdout
