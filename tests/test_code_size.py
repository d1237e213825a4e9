"""Small units: no module of ``facesal_fast/`` over 520 lines, no function or method over 80.

A function's length is the span of its ``def`` (the ``def`` line to its last line, the
docstring included, the decorators not), as ``ast`` gives it; a nested function counts on its
own and inside the function around it. Reads the source tree beside this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "facesal_fast"
MAX_MODULE_LINES = 520
MAX_FUNCTION_LINES = 80


def long_functions(source: str, where: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``where:line name (n lines)`` for each function or method of ``source`` longer than
    ``limit`` lines (``Class.method``, ``outer.<locals>.inner``)."""
    found: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = child.end_lineno - child.lineno + 1
                if lines > limit:
                    found.append(f"{where}:{child.lineno} {prefix}{child.name} ({lines} lines)")
                visit(child, f"{prefix}{child.name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def long_module(source: str, where: str, limit: int = MAX_MODULE_LINES) -> list[str]:
    """``[where (n lines)]`` when ``source`` has more than ``limit`` lines, else []."""
    lines = len(source.splitlines())
    return [f"{where} ({lines} lines)"] if lines > limit else []


def _sources() -> list[tuple[str, str]]:
    return [(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")) for path in sorted(SOURCE.rglob("*.py"))]


def test_no_module_over_520_lines():
    found = [line for where, source in _sources() for line in long_module(source, where)]
    assert not found, f"modules over {MAX_MODULE_LINES} lines (split them):\n" + "\n".join(found)


def test_no_function_over_80_lines():
    found = [line for where, source in _sources() for line in long_functions(source, where)]
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(found)


def test_the_size_checks_flag_a_crafted_offender():
    """Both checks fail on one line too many and pass at the limit, for functions, methods,
    nested and async functions."""
    body, nested_body = "    x = 1\n", "        x = 1\n"
    at_limit = "def f():\n" + body * 79  # lines 1-80: 80 lines
    source = (
        at_limit
        + "@decorator\ndef g():\n"  # the decorator on line 81 is not counted
        + body * 80  # g: lines 82-162, 81 lines
        + "class C:\n    def m(self):\n"
        + nested_body * 80  # C.m: lines 164-244
        + "async def h():\n    def inner():\n"
        + nested_body * 80  # inner: lines 246-326
        + "    return inner\n"  # h: lines 245-327
    )
    assert long_functions(source, "x.py") == [
        "x.py:82 g (81 lines)",
        "x.py:164 C.m (81 lines)",
        "x.py:245 h (83 lines)",
        "x.py:246 h.<locals>.inner (81 lines)",
    ]
    assert long_functions(at_limit, "x.py") == []
    assert long_module("a = 1\n" * 520, "m.py") == []
    assert long_module("a = 1\n" * 521, "m.py") == ["m.py (521 lines)"]
