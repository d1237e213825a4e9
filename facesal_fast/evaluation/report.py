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
import secrets
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from facesal_fast.report.html import region_label
from facesal_fast.report.safe_text import csv_cell, markdown_cell

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ["MARKER", "Section", "Table", "check_evaluate_folder", "markdown", "write_evaluation"]

_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "th{background:#eee}img{max-width:100%;margin:.3em}code{background:#f4f4f4}.warn{color:#a60}"
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
    it adds to ``summary.json``, arrays saved as ``name.npy`` and warnings shown on the page
    under the title (e.g. a value from too few images)."""

    title: str
    tables: list[Table]
    figures: dict[str, bytes] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _cell(value: Any, digits: int) -> str:
    """A number as the tables print it: ``digits`` decimals, a whole number without (``50``, not ``50.000``)."""
    if isinstance(value, float):
        if not np.isfinite(value):
            return "nan"
        return f"{value:.0f}" if value == round(value) else f"{value:.{digits}f}"
    return str(value)


def _html_cell(column: str, value: Any, digits: int) -> str:
    """A table cell on the page: a region named as the report names it (``subject's left eye``)."""
    return region_label(value) if column == "region" and isinstance(value, str) else _cell(value, digits)


def markdown(table: Table) -> str:
    """The table in Markdown (header, separator, one line per row); every cell escaped
    (:func:`~facesal_fast.report.safe_text.markdown_cell`), so a file name cannot break the table."""
    cols = list(table.rows[0])
    lines = ["| " + " | ".join(map(markdown_cell, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(markdown_cell(_cell(r[c], table.digits)) for c in cols) + " |" for r in table.rows]
    return "\n".join(lines) + "\n"


def _csv(table: Table) -> str:
    """The table as CSV, every text cell neutralised (:func:`~facesal_fast.report.safe_text.csv_cell`:
    no spreadsheet runs a file name such as ``=HYPERLINK(...).jpg`` as a formula)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    cols = list(table.rows[0])
    writer.writerow([csv_cell(c) for c in cols])
    writer.writerows([csv_cell(r[c]) for c in cols] for r in table.rows)
    return buffer.getvalue()


def _html_table(table: Table) -> str:
    cols = list(table.rows[0])
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_html_cell(c, r[c], table.digits))}</td>" for c in cols) + "</tr>"
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
        parts += [f"<p class='warn'>{html.escape(w)}</p>" for w in section.warnings]
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


#: Written into every ``evaluate/`` folder this tool makes, listing the files it wrote: the
#: only folder a later evaluation replaces, and only while it holds nothing else.
MARKER = ".facesal-evaluate"


def check_evaluate_folder(run: Path) -> None:
    """``ValueError`` unless ``run/evaluate`` is missing or an evaluation this tool wrote that
    holds nothing but its own files: a user's folder of that name is never replaced."""
    final = run / "evaluate"
    if not (final.exists() or final.is_symlink()):
        return
    marker = final / MARKER
    if final.is_symlink() or not final.is_dir() or not marker.is_file():
        raise ValueError(
            f"{final} exists and was not written by facesal evaluate; it is left as it is: move it away or give "
            "another --out folder"
        )
    ours = set(marker.read_text(encoding="utf-8", errors="replace").splitlines()) | {MARKER}
    others = sorted(p.name for p in final.iterdir() if p.name not in ours)
    if others:
        raise ValueError(
            f"{final} holds files facesal evaluate did not write ({', '.join(others[:3])}); it is left as it is: "
            "move them away or give another --out folder"
        )


def write_evaluation(
    run: Path, title: str, intro: Sequence[str], sections: Sequence[Section], summary: dict[str, Any]
) -> Path:
    """Write ``run/evaluate/`` (replacing an older evaluation whole, never a folder it did
    not write: see :func:`check_evaluate_folder`); returns that folder.

    Args:
        title, intro: the page's heading and its opening paragraphs (HTML, escaped by the caller).
        sections: the stages' results, in page order.
        summary: ``summary.json``'s content (the sections' ``summary`` included);
            ``summary["failed"]`` (``[{"image", "error"}]``) is listed on the page.
    """
    check_evaluate_folder(run)
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / f".evaluate-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()  # the user's umask applies (mkdtemp would make it 0700)
    try:
        _write_files(tmp, sections, summary, _page(title, intro, sections, summary.get("failed", [])))
        (tmp / MARKER).write_text("\n".join(sorted(p.name for p in tmp.iterdir())) + "\n", encoding="utf-8")
        final, old = run / "evaluate", run / f".evaluate-old-{os.getpid()}"
        check_evaluate_folder(run)  # again: the evaluation took minutes
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
