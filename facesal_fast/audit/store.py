"""The run store: per-image results on disk, written atomically, with an SQLite index.

Layout of ``runs/NAME/``::

    run.json          settings, model hash, package versions (checked on resume)
    index.sqlite      one row per image: key, source, status (done/failed), group, error, ...
    results/KEY.npz   canonical map, counts, occlusion map, drops, scores (done images only)

A result file is written to a temporary name and renamed into place, then its index row
is committed, so a killed run leaves either a finished image or nothing: re-running the
same command skips finished images and redoes the rest.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tempfile
import zipfile
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["RunStore", "SettingsMismatchError", "StoredImage", "atomic_write_bytes"]


class SettingsMismatchError(ValueError):
    """Resuming a run with other settings or another model than it was started with."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename (never a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results and reports are meant to be shared
        os.replace(tmp, path)
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


def _safe_name(key: str) -> str:
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[-80:]
    return f"{stem}-{digest}"


class RunStore:
    """A run directory. ``RunStore(path, settings)`` creates it or checks it matches.

    Args:
        path: the run directory (created if missing).
        settings: everything that determines the results (model, its hash, target,
            patch, ...); a run started with other settings is refused.
        versions: package versions, recorded (not compared).
    """

    def __init__(self, path: str | Path, settings: dict[str, Any] | None = None, versions: dict[str, str] | None = None):
        self.path = Path(path)
        self.results_dir = self.path / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.path / "run.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if settings is not None and meta["settings"] != json.loads(json.dumps(settings)):
                changed = sorted(k for k in set(meta["settings"]) | set(settings)
                                 if meta["settings"].get(k) != json.loads(json.dumps(settings)).get(k))
                raise SettingsMismatchError(
                    f"{self.path} was started with other settings ({', '.join(changed)} differ); "
                    "use a new --out directory or the original settings"
                )
            self.meta = meta
        elif settings is None:
            raise FileNotFoundError(f"{self.path} is not a facesal run (no run.json)")
        else:
            self.meta = {"settings": settings, "versions": versions or {}}
            atomic_write_bytes(meta_path, json.dumps(self.meta, indent=2, sort_keys=True).encode())
        self._db = sqlite3.connect(self.path / "index.sqlite")
        self._db.execute(_SCHEMA)
        self._db.commit()

    @property
    def settings(self) -> dict[str, Any]:
        return self.meta["settings"]

    def status(self, key: str) -> str | None:
        row = self._db.execute("SELECT status FROM images WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def result_path(self, key: str) -> Path:
        return self.results_dir / f"{_safe_name(key)}.npz"

    def _next_seq(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM images").fetchone()[0])

    def _upsert(self, key: str, source: str, status: str, group: str | None, target: int | None,
                target_name: str | None, base_score: float | None, seconds: float | None, error: str | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, source, status, group, target, target_name, base_score, seconds, error, self._next_seq()),
        )
        self._db.commit()

    def save_done(self, key: str, source: str, arrays: dict[str, np.ndarray], *, group: str | None,
                  target: int, target_name: str | None, base_score: float, seconds: float) -> None:
        """Write the image's arrays atomically, then mark it done."""
        atomic_write_bytes(self.result_path(key), npz_bytes(arrays))
        self._upsert(key, source, "done", group, target, target_name, base_score, seconds, None)

    def put(self, row: StoredImage) -> None:
        """Write an index row as it is (e.g. one a worker reported); the caller has already
        written its result file."""
        self._upsert(*astuple(row))

    def save_failed(self, key: str, source: str, error: str, group: str | None = None) -> None:
        self._upsert(key, source, "failed", group, None, None, None, None, error)

    def rows(self, status: str | None = None) -> list[StoredImage]:
        """Index rows in key order (a fixed order, whatever order they finished in)."""
        query = "SELECT key, source, status, grp, target, target_name, base_score, seconds, error FROM images"
        rows = self._db.execute(query + (" WHERE status = ?" if status else "") + " ORDER BY key", (status,) if status else ())
        return [StoredImage(*row) for row in rows]

    def load(self, key: str) -> dict[str, np.ndarray]:
        with np.load(self.result_path(key)) as data:
            return {name: data[name] for name in data.files}

    def iter_done(self) -> Iterator[tuple[StoredImage, dict[str, np.ndarray]]]:
        for row in self.rows("done"):
            yield row, self.load(row.key)

    def close(self) -> None:
        self._db.close()
