"""Human bounding-box annotations of facial features (sun-teoh-guerzhoy, sections 3-4).

An annotation CSV has a header and the columns ``image, label, x0, y0, x1, y1`` (box
corners in image pixels, pixel centres at integer coordinates, both corners inclusive),
plus an optional ``person`` column naming the individual. Labels are the 11 of the paper
(:data:`LABELS`); common spellings ("eye brows", "mustache", ...) are normalised.

Maps built here:

- :func:`box_heatmap`: how often each pixel lies inside a box (fraction of boxes), and
  :func:`highlight` for its 90th-percentile highlight;
- :func:`person_heatmaps`: the same per individual (all of a person's images share one
  pixel grid), then :func:`facesal_fast.methods.masks.relative_saliency` for relative maps;
- :func:`canonical_box_heatmaps` / :func:`person_canonical_heatmaps`: the box counts
  warped onto the canonical face, so human and model saliency share one grid;
- :func:`label_histogram`: label shares, each individual weighing the same.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

from facesal_fast.methods._common import check_map, to_canonical_map

__all__ = [
    "LABELS",
    "Box",
    "normalise_label",
    "load_annotations",
    "example_annotations_path",
    "box_counts",
    "box_heatmap",
    "highlight",
    "image_heatmaps",
    "person_heatmaps",
    "canonical_box_heatmaps",
    "person_canonical_heatmaps",
    "label_histogram",
]

LABELS = ("beard", "cheek", "chin", "ears", "eyes", "eyebrows", "hairline", "laugh line", "lips", "moustache", "nose")
_ALIASES = {
    "eye brows": "eyebrows",
    "eye brow": "eyebrows",
    "eyebrow": "eyebrows",
    "eye": "eyes",
    "ear": "ears",
    "cheeks": "cheek",
    "laugh lines": "laugh line",
    "laughline": "laugh line",
    "lip": "lips",
    "mouth": "lips",
    "mustache": "moustache",
}
_COLUMNS = ("image", "label", "x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class Box:
    """One annotated box: ``image`` file name, feature ``label``, inclusive pixel corners."""

    image: str
    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    person: str | None = None


def normalise_label(label: str) -> str:
    """Lower-case, single-spaced label with aliases mapped onto :data:`LABELS`."""
    key = " ".join(str(label).strip().lower().replace("_", " ").split())
    return _ALIASES.get(key, key)


def load_annotations(path: str | Path, *, allow_other_labels: bool = False) -> list[Box]:
    """Read an annotation CSV (see module doc).

    Raises:
        ValueError: on missing columns, non-numeric or inverted corners, or a label outside
            :data:`LABELS` (unless ``allow_other_labels``), naming the line.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {list(_COLUMNS)} (+ optional person)")
        boxes = []
        for line, row in enumerate(reader, start=2):
            label = normalise_label(row["label"])
            if label not in LABELS and not allow_other_labels:
                raise ValueError(f"{path}:{line}: label {row['label']!r} is not one of {LABELS}")
            try:
                x0, y0, x1, y1 = (float(row[c]) for c in ("x0", "y0", "x1", "y1"))
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"{path}:{line}: box corners must be numbers, got {[row[c] for c in _COLUMNS[2:]]}"
                ) from err
            if not (np.isfinite([x0, y0, x1, y1]).all() and x1 >= x0 and y1 >= y0):
                raise ValueError(
                    f"{path}:{line}: need finite corners with x1 >= x0 and y1 >= y0, got {(x0, y0, x1, y1)}"
                )
            person = (row.get("person") or "").strip() or None
            boxes.append(Box(row["image"].strip(), label, x0, y0, x1, y1, person))
    return boxes


def example_annotations_path() -> Path:
    """The shipped hand-made annotations of photos in ``deepface-unit`` (see docs/methods.md)."""
    return Path(__file__).resolve().parents[1] / "data" / "annotations" / "deepface-unit-features.csv"


def _shape(shape: Sequence[int]) -> tuple[int, int]:
    H, W = (int(s) for s in shape)
    if H < 1 or W < 1:
        raise ValueError(f"shape must be a positive (H, W), got {tuple(shape)}")
    return H, W


def box_counts(boxes: Iterable[Box], shape: Sequence[int]) -> tuple[np.ndarray, int]:
    """``(H x W`` float64 number of boxes covering each pixel, number of boxes)``."""
    H, W = _shape(shape)
    counts = np.zeros((H + 1, W + 1), np.float64)
    n = 0
    for b in boxes:
        c0, r0 = max(0, int(np.ceil(b.x0))), max(0, int(np.ceil(b.y0)))
        c1, r1 = min(W - 1, int(np.floor(b.x1))), min(H - 1, int(np.floor(b.y1)))
        n += 1
        if c1 >= c0 and r1 >= r0:  # a 2D difference array: +1 inside the box
            counts[r0, c0] += 1
            counts[r0, c1 + 1] -= 1
            counts[r1 + 1, c0] -= 1
            counts[r1 + 1, c1 + 1] += 1
    return counts.cumsum(0).cumsum(1)[:H, :W], n


def box_heatmap(boxes: Iterable[Box], shape: Sequence[int]) -> np.ndarray:
    """``H x W`` float32: fraction of ``boxes`` containing each pixel (0 without boxes)."""
    counts, n = box_counts(boxes, shape)
    return (counts / max(n, 1)).astype(np.float32)


def highlight(heatmap: np.ndarray, percentile: float = 90.0) -> np.ndarray:
    """``H x W`` bool: pixels at or above the ``percentile``-th percentile ``t`` of the map.

    ``arr >= t``, so a box covering more than ``100 - percentile`` % of the image (``t`` is
    then the box's own value) is highlighted. Pixels at the map's minimum are never
    highlighted: when ``t`` equals the minimum (most pixels in no box) the rule is
    ``arr > t``, so a small box highlights itself and not the empty background, and a
    constant map highlights nothing.
    """
    if not 0 <= percentile < 100:
        raise ValueError(f"percentile must be in [0, 100), got {percentile}")
    arr = check_map(heatmap, "heatmap")
    t = np.percentile(arr, percentile)
    return arr > t if t <= arr.min() else arr >= t


def _by_key(boxes: Iterable[Box], key) -> dict[Hashable, list[Box]]:
    out: dict[Hashable, list[Box]] = {}
    for b in boxes:
        out.setdefault(key(b), []).append(b)
    return out


def _person_key(person_of: Mapping[str, Hashable] | None):
    def key(b: Box) -> Hashable:
        if person_of is not None:
            if b.image not in person_of:
                raise ValueError(f"person_of has no entry for image {b.image!r}")
            return person_of[b.image]
        if b.person is None:
            raise ValueError(f"box of {b.image!r} has no person; pass person_of or add a person column")
        return b.person

    return key


def image_heatmaps(boxes: Iterable[Box], shapes: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """``{image: H x W box heatmap}``; ``shapes`` gives each image's ``(H, W)``."""
    out = {}
    for image, group in _by_key(boxes, lambda b: b.image).items():
        if image not in shapes:
            raise ValueError(f"shapes has no entry for image {image!r}")
        out[image] = box_heatmap(group, shapes[image])
    return out


def person_heatmaps(
    boxes: Iterable[Box], shape: Sequence[int], person_of: Mapping[str, Hashable] | None = None
) -> dict[Hashable, np.ndarray]:
    """``{person: H x W heatmap}`` over all boxes of each person's images, which must share
    the pixel grid ``shape`` (e.g. aligned crops); use :func:`person_canonical_heatmaps`
    for photos of different sizes. ``person_of`` maps image -> person (default: the CSV's
    ``person`` column)."""
    return {p: box_heatmap(group, shape) for p, group in _by_key(boxes, _person_key(person_of)).items()}


def canonical_box_heatmaps(boxes: Iterable[Box], faces: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{image: canonical box heatmap}``: the image's box counts warped onto the canonical
    face of ``faces[image]`` (an AlignedFace), divided by the number of its boxes."""
    out = {}
    for image, group in _by_key(boxes, lambda b: b.image).items():
        counts, n = _canonical_counts(group, faces, image)
        out[image] = (counts / n).astype(np.float32)
    return out


def _canonical_counts(group: list[Box], faces: Mapping[str, Any], image: str) -> tuple[np.ndarray, int]:
    if image not in faces:
        raise ValueError(f"faces has no AlignedFace for image {image!r}")
    face = faces[image]
    counts, n = box_counts(group, face.image.shape[:2])
    return to_canonical_map(counts.astype(np.float32), face).astype(np.float64), n


def person_canonical_heatmaps(
    boxes: Iterable[Box], faces: Mapping[str, Any], person_of: Mapping[str, Hashable] | None = None
) -> dict[Hashable, np.ndarray]:
    """``{person: canonical heatmap}``: box counts of all the person's images summed on the
    canonical face, divided by the person's number of boxes."""
    out = {}
    for person, group in _by_key(boxes, _person_key(person_of)).items():
        total, n_total = None, 0
        for image, image_boxes in _by_key(group, lambda b: b.image).items():
            counts, n = _canonical_counts(image_boxes, faces, image)
            total = counts if total is None else total + counts
            n_total += n
        out[person] = (total / n_total).astype(np.float32)
    return out


def label_histogram(
    boxes: Iterable[Box], person_of: Mapping[str, Hashable] | None = None, labels: Sequence[str] = LABELS
) -> dict[str, float]:
    """Share of each label, balanced per individual: every person's label distribution is
    normalised to 1 and the distributions are averaged, so people with more responses do
    not weigh more. Labels outside ``labels`` are ignored. Shares sum to 1."""
    per_person = _by_key([b for b in boxes if b.label in labels], _person_key(person_of))
    if not per_person:
        raise ValueError("no boxes with the requested labels")
    hist = dict.fromkeys(labels, 0.0)
    for group in per_person.values():
        for b in group:
            hist[b.label] += 1.0 / (len(group) * len(per_person))
    return hist
