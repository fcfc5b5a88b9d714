"""eor's internal imports form no cycle: dependencies point one way (learner -> ops -> backend).

Every module of eor is parsed (ast, not imported). An edge A -> B is an import of eor module B
written in A. Module-level imports (including those under `if`/`try` at the top) must form no
cycle at all. Function-level imports count too, since they still couple the two modules and
only hide the cycle until the call; the one such cycle that exists today is listed in
`KNOWN_FUNCTION_LEVEL_CYCLES` (each entry an edge that closes it) for its owner to remove.
`from eor.x import y` points at the module eor.x.y when it exists, else at eor.x. A
submodule's implicit import of its parent package is not an edge: that is how packages work.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import eor

# `eor.kernels` ships from kernels/ and is imported by name only (eor.ops.backend.load_kernels).
_ROOT = Path(eor.__file__).parent

# Function-level edges that close a cycle today: (importer, imported).
KNOWN_FUNCTION_LEVEL_CYCLES: set[tuple[str, str]] = set()


def eor_modules() -> dict[str, Path | None]:
    """Every module of eor (packages as their __init__.py; None for a compiled extension such
    as eor._core, which imports nothing of eor), by dotted name."""
    modules: dict[str, Path | None] = {"eor": _ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(_ROOT)], prefix="eor."):
        rel = Path(*info.name.split(".")[1:])
        path = _ROOT / rel / "__init__.py" if info.ispkg else (_ROOT / rel).with_suffix(".py")
        modules[info.name] = path
    for stub in _ROOT.rglob("*.pyi"):  # a compiled extension, typed by its stub
        name = ".".join(("eor", *stub.relative_to(_ROOT).with_suffix("").parts))
        modules.setdefault(name, None)
    return modules


def _import_nodes(tree: ast.AST, function_level: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of `tree`; only those outside functions unless function_level."""
    nodes: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            nodes.append(node)
        elif function_level or not isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
        ):
            stack.extend(ast.iter_child_nodes(node))
    return nodes


def imports_of(name: str, source: str, known: set[str], *, function_level: bool = True) -> set[str]:
    """The modules in `known` that module `name` (source text) imports: anywhere in the file,
    or outside functions only with function_level=False."""
    is_pkg = name in known and any(k.startswith(name + ".") for k in known)
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(source), function_level):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                found.add(sub if sub in known else mod)
    edges = set()
    for target in found:
        while target and target not in known:  # import eor.a.b.c -> the deepest known module
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.add(target)
    return edges


def import_graph(*, function_level: bool = True) -> dict[str, set[str]]:
    modules = eor_modules()
    known = set(modules)
    return {
        name: imports_of(name, path.read_text(), known, function_level=function_level)
        if path
        else set()
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_on_small_graphs() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond, no cycle
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"a"}, "a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_imports_of_resolves_eor_modules() -> None:
    known = {"eor", "eor.ops", "eor.ops.backend", "eor.ops.aten", "eor.agent", "eor.agent.ravl"}
    source = (
        "import torch\n"
        "from eor import ops\n"
        "from eor.ops import aten, backend_for\n"
        "def f():\n"
        "    from eor.agent.ravl import RAVL\n"
        "    import eor.ops.backend\n"
    )
    assert imports_of("eor.agent.networks", source, known) == {
        "eor.ops",
        "eor.ops.aten",
        "eor.agent.ravl",
        "eor.ops.backend",
    }
    assert imports_of("eor.ops.critic", "from .backend import x\nfrom . import aten\n", known) == {
        "eor.ops.backend",
        "eor.ops.aten",
    }


def test_module_level_imports_have_no_cycle() -> None:
    graph = import_graph(function_level=False)
    assert {"eor.ops", "eor.ops.backend", "eor.agent.ravl", "eor.cli", "eor._core"} <= set(graph)
    assert "eor.ops.backend" in graph["eor.ops.linear"]
    cycle = find_cycle(graph)
    assert cycle is None, f"module-level import cycle: {' -> '.join(cycle or [])}"


def test_function_level_imports_have_no_new_cycle() -> None:
    graph = import_graph()
    for importer, imported in KNOWN_FUNCTION_LEVEL_CYCLES:
        assert imported in graph[importer], f"{importer} -> {imported} is gone: drop the entry"
        graph[importer] = graph[importer] - {imported}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_module_level_ignores_imports_inside_functions() -> None:
    known = {"eor", "eor.a", "eor.b"}
    source = "from eor import a\ntry:\n    import eor.b\nexcept ImportError:\n    pass\n"
    assert imports_of("eor.c", source, known, function_level=False) == {"eor.a", "eor.b"}
    source = "from eor import a\ndef f():\n    import eor.b\n"
    assert imports_of("eor.c", source, known, function_level=False) == {"eor.a"}
    assert imports_of("eor.c", source, known) == {"eor.a", "eor.b"}


def test_a_planted_cycle_is_found() -> None:
    """The real graph with one back edge added (backend importing the learner) has a cycle."""
    graph = import_graph(function_level=False)
    graph["eor.ops.backend"] = graph["eor.ops.backend"] | {"eor.agent.ravl"}
    cycle = find_cycle(graph)
    assert cycle is not None and "eor.ops.backend" in cycle and "eor.agent.ravl" in cycle


def test_backend_imports_nothing_of_eor() -> None:
    assert import_graph()["eor.ops.backend"] == set()
