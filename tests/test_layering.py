"""The package's import graph: layers point down (core <- io <- pipelines <- cli / integrations), no circles.

Every import is counted, also those inside functions (a deferred import still ties two modules
together) and those under ``if TYPE_CHECKING:`` (a type that needs the other module is a tie too).
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "domain_guidance"
LAYERS = {"core": 0, "io": 1, "pipelines": 2, "cli": 3, "diffusers": 3, "__main__": 3}


def _module_name(path: Path) -> str:
    parts = ["domain_guidance", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Package modules imported by the file at ``path`` (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("domain_guidance"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    root = package.split(".")
                    root = root[:len(root) - child.level + 1]
                    base = ".".join(root + ([child.module] if child.module else []))
                if base.startswith("domain_guidance"):
                    for a in child.names:  # `from . import analysis` names a module
                        found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, modules) for f in files}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_layers_point_down():
    wrong = [f"{a} -> {b}" for a, deps in _graph().items() for b in deps
             if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)]
    assert not wrong, "imports pointing up a layer:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exporting its own submodules is not a circle between them: drop the
    edges from a submodule to its own enclosing packages' ``__init__``."""
    return {a: {b for b in deps if not a.startswith(b + ".")} for a, deps in graph.items()}


def test_no_import_circles():
    cycles = _cycles(_without_package_inits(_graph()))
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_finds_a_planted_circle():
    graph = _without_package_inits(_graph())
    a, b = "domain_guidance.pipelines.demo.study", "domain_guidance.pipelines.demo.ablations"
    assert b in graph[a]  # study uses the ablations
    planted = {**graph, b: graph[b] | {a}}
    assert [sorted([a, b])] == [c for c in _cycles(planted) if a in c and len(c) == 2]
