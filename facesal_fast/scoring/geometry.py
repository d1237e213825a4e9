"""Geometric preprocessing of a scorer: image -> model input geometry (crop, resize, grey).

Pixel centres sit at integer coordinates (docs/architecture.md). A square crop of side ``S`` whose
top-left pixel is ``(x0, y0)``, resized to ``W x H``, maps an image point ``(x, y)`` to
``u = (x - x0 + 0.5) * W / S - 0.5``, ``v = (y - y0 + 0.5) * H / S - 0.5`` (the convention
of ``cv2.resize``); that 2 x 3 affine is returned with every prepared image.
"""

from __future__ import annotations

from typing import Sequence, Union

import cv2
import numpy as np

__all__ = [
    "DLIB5_FROM_IBUG68",
    "DLIB5_FROM_MEDIAPIPE",
    "FaceBox",
    "box_tuple",
    "chip_geometry",
    "crop_affine",
    "five_points",
    "square_crop_box",
    "to_model_geometry",
]

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


# ----------------------------------------------------------------------------- landmark chips

#: dlib's 5 points (order of its 5-point predictor: subject's left eye outer, left eye inner,
#: right eye outer, right eye inner corner, bottom of the nose) as MediaPipe Face Mesh indices;
#: a tuple of several indices means their mean. Chosen numerically against dlib's 5-point
#: predictor on the 25 bundled demo photos (docs/identity.md): the inner corners are the
#: midpoints of the upper/lower eyelid points next to the caruncle (MediaPipe's 133/362 sit
#: on the caruncle, 0.027 inter-ocular distances from dlib's points), the nose is 2
#: (subnasale). Mean residual 0.014 inter-ocular distances; chips 1.2 px RMS apart.
DLIB5_FROM_MEDIAPIPE: tuple[tuple[int, ...], ...] = ((263,), (382, 398), (33,), (155, 173), (2,))
#: The same 5 points in the iBUG 300-W 68-point markup (0-based).
DLIB5_FROM_IBUG68: tuple[tuple[int, ...], ...] = ((45,), (42,), (36,), (39,), (33,))


def five_points(face_or_points: object) -> np.ndarray:
    """dlib's 5 points ``(5, 2)`` float64 ``(x, y)`` image pixels of a face.

    Accepts an object with ``.landmarks`` (an ``AlignedFace``) or a landmark array:
    ``(5, 2|3)`` (dlib order, used as is), ``(478|468, 2|3)`` MediaPipe Face Mesh
    (mapped with :data:`DLIB5_FROM_MEDIAPIPE`) or ``(68, 2|3)`` iBUG 68 points.
    """
    points = getattr(face_or_points, "landmarks", face_or_points)
    if points is None:
        raise ValueError("this face has no landmarks; pass its 5 dlib points (5, 2) instead")
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] not in (2, 3):
        raise ValueError(f"landmarks must be L x 2 or L x 3, got shape {points.shape}")
    table = {
        5: tuple((i,) for i in range(5)),
        478: DLIB5_FROM_MEDIAPIPE,
        468: DLIB5_FROM_MEDIAPIPE,
        68: DLIB5_FROM_IBUG68,
    }.get(len(points))
    if table is None:
        raise ValueError(f"cannot find dlib's 5 points in {len(points)} landmarks (need 5, 68, 468 or 478)")
    out = np.stack([points[list(idx), :2].mean(0) for idx in table])
    if not np.isfinite(out).all():
        raise ValueError("the 5 face points are not finite")
    return out


def chip_geometry(
    image: np.ndarray, points5: np.ndarray, size: int = 150, padding: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """dlib-style aligned chip: ``(size x size x C uint8, affine 2 x 3 image -> chip)``.

    The similarity transform of dlib's ``get_face_chip_details(shape, size, padding)``
    from the 5 points (dlib order), sampled like ``dlib.get_face_chip`` (see
    :func:`facesal_fast.models.dlib_resnet.chip_affine` / ``extract_chip``).
    """
    from facesal_fast.models.dlib_resnet import chip_affine, extract_chip  # models import scoring

    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x C uint8, got {image.shape} {image.dtype}")
    affine = chip_affine(np.asarray(points5, np.float64).reshape(5, 2), size, padding)
    chip = extract_chip(image, affine, size).reshape(size, size, image.shape[2])
    return np.ascontiguousarray(chip), affine
