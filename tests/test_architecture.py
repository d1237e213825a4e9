"""The package's layers call only downward, in order inside a layer too, and its imports never
go round in a circle; docs/architecture.md draws the same layers.

Walks every module of ``facesal_fast`` in the source tree with ``ast``. Each reference to
another part of the package must go to a lower layer, or in its own layer to its own part or a
part before it (table below, the picture in docs/architecture.md). A reference is an import
(at module level or inside a function: moving an import into a function hides a circle from
the interpreter, not from a reader), ``importlib.import_module`` / ``__import__`` with a
literal name, an attribute path such as ``fs.audit.runner`` after ``import facesal_fast as
fs``, and a public name of the facade (``from facesal_fast import cis`` or ``fs.cis`` reaches
``facesal_fast.saliency``, read from the facade's ``_LAZY`` table). ``if TYPE_CHECKING:``
blocks are type-only and skipped.

The facade ``facesal_fast/__init__.py`` is the one exception: it is the public top, so its
lazy names (``_LAZY``) and the old module paths it forwards (``MOVED_MODULES``) may reference
every layer; its own module body sits in the bottom layer (every module loads it), so it
imports nothing of the package at its top.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

PACKAGE = "facesal_fast"
ROOT = Path(__file__).resolve().parents[1]
#: The source tree beside this test, not the installed copy (an edit must fail here before a reinstall).
SOURCE = ROOT / PACKAGE
DOC = ROOT / "docs" / "architecture.md"

#: The layers, bottom first, each with its parts in order: the first part of each module's name
#: below ``facesal_fast`` ("" is the package itself: the facade). A part may use its own part,
#: the parts before it in its layer and every part of a lower layer. The layers are the rows of
#: the picture in docs/architecture.md (top row last), the orders its list under the picture.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("native", ("", "_C")),
    ("checked ops", ("core", "ops")),
    ("faces and models", ("align", "scoring", "models")),
    ("maps and measures", ("metrics", "speed", "saliency", "methods", "interop")),
    ("runs and reports", ("report", "audit", "evaluation", "benchmark")),
    ("command line", ("cli_options", "cli", "__main__")),
)


class Import(NamedTuple):
    """One reference of a package module to another: ``kind`` is ``import``, ``dynamic``
    (``importlib.import_module`` / ``__import__``), ``attribute`` (``fs.x.y``) or ``facade``
    (a lazy public name of the facade)."""

    importer: str
    target: str
    line: int
    kind: str = "import"


def module_name(path: Path) -> str:
    """``facesal_fast/saliency/cis.py`` -> ``facesal_fast.saliency.cis`` (a package: its name)."""
    parts = [PACKAGE, *path.relative_to(SOURCE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}
KNOWN = set(MODULES) | {f"{PACKAGE}._C"}  # the compiled extension has no .py


def _facade_table(name: str) -> dict[str, str]:
    """The facade's literal table ``name`` (``_LAZY``: public name -> module; ``MOVED_MODULES``)."""
    for node in ast.parse(MODULES[PACKAGE].read_text(encoding="utf-8")).body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if value is not None and any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(value)
    raise AssertionError(f"facesal_fast/__init__.py has no literal {name} table")


LAZY = _facade_table("_LAZY")
MOVED = _facade_table("MOVED_MODULES")
MOVED_NAMES = _facade_table("MOVED_NAMES")


def part_of(module: str) -> str:
    """``facesal_fast.saliency.cis`` -> ``saliency`` (the package itself: "")."""
    return module.split(".")[1] if "." in module else ""


def layer(module: str) -> int:
    """Index in :data:`LAYERS` of ``module``'s part; -1 for a part missing from the table."""
    return next((i for i, (_, parts) in enumerate(LAYERS) if part_of(module) in parts), -1)


def rank(module: str) -> int:
    """Place of ``module``'s part inside its layer (0 first)."""
    return LAYERS[layer(module)][1].index(part_of(module))


def resolve(dotted: str) -> str:
    """The package module that the dotted path ``facesal_fast.a.b.c`` reaches: the facade's
    lazy module for a public name (``facesal_fast.cis`` -> ``facesal_fast.saliency``), else its
    longest prefix that is a module (the package itself for ``facesal_fast.__version__``)."""
    names = dotted.split(".")
    if len(names) > 1 and f"{PACKAGE}.{names[1]}" not in KNOWN and names[1] in LAZY:
        return LAZY[names[1]]
    return next(".".join(names[:n]) for n in range(len(names), 0, -1) if ".".join(names[:n]) in KNOWN or n == 1)


def _relative(name: str, level: int, importer: str, is_package: bool) -> str:
    """Absolute name of ``from <level dots><name> import ...`` in module ``importer``."""
    anchor = importer.split(".")[: None if is_package else -1]
    return ".".join(anchor[: len(anchor) - level + 1] + ([name] if name else []))


def _from_base(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module of the ``from ... import`` ``node`` in module ``importer``."""
    return _relative(node.module or "", node.level, importer, is_package) if node.level else node.module or ""


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> Iterator[tuple[str, str]]:
    """``(module, kind)`` for each package module that ``node`` (in module ``importer``) imports."""
    if isinstance(node, ast.Import):
        yield from ((alias.name, "import") for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        return
    base = _from_base(node, importer, is_package)
    if base.split(".")[0] != PACKAGE:
        return
    for alias in node.names:
        if f"{base}.{alias.name}" in KNOWN:
            yield f"{base}.{alias.name}", "import"
        elif base == PACKAGE and alias.name in LAZY:
            yield LAZY[alias.name], "facade"
        else:
            yield base, "import"


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _children(node: ast.AST) -> Iterator[ast.AST]:
    """The child nodes of ``node`` that run: the body of ``if TYPE_CHECKING:`` is left out."""
    for field, child in ast.iter_fields(node):
        if not (field == "body" and _is_type_checking(node)):
            yield from (item for item in (child if isinstance(child, list) else [child]) if isinstance(item, ast.AST))


def _package_aliases(node: ast.AST, importer: str, is_package: bool) -> dict[str, str]:
    """Local name -> package module it is bound to by a run-time import anywhere below ``node``
    (``import facesal_fast as fs``: fs; ``import facesal_fast.x``: facesal_fast; ``from
    facesal_fast import ops``: ops)."""
    aliases: dict[str, str] = {}
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.name.split(".")[0] == PACKAGE:
                aliases[a.asname or PACKAGE] = a.name if a.asname else PACKAGE
    elif isinstance(node, ast.ImportFrom):
        base = _from_base(node, importer, is_package)
        if base.split(".")[0] == PACKAGE:
            aliases.update({a.asname or a.name: f"{base}.{a.name}" for a in node.names if a.name != "*"})
    for child in _children(node):
        aliases.update(_package_aliases(child, importer, is_package))
    return aliases


def _dotted(node: ast.expr) -> list[str]:
    """``fs.audit.runner.Audit`` -> ``["fs", "audit", "runner", "Audit"]``; [] for other expressions."""
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.insert(0, node.attr)
        node = node.value
    return [node.id, *names] if isinstance(node, ast.Name) else []


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _dynamic_target(call: ast.Call, importer: str, is_package: bool) -> str | None:
    """The package module named by ``importlib.import_module("...")`` / ``__import__("...")``
    with a literal name (relative names against a literal package or ``__package__``)."""
    func = _dotted(call.func)
    name = _literal(call.args[0]) if call.args else None
    if not func or func[-1] not in ("import_module", "__import__") or name is None:
        return None
    if name.startswith("."):
        given = (
            call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "package"), None)
        )
        anchor = importer if is_package else importer.rpartition(".")[0]
        package = _literal(given) or (anchor if given is not None and _dotted(given) == ["__package__"] else None)
        level = len(name) - len(name.lstrip("."))
        name = _relative(name[level:], level, f"{package}.x", False) if package else ""
    return resolve(name) if name.split(".")[0] == PACKAGE else None


def imports(importer: str, source: str, is_package: bool) -> list[Import]:
    """Every package reference in module ``importer``'s ``source``, at module level or inside
    a function, outside ``if TYPE_CHECKING:`` blocks; one per module, line and kind."""
    found: dict[Import, None] = {}
    tree = ast.parse(source)
    aliases = _package_aliases(tree, importer, is_package)

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            targets = _targets(node, importer, is_package)
            found.update(dict.fromkeys(Import(importer, target, node.lineno, kind) for target, kind in targets))
            return
        if isinstance(node, ast.Call) and (target := _dynamic_target(node, importer, is_package)):
            found[Import(importer, target, node.lineno, "dynamic")] = None
        names = _dotted(node) if isinstance(node, ast.Attribute) else []
        if names and names[0] in aliases:
            found[Import(importer, resolve(".".join([aliases[names[0]], *names[1:]])), node.lineno, "attribute")] = None
            return  # the whole path is resolved: not its prefixes again
        for child in _children(node):
            visit(child)

    visit(tree)
    return [i for i in found if i.target != importer]


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


def module_graph(found: Sequence[Import] = ALL_IMPORTS) -> dict[str, set[str]]:
    """Module -> package modules its references run (the compiled ``_C`` left out)."""
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for imp in found:
        graph.setdefault(imp.importer, set()).update(m for m in _loaded_with(imp) if m in MODULES and m != imp.importer)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle ``[a, b, ..., a]`` for each back edge a depth-first walk of ``graph`` meets."""
    cycles: list[list[str]] = []
    state: dict[str, str] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
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
    path = MODULES.get(imp.importer)
    return f"{path.relative_to(ROOT) if path else imp.importer}:{imp.line}"


def _checked(found: Sequence[Import]) -> Iterator[Import]:
    """``found`` less the facade's own references (the public top: it may name every layer)
    and references to parts missing from the table (their own test fails)."""
    return (i for i in found if i.importer != PACKAGE and layer(i.importer) >= 0 and layer(i.target) >= 0)


def upward(found: Sequence[Import]) -> list[str]:
    """One line per reference of ``found`` to a higher layer."""
    return [
        f"{_where(i)} {i.importer} ({LAYERS[layer(i.importer)][0]}) {i.kind}s {i.target} ({LAYERS[layer(i.target)][0]})"
        for i in _checked(found)
        if layer(i.target) > layer(i.importer)
    ]


def out_of_order(found: Sequence[Import]) -> list[str]:
    """One line per reference of ``found`` to a later part of the importer's own layer."""
    return [
        f"{_where(i)} {i.importer} {i.kind}s {i.target}: {part_of(i.target)} comes after "
        f"{part_of(i.importer)} in layer '{LAYERS[layer(i.importer)][0]}' {LAYERS[layer(i.importer)][1]}"
        for i in _checked(found)
        if layer(i.target) == layer(i.importer) and rank(i.target) > rank(i.importer)
    ]


# -- the picture in docs/architecture.md ------------------------------------------------------

_RULE = re.compile(r"^\s*─+\s*$")
_FOLDER = re.compile(r"(?<![\w/.-])(\w+)/(?=\s|$)")  # "audit/" (not "numpy/torch", not "(csrc/)")
_ROOT_MODULE = re.compile(r"(?<![\w/.-])(\w+)\.py\b")  # "cli.py"
_COMPILED = re.compile(r"(?<![\w/.-])_C\b")
_ORDER = re.compile(r"^- [^:`]+: (`\w+`(?: < `\w+`)+)\s*$", re.MULTILINE)


def picture_layers(markdown: str) -> list[set[str]]:
    """The parts of each row of the layer picture (the first code block under ``## Layers``),
    bottom row first: folders ``name/`` (their module lists in parentheses skipped), root
    modules ``name.py``, the compiled ``_C``."""
    section = markdown.split("\n## Layers", 1)[-1]
    block = section.split("```", 2)[1] if section.count("```") >= 2 else ""
    rows: list[list[str]] = [[]]
    for line in block.splitlines()[1:]:
        if _RULE.match(line):
            rows.append([])
        else:
            rows[-1].append(line)
    layers = []
    for row in rows:
        text = re.sub(r"(\w+/)\s*\([^)]*\)", r"\1", " ".join(row))
        layers.append(
            set(_FOLDER.findall(text)) | set(_ROOT_MODULE.findall(text)) | ({"_C"} if _COMPILED.search(text) else set())
        )
    return [parts for parts in reversed(layers) if parts]


def picture_orders(markdown: str) -> set[tuple[str, ...]]:
    """The orders inside a layer listed under the picture: lines ``- name: `a` < `b` < `c```."""
    return {tuple(re.findall(r"`(\w+)`", m)) for m in _ORDER.findall(markdown.split("\n## Layers", 1)[-1])}


def picture_mismatches(markdown: str, layers: Sequence[tuple[str, tuple[str, ...]]] = LAYERS) -> list[str]:
    """How the picture differs from ``layers`` (the facade "" is the package root, not a row part)."""
    drawn = picture_layers(markdown)
    table = [set(parts) - {""} for _, parts in layers]
    problems = [f"the picture has {len(drawn)} rows, the test's table {len(table)} layers"] * (len(drawn) != len(table))
    for i, (name, _parts) in enumerate(layers):
        shown = drawn[i] if i < len(drawn) else set()
        problems += [
            f"layer '{name}': {p} is in the table, not in row {i + 1} (bottom first)" for p in sorted(table[i] - shown)
        ]
        problems += [
            f"row {i + 1} (bottom first): {p} is drawn, not in layer '{name}'" for p in sorted(shown - table[i])
        ]
    orders = {tuple(p for p in parts if p) for _, parts in layers if len(set(parts) - {""}) > 1}
    problems += [
        f"order {' < '.join(o)} is in the table, not listed under the picture"
        for o in sorted(orders - picture_orders(markdown))
    ]
    problems += [
        f"order {' < '.join(o)} is listed under the picture, not in the table"
        for o in sorted(picture_orders(markdown) - orders)
    ]
    return problems


# -- the checks -------------------------------------------------------------------------------


def test_every_module_has_a_layer_and_every_layer_entry_a_module():
    missing = sorted(m for m in MODULES if layer(m) < 0)
    assert not missing, f"modules in no layer of the table (add their part to LAYERS): {missing}"
    parts = {part_of(m) for m in KNOWN}
    stale = sorted(part for _, names in LAYERS for part in set(names) - parts)
    assert not stale, f"parts in LAYERS that are no module of the package (remove them): {stale}"
    every = [part for _, names in LAYERS for part in names]
    assert len(every) == len(set(every)), f"a part in two places of LAYERS: {every}"


def test_imports_go_only_downward():
    found = upward(ALL_IMPORTS)
    assert not found, "references to a higher layer:\n" + "\n".join(found)


def test_inside_a_layer_a_part_uses_only_the_parts_before_it():
    found = out_of_order(ALL_IMPORTS)
    assert not found, "references to a later part of the same layer (see the order in LAYERS):\n" + "\n".join(found)


def test_no_circular_imports():
    cycles = find_cycles(module_graph())
    assert not cycles, "circular imports (at module level or inside functions):\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )


def test_the_facade_names_only_modules_of_the_tree():
    """The facade's lazy names and forwarded old paths go to modules that exist (its one
    licence to reference every layer is these two tables)."""
    missing = sorted({*LAZY.values(), *MOVED.values(), *MOVED_NAMES.values()} - set(MODULES))
    assert not missing, (
        f"facesal_fast/__init__.py (_LAZY, MOVED_MODULES, MOVED_NAMES) names modules that do not exist: {missing}"
    )
    old_modules = sorted({old.rsplit(".", 1)[0] for old in MOVED_NAMES} - set(MODULES))
    assert not old_modules, f"MOVED_NAMES forwards names of modules that do not exist: {old_modules}"
    facade = [i for i in ALL_IMPORTS if i.importer == PACKAGE]
    assert not facade, f"the facade imports package modules at its top (they must load lazily): {facade}"


def test_the_architecture_page_draws_the_same_layers():
    problems = picture_mismatches(DOC.read_text(encoding="utf-8"))
    assert not problems, "docs/architecture.md's layer picture and LAYERS differ:\n" + "\n".join(problems)


# -- the checks check themselves: each must fail on a crafted violation ------------------------


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
    assert len(upward(found)) == 1 and "facesal_fast.audit.runner" in upward(found)[0]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_order_inside_a_layer_is_checked():
    """A part that uses a later part of its own layer fails; the earlier parts and its own pass."""
    source = (
        "from facesal_fast.methods.registry import METHODS\nfrom facesal_fast.speed.auto import x\n"
        "from facesal_fast.saliency.cms import y\ndef f():\n    from facesal_fast.interop.captum import z\n"
    )
    found = imports("facesal_fast.saliency.example", source, is_package=False)
    assert [(i.target, i.line) for i in found] == [
        ("facesal_fast.methods.registry", 1),
        ("facesal_fast.speed.auto", 2),
        ("facesal_fast.saliency.cms", 3),
        ("facesal_fast.interop.captum", 5),
    ]
    later = out_of_order(found)
    assert len(later) == 2 and "methods comes after saliency" in later[0] and "interop comes after" in later[1]
    assert not upward(found)  # the same layer: only the order check sees these
    for low, high in (("facesal_fast.report", "facesal_fast.audit"), ("facesal_fast.align", "facesal_fast.models")):
        assert out_of_order([Import(low, high, 1)]) and not out_of_order([Import(high, low, 1)])


def test_importlib_and_attribute_paths_are_seen():
    """``importlib.import_module`` / ``__import__`` with literal names, ``fs.x.y`` attribute
    paths and the facade's lazy names are references like imports; the facade itself may use
    them (it is the public top), any other module may not."""
    source = (
        "import importlib\nfrom importlib import import_module\nimport facesal_fast as fs\nimport facesal_fast.ops\n"
        "a = importlib.import_module('facesal_fast.audit.runner')\n"
        "b = __import__('facesal_fast.report')\n"
        "c = import_module('.evaluation', 'facesal_fast')\n"
        "d = import_module('..interop', __package__)\n"
        "e = fs.methods.registry.METHODS\n"
        "f = fs.cis\n"
        "g = facesal_fast.benchmark.command\n"
        "h = importlib.import_module(name)\n"
        "i = fs.__version__\n"
        "from facesal_fast import Audit\n"
    )
    found = imports("facesal_fast.scoring.example", source, is_package=False)
    assert [(i.target, i.line, i.kind) for i in found] == [
        (PACKAGE, 3, "import"),
        ("facesal_fast.ops", 4, "import"),
        (resolve("facesal_fast.audit.runner"), 5, "dynamic"),
        ("facesal_fast.report", 6, "dynamic"),
        ("facesal_fast.evaluation", 7, "dynamic"),
        ("facesal_fast.interop", 8, "dynamic"),
        (resolve("facesal_fast.methods.registry.METHODS"), 9, "attribute"),
        (LAZY["cis"], 10, "attribute"),
        (resolve("facesal_fast.benchmark.command"), 11, "attribute"),
        (PACKAGE, 13, "attribute"),
        (LAZY["Audit"], 14, "facade"),
    ]
    # a module path stops at the deepest module; a public name of the facade is its lazy module
    assert resolve("facesal_fast.ops._native.has_cuda") == "facesal_fast.ops._native"
    assert resolve("facesal_fast.cis") == LAZY["cis"] != "facesal_fast.cis" and resolve("facesal_fast.x") == PACKAGE
    assert len(upward(found)) == 8  # all but the ops import and the version
    assert not upward(imports(PACKAGE, source, is_package=True))  # the facade: the public top


def test_the_picture_check_fails_on_a_drifted_page():
    """A part missing from a row, one drawn in the wrong row, an extra row and a changed order
    are each reported."""
    page = DOC.read_text(encoding="utf-8")
    assert picture_layers(page) == [set(parts) - {""} for _, parts in LAYERS]  # the parse reads the real page
    drifted = (
        page.replace(" report/ ", " ", 1)
        .replace("speed/ (", "evaluation/ speed/ (", 1)
        .replace("`metrics` < `speed`", "`speed` < `metrics`", 1)
    )
    problems = picture_mismatches(drifted)
    assert any("report is in the table, not in row 5" in p for p in problems)
    assert any("evaluation is drawn, not in layer 'maps" in p for p in problems)
    assert any("order metrics < speed < saliency" in p and "not listed" in p for p in problems)
    assert any("order speed < metrics" in p and "not in the table" in p for p in problems)
    extra_row = page.replace("\n _C (csrc/)", "\n plugins/\n ─────\n _C (csrc/)", 1)
    assert any("rows" in p for p in picture_mismatches(extra_row))
