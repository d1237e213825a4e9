"""Groups of an audit: read a groups CSV strictly, look a photo's group up, check the match.

A groups CSV has a header line naming the columns ``image`` and ``group`` (and optionally
``person``; others are ignored) and one line per photo: its path relative to the photo
folder, or its file name. A photo takes the line of its relative path, else of the
longest tail of its path, down to its bare file name; one line may name one photo only, so
a bare name shared by two photos (``m/IMG_0001.jpg`` and ``w/IMG_0001.jpg`` with one line
``IMG_0001.jpg``) is an error naming both. Every mistake that would silently leave photos
ungrouped or invent a group (a short line, an empty group or person, names matching no
photo, a Latin-1 file, a header without lines) is a ``ValueError`` naming the file and line;
a UTF-8 byte-order mark is accepted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Sequence, TypeVar

if TYPE_CHECKING:
    from facesal_fast.saliency.cis import CISResult

__all__ = [
    "Groups",
    "MatchAsReached",
    "RowMatcher",
    "assign",
    "assigned",
    "check_groups",
    "coverage_message",
    "group_of",
    "groups_digest",
    "label_of",
    "line_for",
    "read_groups_csv",
    "read_groups_table",
]

T = TypeVar("T")
#: An audit's groups: None, ``"predicted"``, one per input, or a mapping from photo names.
Groups = None | str | Sequence[str] | Mapping[str, str]
_HINT = "a CSV with the header line image,group (optionally a person column) and one line per photo"


def read_groups_csv(path: str | Path) -> dict[str, str]:
    """``{image name: group}`` from a groups CSV (see :func:`read_groups_table`)."""
    return read_groups_table(path)[0]


def read_groups_table(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """``({image name: group}, {image name: person})`` from a groups CSV; the persons are
    empty when the CSV has no ``person`` column.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not UTF-8, no ``image``/``group`` header, no data line, a short line, an
            empty image name, group or person, or one image given two groups or persons
            (message names the line).
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
        tables: tuple[dict[str, str], dict[str, str]] = ({}, {})
        for row in reader:
            _add_row(path, reader.line_num, row, columns, tables)
    except csv.Error as err:
        raise ValueError(f"{path} line {reader.line_num}: not a valid CSV line ({err})") from err
    if not tables[0]:
        raise ValueError(f"{path}: a header but no photo lines; expected {_HINT}")
    return tables


def _columns(path: Path, header: list[str] | None) -> tuple[int, int, int | None]:
    """Positions of the ``image``, ``group`` and ``person`` (None: no such) columns."""
    names = [name.strip() for name in header or []]
    if "image" not in names or "group" not in names:
        found = ",".join(names) if names else "nothing (empty file)"
        raise ValueError(
            f"{path} line 1: the header must name the columns image,group, found {found}; expected {_HINT}"
        )
    return names.index("image"), names.index("group"), names.index("person") if "person" in names else None


def _add_row(
    path: Path,
    line: int,
    row: list[str],
    columns: tuple[int, int, int | None],
    tables: tuple[dict[str, str], dict[str, str]],
) -> None:
    """Check one data line and add it to the ``(groups, persons)`` tables (blank lines are skipped)."""
    if not any(cell.strip() for cell in row):
        return
    used = [c for c in columns if c is not None]
    if len(row) <= max(used):
        expected = "image,group" + (",person" if columns[2] is not None else "")
        raise ValueError(f"{path} line {line}: {len(row)} column(s) {row}, expected {expected}")
    image = row[columns[0]].strip()
    if not image:
        raise ValueError(f"{path} line {line}: empty image name")
    for what, column, table in zip(("group", "person"), columns[1:], tables):
        if column is None:
            continue
        value = row[column].strip()
        if not value:
            raise ValueError(f"{path} line {line}: empty {what} for {image!r}")
        if table.get(image, value) != value:
            raise ValueError(
                f"{path} line {line}: {image!r} is given {what} {value!r} here and {table[image]!r} before"
            )
        table[image] = value


def groups_digest(groups: Mapping[str, str], persons: Mapping[str, str] | None = None) -> str:
    """SHA-256 of the mapping's content (independent of the CSV's order and layout), and of
    the persons when given: part of a run's identity, so editing the groups and re-running
    is refused instead of ignored (a CSV without persons keeps the digest it always had)."""
    content = sorted(groups.items()) if not persons else [sorted(groups.items()), sorted(persons.items())]
    return hashlib.sha256(json.dumps(content).encode("utf-8", "surrogateescape")).hexdigest()


def _tails(key: str) -> list[str]:
    """The photo ``key``'s path and its shorter tails, longest first:
    ``"a/b/c.jpg"`` -> ``["a/b/c.jpg", "b/c.jpg", "c.jpg"]``."""
    parts = PurePosixPath(key).parts
    return [key] + ["/".join(parts[i:]) for i in range(1, len(parts))]


def line_for(table: Mapping[str, str], key: str) -> str | None:
    """The line (name) of ``table`` that names the photo ``key``: its path, else the
    longest tail of it down to its file name; None when none does. :class:`RowMatcher`
    also refuses a line that names two photos."""
    return next((tail for tail in _tails(key) if tail in table), None)


class RowMatcher:
    """Looks photos up in a ``{name: value}`` table (groups or persons) by
    :func:`line_for`, remembering which photo each line named: a line that names a second
    photo is a ``ValueError`` naming both (``where``: the argument or file, for messages)."""

    def __init__(self, table: Mapping[str, str], where: str) -> None:
        self.table, self.where = table, where
        self.named: dict[str, str] = {}  # table line -> the photo it names

    def __call__(self, key: str) -> str | None:
        line = line_for(self.table, key)
        if line is None:
            return None
        other = self.named.setdefault(line, key)
        if other != key:
            raise ValueError(
                f"{self.where}: the line {line!r} names two photos, {other!r} and {key!r}; name each by its path "
                "relative to the photo folder"
            )
        return self.table[line]


def assign(
    table: Mapping[str, str], keys: Sequence[str], where: str = "groups", what: str = "group"
) -> tuple[dict[str, str], str | None]:
    """Each photo's ``what`` (``"group"`` or ``"person"``) from ``table``, checked against
    the photos ``keys``.

    Returns:
        ``({key: value}`` of the photos named, a warning when only some are named or None).

    Raises:
        ValueError: no photo is named (names as file names or paths relative to the folder),
            or one line names two photos (the message names both).
    """
    match = RowMatcher(table, where)
    found = {key: value for key in keys if (value := match(key)) is not None}
    return found, coverage_message(table, keys, found, where, what)


#: What becomes of a photo without a group / a person.
_UNNAMED = {"group": "count in the overall CMS but in no group", "person": "count as a person each"}


def coverage_message(
    table: Mapping[str, str], keys: Iterable[str], found: Mapping[str, str], where: str, what: str = "group"
) -> str | None:
    """None when every photo of ``keys`` is in ``found`` (or the table is empty); a warning
    naming how many are and examples of the others when some are; ``ValueError`` (naming
    ``where``) when none is."""
    keys = list(keys)
    if not table or len(found) == len(keys):
        return None
    if not found and keys:
        example = ", ".join(repr(name) for name in list(table)[:2])
        raise ValueError(
            f"{where}: none of its {len(table)} image names ({example}, ...) is one of the {len(keys)} "
            f"photos (e.g. {keys[0]!r}); give file names or paths relative to the photo folder"
        )
    missing = [key for key in keys if key not in found]
    examples = ", ".join(repr(key) for key in missing[:3]) + (", ..." if len(missing) > 3 else "")
    return (
        f"{where}: {len(found)} of {len(keys)} photos have a {what}; the other {len(missing)} ({examples}) "
        f"{_UNNAMED[what]}"
    )


def assigned(table: T, keys: Sequence[str], where: str, what: str) -> T | dict[str, str]:
    """A mapping ``table`` matched to the photos ``keys`` now (:func:`assign`; a warning for
    photos it leaves out); anything else (None, a sequence by position, ``"predicted"``) as is."""
    if not isinstance(table, Mapping):
        return table
    found, message = assign(table, keys, where, what)
    if message:
        warnings.warn(message, stacklevel=3)
    return found


class MatchAsReached:
    """Matches photos to a mapping ``table`` as they arrive (inputs that are not listed
    beforehand): :meth:`wrap` the ``(key, ...)`` items, read ``found`` (key -> value) as they
    pass, and :meth:`check` at the end."""

    def __init__(self, table: Mapping[str, str], where: str, what: str) -> None:
        self.match, self.where, self.what = RowMatcher(table, where), where, what
        self.found: dict[str, str] = {}
        self.keys: list[str] = []

    def wrap(self, items: Iterable[tuple]) -> Iterator[tuple]:
        for item in items:
            self.keys.append(item[0])
            value = self.match(item[0])
            if value is not None:
                self.found[item[0]] = value
            yield item

    def check(self) -> None:
        """Warn for photos the table left out; ``ValueError`` when it named none."""
        message = coverage_message(self.match.table, self.keys, self.found, self.where, self.what)
        if message:
            warnings.warn(message, stacklevel=3)


def check_groups(groups: Groups) -> None:
    """``ValueError`` for a string other than ``"predicted"``."""
    if isinstance(groups, str) and groups != "predicted":
        raise ValueError(f"groups must be 'predicted', a sequence or a mapping, got {groups!r}")


def group_of(groups: Groups, index: int, key: str, result: CISResult | None) -> str | None:
    """The group of the ``index``-th image ``key``: by :func:`label_of` from a mapping or a
    sequence, the class explained in ``result`` for ``"predicted"`` (``None`` for a failed
    image), ``None`` without groups."""
    if groups is None:
        return None
    if isinstance(groups, str):
        check_groups(groups)
        return None if result is None else (result.target_name or str(result.target))
    return label_of(groups, index, key)


def label_of(labels: Sequence[str] | Mapping[str, str] | None, index: int, key: str) -> str | None:
    """The group or person of the ``index``-th image ``key``: from a mapping by the line that
    names it (:func:`~facesal_fast.audit.groups.line_for`), ``labels[index]`` of a sequence."""
    if labels is None:
        return None
    if isinstance(labels, Mapping):
        line = line_for(labels, key)
        return None if line is None else labels[line]
    return str(labels[index])
