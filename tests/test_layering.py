"""The import graph of xgrad runs one way: down the layers of docs/design.md, with no circle.

Every ``import`` of an xgrad module counts, at module level or inside a function (a lazy
import is still a dependency); imports under ``if TYPE_CHECKING:`` do not (they are type
hints only). A module may import its own layer and the layers below it, never one above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "xgrad"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("xgrad.errors", "xgrad._io", "xgrad._checks", "xgrad._version"),
    (
        "xgrad.activations",
        "xgrad.losses",
        "xgrad.metrics",
        "xgrad.layers",
        "xgrad.spec",
        "xgrad.params",
        "xgrad.optim",
        "xgrad.identify",
        "xgrad.workers",
    ),
    ("xgrad.frameworks",),
    ("xgrad.align", "xgrad.pairing", "xgrad.report", "xgrad.diagnosis"),
    ("xgrad.comparison", "xgrad.runner"),
    (
        "xgrad.training",
        "xgrad.backends",
        "xgrad.convert",
        "xgrad.port",
        "xgrad.testing",
        "xgrad.examples",
    ),
    ("xgrad.sweep",),
    ("xgrad.cli",),
    ("xgrad",),  # the package's __init__: the public API, re-exported
)
"""Lowest first. ``xgrad.identify`` (numeric identification of activations and norms, NumPy
only) sits below the frameworks because their readers use it."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def layer_of(module: str) -> int:
    best, level = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, level = len(name), i
    if level is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layering.py::LAYERS")
    return level


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, package: str):
    """(imported module, line) for every xgrad import outside ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                full = f"{mod}.{alias.name}"
                yield (full if full in MODULES else mod), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        stack.extend(ast.iter_child_nodes(node))


def edges() -> dict[str, dict[str, int]]:
    """module -> {imported xgrad module: line}."""
    out: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = {}
        for target, line in _imports(ast.parse(path.read_text()), package):
            if (target == "xgrad" or target.startswith("xgrad.")) and target != name:
                found.setdefault(target, line)
        out[name] = found
    return out


def test_every_module_is_in_a_layer():
    for name in MODULES:
        layer_of(name)


def test_no_import_runs_back_up():
    upward = [
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)}) at line {line}"
        for src, targets in sorted(edges().items())
        for dst, line in targets.items()
        if src != "xgrad" and layer_of(dst) > layer_of(src)
    ]
    assert not upward, "imports running back up:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _resolve(target: str) -> str:
    """A module of xgrad for an imported name (``xgrad.layers.Dense`` -> ``xgrad.layers``)."""
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def test_no_circle():
    graph = {
        src: {_resolve(dst) for dst in targets} - {src}
        for src, targets in edges().items()
        if src != "xgrad"
    }
    # a package's __init__ re-exporting its own modules is not a circle with them
    for src in graph:
        graph[src] = {dst for dst in graph[src] if not src.startswith(dst + ".")}
    cycles = _cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("module", "layer"), [("xgrad.frameworks.torch.reader", 2), ("xgrad.cli", 7), ("xgrad", 8)]
)
def test_layer_of_picks_the_longest_prefix(module, layer):
    assert layer_of(module) == layer
