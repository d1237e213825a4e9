"""Geometric preprocessing of a scorer: image -> model input geometry (crop, resize, grey).

Pixel centres sit at integer coordinates (docs/architecture.md). A square crop of side ``S`` whose
top-left pixel is ``(x0, y0)``, resized to ``W x H``, maps an image point ``(x, y)`` to
``u = (x - x0 + 0.5) * W / S - 0.5``, ``v = (y - y0 + 0.5) * H / S - 0.5`` (the convention
of ``cv2.resize``); that 2 x 3 affine is returned with every prepared image.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import cv2
import numpy as np

from facesal_fast.align.geometry import similarity_transform

__all__ = [
    "DLIB5_FROM_IBUG68",
    "DLIB5_FROM_MEDIAPIPE",
    "DLIB_TEMPLATE_5",
    "FaceBox",
    "box_tuple",
    "chip_affine",
    "chip_geometry",
    "crop_affine",
    "extract_chip",
    "five_points",
    "square_crop_box",
    "to_model_geometry",
]

FaceBox = Union[Sequence[float], object]  # (x0, y0, x1, y1) or anything with .face_box

#: dlib's 5-point template on the unit square (``get_face_chip_details``), in the order of dlib's
#: 5-point predictor: subject's left eye outer, left eye inner, right eye outer, right eye inner
#: corner, bottom of the nose (subject's left is image right).
DLIB_TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)


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
    :func:`chip_affine` / :func:`extract_chip`).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x C uint8, got {image.shape} {image.dtype}")
    affine = chip_affine(np.asarray(points5, np.float64).reshape(5, 2), size, padding)
    chip = extract_chip(image, affine, size).reshape(size, size, image.shape[2])
    return np.ascontiguousarray(chip), affine


def chip_affine(landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """2x3 affine from image pixels to chip pixels, as dlib's ``get_face_chip_details`` + ``get_mapping_to_chip``.

    ``landmarks (5, 2)`` are ``(x, y)`` image pixels in the order of dlib's
    5-point predictor (see ``DLIB_TEMPLATE_5``). Returns ``A (2, 3)`` float64
    with ``chip_xy = A[:, :2] @ image_xy + A[:, 2]`` (pixel centres at integer
    coordinates), ready for ``cv2.warpAffine``.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    template = (padding + DLIB_TEMPLATE_5) / (2 * padding + 1) * size
    affine = similarity_transform(template, landmarks)  # chip template -> image
    m, t = affine[:, :2], affine[:, 2]
    scale = math.hypot(m[0, 0], m[1, 0])
    rot = m / scale
    centre = m @ np.array([size / 2.0, size / 2.0]) + t
    # dlib's chip rectangle is centred there with corners (size*scale - 1) image pixels apart
    # (centered_drect), and its rotated corners go to chip pixels 0 and size-1.
    k = (size - 1) / (size * scale - 1)
    lin = k * rot.T
    return np.hstack([lin, ((size - 1) / 2.0 - lin @ centre)[:, None]])


def extract_chip(image: np.ndarray, affine: np.ndarray, size: int = 150) -> np.ndarray:
    """Warp ``image (H, W, 3) uint8`` into a ``(size, size, 3) uint8`` chip with ``affine`` (image -> chip).

    Bilinear sampling truncated to uint8, black outside the image. Like dlib, large reductions
    first go down a 2x Gaussian pyramid (``cv2.pyrDown``) so bilinear sampling
    does not alias; the chip pixels therefore differ from dlib's by a few grey
    levels, not by geometry.
    """
    affine = np.asarray(affine, dtype=np.float64)
    image_px_per_chip_px = 1.0 / math.sqrt(abs(np.linalg.det(affine[:, :2])))
    src = image
    while image_px_per_chip_px > 2.0 and min(src.shape[:2]) > 1:
        src = cv2.pyrDown(src)
        image_px_per_chip_px /= 2.0
        affine = affine @ np.diag([2.0, 2.0, 1.0])  # down-sampled x_d = x / 2
    chip = cv2.warpAffine(
        src.astype(np.float32),
        affine,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return np.clip(chip, 0, 255).astype(np.uint8)  # truncation, as dlib's assign_pixel
