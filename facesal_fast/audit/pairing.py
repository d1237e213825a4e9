"""Pairing the photos of two runs by content, for a paired comparison (``facesal compare``).

Two results are the same photo when their photo's content hash (the SHA-256 a run records
per photo, :mod:`facesal_fast.audit.resume`) and the face explained are equal, whatever
their names: two runs of different photos under the same names pair nothing, and a run
that lacks one photo pairs the rest. Names alone never pair. Photos of equal content
inside one run (copies) pair in key order, one to one.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from facesal_fast.audit.store import StoredImage

__all__ = ["Pairing", "pair_by_content"]

_FACE = re.compile(r"#face(\d+)$")


@dataclass(frozen=True)
class Pairing:
    """The photos of runs a and b paired by content.

    Attributes:
        pairs: ``(key in a, key in b)`` of each photo of equal content, in a's key order.
        unmatched_a, unmatched_b: keys with no photo of equal content in the other run.
        unhashed_a, unhashed_b: how many of those were written before runs recorded
            content hashes (they cannot be paired).
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)
    unmatched_a: list[str] = field(default_factory=list)
    unmatched_b: list[str] = field(default_factory=list)
    unhashed_a: int = 0
    unhashed_b: int = 0


def _content(row: StoredImage, face_index: int | None) -> tuple[str, int] | None:
    """(content hash, face number; 1 = the largest) of a result, or None without a hash."""
    if row.sha256 is None:
        return None
    found = _FACE.search(row.key)
    return row.sha256, int(found.group(1)) if found else (face_index or 0) + 1


def _by_content(rows: Iterable[StoredImage], face_index: int | None) -> tuple[dict, list[str]]:
    """({content: keys in key order}, keys without a content hash)."""
    grouped: dict[tuple[str, int], list[str]] = defaultdict(list)
    unhashed = []
    for row in sorted(rows, key=lambda r: r.key):
        content = _content(row, face_index)
        if content is None:
            unhashed.append(row.key)
        else:
            grouped[content].append(row.key)
    return grouped, unhashed


def pair_by_content(
    rows_a: Iterable[StoredImage],
    rows_b: Iterable[StoredImage],
    face_index: tuple[int | None, int | None] = (None, None),
) -> Pairing:
    """Pair the done rows of two runs on equal content (hash and face).

    Args:
        rows_a, rows_b: each run's done rows.
        face_index: each run's ``face_index`` setting (the face a result without
            ``#faceK`` in its key explains; None: the largest).
    """
    a, unhashed_a = _by_content(rows_a, face_index[0])
    b, unhashed_b = _by_content(rows_b, face_index[1])
    pairs, unmatched_a = [], list(unhashed_a)
    for content, keys in a.items():
        twins = b.get(content, [])
        pairs += zip(keys, twins)
        unmatched_a += keys[len(twins) :]
    paired_b = {key_b for _, key_b in pairs}
    unmatched_b = unhashed_b + [key for keys in b.values() for key in keys if key not in paired_b]
    return Pairing(sorted(pairs), sorted(unmatched_a), sorted(unmatched_b), len(unhashed_a), len(unhashed_b))
