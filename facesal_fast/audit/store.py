"""The run store: per-image results on disk, written atomically, with an SQLite index.

Layout of ``runs/NAME/``::

    run.json          settings, model hash, package versions (checked on resume)
    .lock             held (flock) by the one audit writing to the run
    index.sqlite      one row per image: key, source, status (done/failed/gone), group, error,
                      sha256 (its photo's content hash), person, ...
    results/KEY.npz   canonical map, counts, occlusion map, drops, scores (done images only)

A result file is written to a temporary name and renamed into place, then its index row
is committed, so a killed run leaves either a finished image or nothing: re-running the
same command skips finished images and redoes the rest. A photo replaced under the same
name (another content hash) is explained again; the rows of a photo gone from the folder
are marked ``gone`` and left out of everything read from the run.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import sqlite3
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import numpy as np

from facesal_fast.audit.run_files import (
    check_images_table,
    check_result_arrays,
    check_result_file,
    check_row,
    check_run_folder,
    open_index_readonly,
    read_meta_text,
    sqlite_os_error,
)

__all__ = [
    "RunLockedError",
    "RunStore",
    "SettingsMismatchError",
    "StoredImage",
    "atomic_write_bytes",
    "check_same_settings",
    "file_sha256",
    "storable",
]


class SettingsMismatchError(ValueError):
    """Resuming a run with other settings or another model than it was started with."""


class RunLockedError(ValueError):
    """Another process is writing to the run folder."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename (never a partial file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # name the file meant, not the temporary one
        raise OSError(err.errno, err.strerror, str(path)) from err
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results and reports are meant to be shared
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def npz_bytes(arrays: dict[str, np.ndarray], level: int = 1) -> bytes:
    """``arrays`` as a deflated ``.npz`` file (readable by ``np.load``). Deflate level 1 is
    about 5x faster than ``np.savez_compressed``'s default level for these float maps, at
    nearly the same size."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


@dataclass
class StoredImage:
    """One index row."""

    key: str
    source: str
    status: str
    group: str | None
    target: int | None
    target_name: str | None
    base_score: float | None
    seconds: float | None
    error: str | None
    sha256: str | None = None
    person: str | None = None


_SCHEMA = """CREATE TABLE IF NOT EXISTS images (
    key TEXT PRIMARY KEY, source TEXT, status TEXT, grp TEXT, target INTEGER, target_name TEXT,
    base_score REAL, seconds REAL, error TEXT, seq INTEGER, sha256 TEXT, person TEXT)"""
#: The index columns of a :class:`StoredImage`, in its order (``grp`` is its ``group``).
_COLUMNS = ("key", "source", "status", "grp", "target", "target_name", "base_score", "seconds", "error")
#: Columns a run written before content hashes and persons lacks (added when it is resumed).
_LATER_COLUMNS = ("sha256", "person")


def file_sha256(path: str | Path) -> str | None:
    """SHA-256 (hex) of a file's bytes, or ``None`` when it cannot be read (gone, a broken
    link, no permission): a photo's content hash."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def storable(text: str) -> str:
    """``text`` as valid UTF-8 text: undecodable bytes of a file name (``os.fsdecode``'s
    surrogate escapes, e.g. ``b"bad\\xffname.jpg"``) become ``\\xff`` escapes instead of
    making SQLite or ``str.encode`` fail."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no file-name escape
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe_name(key: str) -> str:
    text = storable(key)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[-80:]
    return f"{stem}-{digest}"


def _read_meta(path: Path) -> dict[str, Any]:
    """A run's ``run.json``; nothing is created when ``path`` is not a run."""
    meta_path = path / "run.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a facesal run (no run.json)")
    meta = read_meta_text(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("settings"), dict):
        raise ValueError(
            f"{meta_path}: not a facesal run file (no settings); start a new run with another --out folder"
        )
    return meta


def check_same_settings(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The metadata of the run at ``path`` (which has a ``run.json``), checked against the
    ``settings`` a resumed run asks for; ``SettingsMismatchError`` naming each change."""
    wanted, meta = json.loads(json.dumps(settings, default=str)), _read_meta(path)
    changes = [
        f"{k}: {meta['settings'].get(k)!r} -> {wanted.get(k)!r}"
        for k in sorted(set(meta["settings"]) | set(wanted))
        if meta["settings"].get(k) != wanted.get(k)
    ]
    if changes:
        raise SettingsMismatchError(
            f"{path} was started with other settings ({'; '.join(changes)}); re-run with the original "
            f"settings to resume it, or start a new run with another --out folder (or delete {path})"
        )
    return meta


def _make_run_folder(path: Path) -> None:
    """Create the run folder, or say why it cannot be one (a file, not writable)."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a run folder; give --out a folder path")
    check_run_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{path}: cannot create the run folder ({err.strerror})") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: the run folder is not writable")


@contextmanager
def _index_errors(db_path: Path) -> Iterator[None]:
    """An SQLite error that is a full disk or an I/O error raised as that ``OSError``."""
    try:
        yield
    except sqlite3.Error as err:
        os_error = sqlite_os_error(err, db_path)
        if os_error is None:
            raise
        raise os_error from err


def _lock_run(path: Path) -> IO[str]:
    """An exclusive ``flock`` on ``path/.lock`` (held until the returned file is closed)."""
    lock = open(path / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 - held open for the run's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        lock.close()
        raise RunLockedError(
            f"{path} is in use by another running audit (lock file {path / '.lock'}); wait for "
            "it to finish, or give another --out folder"
        ) from err
    return lock


def _connect(db_path: Path, readonly: bool) -> sqlite3.Connection:
    """The run's SQLite index (read-only: opened with ``mode=ro``; an empty one if missing);
    ``ValueError`` naming the file when it is corrupt."""
    try:
        if readonly and db_path.exists():
            db = open_index_readonly(db_path)
        else:
            db = sqlite3.connect(":memory:" if readonly else db_path)
            check_images_table(db)
            db.execute(_SCHEMA)
            _add_later_columns(db)
            db.commit()
        db.execute(f"SELECT {_select(db)}, seq FROM images LIMIT 1")
        return db
    except sqlite3.DatabaseError as err:
        raise sqlite_os_error(err, db_path) or ValueError(
            f"{db_path}: corrupt or unreadable run index ({err}); start a new run with another --out folder"
        ) from err


def _add_later_columns(db: sqlite3.Connection) -> None:
    """Give the index of a run written before content hashes and persons their columns
    (``NULL`` for its rows: an image's hash is recorded when the run is resumed)."""
    present = {row[1] for row in db.execute("PRAGMA table_info(images)")}
    for column in _LATER_COLUMNS:
        if column not in present:
            db.execute(f"ALTER TABLE images ADD COLUMN {column} TEXT")


def _select(db: sqlite3.Connection) -> str:
    """The SELECT list of a :class:`StoredImage` (``NULL`` for the later columns an old
    index, opened read-only, lacks)."""
    present = {row[1] for row in db.execute("PRAGMA table_info(images)")}
    later = (column if column in present else f"NULL AS {column}" for column in _LATER_COLUMNS)
    return ", ".join((*_COLUMNS, *later))


def _backends_in(name: str) -> set[str]:
    """The backends a backend name stands for: ``auto(torch-fp32, onnx-cpu)`` -> both."""
    inner = name[5:-1] if name.startswith("auto(") and name.endswith(")") else name
    return {part.strip() for part in inner.split(",")}


class RunStore:
    """A run directory. ``RunStore(path, settings)`` creates it or checks it matches;
    ``RunStore(path)`` opens an existing run read-only (e.g. for the report).

    A writing store holds an exclusive lock on ``path/.lock`` until :meth:`close` (or the
    process ends): a second audit into the same folder is refused with
    :class:`RunLockedError` instead of computing everything twice.

    Args:
        path: the run directory (created if missing, for a writing store).
        settings: everything that determines the results (model, its hash, target,
            patch, photo folder, groups' content, ...); a run started with other settings
            is refused with :class:`SettingsMismatchError` naming what changed.
        versions: package versions, recorded (not compared).
        resolved: values resolved at run time (backend chosen, ...), recorded (not compared).

    Raises:
        FileNotFoundError: ``settings`` is ``None`` and ``path`` is not a run (nothing is created).
        ValueError: ``path`` is a file or not writable, its ``run.json`` or ``index.sqlite``
            is corrupt (the message names the file).
    """

    def __init__(
        self,
        path: str | Path,
        settings: dict[str, Any] | None = None,
        versions: dict[str, str] | None = None,
        resolved: dict[str, Any] | None = None,
    ):
        self.path = Path(path)
        self.results_dir = self.path / "results"
        self._lock: IO[str] | None = None
        if settings is None:
            self.meta = _read_meta(self.path)
            self._db = _connect(self.path / "index.sqlite", readonly=True)
            return
        _make_run_folder(self.path)
        self._lock = _lock_run(self.path)
        try:
            self.meta = self._start_or_check(settings, versions or {}, resolved or {})
            self.results_dir.mkdir(exist_ok=True)
            self._db = _connect(self.path / "index.sqlite", readonly=False)
        except BaseException:
            self._lock.close()
            raise

    def _start_or_check(
        self, settings: dict[str, Any], versions: dict[str, str], resolved: dict[str, Any]
    ) -> dict[str, Any]:
        """The run's metadata: written for a new run, compared for an existing one."""
        meta_path = self.path / "run.json"
        wanted = json.loads(json.dumps(settings, default=str))
        if not meta_path.exists():
            meta = {"settings": wanted, "versions": versions, "resolved": json.loads(json.dumps(resolved, default=str))}
            atomic_write_bytes(meta_path, json.dumps(meta, indent=2, sort_keys=True).encode())
            return meta
        return check_same_settings(self.path, wanted)

    def record_resolved(self, resolved: dict[str, Any]) -> None:
        """Record ``resolved`` in ``run.json`` when the run has no resolved values yet (a Ray
        driver learns them from its first worker, after the store checked the settings)."""
        if self.meta.get("resolved"):
            return
        self.meta["resolved"] = json.loads(json.dumps(resolved, default=str))
        atomic_write_bytes(self.path / "run.json", json.dumps(self.meta, indent=2, sort_keys=True).encode())

    def record_backend(self, name: str) -> str | None:
        """Add backend ``name`` to those the run has run on (``resolved["backends"]`` in
        run.json, in order of first use). Returns what to warn about when ``name`` (``auto(a,
        b)`` names a and b) holds a backend the run had not run on, else None."""
        resolved = self.meta.setdefault("resolved", {})
        names = list(resolved.get("backends") or ([resolved["backend"]] if resolved.get("backend") else []))
        if not names or name in names:
            return None
        resolved["backends"] = [*names, name]
        atomic_write_bytes(self.path / "run.json", json.dumps(self.meta, indent=2, sort_keys=True).encode())
        new = _backends_in(name) - set().union(*map(_backends_in, names))
        return (
            f"{self.path} was started on backend {names[0]}; this session runs on {', '.join(sorted(new))} (e.g. "
            "onnxruntime missing, or another --backend): its maps agree within float tolerance, not bit for bit; "
            "run.json lists every backend used under resolved.backends"
            if new
            else None
        )

    @property
    def settings(self) -> dict[str, Any]:
        return self.meta["settings"]

    def status(self, key: str) -> str | None:
        """``"done"``, ``"failed"`` or ``None`` (not seen, or done but its result file is gone)."""
        row = self._db.execute("SELECT status FROM images WHERE key = ?", (storable(key),)).fetchone()
        if row is None or (row[0] == "done" and not self.result_path(key).is_file()):
            return None
        return row[0]

    def result_path(self, key: str) -> Path:
        return self.results_dir / f"{_safe_name(key)}.npz"

    def _next_seq(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM images").fetchone()[0])

    def save_done(
        self,
        key: str,
        source: str,
        arrays: dict[str, np.ndarray],
        *,
        group: str | None,
        target: int,
        target_name: str | None,
        base_score: float,
        seconds: float,
        sha256: str | None = None,
        person: str | None = None,
    ) -> None:
        """Write the image's arrays atomically, then mark it done (``sha256``: its photo's
        content hash; ``person``: who it shows, when the groups say)."""
        atomic_write_bytes(self.result_path(key), npz_bytes(arrays))
        self.put(
            StoredImage(key, source, "done", group, target, target_name, base_score, seconds, None, sha256, person)
        )

    def put(self, row: StoredImage) -> None:
        """Write an index row as it is (e.g. one a worker reported); the caller has already
        written its result file. A full disk is an ``OSError`` (``ENOSPC``) naming the index."""
        with _index_errors(self.path / "index.sqlite"):
            self._put(row)

    def _put(self, row: StoredImage) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO images ({', '.join(_COLUMNS)}, seq, {', '.join(_LATER_COLUMNS)}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                storable(row.key),
                storable(row.source),
                row.status,
                None if row.group is None else storable(str(row.group)),
                row.target,
                row.target_name,
                row.base_score,
                row.seconds,
                None if row.error is None else storable(row.error),
                self._next_seq(),
                row.sha256,
                None if row.person is None else storable(str(row.person)),
            ),
        )
        self._db.commit()

    def save_failed(
        self,
        key: str,
        source: str,
        error: str,
        group: str | None = None,
        *,
        sha256: str | None = None,
        person: str | None = None,
    ) -> None:
        self.put(StoredImage(key, source, "failed", group, None, None, None, None, error, sha256, person))

    def rows(self, status: str | None = None) -> list[StoredImage]:
        """Index rows in key order (a fixed order, whatever order they finished in); rows of
        photos gone from the folder (status ``"gone"``) only when asked for."""
        query = f"SELECT {_select(self._db)} FROM images WHERE " + ("status = ?" if status else "status != 'gone'")
        rows = self._db.execute(query + " ORDER BY key", (status,) if status else ())
        return [check_row(StoredImage(*row), self.path / "index.sqlite") for row in rows]

    def row(self, key: str) -> StoredImage | None:
        """The index row of ``key`` (whatever its status), or None."""
        found = self._db.execute(f"SELECT {_select(self._db)} FROM images WHERE key = ?", (storable(key),))
        return next((StoredImage(*row) for row in found), None)

    def keys(self, prefix: str) -> list[str]:
        """Keys (of rows not gone) that start with ``prefix``."""
        prefix = storable(prefix)
        found = self._db.execute(
            "SELECT key FROM images WHERE status != 'gone' AND substr(key, 1, ?) = ? ORDER BY key",
            (len(prefix), prefix),
        )
        return [key for (key,) in found]

    def record_sha256(self, key: str, sha256: str | None) -> None:
        """Record the content hash of a row written before runs recorded them."""
        with _index_errors(self.path / "index.sqlite"):
            self._db.execute("UPDATE images SET sha256 = ? WHERE key = ?", (sha256, storable(key)))
            self._db.commit()

    def leave_out(self, keys: Iterable[str]) -> None:
        """Mark the rows ``keys`` ``"gone"``: their photo left the folder, or changed and is
        explained again; the CMS, report and compare leave them out (result files stay)."""
        with _index_errors(self.path / "index.sqlite"):
            self._db.executemany("UPDATE images SET status = 'gone' WHERE key = ?", [(storable(k),) for k in keys])
            self._db.commit()

    def load(self, key: str) -> dict[str, np.ndarray]:
        """The arrays of a done image; ``ValueError`` naming the file when it is corrupt."""
        path = self.result_path(key)
        try:
            check_result_file(path)
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            check_result_arrays(arrays)
            return arrays
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(
                f"{path}: unreadable result file of {key!r} ({type(err).__name__}: {err}); delete it and "
                "re-run the audit to recompute that image"
            ) from err

    def iter_done(self) -> Iterator[tuple[StoredImage, dict[str, np.ndarray]]]:
        for row in self.rows("done"):
            yield row, self.load(row.key)

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the index and release the run's lock."""
        self._db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
