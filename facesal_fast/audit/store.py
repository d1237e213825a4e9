"""The run store: per-image results on disk, written atomically, with an SQLite index.

Layout of ``runs/NAME/``::

    run.json          settings, model hash, package versions (checked on resume)
    .lock             held (flock) by the one audit writing to the run
    index.sqlite      one row per image: key, source, status (done/failed), group, error, ...
    results/KEY.npz   canonical map, counts, occlusion map, drops, scores (done images only)

A result file is written to a temporary name and renamed into place, then its index row
is committed, so a killed run leaves either a finished image or nothing: re-running the
same command skips finished images and redoes the rest.
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

__all__ = ["RunLockedError", "RunStore", "SettingsMismatchError", "StoredImage", "atomic_write_bytes", "storable"]


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


_SCHEMA = """CREATE TABLE IF NOT EXISTS images (
    key TEXT PRIMARY KEY, source TEXT, status TEXT, grp TEXT, target INTEGER, target_name TEXT,
    base_score REAL, seconds REAL, error TEXT, seq INTEGER)"""


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
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{meta_path}: corrupt run file ({err}); start a new run with another --out folder") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("settings"), dict):
        raise ValueError(
            f"{meta_path}: not a facesal run file (no settings); start a new run with another --out folder"
        )
    return meta


def _make_run_folder(path: Path) -> None:
    """Create the run folder, or say why it cannot be one (a file, not writable)."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a run folder; give --out a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{path}: cannot create the run folder ({err.strerror})") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: the run folder is not writable")


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
            db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
        else:
            db = sqlite3.connect(":memory:" if readonly else db_path)
            db.execute(_SCHEMA)
            db.commit()
        db.execute(
            "SELECT key, source, status, grp, target, target_name, base_score, seconds, error, seq FROM images LIMIT 1"
        )
        return db
    except sqlite3.DatabaseError as err:
        raise ValueError(
            f"{db_path}: corrupt or unreadable run index ({err}); start a new run with another --out folder"
        ) from err


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
        meta = _read_meta(self.path)
        changes = [
            f"{k}: {meta['settings'].get(k)!r} -> {wanted.get(k)!r}"
            for k in sorted(set(meta["settings"]) | set(wanted))
            if meta["settings"].get(k) != wanted.get(k)
        ]
        if changes:
            raise SettingsMismatchError(
                f"{self.path} was started with other settings ({'; '.join(changes)}); re-run with the original "
                f"settings to resume it, or start a new run with another --out folder (or delete {self.path})"
            )
        return meta

    def record_resolved(self, resolved: dict[str, Any]) -> None:
        """Record ``resolved`` in ``run.json`` when the run has no resolved values yet (a Ray
        driver learns them from its first worker, after the store checked the settings)."""
        if self.meta.get("resolved"):
            return
        self.meta["resolved"] = json.loads(json.dumps(resolved, default=str))
        atomic_write_bytes(self.path / "run.json", json.dumps(self.meta, indent=2, sort_keys=True).encode())

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
    ) -> None:
        """Write the image's arrays atomically, then mark it done."""
        atomic_write_bytes(self.result_path(key), npz_bytes(arrays))
        self.put(StoredImage(key, source, "done", group, target, target_name, base_score, seconds, None))

    def put(self, row: StoredImage) -> None:
        """Write an index row as it is (e.g. one a worker reported); the caller has already
        written its result file."""
        self._db.execute(
            "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ),
        )
        self._db.commit()

    def save_failed(self, key: str, source: str, error: str, group: str | None = None) -> None:
        self.put(StoredImage(key, source, "failed", group, None, None, None, None, error))

    def rows(self, status: str | None = None) -> list[StoredImage]:
        """Index rows in key order (a fixed order, whatever order they finished in)."""
        query = "SELECT key, source, status, grp, target, target_name, base_score, seconds, error FROM images"
        rows = self._db.execute(
            query + (" WHERE status = ?" if status else "") + " ORDER BY key", (status,) if status else ()
        )
        return [StoredImage(*row) for row in rows]

    def load(self, key: str) -> dict[str, np.ndarray]:
        """The arrays of a done image; ``ValueError`` naming the file when it is corrupt."""
        path = self.result_path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
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
