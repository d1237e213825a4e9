"""Canonical Model Saliency over files: :func:`cms` runs an :class:`~facesal_fast.audit.runner.Audit`
over the images and returns its :class:`~facesal_fast.saliency.cms.CMSResult` (the saliency layer
keeps the accumulator, :class:`~facesal_fast.saliency.cms.CMSAccumulator`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from facesal_fast.audit.runner import Audit

if TYPE_CHECKING:
    from facesal_fast.core.options import CISOptions, StatsOptions
    from facesal_fast.saliency.cms import CMSResult
    from facesal_fast.scoring.photos import ImageInput, ScorerLike

__all__ = ["cms"]


def _known_length(items: Any) -> int | None:
    try:
        return len(items)
    except TypeError:
        return None


class _GroupList(Sequence):
    """A list of group (or person) names that says which argument is short instead of
    raising ``IndexError``."""

    def __init__(self, names: Sequence[Any], argument: str = "groups") -> None:
        self.names, self.argument = list(names), argument
        self.what = "group" if argument == "groups" else "person"

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, int) and index >= len(self.names):
            raise ValueError(
                f"{self.argument} has {len(self.names)} names but images has more items: give one {self.what} per image"
            )
        return self.names[index]


def _checked_groups(images: Any, groups: Any, argument: str = "groups") -> Any:
    """``groups`` (or persons) ready for :meth:`Audit.feed`: a length mismatch is a
    ``ValueError`` before any work."""
    if groups is None or isinstance(groups, (str, Mapping)):
        return groups
    names = _GroupList(groups, argument)
    count = None if isinstance(images, (str, os.PathLike)) else _known_length(images)  # a folder: counted as fed
    if count is not None and not hasattr(images, "batch_size") and count != len(names):
        raise ValueError(
            f"{argument} has {len(names)} names but images has {count} items: give one {names.what} per image"
        )
    return names


def cms(
    images: Iterable[ImageInput],
    scorer: ScorerLike,
    target: int | str | None = None,
    groups: Iterable[str] | Mapping[str, str] | None = None,
    *,
    persons: Iterable[str] | Mapping[str, str] | None = None,
    progress: bool = True,
    options: CISOptions | Mapping[str, Any] | None = None,
    stats: StatsOptions | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> CMSResult:
    """Canonical Model Saliency of ``scorer`` over ``images`` (paths or ``H x W x 3`` arrays).

    Args:
        images: photos to explain, streamed (an iterator is fine).
        scorer: a :class:`~facesal_fast.scoring.Scorer`.
        target: class index or name, or ``None``/``"predicted"`` for each image's predicted class.
        groups: one group name per image (e.g. a demographic attribute), a mapping from
            photo names (paths, or file names when no two photos share one) to groups, or
            ``None``. A mapping that names no photo is a ``ValueError``; one that leaves some
            out warns, naming how many and examples.
        persons: who each image shows (one name per image, or a mapping like ``groups``):
            the group statistics count and resample persons, not photos.
        progress: show a progress bar.
        options, **overrides: the CIS options, a :class:`~facesal_fast.core.options.CISOptions`
            or its fields by name (patch, stride, fill, mode, ...), as :class:`~facesal_fast.Audit` takes them.
        stats: how groups are tested: a :class:`~facesal_fast.core.options.StatsOptions` or a
            mapping of its fields (default: bootstrap, 2000 draws, level 0.95, fwer, min_group 10).

    Returns:
        :class:`CMSResult`. Images that fail (unreadable, no face) are skipped with one
        warning that names each failed image and its error.

    Raises:
        ValueError: ``groups`` / ``persons`` does not give one name per image (checked before
            any work when both lengths are known), a mapping names no photo or one line names
            two photos, or no image succeeded.
    """
    groups, persons = _checked_groups(images, groups), _checked_groups(images, persons, "persons")
    audit = Audit(scorer, target=target, options=options, stats=stats, **overrides)
    seen, failed = 0, {}  # failed: photo -> first error (faces="all" may fail several faces of one photo)
    for item in audit.feed(images, groups=groups, progress=progress, persons=persons):
        seen += item.face in (None, 1)  # photos, with faces="all" too
        if item.status == "failed":
            failed.setdefault(item.source, item.error or item.source)
    for names in (groups, persons):
        if isinstance(names, _GroupList) and seen != len(names):
            raise ValueError(
                f"{names.argument} has {len(names)} names but images had {seen} items: give one {names.what} per image"
            )
    if failed:
        warnings.warn(
            f"{len(failed)} of {seen} images failed and were left out of the CMS: " + "; ".join(failed.values()),
            stacklevel=2,
        )
    return audit.cms()
