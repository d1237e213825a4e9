"""Groups of an audit: read a groups CSV strictly, look a photo's group up, check the match.

A groups CSV has a header line naming the columns ``image`` and ``group`` (others are
ignored) and one line per photo: its file name or its path relative to the photo folder.
Every mistake that would silently leave photos ungrouped or invent a group (a short line,
an empty group, names matching no photo, a Latin-1 file, a header without lines) is a
``ValueError`` naming the file and line; a UTF-8 byte-order mark is accepted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["group_for", "groups_digest", "match_groups", "read_groups_csv"]

_HINT = "a CSV with the header line image,group and one line per photo"


def read_groups_csv(path: str | Path) -> dict[str, str]:
    """``{image name: group}`` from a groups CSV.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not UTF-8, no ``image``/``group`` header, no data line, a short line, an
            empty image name or group, or one image given two groups (message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such groups file (expected {_HINT}, or 'predicted')")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {err.start} is {raw[err.start : err.start + 1]!r}); save the "
            "groups CSV as UTF-8"
        ) from err
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        columns = _columns(path, next(reader, None))
        groups: dict[str, str] = {}
        for row in reader:
            _add_row(path, reader.line_num, row, columns, groups)
    except csv.Error as err:
        raise ValueError(f"{path} line {reader.line_num}: not a valid CSV line ({err})") from err
    if not groups:
        raise ValueError(f"{path}: a header but no photo lines; expected {_HINT}")
    return groups


def _columns(path: Path, header: list[str] | None) -> tuple[int, int]:
    """Positions of the ``image`` and ``group`` columns in the header line."""
    names = [name.strip() for name in header or []]
    if "image" not in names or "group" not in names:
        found = ",".join(names) if names else "nothing (empty file)"
        raise ValueError(
            f"{path} line 1: the header must name the columns image,group, found {found}; expected {_HINT}"
        )
    return names.index("image"), names.index("group")


def _add_row(path: Path, line: int, row: list[str], columns: tuple[int, int], groups: dict[str, str]) -> None:
    """Check one data line and add it to ``groups`` (blank lines are skipped)."""
    if not any(cell.strip() for cell in row):
        return
    if len(row) <= max(columns):
        raise ValueError(f"{path} line {line}: {len(row)} column(s) {row}, expected image,group")
    image, group = (row[i].strip() for i in columns)
    if not image:
        raise ValueError(f"{path} line {line}: empty image name")
    if not group:
        raise ValueError(f"{path} line {line}: empty group for {image!r}")
    if groups.get(image, group) != group:
        raise ValueError(f"{path} line {line}: {image!r} is given group {group!r} here and {groups[image]!r} before")
    groups[image] = group


def groups_digest(groups: Mapping[str, str]) -> str:
    """SHA-256 of the mapping's content (independent of the CSV's order and layout): part of
    a run's identity, so editing the groups and re-running is refused instead of ignored."""
    return hashlib.sha256(json.dumps(sorted(groups.items())).encode("utf-8", "surrogateescape")).hexdigest()


def group_for(groups: Mapping[str, str], key: str) -> str | None:
    """The group of the photo ``key`` (its path relative to the folder, or its file name)."""
    return groups.get(key, groups.get(Path(key).name))


def match_groups(groups: Mapping[str, str], keys: Sequence[str], where: str = "groups") -> str | None:
    """Check that the groups name the photos ``keys``.

    Returns:
        ``None`` when every photo has a group (or ``groups`` is empty: no groups given),
        else a warning saying how many have one.

    Raises:
        ValueError: no photo has a group (names as file names or paths relative to the folder).
    """
    if not groups:
        return None
    matched = sum(group_for(groups, key) is not None for key in keys)
    if matched == 0 and keys:
        example = ", ".join(repr(name) for name in list(groups)[:2])
        raise ValueError(
            f"{where}: none of its {len(groups)} image names ({example}, ...) is one of the {len(keys)} "
            f"photos (e.g. {keys[0]!r}); give file names or paths relative to the photo folder"
        )
    if matched < len(keys):
        return (
            f"{where}: {matched} of {len(keys)} photos have a group; the other {len(keys) - matched} count in the "
            "overall CMS but in no group"
        )
    return None
