"""The package's layers call only downward, and its imports never go round in a circle.

Walks every module of ``facesal_fast`` with ``ast``. Each import of another part of the
package must go to the same layer or a lower one (table below, the picture in
docs/architecture.md), and the imports must not form a circle. Both rules hold for imports
inside functions too: moving an import into a function hides a circle from the interpreter,
not from a reader. ``if TYPE_CHECKING:`` blocks are type-only and skipped.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

PACKAGE = "facesal_fast"
#: The source tree beside this test, not the installed copy (an edit must fail here before a reinstall).
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE

#: The layers, bottom first: the first part of each module's name below ``facesal_fast``
#: ("" is the package itself: its version; its other names load lazily). The picture's middle
#: layer is three here: align, then scoring, then the models and the input adapters.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("native", frozenset({"", "_C"})),
    ("ops", frozenset({"ops", "core"})),
    ("align", frozenset({"align"})),
    ("scoring", frozenset({"scoring"})),
    ("models", frozenset({"models"})),
    (
        "saliency, methods, metrics, speed, interop",
        frozenset({"saliency", "methods", "metrics", "speed", "interop"}),
    ),
    (
        "audit, evaluation, distributed",
        frozenset({"audit", "evaluation", "report", "benchmark"}),
    ),
    ("CLI", frozenset({"cli", "cli_options", "__main__"})),
)


class Import(NamedTuple):
    """One import of a package module."""

    importer: str
    target: str
    line: int


def module_name(path: Path) -> str:
    """``facesal_fast/saliency/cis.py`` -> ``facesal_fast.saliency.cis`` (a package: its name)."""
    parts = [PACKAGE, *path.relative_to(SOURCE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}
KNOWN = set(MODULES) | {f"{PACKAGE}._C"}  # the compiled extension has no .py


def layer(module: str) -> int:
    """Index in :data:`LAYERS` of ``module``'s part; -1 for a part missing from the table."""
    part = module.split(".")[1] if "." in module else ""
    return next((i for i, (_, parts) in enumerate(LAYERS) if part in parts), -1)


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> Iterator[str]:
    """Package modules that ``node`` (in module ``importer``) imports."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        return
    base = node.module or ""
    if node.level:
        anchor = importer.split(".")[: None if is_package else -1]
        base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] == PACKAGE:
        yield from (f"{base}.{a.name}" if f"{base}.{a.name}" in KNOWN else base for a in node.names)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def imports(importer: str, source: str, is_package: bool) -> list[Import]:
    """Every package import in module ``importer``'s ``source``, at module level or inside a
    function, outside ``if TYPE_CHECKING:`` blocks; one per imported module and line."""
    found: dict[Import, None] = {}

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(dict.fromkeys(Import(importer, t, node.lineno) for t in _targets(node, importer, is_package)))
        for field, child in ast.iter_fields(node):
            if _is_type_checking(node) and field == "body":
                continue
            for item in child if isinstance(child, list) else [child]:
                if isinstance(item, ast.AST):
                    visit(item)

    visit(ast.parse(source))
    return list(found)


ALL_IMPORTS = [
    imp
    for module, path in MODULES.items()
    for imp in imports(module, path.read_text(encoding="utf-8"), path.name == "__init__.py")
]


def _loaded_with(imp: Import) -> list[str]:
    """Modules that importing ``imp.target`` runs: it and its parent packages not already
    being imported on the way to ``imp.importer``."""
    parts = imp.target.split(".")
    parents = {".".join(parts[:i]) for i in range(2, len(parts))}
    own = {".".join(imp.importer.split(".")[:i]) for i in range(1, imp.importer.count(".") + 1)}
    return [imp.target, *sorted(parents - own)]


def module_graph() -> dict[str, set[str]]:
    """Module -> package modules its imports run (the compiled ``_C`` left out)."""
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for imp in ALL_IMPORTS:
        graph[imp.importer].update(m for m in _loaded_with(imp) if m in MODULES and m != imp.importer)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle ``[a, b, ..., a]`` for each back edge a depth-first walk of ``graph`` meets."""
    cycles: list[list[str]] = []
    state: dict[str, str] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return cycles


def _where(imp: Import) -> str:
    return f"{MODULES[imp.importer].relative_to(SOURCE.parent)}:{imp.line}"


def test_every_module_has_a_layer_and_every_layer_entry_a_module():
    missing = sorted(m for m in MODULES if layer(m) < 0)
    assert not missing, f"modules in no layer of the table (add their part to LAYERS): {missing}"
    parts = {m.split(".")[1] if "." in m else "" for m in KNOWN}
    stale = sorted(part for _, names in LAYERS for part in names - parts)
    assert not stale, f"parts in LAYERS that are no module of the package (remove them): {stale}"


def test_imports_go_only_downward():
    upward = [
        f"{_where(i)} {i.importer} ({LAYERS[layer(i.importer)][0]}) imports {i.target} ({LAYERS[layer(i.target)][0]})"
        for i in ALL_IMPORTS
        if layer(i.target) > layer(i.importer) >= 0
    ]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_no_circular_imports():
    cycles = find_cycles(module_graph())
    assert not cycles, "circular imports (at module level or inside functions):\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )


def test_the_walk_sees_every_kind_of_import():
    """The checks above are only as good as the walk: relative, ``from package import module``
    and function-level imports are seen, type-only and outside ones are not."""
    source = (
        "from typing import TYPE_CHECKING\nimport numpy\nfrom . import cis\nfrom .. import ops\n"
        "from facesal_fast.align import load_image, to_image\n"
        "if TYPE_CHECKING:\n    from facesal_fast.cli import main\n"
        "def f():\n    from facesal_fast.audit.runner import Audit\n"
    )
    found = imports("facesal_fast.saliency.example", source, is_package=False)
    assert [i.target for i in found] == [
        "facesal_fast.saliency.cis",
        "facesal_fast.ops",
        "facesal_fast.align",
        "facesal_fast.audit.runner",
    ]
    assert layer("facesal_fast.audit.runner") > layer("facesal_fast.saliency.cis") > layer("facesal_fast.ops")
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
