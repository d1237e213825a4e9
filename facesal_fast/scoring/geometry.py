"""Geometric preprocessing of a scorer: image -> model input geometry (crop, resize, grey).

Pixel centres sit at integer coordinates (DESIGN.md). A square crop of side ``S`` whose
top-left pixel is ``(x0, y0)``, resized to ``W x H``, maps an image point ``(x, y)`` to
``u = (x - x0 + 0.5) * W / S - 0.5``, ``v = (y - y0 + 0.5) * H / S - 0.5`` (the convention
of ``cv2.resize``); that 2 x 3 affine is returned with every prepared image.
"""
from __future__ import annotations

from typing import Sequence, Union

import cv2
import numpy as np

__all__ = ["FaceBox", "box_tuple", "square_crop_box", "crop_affine", "to_model_geometry"]

FaceBox = Union[Sequence[float], object]  # (x0, y0, x1, y1) or anything with .face_box


def box_tuple(face_box: FaceBox) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` from a tuple/array or an object with ``.face_box`` (AlignedFace)."""
    box = getattr(face_box, "face_box", face_box)
    try:
        x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError) as err:
        raise ValueError(f"face_box must be (x0, y0, x1, y1) or have .face_box, got {face_box!r}") from err
    if not (np.isfinite([x0, y0, x1, y1]).all() and x1 > x0 and y1 > y0):
        raise ValueError(f"face_box must be finite with x1 > x0 and y1 > y0, got {(x0, y0, x1, y1)}")
    return x0, y0, x1, y1


def square_crop_box(face_box: FaceBox, margin: float) -> tuple[int, int, int]:
    """Integer square ``(x0, y0, side)`` centred on the box, side = box side * (1 + 2 * margin).

    The box side is ``max(width, height)``; ``margin`` is the fraction of it added on
    each side (it may extend past the image; those pixels are filled by replication).
    """
    if margin < 0:
        raise ValueError(f"crop margin must be >= 0, got {margin}")
    x0, y0, x1, y1 = box_tuple(face_box)
    side = max(1, int(round(max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin))))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side


def crop_affine(x0: float, y0: float, side_w: float, side_h: float, out_w: int, out_h: int) -> np.ndarray:
    """2 x 3 float64 affine from image pixels to model-input pixels for a crop + resize."""
    sx, sy = out_w / side_w, out_h / side_h
    return np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5]], dtype=np.float64)


def _crop(image: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Crop ``h x w`` at ``(x0, y0)``, replicating edge pixels outside the image."""
    H, W = image.shape[:2]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y0 + h - H), max(0, x0 + w - W)
    inner = image[max(0, y0) : min(H, y0 + h), max(0, x0) : min(W, x0 + w)]
    if inner.size == 0:
        raise ValueError(f"crop ({x0}, {y0}, {w}x{h}) lies wholly outside the {W}x{H} image")
    if top or bottom or left or right:
        inner = cv2.copyMakeBorder(inner, top, bottom, left, right, cv2.BORDER_REPLICATE)
    return inner.reshape(h, w, -1)


def to_model_geometry(
    image: np.ndarray,
    input_size: tuple[int, int] | None,
    grayscale: bool,
    face_box: FaceBox | None,
    margin: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(input image H x W x C uint8, affine 2 x 3)`` for an ``H x W x 3`` (or 1) uint8 image.

    With a face box the square crop of :func:`square_crop_box` is taken, else the whole
    image; the crop is resized to ``input_size`` ``(H, W)`` (``None``: kept as is) with
    area interpolation when shrinking, bilinear when enlarging. ``grayscale`` converts
    RGB to one channel (ITU-R 601 luma, as ``cv2.COLOR_RGB2GRAY``).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 (or 1) uint8 RGB, got {image.shape} {image.dtype}")
    if grayscale and image.shape[2] == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)[:, :, None]
    if face_box is not None:
        x0, y0, side = square_crop_box(face_box, margin)
        region, (cw, ch) = _crop(image, x0, y0, side, side), (side, side)
    else:
        x0, y0, (ch, cw) = 0, 0, image.shape[:2]
        region = image
    if input_size is None:
        return np.ascontiguousarray(region), crop_affine(x0, y0, cw, ch, cw, ch)
    out_h, out_w = input_size
    if (out_h, out_w) != (ch, cw):
        shrink = out_h * out_w < ch * cw
        region = cv2.resize(region, (out_w, out_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        region = region.reshape(out_h, out_w, -1)
    return np.ascontiguousarray(region), crop_affine(x0, y0, cw, ch, out_w, out_h)
