"""``facesal report`` over a run folder: reads the run (its CMS and tests, failures, settings,
the photos of its gallery) and writes the page that ``facesal_fast.report.html`` renders.

The photos are read as untrusted input: only files inside the photo folder the run recorded,
unchanged since the audit when it recorded their content hash (:func:`_photo_of`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2

from facesal_fast.align import load_image
from facesal_fast.audit.approximation import approximation_line
from facesal_fast.audit.runner import cms_from_store
from facesal_fast.audit.store import RunStore, atomic_write_bytes, file_sha256
from facesal_fast.report.html import audit_sections, gallery, page
from facesal_fast.saliency.stats import STATS_KEYWORDS, build_stats

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from facesal_fast.audit.store import StoredImage
    from facesal_fast.core.options import StatsOptions

__all__ = ["write_report"]


def write_report(
    run: str | Path,
    out: str | Path | None = None,
    gallery: int = 6,
    stats: StatsOptions | Mapping[str, Any] | None = None,
    **statistics: Any,
) -> Path:
    """Write ``run/report.html`` (or ``out``) for a finished or partial run; returns its path.

    ``gallery``: how many of the most and of the least confident results the page shows;
    ``stats``: how groups are tested (a :class:`~facesal_fast.core.options.StatsOptions`, a
    mapping of its fields, or None: the defaults); ``statistics``: its fields (``permutations``,
    ``level``, ``correction``, ``min_group``, ``method``, ``seed``; ``confidence``: the old name
    of ``level``, warns) and the other options of :class:`~facesal_fast.saliency.CMSAccumulator`
    (``bootstrap``, ``bootstrap_size``, ``reliability_target``).
    """
    fields = {k: statistics.pop(k) for k in list(statistics) if k in STATS_KEYWORDS}
    stats = build_stats(stats, fields)
    store = RunStore(run)
    try:
        result = cms_from_store(store, stats=stats, **statistics)
        for message in result.small_groups:
            warnings.warn(f"{message}: the report claims no group difference for it", stacklevel=2)
        sections = audit_sections(
            result,
            store.meta,
            [row.error or "" for row in store.rows("failed")],
            _gallery(store, gallery),
            approximation=approximation_line(store.meta),
            evaluated=(Path(run) / "evaluate" / "evaluate.html").is_file(),
        )
    finally:
        store.close()
    path = Path(out) if out else Path(run) / "report.html"
    atomic_write_bytes(path, page("facesal report", sections))
    return path


def _gallery(store: RunStore, count: int) -> str:
    """The :func:`~facesal_fast.report.html.gallery` of the ``count`` most confident results
    (most first), then the ``count`` least confident ones, each map beside its face crop."""
    rows = sorted(store.rows("done"), key=lambda r: r.base_score)
    picks = rows[-count:][::-1] + [r for r in rows[:count] if r not in rows[-count:]]
    maps = {row.key: store.load(row.key) for row in picks}
    cells = []
    for row in picks:
        arrays = maps[row.key]
        photo, box = _photo_of(store, row), arrays.get("face_box")
        crop = None if photo is None or box is None else _crop(photo, box)
        cells.append((f"{row.key}: {row.target_name or row.target} ({row.base_score:.2f})", arrays["canonical"], crop))
    return gallery(cells)


def _photo_of(store: RunStore, row: StoredImage) -> str | None:
    """The photo of a result, when the report may read it: a file inside the photo folder the
    run recorded (``settings["photos"]``), unchanged when the run recorded its content hash.
    A run folder from elsewhere (its index names any file) so never makes the report embed
    another file of this machine; a run without a photo folder shows its maps alone."""
    folder = store.settings.get("photos")
    if not isinstance(folder, str) or not folder:
        return None
    root, path = os.path.realpath(folder), os.path.realpath(row.source)
    if path == root or os.path.commonpath([root, path]) != root or not os.path.isfile(path):
        return None
    return path if row.sha256 is None or file_sha256(path) == row.sha256 else None


def _crop(source: str, box: np.ndarray) -> np.ndarray | None:
    """The face crop of a photo at 160 x 160 x 3, or None when the photo is gone or unreadable."""
    try:
        photo = load_image(source)
    except Exception:  # noqa: BLE001 - the photo may have moved since the run; the map is shown alone
        return None
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = photo[max(y0, 0) : max(y1, 1), max(x0, 0) : max(x1, 1)]
    return cv2.resize(crop, (160, 160)) if crop.size else None
