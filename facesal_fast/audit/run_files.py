"""Reading a run folder's files as untrusted input.

A run folder may come from elsewhere (a colleague's audit, a download), so everything read
from it is checked before use, with limits: ``run.json`` (size, nesting), ``index.sqlite``
(``images`` must be a table, not a view that never ends; a cap on the work of a read-only
query; a hot journal left by a killed audit read from a rolled-back copy, the run untouched)
and each ``results/*.npz`` (declared sizes bounded and equal to what the ``.npy`` headers
claim, so neither a zip bomb nor a huge header is expanded; the canonical map a finite real
2-D array). Every failure is a ``ValueError`` naming the file and what to do.

A folder that is not a run is never made into one (:func:`check_run_folder`).
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MAX_META_BYTES",
    "MAX_RESULT_BYTES",
    "check_images_table",
    "check_result_arrays",
    "check_result_file",
    "check_row",
    "check_run_folder",
    "open_index_readonly",
    "read_meta_text",
    "sqlite_os_error",
]

#: Largest ``run.json`` read (a real one is a few kB).
MAX_META_BYTES = 4 << 20
#: Largest total uncompressed size of one result file (a real one: a few MB).
MAX_RESULT_BYTES = 1 << 30
#: Largest ``.npy`` header in a result file (numpy writes at most a few hundred bytes).
_MAX_HEADER_BYTES = 10_000
#: SQLite virtual-machine steps allowed on a read-only index, in all (~ seconds of work;
#: reading a run of a million images takes a small fraction).
_MAX_READ_STEPS = 2_000_000_000
_STEPS_PER_CALL = 10_000
#: Entries of a folder (no ``run.json``) that facesal itself writes there: such a folder may
#: become a run; any other entry means it is the user's folder.
_OWN_ENTRIES = frozenset({".lock", "evaluate", "report.html"})


def check_run_folder(path: Path) -> None:
    """``ValueError`` when ``path`` is an existing folder that is not a run and holds the
    user's files: nothing is written into it (no ``run.json``, lock or index)."""
    if not path.is_dir() or (path / "run.json").exists():
        return
    try:
        entries = sorted(p.name for p in path.iterdir() if p.name not in _OWN_ENTRIES)
    except OSError:
        return  # unreadable: the writability check names it
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ValueError(
            f"{path} is an existing folder that is not a facesal run (it holds {shown}); nothing was written "
            "into it: give --out a new or empty folder"
        )


def read_meta_text(meta_path: Path) -> Any:
    """The parsed ``run.json``, refusing an oversized or absurdly nested one; ``ValueError``
    naming the file."""

    def corrupt(why: str) -> ValueError:
        return ValueError(f"{meta_path}: corrupt run file ({why}); start a new run with another --out folder")

    if meta_path.stat().st_size > MAX_META_BYTES:
        raise corrupt(f"{meta_path.stat().st_size} bytes, more than the {MAX_META_BYTES} a run file may have")
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise corrupt(str(err)) from err
    except RecursionError as err:
        raise corrupt("nested too deeply") from err


def sqlite_os_error(err: sqlite3.Error, db_path: Path) -> OSError | None:
    """The ``OSError`` (``ENOSPC``, ``EIO``) an SQLite error on the index stands for, naming
    the file; ``None`` for any other error."""
    import errno  # noqa: PLC0415 - only on this error path

    text = str(err).lower()
    if "disk is full" in text or "database or disk is full" in text:
        return OSError(errno.ENOSPC, "No space left on device", str(db_path))
    if "disk i/o error" in text:
        return OSError(errno.EIO, "Input/output error (disk I/O error)", str(db_path))
    return None


def check_images_table(db: sqlite3.Connection) -> None:
    """``images`` must be an ordinary table (a view could recurse for ever);
    ``sqlite3.DatabaseError`` otherwise."""
    row = db.execute("SELECT type, sql FROM sqlite_master WHERE name = 'images'").fetchone()
    if row is not None and (row[0] != "table" or str(row[1] or "").upper().startswith("CREATE VIRTUAL")):
        raise sqlite3.DatabaseError(f"'images' is a {row[0]}, not an ordinary table")


def _capped(db: sqlite3.Connection) -> sqlite3.Connection:
    """``db`` with a cap on the work its queries may do in all (a crafted index cannot stall)."""
    steps = [0]

    def progress() -> int:
        steps[0] += _STEPS_PER_CALL
        return int(steps[0] > _MAX_READ_STEPS)

    db.set_progress_handler(progress, _STEPS_PER_CALL)
    check_images_table(db)
    return db


def open_index_readonly(db_path: Path) -> sqlite3.Connection:
    """The run's index opened read-only (``mode=ro``). When a killed audit left a hot
    journal (``index.sqlite-journal``), which a read-only connection cannot roll back, the
    index is read from a copy rolled back in a temporary folder, leaving the run as it is
    (re-running the audit rolls the run itself back)."""
    journal = db_path.with_name(db_path.name + "-journal")
    if not (journal.is_file() and journal.stat().st_size > 0):
        return _capped(sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True))
    snapshot = sqlite3.connect(":memory:")
    with tempfile.TemporaryDirectory(prefix="facesal-index-") as tmp:
        copy = Path(tmp) / db_path.name
        shutil.copyfile(db_path, copy)
        shutil.copyfile(journal, copy.with_name(journal.name))
        rolled_back = sqlite3.connect(copy)
        try:
            _capped(rolled_back).backup(snapshot)
        finally:
            rolled_back.close()
    return _capped(snapshot)


def _npy_sizes(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[int, int]:
    """(header bytes + data bytes the ``.npy`` header claims, its declared uncompressed size)."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise ValueError(f"member {info.filename}: .npy format version {version} is not one facesal writes")
        shape, _, dtype = read_header[version](member, max_header_size=_MAX_HEADER_BYTES)
        header = member.tell()
    return header + math.prod(shape) * dtype.itemsize, info.file_size


def check_result_file(path: Path) -> None:
    """Refuse a result file before numpy expands it: its members' declared sizes must add up
    to at most :data:`MAX_RESULT_BYTES` and each must equal what its ``.npy`` header claims
    (a zip bomb or a header claiming a huge array is refused without allocating it).
    Raises ``ValueError`` / ``zipfile.BadZipFile`` / ``OSError`` (the caller names the file)."""
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        total = sum(info.file_size for info in infos)
        if total > MAX_RESULT_BYTES:
            raise ValueError(f"its members would expand to {total} bytes, more than the {MAX_RESULT_BYTES} allowed")
        for info in infos:
            claimed, declared = _npy_sizes(archive, info)
            if claimed != declared:
                raise ValueError(f"member {info.filename}: its header claims {claimed} bytes, the archive {declared}")


def check_result_arrays(arrays: dict[str, np.ndarray]) -> None:
    """A result's arrays as a report reads them: ``canonical`` a finite real ``H x W`` map;
    ``face_box`` (when present) four finite numbers. ``ValueError`` saying what is wrong."""
    canonical = arrays.get("canonical")
    if canonical is None:
        raise ValueError(f"no 'canonical' map (it holds {', '.join(sorted(arrays)) or 'nothing'})")
    if canonical.ndim != 2 or canonical.dtype.kind not in "fiu" or min(canonical.shape) < 1:
        raise ValueError(f"the canonical map is {canonical.dtype} of shape {canonical.shape}, not a real H x W map")
    if not np.isfinite(canonical).all():
        raise ValueError("the canonical map contains NaN or Inf")
    box = arrays.get("face_box")
    if box is not None and (box.shape != (4,) or box.dtype.kind not in "fiu" or not np.isfinite(box).all()):
        raise ValueError(f"the face box is {box.dtype} of shape {box.shape}, not four finite numbers")


def check_row(row: Any, db_path: Path) -> Any:
    """An index row (:class:`~facesal_fast.audit.store.StoredImage`) as the readers use it:
    text key and source, and a done image's base score a finite number; ``ValueError``
    naming the index otherwise."""
    problem = None
    if not isinstance(row.key, str) or not isinstance(row.source, str):
        problem = f"key {row.key!r} / source {row.source!r} not text"
    elif row.status == "done" and (
        isinstance(row.base_score, bool)
        or not isinstance(row.base_score, (int, float))
        or not math.isfinite(row.base_score)
    ):
        problem = f"image {row.key!r} is done but its base score is {row.base_score!r}"
    if problem:
        raise ValueError(f"{db_path}: corrupt run index ({problem}); start a new run with another --out folder")
    return row
