"""Face preparation: a photo into a scorer's input geometry (face crop, dlib chip or the whole
photo), apart from the model, its photometry and its confidence (:mod:`~facesal_fast.scoring.scorer`).

A :class:`FacePreparation` follows one :class:`~facesal_fast.scoring.preprocessing.Preprocessing`
spec; ``Scorer.prepare`` delegates to the one it holds. A ``"chip"`` crop given only a face box
(or nothing) runs the default MediaPipe aligner for dlib's 5 points; those points are cached per
(image, box) in this module (:func:`chip_points`), so repeated calls on one photo align it once.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING

import cv2
import numpy as np

from facesal_fast.align import default_aligner
from facesal_fast.align.choice import box_iou
from facesal_fast.scoring.geometry import FaceBox, box_tuple, chip_geometry, five_points, to_model_geometry

if TYPE_CHECKING:
    from facesal_fast.scoring.preprocessing import Preprocessing

__all__ = ["SMALL_FACE", "FacePreparation", "chip_points"]

#: With ``crop="none"``, warn when the face box's side is under this fraction of the photo's shorter side.
SMALL_FACE = 0.4
_CHIP_POINTS_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()  # (image key, box) -> 5 points
_CHIP_CACHE_SIZE = 64


class FacePreparation:
    """``image`` -> ``(model input, image -> input affine)`` for one preprocessing ``spec``.

    Attributes:
        spec: the :class:`~facesal_fast.scoring.preprocessing.Preprocessing` it follows
            (``input_size``, ``channels``, ``crop``, ``crop_margin``, ``chip_padding``).
        warned_small_face: whether the small-face warning of ``crop="none"`` was given
            (it is given once per preparation, i.e. once per scorer).
    """

    def __init__(self, spec: Preprocessing):
        self.spec = spec
        self.warned_small_face = False

    def __call__(
        self, image: np.ndarray, face_box: FaceBox | None = None, *, stacklevel: int = 2
    ) -> tuple[np.ndarray, np.ndarray]:
        """``image`` (H x W x 3 uint8 RGB) -> ``(input image h x w x C uint8, affine 2 x 3)``
        (``Scorer.prepare``); ``stacklevel``: where the small-face warning points (2: this
        call's caller).

        With ``crop="face"`` the square crop around ``face_box`` (``(x0, y0, x1, y1)`` or an
        object with ``.face_box``, e.g. an ``AlignedFace``) is resized to ``input_size``;
        with ``crop="none"`` the whole image is (``face_box`` is ignored). The affine maps
        image pixel coordinates to input pixel coordinates (identity when nothing changes).

        With ``crop="chip"`` the input is dlib's aligned chip (side ``input_size``, padding
        ``chip_padding``): the similarity transform of 5 face points (eye corners, nose
        bottom; :func:`~facesal_fast.scoring.geometry.five_points`) to dlib's template.
        ``face_box`` is then best an ``AlignedFace`` (its landmarks are used), or the
        points themselves (``(5, 2)`` in dlib order, 478 MediaPipe or 68 iBUG landmarks).
        Given only a box (as ``cis`` passes ``face.face_box``) or None, the default
        MediaPipe aligner is run on ``image`` and the face overlapping the box most (None:
        the aligner's choice) gives the points; they are cached per (image, box), so
        repeated calls on one photo align it once (:func:`chip_points`).
        """
        spec = self.spec
        if spec.crop == "face" and face_box is None:
            raise ValueError("this scorer crops the face: pass face_box=(x0, y0, x1, y1) or an AlignedFace")
        crop = ("face" if face_box is not None else "none") if spec.crop == "auto" else spec.crop
        image = np.asarray(image)
        if spec.channels == 3 and (image.ndim != 3 or image.shape[2] != 3):
            raise ValueError(f"this scorer takes RGB images (H x W x 3), got shape {image.shape}")
        if spec.crop == "chip":
            points = chip_points(image, face_box)
            if spec.channels == 1 and image.ndim == 3 and image.shape[2] == 3:
                image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
            return chip_geometry(image, points, spec.input_size[0], spec.chip_padding)
        if crop == "none" and face_box is not None:
            self._warn_small_face(image.shape[:2], box_tuple(face_box), stacklevel + 1)
        box = face_box if crop == "face" else None
        return to_model_geometry(image, spec.input_size, spec.channels == 1, box, spec.crop_margin)

    def _warn_small_face(self, shape: tuple[int, int], box: tuple[float, float, float, float], stacklevel: int) -> None:
        """Warn (once) when ``crop="none"`` leaves the face small in the model input; ``stacklevel``
        counted from here."""
        side = max(box[2] - box[0], box[3] - box[1]) / min(shape)
        if side < SMALL_FACE and not self.warned_small_face:
            self.warned_small_face = True
            warnings.warn(
                f"crop='none': the face spans {side:.0%} of the photo's shorter side, so the model sees it small "
                f"(and the canonical patch grows); crop='face' or 'auto' crops the face",
                UserWarning,
                stacklevel=stacklevel,
            )


def chip_points(image: np.ndarray, face: object) -> np.ndarray:
    """dlib's 5 points ``(5, 2)`` of the face in ``image`` for a chip crop: ``face``'s own
    landmarks (an ``AlignedFace``, or ``(5, 2)`` / 478 / 68 points), else the default
    aligner's face overlapping the box ``face`` most (None: the aligner's choice), cached
    per (image, box). ``ValueError`` when no aligned face overlaps the box (IoU < 0.3)."""
    if face is not None and getattr(face, "landmarks", None) is not None:
        return five_points(face)
    if face is not None and not hasattr(face, "face_box"):
        arr = np.asarray(face, dtype=np.float64)
        if arr.ndim == 2:
            return five_points(arr)
    box = None if face is None else box_tuple(face)
    digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()
    key = (image.shape, digest, box)
    if key in _CHIP_POINTS_CACHE:
        _CHIP_POINTS_CACHE.move_to_end(key)
        return _CHIP_POINTS_CACHE[key]
    aligner = default_aligner()
    if box is None:
        chosen = aligner(image)
    else:
        faces = aligner(image, all_faces=True)
        faces = faces if isinstance(faces, list) else [faces]
        overlaps = [box_iou(box, box_tuple(f)) for f in faces]
        best = int(np.argmax(overlaps))
        if overlaps[best] < 0.3:
            raise ValueError(
                f"no aligned face overlaps the box {box} (best IoU {overlaps[best]:.2f}); "
                "pass the AlignedFace or its 5 points to prepare()"
            )
        chosen = faces[best]
    points = five_points(chosen)
    _CHIP_POINTS_CACHE[key] = points
    while len(_CHIP_POINTS_CACHE) > _CHIP_CACHE_SIZE:
        _CHIP_POINTS_CACHE.popitem(last=False)
    return points
