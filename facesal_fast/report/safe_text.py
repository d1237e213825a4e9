"""Untrusted text (file names, messages quoting them) made safe for where it is written:
spreadsheet cells, Markdown tables and terminals.

A photo's name is chosen by whoever named the file, so it may start a spreadsheet formula
(``=HYPERLINK(...)``), break a Markdown table (``a|b.jpg``) or hold terminal control
sequences (``\\x1b]0;title\\x07``, ``\\x1b[2J``). Every writer of such text passes it through
one of these functions first.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

__all__ = ["csv_cell", "markdown_cell", "terminal_text"]

#: The OWASP CSV-injection rule: a cell starting with one of these is read as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Markdown characters that change a table cell's meaning (escaped with a backslash).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#!~&])")


def csv_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula and no terminal obeys: a string
    starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading ``'`` (the
    OWASP rule) and its control characters are escaped (:func:`terminal_text`); numbers and
    other text are kept."""
    if not isinstance(value, str):
        return value
    return ("'" if value.startswith(_FORMULA_START) else "") + terminal_text(value)


def terminal_text(text: str) -> str:
    """``text`` with every control or format character (escape, bell, newline, carriage
    return, bidirectional overrides, ...) written as a visible escape (``\\x1b``,
    ``\\u202e``), so that printing it can neither drive the terminal nor break the line."""
    return "".join(_escape(ch) if unicodedata.category(ch) in ("Cc", "Cf", "Cs") else ch for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def markdown_cell(text: str) -> str:
    """``text`` as one Markdown table cell: control characters escaped (one line), Markdown
    syntax (``|``, ``*``, ``<``, ...) escaped with a backslash."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", terminal_text(text))
