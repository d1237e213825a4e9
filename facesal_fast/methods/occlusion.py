"""Plain occlusion saliency in image space (the map S before canonicalisation).

``S(n) = phi(I, c) - phi(I with a patch x patch window at centre n, c)`` over a grid of
centres ``step`` pixels apart; every drop is spread over its window and divided by the
number of windows covering each pixel (``ops.splat_mean``, the CIS rule of
docs/architecture.md, here in image pixels). Arbabzadah et al. occlude with the subject's
skin colour (:func:`skin_colour`) to avoid strong artificial edges.

:func:`occlusion` is the one entry point: of a :class:`facesal_fast.scoring.Scorer` (its
``score_occluded``) or of a torch module (all occluded images from one batched
``ops.occlude_batch`` call, the confidence of :mod:`facesal_fast.scoring.confidence`). The
registry's ``"occlusion"`` and ``"occlusion-skin"`` call it; ``input_occlusion`` is its
deprecated former scorer-only name. The CIS's occlusion of correspondence points
(:func:`facesal_fast.saliency.cis.occlusion_drops`) is not an image map: it scores the windows
at given points, which the canonical splat then spreads.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from facesal_fast import ops
from facesal_fast.core.renamed import renamed_keywords
from facesal_fast.core.validate import positive_int
from facesal_fast.methods._common import check_logits, check_target, eval_mode
from facesal_fast.scoring.confidence import class_confidence

__all__ = [
    "grid_centers",
    "input_occlusion",
    "occlusion",
    "skin_colour",
    "to_photo",
]

#: Occluded images per forward pass of a torch module (a Scorer has its own batch size).
MODULE_BATCH_SIZE = 256


@renamed_keywords(stride="step")
def grid_centers(shape: Sequence[int], step: int) -> np.ndarray:
    """``K x 2`` float32 ``(x, y)`` centres at ``step // 2, step // 2 + step, ...`` per axis
    of an ``(H, W)`` image (``stride=``: the former name of ``step``, deprecated)."""
    positive_int(step, "step")
    H, W = (int(s) for s in shape)
    ys, xs = np.meshgrid(np.arange(step // 2, H, step), np.arange(step // 2, W, step), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def skin_colour(image: np.ndarray, face_box: Sequence[float] | None = None) -> np.ndarray:
    """Median RGB colour of the skin pixels of the face, in pixel units, shape ``(3,)``.

    Skin pixels are those of the central cheek/nose band of ``face_box`` (middle 60% of
    the width, 40%..80% of the height; the whole image without a box) inside the usual
    YCrCb skin range (133 <= Cr <= 173, 77 <= Cb <= 127). When fewer than 20 pixels
    qualify, the median of the whole band is used.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8 RGB, got {img.shape} {img.dtype}")
    H, W = img.shape[:2]
    if face_box is None:
        band = img
    else:
        x0, y0, x1, y1 = (float(v) for v in face_box)
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"face_box must have x1 > x0 and y1 > y0, got {tuple(face_box)}")
        bx0, bx1 = int(np.clip(x0 + 0.2 * (x1 - x0), 0, W - 1)), int(np.clip(x0 + 0.8 * (x1 - x0), 1, W))
        by0, by1 = int(np.clip(y0 + 0.4 * (y1 - y0), 0, H - 1)), int(np.clip(y0 + 0.8 * (y1 - y0), 1, H))
        band = img[by0 : max(by1, by0 + 1), bx0 : max(bx1, bx0 + 1)]
    pixels = band.reshape(-1, 3)
    ycrcb = cv2.cvtColor(np.ascontiguousarray(band), cv2.COLOR_RGB2YCrCb).reshape(-1, 3)
    skin = (ycrcb[:, 1] >= 133) & (ycrcb[:, 1] <= 173) & (ycrcb[:, 2] >= 77) & (ycrcb[:, 2] <= 127)
    chosen = pixels[skin] if skin.sum() >= 20 else pixels
    return np.median(chosen, axis=0).astype(np.float64)


class _ModuleScores:
    """A torch module scored the way :func:`occlusion` scores a Scorer (``base_score``,
    ``score_occluded``): inputs normalised ``(v * scale - mean) / std`` by the occlusion
    kernel, every occluded copy made by one ``ops.occlude_batch`` call, forward passes of
    ``batch_size`` images, the class confidence of :func:`facesal_fast.scoring.confidence.class_confidence`.

    Args:
        model: ``N x C x h x w`` normalised input -> ``N x num_classes`` logits.
        mean, std, scale: the model's normalisation.
        confidence: ``"softmax"`` probability or raw ``"logit"`` of the target.
        batch_size: occluded images per forward pass.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        scale: float = 1.0 / 255.0,
        confidence: str = "softmax",
        batch_size: int = MODULE_BATCH_SIZE,
    ) -> None:
        class_confidence(0, confidence)  # an unknown confidence is a ValueError before any forward pass
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.confidence, self.batch_size = model, confidence, batch_size
        self.norm = dict(mean=mean, std=std, scale=scale)

    def base_score(self, image: np.ndarray, target: int) -> float:
        """phi(I, c) of the unoccluded ``h x w x C`` uint8 ``image`` (``target``: a class index)."""
        with eval_mode(self.model), torch.no_grad():
            logits = check_logits(self.model(torch.from_numpy(ops.unoccluded(image, **self.norm))))
            phi = class_confidence(check_target(target, logits.shape[1]), self.confidence)
            return float(phi(logits)[0])

    def score_occluded(self, image: np.ndarray, centers: np.ndarray, patch: int, fill: Any, target: int) -> np.ndarray:
        """phi of ``image`` with a ``patch`` window at each of the ``K x 2`` ``centers`` -> ``(K,)`` float32."""
        batch = torch.from_numpy(ops.occlude_batch(image, centers, patch, fill, **self.norm))  # K x C x h x w
        with eval_mode(self.model), torch.no_grad():
            phi = class_confidence(target, self.confidence)
            size = self.batch_size
            scores = torch.cat([phi(self.model(batch[lo : lo + size])) for lo in range(0, len(batch), size)])
        return scores.numpy()


@renamed_keywords(stride="step", model="scorer_or_model")
def occlusion(
    scorer_or_model: Any,
    image: np.ndarray,
    target: int | str | None,
    *,
    patch: int = 8,
    step: int = 4,
    fill: Any = "black",
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    scale: float = 1.0 / 255.0,
    confidence: str = "softmax",
    batch_size: int = MODULE_BATCH_SIZE,
) -> np.ndarray:
    """Occlusion map S in the pixels of ``image``: the one image-space occlusion.

    Args:
        scorer_or_model: a :class:`facesal_fast.scoring.Scorer` (anything with its
            ``base_score`` and ``score_occluded``; ``image`` is then in its input geometry, as
            ``Scorer.prepare`` returns it, scored with the scorer's own normalisation,
            confidence and batch size) or a torch module (``N x C x h x w`` normalised input
            -> ``N x num_classes`` logits; every occluded copy made by one ``ops.occlude_batch``
            call, scored with ``mean``, ``std``, ``scale``, ``confidence`` and ``batch_size``,
            which a scorer ignores).
        image: ``h x w x C`` uint8 model-ready geometry (C = the model's channels).
        target: class index (a name, or None for the predicted class, with a scorer).
        patch, step: window side and grid step in pixels (``stride=``: the former name of
            ``step``, deprecated; ``model=`` likewise of ``scorer_or_model``).
        fill: as ``ops.occlude_batch`` (``"black"``, ``"mean"``, ``"blur"``, a colour such
            as ``skin_colour(image)``, or a fill image); an RGB colour is made grey for a
            one-channel ``image``.
        mean, std, scale: the module's normalisation ``(v * scale - mean) / std``.
        confidence: ``"softmax"`` probability or raw ``"logit"`` of ``target`` (a module's).
        batch_size: occluded images per forward pass (a module's).

    Returns:
        ``h x w`` float32 (positive where occluding lowers the confidence).
    """
    scores = scorer_or_model
    if isinstance(scorer_or_model, torch.nn.Module):
        image = np.asarray(image)
        if image.ndim != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be H x W x C uint8, got {image.shape} {image.dtype}")
        norm = dict(mean=mean, std=std, scale=scale)
        scores = _ModuleScores(scorer_or_model, **norm, confidence=confidence, batch_size=batch_size)
    if not isinstance(fill, str) and np.ndim(fill) == 1 and np.size(fill) == 3 and image.shape[2] == 1:
        fill = float(np.dot(np.asarray(fill, np.float64), [0.299, 0.587, 0.114]))
    centers = grid_centers(image.shape[:2], step)
    base = scores.base_score(image, target)
    drops = base - np.asarray(scores.score_occluded(image, centers, patch, fill, target), np.float32)
    return ops.splat_mean(drops, centers, patch, image.shape[:2])[0]


def input_occlusion(
    scorer: Any,
    input_image: np.ndarray,
    target: int | str | None,
    *,
    patch: int = 8,
    stride: int = 4,
    fill: Any = "black",
) -> np.ndarray:
    """Deprecated (one release): ``occlusion(scorer, input_image, target, patch=, step=, fill=)``."""
    warnings.warn(
        "input_occlusion is now occlusion(scorer, ...) (stride= is step=); the old name goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return occlusion(scorer, input_image, target, patch=patch, step=stride, fill=fill)


def to_photo(input_map: np.ndarray, affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Warp a model-input ``h x w`` map onto the photo (``shape`` ``(H, W)``) through the
    inverse of the scorer's image -> input ``affine`` (2 x 3); 0 outside the crop."""
    H, W = (int(s) for s in shape)
    return cv2.warpAffine(
        np.asarray(input_map, np.float32),
        np.asarray(affine, np.float64),
        (W, H),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    ).astype(np.float32)
