"""Facial region masks on the canonical face and each region's share of a saliency map.

Left/right are the *subject's* (the subject's left eye appears on the right of the canonical
face, as in a frontal photo). Regions are built from Face Mesh landmark contours on the
canonical layout and are disjoint, except ``mouth``, which contains ``upper_lip``,
``lower_lip`` and the opening between them. Priority where they would overlap: eyes,
eyebrows, nose, lips/mouth, jaw (a band along the lower face contour), chin, cheeks,
forehead (above the eye line, temples included). Face pixels in none of them form ``other``
(empty for the shipped layout).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from .canonical import canonical_geometry, canonical_mask

REGION_NAMES: tuple[str, ...] = (
    "left_eye",
    "right_eye",
    "left_eyebrow",
    "right_eyebrow",
    "nose",
    "upper_lip",
    "lower_lip",
    "mouth",
    "left_cheek",
    "right_cheek",
    "forehead",
    "chin",
    "jaw",
)

# Face Mesh landmark contours (ordered polygons).
LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
LEFT_EYEBROW = [276, 283, 282, 295, 285, 300, 293, 334, 296, 336]
RIGHT_EYEBROW = [46, 53, 52, 65, 55, 70, 63, 105, 66, 107]
NOSE = [1, 2, 4, 5, 6, 19, 45, 48, 64, 94, 97, 98, 115, 168, 195, 197, 220, 275, 278, 294, 326, 327, 344, 440]
LIPS_UPPER_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_LOWER_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_LOWER_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
FACE_OVAL = [
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
]


def _shape(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    return int(size[0]), int(size[1])  # (H, W) or an array .shape


def _poly(mask_shape, pts: np.ndarray, hull: bool = False) -> np.ndarray:
    m = np.zeros(mask_shape, np.uint8)
    p = np.round(np.asarray(pts, np.float64) * 16).astype(np.int32)
    if hull:
        p = cv2.convexHull(p)
    cv2.fillPoly(m, [p.reshape(-1, 2)], 1, lineType=cv2.LINE_8, shift=4)
    return m.astype(bool)


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    if r <= 0:
        return m
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(m.astype(np.uint8), k).astype(bool)


@functools.lru_cache(maxsize=8)
def _region_masks(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    h, w = shape
    L = canonical_geometry().layout_pixels(shape)
    s = min(h, w)
    face = canonical_mask(shape) | _poly(shape, L[FACE_OVAL])
    r_eye = max(1, round(0.02 * s))
    out: dict[str, np.ndarray] = {}
    out["left_eye"] = _dilate(_poly(shape, L[LEFT_EYE]), r_eye)
    out["right_eye"] = _dilate(_poly(shape, L[RIGHT_EYE]), r_eye)
    taken = out["left_eye"] | out["right_eye"]
    out["left_eyebrow"] = _dilate(_poly(shape, L[LEFT_EYEBROW], hull=True), max(1, round(0.01 * s))) & ~taken
    out["right_eyebrow"] = _dilate(_poly(shape, L[RIGHT_EYEBROW], hull=True), max(1, round(0.01 * s))) & ~taken
    taken |= out["left_eyebrow"] | out["right_eyebrow"]
    out["nose"] = _poly(shape, L[NOSE], hull=True) & ~taken
    taken |= out["nose"]
    upper = _poly(shape, np.concatenate([L[LIPS_UPPER_OUTER], L[LIPS_UPPER_INNER][::-1]]))
    lower = _poly(shape, np.concatenate([L[LIPS_LOWER_OUTER], L[LIPS_LOWER_INNER][::-1]]))
    mouth = _poly(shape, np.concatenate([L[LIPS_UPPER_OUTER], L[LIPS_LOWER_OUTER][::-1]]))
    out["upper_lip"] = upper & ~taken
    out["lower_lip"] = lower & ~taken & ~upper
    out["mouth"] = (mouth | upper | lower) & ~taken
    taken |= out["mouth"]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # jaw: band along the face contour below the eyes
    eye_y = float(L[[33, 263, 133, 362]][:, 1].mean())
    inner = cv2.erode(
        face.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * round(0.06 * s) + 1,) * 2)
    )
    out["jaw"] = face & ~inner.astype(bool) & (yy > eye_y + 0.05 * s) & ~taken
    taken |= out["jaw"]
    # chin: below the lower lip, between the mouth corners
    lip_bottom = float(L[17, 1])
    x_l, x_r = float(L[61, 0]), float(L[291, 0])
    out["chin"] = face & (yy > lip_bottom + 0.01 * s) & (xx >= x_l) & (xx <= x_r) & ~taken
    taken |= out["chin"]
    # cheeks: below the eye line (eye corners), lateral halves, whatever is left
    cx = float(L[[1, 4, 6, 168]][:, 0].mean())
    band = face & (yy >= eye_y) & ~taken
    out["left_cheek"] = band & (xx > cx)
    out["right_cheek"] = band & (xx <= cx)
    taken |= out["left_cheek"] | out["right_cheek"]
    # forehead: everything above the eye line that is not eyes / eyebrows / nose
    out["forehead"] = face & (yy < eye_y) & ~taken
    for m in out.values():
        m.setflags(write=False)
    return {k: out[k] for k in REGION_NAMES}


def region_masks(size: int | tuple[int, int] = 256) -> dict[str, np.ndarray]:
    """Boolean ``(H_F, W_F)`` mask of each region in :data:`REGION_NAMES` (read-only arrays)."""
    return dict(_region_masks(_shape(size)))


def region_shares(canonical_map: np.ndarray, *, mode: str = "positive", include_other: bool = True) -> dict[str, float]:
    """Each region's share of the saliency mass of a canonical map.

    Args:
        canonical_map: ``(H_F, W_F)`` map (e.g. CIS or CMS), or ``(H_F, W_F, C)`` (summed over C).
        mode: ``"positive"`` (mass of ``max(map, 0)``), ``"abs"`` (of ``|map|``) or ``"signed"``.
        include_other: add ``"other"``: face pixels in no region.
    Returns:
        ``{region: share}`` in :data:`REGION_NAMES` order (then ``"other"``); shares are
        ``mass(region) / mass(whole canonical face)``; all 0 when the face's mass is 0.
        Regions are disjoint except ``mouth`` (= lips + opening), so all shares except
        ``mouth``, plus ``mouth - upper_lip - lower_lip``, sum to 1 in "positive"/"abs" mode.
    """
    m = np.asarray(canonical_map, np.float64)
    if m.ndim == 3:
        m = m.sum(axis=2)
    if m.ndim != 2:
        raise ValueError(f"canonical_map must be (H_F, W_F[, C]), got {np.shape(canonical_map)}")
    if mode == "positive":
        m = np.clip(m, 0, None)
    elif mode == "abs":
        m = np.abs(m)
    elif mode != "signed":
        raise ValueError("mode must be 'positive', 'abs' or 'signed'")
    masks = _region_masks(m.shape)
    face = canonical_mask(m.shape)
    anyreg = np.zeros(m.shape, bool)
    for r in masks.values():
        anyreg |= r
    face = face | anyreg
    total = float(m[face].sum())
    res = {}
    for name in REGION_NAMES:
        res[name] = float(m[masks[name]].sum()) / total if total != 0 else 0.0
    if include_other:
        res["other"] = float(m[face & ~anyreg].sum()) / total if total != 0 else 0.0
    return res
