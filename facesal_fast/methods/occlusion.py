"""Plain occlusion saliency in image space (the map S before canonicalisation).

``S(n) = phi(I, c) - phi(I with a patch x patch window at centre n, c)`` over a stride grid
of centres; every drop is spread over its window and divided by the number of windows
covering each pixel (``ops.splat_mean``, the CIS rule of docs/architecture.md, here in
image pixels). All occluded images come from one batched
``ops.occlude_batch`` call (model path) or from ``Scorer.score_occluded`` (scorer path).
Arbabzadah et al. occlude with the subject's skin colour (:func:`skin_colour`) to avoid
strong artificial edges.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import torch

from facesal_fast import ops
from facesal_fast.core.validate import positive_int
from facesal_fast.methods._common import check_logits, check_target, eval_mode

__all__ = [
    "grid_centers",
    "input_occlusion",
    "occlusion",
    "skin_colour",
    "to_photo",
]


def grid_centers(shape: Sequence[int], stride: int) -> np.ndarray:
    """``K x 2`` float32 ``(x, y)`` centres at ``stride // 2, stride // 2 + stride, ...`` per axis."""
    positive_int(stride, "stride")
    H, W = (int(s) for s in shape)
    ys, xs = np.meshgrid(np.arange(stride // 2, H, stride), np.arange(stride // 2, W, stride), indexing="ij")
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


def _confidence(logits: torch.Tensor, target: int, confidence: str) -> torch.Tensor:
    if confidence == "softmax":
        return torch.softmax(logits.float(), dim=1)[:, target]
    return logits[:, target].float()


def occlusion(
    model: torch.nn.Module,
    image: np.ndarray,
    target: int,
    *,
    patch: int = 8,
    stride: int = 4,
    fill: Any = "black",
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    scale: float = 1.0 / 255.0,
    confidence: str = "softmax",
    batch_size: int = 256,
) -> np.ndarray:
    """Occlusion map S of a torch model in the pixels of ``image``.

    Args:
        model: ``N x C x H x W`` normalised input -> ``N x num_classes`` logits.
        image: ``H x W x C`` uint8 model-ready geometry (C = the model's channels).
        target: class index.
        patch, stride: window side and grid step in pixels.
        fill: as ``ops.occlude_batch`` (``"black"``, ``"mean"``, ``"blur"``, a colour such
            as ``skin_colour(image)``, or a fill image).
        mean, std, scale: the model's normalisation ``(v * scale - mean) / std``.
        confidence: ``"softmax"`` probability or raw ``"logit"`` of ``target``.
        batch_size: occluded images per forward pass.

    Returns:
        ``H x W`` float32 (positive where occluding lowers the confidence).
    """
    if confidence not in ("softmax", "logit"):
        raise ValueError(f"confidence must be 'softmax' or 'logit', got {confidence!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    img = np.asarray(image)
    if img.ndim != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be H x W x C uint8, got {img.shape} {img.dtype}")
    centers = grid_centers(img.shape[:2], stride)
    norm = dict(mean=mean, std=std, scale=scale)
    batch = torch.from_numpy(ops.occlude_batch(img, centers, patch, fill, **norm))  # K x C x H x W
    base_input = torch.from_numpy(ops.unoccluded(img, **norm))
    with eval_mode(model), torch.no_grad():
        t = check_target(target, check_logits(model(base_input)).shape[1])
        base = _confidence(model(base_input), t, confidence)[0]
        scores = torch.cat(
            [_confidence(model(batch[lo : lo + batch_size]), t, confidence) for lo in range(0, len(batch), batch_size)]
        )
    return ops.splat_mean((base - scores).numpy(), centers, patch, img.shape[:2])[0]


def input_occlusion(
    scorer: Any,
    input_image: np.ndarray,
    target: int | str | None,
    *,
    patch: int = 8,
    stride: int = 4,
    fill: Any = "black",
) -> np.ndarray:
    """Occlusion map S of a :class:`facesal_fast.scoring.Scorer` in its input geometry.

    ``input_image`` (``h x w x C`` uint8, prepared by the scorer) is occluded on a grid of
    step ``stride`` with ``patch`` windows (input pixels) and scored; a colour ``fill`` is
    given in RGB and converted to grey for a grey model.

    Returns:
        ``h x w`` float32 (positive where occluding lowers the confidence).
    """
    if not isinstance(fill, str) and np.ndim(fill) == 1 and np.size(fill) == 3 and input_image.shape[2] == 1:
        fill = float(np.dot(np.asarray(fill, np.float64), [0.299, 0.587, 0.114]))
    centers = grid_centers(input_image.shape[:2], stride)
    base = scorer.base_score(input_image, target)
    drops = base - np.asarray(scorer.score_occluded(input_image, centers, patch, fill, target), np.float32)
    return ops.splat_mean(drops, centers, patch, input_image.shape[:2])[0]


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
