"""The house rules of DESIGN.md and issue #12, checked on the source itself: parsed with ``ast``, never imported.

The graph has one node per module under ``src/tessera`` and one edge per import of another tessera module,
relative or absolute, with its place: module level (runs when the module is imported: a class body or a ``try``
at the top counts) or function level (runs when the function is called). An edge points at the module named,
not at the packages above it (``from ..engine import runtime`` is an edge to ``tessera.engine.runtime``; ``from
..engine import tiled_apply`` one to ``tessera.engine``). Imports under ``if TYPE_CHECKING:`` never run, so they
count for the layering rules but not for cycles. Names built at run time (``importlib.import_module``) are not
seen.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = "tessera"
SOURCE = Path(__file__).resolve().parent.parent / "src" / PACKAGE
MAX_LINES = 450

# DESIGN.md's "never" rules: the layers below import no task and no front end, not even inside a function
LOWER_LAYERS = ("tessera.engine", "tessera.tiling", "tessera.models", "tessera.image")
UPPER_LAYERS = ("tessera.tasks", "tessera.batch", "tessera.cli", "tessera.web")
DECODERS = ("PIL", "cv2", "tifffile")
ENGINE_MAY_USE_IMAGE = ("tessera.image.pixels",)


@dataclass(frozen=True)
class Import:
    """One import statement's target as seen from ``source``: a tessera module, or an outside top-level name."""

    source: str
    target: str
    line: int
    module_level: bool
    type_only: bool

    def __str__(self) -> str:
        where = "module level" if self.module_level else "in a function"
        return f"{self.source} -> {self.target} (line {self.line}, {where})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(source: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import names (``from ..x import y`` in ``source``)."""
    if not node.level:
        return node.module or ""
    package = source if modules()[source].name == "__init__.py" else source.rpartition(".")[0]
    base = package.split(".")
    if node.level > 1:
        base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(node: ast.Import | ast.ImportFrom, source: str) -> list[str]:
    """What one import statement loads: the modules it names, the deepest that exists for tessera's own."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = _resolve(source, node)
        names = [base]
        # ``from package import submodule`` loads the submodule too
        names += [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules()]
    found = []
    for name in names:
        if _within(name, (PACKAGE,)):
            while name not in modules() and "." in name:  # an attribute of a module: ``from .x import y``
                name = name.rpartition(".")[0]
            found.append(name)
        else:
            found.append(name.partition(".")[0])
    return found


def _walk(node: ast.AST, source: str, module_level: bool, type_only: bool, out: list[Import]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            out += [Import(source, target, child.lineno, module_level, type_only)
                    for target in _targets(child, source)]
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            _walk(child, source, False, type_only, out)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                _walk(ast.Module(body=[statement], type_ignores=[]), source, module_level, True, out)
            for statement in child.orelse:
                _walk(ast.Module(body=[statement], type_ignores=[]), source, module_level, type_only, out)
        else:
            _walk(child, source, module_level, type_only, out)


@cache
def imports() -> tuple[Import, ...]:
    """Every import in the package (tessera modules and outside packages alike)."""
    found: list[Import] = []
    for name, path in modules().items():
        _walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), name, True, False, found)
    return tuple(found)


def internal_imports() -> list[Import]:
    return [edge for edge in imports() if edge.target in modules() and edge.target != edge.source]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), each as a path that returns to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(group, graph) for group in groups]


def _cycle_through(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group (breadth first)."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph.get(node, ()) & members):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {group}")  # a strongly connected group always has one


# ---------------------------------------------------------------------------------------------------- the checker


def test_the_parser_sees_relative_absolute_and_function_level_imports():
    """The graph itself: known imports of the package are found with the right target and place."""
    edges = {(edge.source, edge.target, edge.module_level) for edge in internal_imports()}
    assert ("tessera.cli", "tessera.errors", True) in edges  # from ..errors import TesseraError
    assert ("tessera.models.classical.inpaint", "tessera.errors", True) in edges  # from ...errors import
    assert ("tessera.tasks.registry", "tessera.tasks.result", True) in edges  # from .result import Result
    assert ("tessera.tasks.registry", "tessera.models.loader", False) in edges  # inside load_models
    assert ("tessera.cli", "tessera", False) in edges  # from .. import __version__, in build_parser


def test_find_cycles_reports_each_cycle_as_a_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []

# ---------------------------------------------------------------------------------------------------- the rules


def test_no_import_cycles_at_module_level():
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for edge in internal_imports():
        if edge.module_level and not edge.type_only:
            graph[edge.source].add(edge.target)
    cycles = find_cycles(graph)
    assert not cycles, "import cycles at module level:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_lower_layers_import_no_task_and_no_front_end():
    broken = [str(edge) for edge in internal_imports()
              if _within(edge.source, LOWER_LAYERS) and _within(edge.target, UPPER_LAYERS)]
    assert not broken, "engine, tiling, models and image import a task or a front end:\n" + "\n".join(broken)


def test_the_engine_imports_no_decoder_and_only_the_pixels_of_image():
    broken = [str(edge) for edge in imports()
              if _within(edge.source, ("tessera.engine",)) and edge.module_level and not edge.type_only
              and (edge.target in DECODERS
                   or (_within(edge.target, ("tessera.image",)) and edge.target not in ENGINE_MAY_USE_IMAGE))]
    assert not broken, ("the engine imports a decoder or an image module other than image.pixels at module "
                        "level:\n" + "\n".join(broken))


def test_modules_stay_small():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    over = sorted(((lines, name) for name, lines in sizes.items() if lines > MAX_LINES), reverse=True)
    assert not over, f"modules over {MAX_LINES} lines:\n" + "\n".join(f"{name}: {lines}" for lines, name in over)
