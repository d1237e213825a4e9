"""The one writer of ``facesal evaluate``'s results: every stage returns a :class:`Section`,
rendered here as CSV and Markdown tables, PNG figures, ``summary.json`` and ``evaluate.html``
(figures as data URIs).

The files are written into a temporary folder and moved into place at the end, so a run
directory never holds a half-written evaluation.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Section", "Table", "markdown", "write_evaluation"]

_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "th{background:#eee}img{max-width:100%;margin:.3em}code{background:#f4f4f4}"
)


@dataclass(frozen=True)
class Table:
    """Rows written to ``name.csv`` and ``name.md`` (floats with ``digits`` decimals in
    Markdown); ``shown``: also on the page under its section."""

    name: str
    rows: list[dict[str, Any]]
    digits: int = 3
    shown: bool = True


@dataclass(frozen=True)
class Section:
    """One stage's results: a title, its tables, its figures (file name -> PNG bytes), what
    it adds to ``summary.json`` and arrays saved as ``name.npy``."""

    title: str
    tables: list[Table]
    figures: dict[str, bytes] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return "nan" if not np.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(table: Table) -> str:
    """The table in Markdown (header, separator, one line per row)."""
    cols = list(table.rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(r[c], table.digits) for c in cols) + " |" for r in table.rows]
    return "\n".join(lines) + "\n"


def _csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(table.rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table.rows)
    return buffer.getvalue()


def _html_table(table: Table) -> str:
    cols = list(table.rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r[c], table.digits))}</td>" for c in cols) + "</tr>"
        for r in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _page(title: str, intro: Sequence[str], sections: Sequence[Section], failed: Sequence[dict[str, str]]) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>facesal evaluate</title><style>{_STYLE}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
        *(f"<p>{p}</p>" for p in intro),
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [_html_table(t) for t in section.tables if t.shown and t.rows]
        for name, data in section.figures.items():
            parts.append(
                f"<img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
            )
    if failed:
        items = "".join(f"<li>{html.escape(f['image'])}: {html.escape(f['error'])}</li>" for f in failed)
        parts.append(f"<h2>Images that failed</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _write_files(folder: Path, sections: Sequence[Section], summary: dict[str, Any], page: str) -> None:
    for section in sections:
        for table in (t for t in section.tables if t.rows):
            (folder / f"{table.name}.csv").write_text(_csv(table))
            (folder / f"{table.name}.md").write_text(markdown(table))
        for name, data in section.figures.items():
            (folder / name).write_bytes(data)
        for name, array in section.arrays.items():
            np.save(folder / f"{name}.npy", array)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    (folder / "evaluate.html").write_text(page)


def write_evaluation(
    run: Path, title: str, intro: Sequence[str], sections: Sequence[Section], summary: dict[str, Any]
) -> Path:
    """Write ``run/evaluate/`` (replacing an older one whole); returns that folder.

    Args:
        title, intro: the page's heading and its opening paragraphs (HTML, escaped by the caller).
        sections: the stages' results, in page order.
        summary: ``summary.json``'s content (the sections' ``summary`` included);
            ``summary["failed"]`` (``[{"image", "error"}]``) is listed on the page.
    """
    run.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".evaluate-", dir=run))
    try:
        _write_files(tmp, sections, summary, _page(title, intro, sections, summary.get("failed", [])))
        final, old = run / "evaluate", run / f".evaluate-old-{os.getpid()}"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
