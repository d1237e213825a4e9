"""``occlude_batch`` and ``unoccluded``: model-ready batches of occluded copies of one image.

Shapes: ``image`` ``H x W x C`` (or ``H x W``) uint8 or float32, C in {1, 3}; ``centers``
``K x 2`` ``(x, y)``; output ``K x C x H x W`` (``layout="nchw"``) or ``K x H x W x C``
(``"nhwc"``), float32 or float16, of the kind and device of ``image``.

Everything of the op on the Python side lives here: the checks into its call record
(:class:`OccludeCall`), its kernels (``_C.occlude_batch_cpu`` / ``_C.occlude_batch_cuda`` with a
``_C.OccludeParams`` record), its torch implementation and its self-check case, registered with
:mod:`facesal_fast.ops._dispatch` at the bottom.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import numpy as np
import torch

from facesal_fast import _C
from facesal_fast.ops import _dispatch, _native
from facesal_fast.ops._torch import window_masks
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

__all__ = ["FAR_CENTER", "Fill", "OccludeCall", "occlude_batch", "unoccluded"]


class OccludeCall(NamedTuple):
    """Checked arguments of ``occlude_batch`` (tensors contiguous, on the output's device)."""

    image: torch.Tensor  # H x W x C, uint8 or float32
    centers: torch.Tensor  # K x 2 float32 (x, y)
    patch: int
    fill_image: torch.Tensor | None  # H x W x C float32, or None for fill_const
    fill_const: list[float]  # 3 values (pixel units)
    scale: float
    mean: list[float]  # 3 values
    std: list[float]  # 3 values (1.0 past C)
    nhwc: bool


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
        _OCCLUDE_BATCH(call, out, threads=threads)
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


# ----------------------------------------------------------------------------- implementations
# Each takes the checked record and the output buffer K x C x H x W (or K x H x W x C).


def _params(a: OccludeCall, out: torch.Tensor) -> _C.OccludeParams:
    """``a`` and the output buffer as the kernels' record (keywords: the fields of csrc/occlude.h)."""
    H, W, C = a.image.shape
    return _C.OccludeParams(
        image=a.image.data_ptr(),
        image_u8=a.image.dtype == torch.uint8,
        H=H,
        W=W,
        C=C,
        centers=a.centers.data_ptr(),
        K=a.centers.shape[0],
        patch=a.patch,
        fill_image=0 if a.fill_image is None else a.fill_image.data_ptr(),
        fill_const=a.fill_const,
        scale=float(a.scale),
        mean=a.mean,
        std=a.std,
        nhwc=a.nhwc,
        half_out=out.dtype == torch.float16,
        out=out.data_ptr(),
    )


def _occlude_batch_cpu(a: OccludeCall, out: torch.Tensor, threads: int = 0) -> None:
    """The OpenMP kernel (``threads`` 0: OpenMP's default team) writing into CPU ``out``."""
    _native.call_cpu("occlude_batch", _params(a, out), threads=threads)


def _occlude_batch_cuda(a: OccludeCall, out: torch.Tensor, threads: int = 0) -> None:
    """The CUDA kernel on ``out``'s device and torch's current stream (``threads`` unused)."""
    _native.call_cuda("occlude_batch", _params(a, out), out.device)


def _normalized(a: OccludeCall, v: torch.Tensor) -> torch.Tensor:
    """``(v * scale - mean) * (1 / std)`` in float32, the kernels' arithmetic."""
    C = v.shape[-1]
    f32 = dict(dtype=torch.float32, device=v.device)
    inv_std = 1.0 / torch.tensor(a.std[:C], **f32)
    return (v.float() * torch.tensor(a.scale, **f32) - torch.tensor(a.mean[:C], **f32)) * inv_std


@torch.no_grad()
def _occlude_batch_torch(a: OccludeCall, out: torch.Tensor, threads: int = 0) -> None:
    """The torch implementation on ``out``'s device (``threads`` unused: torch's own)."""
    H, W, C = a.image.shape
    base = _normalized(a, a.image)
    fill = (
        a.fill_image if a.fill_image is not None else torch.tensor(a.fill_const[:C], device=base.device).expand(H, W, C)
    )
    fill = _normalized(a, fill)
    rows, cols = window_masks(a.centers, a.patch, H, W)
    inside = (rows[:, :, None] & cols[:, None, :])[..., None]  # K x H x W x 1
    batch = torch.where(inside, fill, base)  # K x H x W x C
    out.copy_(batch if a.nhwc else batch.permute(0, 3, 1, 2))


def _occlude_batch_selfcheck(kernel: _dispatch.Kernel, device: torch.device) -> float:
    """Max |``kernel`` on ``device`` - CPU kernel| over a deterministic case, in tolerances."""
    H, W, C = 13, 11, 3
    image = torch.from_numpy((np.arange(H * W * C) * 37 % 256).astype(np.uint8).reshape(H, W, C))
    fill = torch.from_numpy((np.arange(H * W * C) * 11 % 255).astype(np.float32).reshape(H, W, C))
    centers = torch.tensor([[0, 0], [10, 12], [-1, 5], [11.5, 6.49], [5, 5], [-1e6, -1e6], [3, -2], [-0.5, 12.5]])
    worst = 0.0
    for fill_image, nhwc, dtype in ((fill, False, torch.float16), (None, True, torch.float32)):
        call = OccludeCall(
            image,
            centers,
            4 if nhwc else 5,
            fill_image,
            [200.0, 100.0, 50.0],
            1 / 255,
            [0.5, 0.4, 0.3],
            [0.2, 0.3, 0.4],
            nhwc,
        )
        shape = (len(centers), H, W, C) if nhwc else (len(centers), C, H, W)
        want = torch.empty(shape, dtype=dtype)
        _occlude_batch_cpu(call, want, threads=1)
        on_device = call._replace(
            **{k: getattr(call, k).to(device) for k in ("image", "centers")},
            fill_image=None if fill_image is None else fill_image.to(device),
        )
        got = torch.empty(shape, dtype=dtype, device=device)
        kernel(on_device, got)
        worst = max(worst, _dispatch.max_diff(got, want, dtype))
    return worst


_OCCLUDE_BATCH = _dispatch.register(
    _dispatch.NativeOp(
        "occlude_batch", _occlude_batch_cpu, _occlude_batch_cuda, _occlude_batch_torch, _occlude_batch_selfcheck
    )
)
