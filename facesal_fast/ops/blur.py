"""Gaussian blur of an image, the fill of ``occlude_batch(..., fill="blur")``.

Shapes: ``H x W x C`` float32 in, ``H x W x C`` float32 out, on the image's device.
"""

from __future__ import annotations

import torch
from torch.nn import functional

__all__ = ["gaussian_blur"]


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an ``H x W x C`` float32 image, reflect padding.

    The kernel reaches ``3 sigma`` and is cut to the image (renormalised), so a narrow
    image is blurred along its short side with what fits."""
    radius = min(max(1, int(round(3 * sigma))), max(image.shape[:2]))  # wider is cut off below anyway
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=image.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    chw = image.permute(2, 0, 1).unsqueeze(1)  # C x 1 x H x W
    pad_w, pad_h = min(radius, image.shape[1] - 1), min(radius, image.shape[0] - 1)
    k_w = kernel[radius - pad_w : radius + pad_w + 1].view(1, 1, 1, -1)
    k_h = kernel[radius - pad_h : radius + pad_h + 1].view(1, 1, -1, 1)
    chw = functional.conv2d(
        functional.pad(chw, (pad_w, pad_w, 0, 0), mode="reflect" if pad_w else "replicate"), k_w / k_w.sum()
    )
    chw = functional.conv2d(
        functional.pad(chw, (0, 0, pad_h, pad_h), mode="reflect" if pad_h else "replicate"), k_h / k_h.sum()
    )
    return chw.squeeze(1).permute(1, 2, 0).contiguous()
