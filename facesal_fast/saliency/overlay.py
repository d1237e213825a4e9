"""Heat-map pictures of saliency maps."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["colorize", "heat_overlay"]


def colorize(heat: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """``H x W`` map -> ``H x W x 3`` uint8 RGB (JET), scaled so ``vmax`` (default max |map|) is red.

    Negative saliency (occlusion that raised the score) is clipped to 0, as in the paper's figures.
    """
    heat = np.nan_to_num(np.asarray(heat, np.float32))
    top = float(np.abs(heat).max()) if vmax is None else float(vmax)
    scaled = np.clip(heat / top, 0.0, 1.0) if top > 0 else np.zeros_like(heat)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, vmax: float | None = None) -> np.ndarray:
    """``H x W x 3`` uint8: ``heat`` (resized to the image) blended over ``image``."""
    image = np.asarray(image)
    if image.ndim == 2 or image.shape[2] == 1:
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    heat = np.asarray(heat, np.float32)
    if heat.shape != image.shape[:2]:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    color = colorize(heat, vmax)
    weight = alpha * (heat > 0)[..., None]
    return (image.astype(np.float32) * (1 - weight) + color.astype(np.float32) * weight).astype(np.uint8)
