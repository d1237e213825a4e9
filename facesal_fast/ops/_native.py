"""The native boundary: checked call records and calls into ``facesal_fast._C`` by name.

One name per op through every layer: :func:`facesal_fast.ops.occlude_batch` ->
:func:`occlude_batch_cpu` / :func:`occlude_batch_cuda` here -> ``_C.occlude_batch_cpu`` /
``_C.occlude_batch_cuda`` -> ``facesal::occlude_batch_cpu`` / ``facesal::occlude_batch_cuda``
(``csrc/``); likewise ``splat_add``. Arrays cross as raw addresses (``data_ptr()``) and every
parameter is passed by keyword into a ``_C.OccludeParams`` / ``_C.SplatParams`` record whose
names are the fields of the C++ structs (``csrc/occlude.h``, ``csrc/splat.h``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from facesal_fast import _C

__all__ = [
    "OccludeCall",
    "SplatCall",
    "has_cuda",
    "occlude_batch_cpu",
    "occlude_batch_cuda",
    "splat_add_cpu",
    "splat_add_cuda",
]


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


class SplatCall(NamedTuple):
    """Checked arguments of ``splat_add`` (tensors contiguous float32, on the outputs' device)."""

    values: torch.Tensor  # B x N
    points: torch.Tensor  # N x 2 (x, y)
    weights: torch.Tensor | None  # N or B x N
    patch: int
    H: int
    W: int


def has_cuda() -> bool:
    """True when the extension was built with CUDA kernels and a CUDA device is usable."""
    return bool(_C.built_with_cuda()) and _C.cuda_device_count() > 0 and torch.cuda.is_available()


def _occlude_params(a: OccludeCall, out: torch.Tensor) -> _C.OccludeParams:
    """``a`` and the output buffer (``K x C x H x W`` or ``K x H x W x C``) as the kernels' record."""
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


def _splat_params(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> _C.SplatParams:
    """``a`` and the output buffers (``B x H x W``; ``H x W`` or ``B x H x W``) as the kernels' record."""
    B, N = a.values.shape
    w = a.weights
    return _C.SplatParams(
        values=a.values.data_ptr(),
        B=B,
        N=N,
        points=a.points.data_ptr(),
        weights=0 if w is None else w.data_ptr(),
        weights_per_batch=w is not None and w.ndim == 2,
        patch=a.patch,
        H=a.H,
        W=a.W,
        sums=sums.data_ptr(),
        counts=counts.data_ptr(),
        out_double=sums.dtype == torch.float64,
    )


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _require_cuda_build() -> None:
    if not _C.built_with_cuda():
        raise RuntimeError("facesal_fast was built without CUDA kernels (no nvcc at install time)")


def occlude_batch_cpu(a: OccludeCall, out: torch.Tensor, threads: int = 0) -> None:
    """The OpenMP kernel (``threads`` 0: OpenMP's default team) writing into CPU ``out``."""
    _C.occlude_batch_cpu(params=_occlude_params(a, out), threads=threads)


def occlude_batch_cuda(a: OccludeCall, out: torch.Tensor, threads: int = 0) -> None:
    """The CUDA kernel on ``out``'s device and torch's current stream (``threads`` unused)."""
    _require_cuda_build()
    with torch.cuda.device(out.device):
        _C.occlude_batch_cuda(params=_occlude_params(a, out), stream=_stream(out.device))


def splat_add_cpu(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> None:
    """The OpenMP kernel accumulating into CPU ``sums`` and ``counts``."""
    _C.splat_add_cpu(params=_splat_params(a, sums, counts))


def splat_add_cuda(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> None:
    """The CUDA kernel on the outputs' device and torch's current stream (float64 workspace:
    one ``(H+1) x (W+1)`` difference image per output map)."""
    _require_cuda_build()
    B = a.values.shape[0]
    tasks = B + (B if a.weights is not None and a.weights.ndim == 2 else 1)
    workspace = torch.empty((tasks, a.H + 1, a.W + 1), dtype=torch.float64, device=sums.device)
    with torch.cuda.device(sums.device):
        _C.splat_add_cuda(
            params=_splat_params(a, sums, counts), workspace=workspace.data_ptr(), stream=_stream(sums.device)
        )
