"""Resuming a run so that it always reflects its photos: skip a photo only when it is done
with the content it has now.

A run records each photo's content hash in its index: the SHA-256 of a file's bytes, or of
an array's or tensor's shape, dtype and pixels. Re-running an audit skips a photo done with
the same hash, explains a photo replaced under the same name again (counted ``changed``),
and marks the rows of a photo that left the folder ``gone`` (counted ``gone``), so that
the CMS, the report and ``compare`` leave them out. A run written before content hashes
keeps its done photos and has their hashes recorded on resume (counted, and said in a
warning). Before a photo is explained again its old rows (with ``faces="all"``, every
``PHOTO#faceK``) are marked ``gone``: no map of the old photo stays beside the new one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from facesal_fast.audit.store import storable

if TYPE_CHECKING:
    from collections.abc import Iterable, MutableMapping
    from pathlib import Path

    from facesal_fast.audit.store import RunStore

__all__ = ["Resume"]

_FACE_SUFFIX = re.compile(r"#face\d+$")
_POSITION_KEY = re.compile(r"array-\d{6}")
_POSITION_SOURCE = re.compile(r"array #\d+")


@dataclass
class Resume:
    """The resume decisions of one audit into ``store``.

    Attributes:
        store: the run.
        faces: ``faces="all"``: a photo's results are keyed ``PHOTO#faceK``.
        summary: the audit's counts; ``"changed"`` and ``"gone"`` (photos) are added here.
        unhashed: photos skipped as done before the run recorded content hashes.
    """

    store: RunStore
    faces: bool
    summary: MutableMapping[str, int]
    unhashed: int = 0

    def stored_key(self, key: str) -> str:
        """The store key that says whether photo ``key`` is done: with ``faces="all"`` its
        largest face's, recorded last."""
        return f"{key}#face1" if self.faces else key

    def photo_rows(self, key: str) -> list[str]:
        """Keys of the rows (not gone) of photo ``key``: itself (a result, or a failure of the
        whole photo) and, with ``faces="all"``, its faces."""
        if not self.faces:
            row = self.store.row(key)
            return [] if row is None or row.status == "gone" else [key]
        pattern = re.compile(re.escape(storable(key)) + r"(#face\d+)?")
        return [k for k in self.store.keys(key) if pattern.fullmatch(k)]

    def is_done(self, key: str, sha256: str | None) -> bool:
        """Whether photo ``key`` (content hash ``sha256``) is done as it is now. When not, its
        old rows are marked gone before it is explained again; a done photo of another
        content counts as ``changed``."""
        stored = self.stored_key(key)
        row = self.store.row(stored)
        if row is not None and self.store.status(stored) == "done":
            if row.sha256 is None:  # done before the run recorded content hashes: assumed unchanged
                for k in self.photo_rows(key):
                    self.store.record_sha256(k, sha256)
                self.unhashed += 1
                return True
            if row.sha256 == sha256:
                return True
            self.summary["changed"] += 1
        old = self.photo_rows(key)
        if old:
            self.store.leave_out(old)
        return False

    def leave_out_gone(self, folder: str | Path, items: Iterable[tuple[str, str, Any]]) -> None:
        """Mark ``gone`` the rows of photos of ``folder`` that are no longer among its
        ``items`` (key, source, loader); rows of other inputs fed into the run stay."""
        here = {os.path.realpath(storable(source)) for _, source, _ in items}
        base = storable(str(folder))
        gone: dict[str, list[str]] = {}
        for row in self.store.rows():
            photo = _FACE_SUFFIX.sub("", row.key) if self.faces else row.key
            source = os.path.realpath(row.source)
            if source not in here and source == os.path.realpath(os.path.join(base, photo)):
                gone.setdefault(photo, []).append(row.key)
        if gone:
            self.store.leave_out([key for keys in gone.values() for key in keys])
        self.summary["gone"] += len(gone)

    def check_same_photos(self, items: Iterable[tuple[str, str, Any]]) -> None:
        """Refuse a photo folder whose files differ from those the run already holds under
        the same names (another folder with a photo of the same name)."""
        stored = {row.key: row.source for row in self.store.rows()}
        for key, source, _ in items:
            old = stored.get(storable(self.stored_key(key)))
            if old is not None and os.path.realpath(old) != os.path.realpath(storable(source)):
                raise ValueError(
                    f"{self.store.path} holds {key!r} from {old}, not from {source}: this is another photo "
                    "folder; start a new run with another --out folder"
                )

    def refuse_position_keys(self) -> None:
        """Refuse to feed a run that holds arrays keyed by their position (written before
        arrays were keyed by content): feeding it again would store some arrays twice."""
        old = [
            row.key
            for row in self.store.rows()
            if _POSITION_KEY.fullmatch(row.key) and _POSITION_SOURCE.fullmatch(row.source)
        ]
        if old:
            raise ValueError(
                f"{self.store.path} holds {len(old)} arrays keyed by their position ({old[0]!r}, ...), written "
                "before arrays were keyed by content; start a new run with another out folder"
            )

    def unhashed_warning(self) -> str | None:
        """The warning for photos skipped as done before the run recorded content hashes."""
        if not self.unhashed:
            return None
        return (
            f"{self.store.path}: {self.unhashed} photos were done before runs recorded content hashes; they are "
            "assumed unchanged and their hashes are recorded now (if any was replaced since, start a new run)"
        )
