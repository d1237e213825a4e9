"""``occlude_batch`` and ``unoccluded``: model-ready batches of occluded copies of one image.

Shapes: ``image`` ``H x W x C`` (or ``H x W``) uint8 or float32, C in {1, 3}; ``centers``
``K x 2`` ``(x, y)``; output ``K x C x H x W`` (``layout="nchw"``) or ``K x H x W x C``
(``"nhwc"``), float32 or float16, of the kind and device of ``image``.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

from facesal_fast.ops import _dispatch
from facesal_fast.ops._native import OccludeCall
from facesal_fast.ops.blur import gaussian_blur
from facesal_fast.ops.checks import (
    FLOAT16_MAX,
    FLOAT32_MAX,
    Array,
    alloc,
    check_finite,
    check_patch,
    check_size,
    check_threads,
    float32,
    per_channel,
    positive_float,
    restore,
    to_tensor,
)

Fill = Union[str, float, Sequence[float], Array]

#: An occlusion centre this far off any image: its window is empty, the copy is the image.
FAR_CENTER = -1.0e6

__all__ = ["FAR_CENTER", "Fill", "occlude_batch", "unoccluded"]


def _fill_arguments(fill: Fill, image: torch.Tensor, blur_sigma: float) -> tuple[torch.Tensor | None, list[float]]:
    """(fill image H x W x C float32 or None, per-channel constant fill)."""
    H, W, C = image.shape
    is_array = isinstance(fill, (np.ndarray, torch.Tensor))
    if not H * W and (fill in ("mean", "blur") if isinstance(fill, str) else is_array and np.ndim(fill) >= 2):
        what = repr(fill) if isinstance(fill, str) else "image"
        raise ValueError(f"fill {what}: the image is empty ({H} x {W} px), there is nothing to fill from")
    if isinstance(fill, str):
        if fill == "black":
            return None, [0.0, 0.0, 0.0]
        if fill == "mean":
            return None, per_channel(image.double().mean(dim=(0, 1)).cpu().numpy(), C, "fill")
        if fill == "blur":
            sigma = positive_float(blur_sigma, "blur_sigma")
            return gaussian_blur(image.float(), sigma), [0.0, 0.0, 0.0]
        raise ValueError(f"fill must be 'black', 'mean', 'blur', a colour or an image, got {fill!r}")
    if is_array and np.ndim(fill) >= 2:
        fill_image = float32(fill, "fill", image.device, "(H x W x C image)")
        if fill_image.ndim == 2:
            fill_image = fill_image.unsqueeze(-1)
        if tuple(fill_image.shape) != (H, W, C):
            raise ValueError(f"fill image must have the image's shape {(H, W, C)}, got {tuple(fill_image.shape)}")
        return fill_image, [0.0, 0.0, 0.0]
    return None, per_channel(fill, C, "fill")


def _output_dtype(dtype: str | np.dtype | torch.dtype) -> torch.dtype:
    names = {"float32": torch.float32, "float16": torch.float16, "half": torch.float16}
    if isinstance(dtype, str) and dtype in names:
        return names[dtype]
    if dtype in (np.float32, torch.float32) or (isinstance(dtype, np.dtype) and dtype == np.float32):
        return torch.float32
    if dtype in (np.float16, torch.float16) or (isinstance(dtype, np.dtype) and dtype == np.float16):
        return torch.float16
    raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")


def _check_output_range(call: OccludeCall, C: int, dtype: torch.dtype) -> None:
    """Refuse ``mean`` / ``std`` / ``scale`` that would normalise some pixel or fill value to
    a number the output dtype cannot hold (inf instead of an error, e.g. ``std=1e-300``)."""
    img = call.image
    v_max = 255.0 if img.dtype == torch.uint8 else float(img.abs().max()) if img.numel() else 0.0
    if call.fill_image is not None:
        v_max = max(v_max, float(call.fill_image.abs().max()))
    v_max = max([v_max] + [abs(f) for f in call.fill_const[:C]])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # float32 as the kernels see them
        scale, mean, std = np.float32(call.scale), np.float32(call.mean[:C]), np.float32(call.std[:C])
        bound = float((v_max * np.float64(scale) + np.abs(mean).astype(np.float64)).max() * (np.float32(1) / std).max())
    limit = FLOAT16_MAX if dtype == torch.float16 else FLOAT32_MAX
    if not bound <= limit:
        name = "float16" if dtype == torch.float16 else "float32"
        raise ValueError(
            f"mean, std and scale normalise values up to {bound:.3g}, beyond {name}'s range ({limit:.5g}): "
            f"check std (too small?) and scale{' or use dtype float32' if name == 'float16' else ''}"
        )


def _check_image(image: Array) -> tuple[torch.Tensor, bool]:
    as_numpy = isinstance(image, np.ndarray)
    t = to_tensor(image, "image")
    if t.ndim == 2:
        t = t.unsqueeze(-1)
    if t.ndim != 3 or t.shape[2] not in (1, 3):
        raise ValueError(f"image must be H x W x C with C in {{1, 3}} (or H x W), got shape {tuple(t.shape)}")
    if t.dtype not in (torch.uint8, torch.float32):
        raise ValueError(f"image must be uint8 or float32, got {t.dtype}")
    check_finite(t, "image")
    return t.contiguous(), as_numpy


def _check_normalization(
    mean: float | Sequence[float], std: float | Sequence[float], scale: float, C: int
) -> tuple[list[float], list[float], float]:
    """(mean, std, scale) as the kernels take them: 3 values each, std 1.0 past ``C``."""
    mean_c, std_c = per_channel(mean, C, "mean"), per_channel(std, C, "std")
    if any(s <= 0 for s in std_c[:C]):
        raise ValueError(f"std must be positive, got {std_c[:C]}")
    return mean_c, [s if i < C else 1.0 for i, s in enumerate(std_c)], positive_float(scale, "scale")


def occlude_batch(
    image: Array,
    centers: Array,
    patch: int,
    fill: Fill = "black",
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    *,
    scale: float = 1.0 / 255.0,
    layout: str = "nchw",
    dtype: str | np.dtype | torch.dtype = "float32",
    blur_sigma: float = 5.0,
    threads: int | None = None,
) -> Array:
    """K model-ready copies of ``image``, each with one square window replaced by ``fill``.

    Args:
        image: ``H x W x C`` (or ``H x W``) uint8 or float32 in pixel units, C in {1, 3}.
        centers: ``K x 2`` window centres ``(x, y)`` in pixels; centres off the image
            (partly or wholly) clip the window, so a wholly outside centre occludes nothing.
        patch: window side in pixels (>= 1).
        fill: ``"black"`` (0), ``"mean"`` (the image's mean colour), ``"blur"`` (a Gaussian
            blurred copy, ``blur_sigma`` pixels), a number or per-channel colour in pixel
            units (e.g. a skin colour), or a fill image of the image's shape.
        mean, std: per-channel normalisation; output = ``(v * scale - mean) / std``.
        scale: pixel scale applied before normalisation (1/255 for 0..255 images).
        layout: ``"nchw"`` -> ``K x C x H x W``; ``"nhwc"`` -> ``K x H x W x C``.
        dtype: float32 or float16 output.
        threads: CPU threads (default OpenMP's, at most :data:`~facesal_fast.ops.MAX_THREADS`
            = 4 x the cores, never more than K); 1 when the copies are made while inference
            runs on the other cores (the scorer's producer thread).

    Returns:
        The batch, of the same kind (numpy / torch) and device as ``image``.
    """
    img, as_numpy = _check_image(image)
    H, W, C = img.shape
    check_size(max(H, W), "the image's height and width")
    patch = check_patch(patch)
    threads = check_threads(threads)
    pts = float32(centers, "centers", img.device, "(K x 2)")
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"centers must be K x 2 (x, y), got shape {tuple(pts.shape)}")
    K = check_size(pts.shape[0], "the number of centers")
    if layout not in ("nchw", "nhwc"):
        raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
    out_dtype = _output_dtype(dtype)
    mean_c, std_c, scale = _check_normalization(mean, std, scale, C)
    fill_image, fill_const = _fill_arguments(fill, img, blur_sigma)
    call = OccludeCall(img, pts, patch, fill_image, fill_const, scale, mean_c, std_c, layout == "nhwc")
    _check_output_range(call, C, out_dtype)
    shape = (K, C, H, W) if layout == "nchw" else (K, H, W, C)
    out = alloc(torch.empty, shape, out_dtype, img.device, "the occluded batch")
    if K and H and W:
        _dispatch.occlude_batch(call, out, threads)
    return restore(out, as_numpy)


def unoccluded(
    image: Array,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    *,
    scale: float = 1.0 / 255.0,
    layout: str = "nchw",
    dtype: str | np.dtype | torch.dtype = "float32",
) -> Array:
    """``image`` itself as a model-ready batch of one (``1 x C x H x W``, or ``1 x H x W x C``),
    normalised by the same kernel as :func:`occlude_batch`'s copies, so that the unoccluded
    score and the occluded ones differ only by the window. Arguments as :func:`occlude_batch`."""
    centers = np.full((1, 2), FAR_CENTER, np.float32)
    return occlude_batch(image, centers, 1, "black", mean, std, scale=scale, layout=layout, dtype=dtype)
