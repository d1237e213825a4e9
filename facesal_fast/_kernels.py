"""Kernel dispatch behind :mod:`facesal_fast.ops`: native CPU, native CUDA (guarded), torch.

Every op has three implementations taking the same checked call record (arguments already
validated by ``ops``) and the output buffers: the OpenMP kernel (``_C.*_cpu``), the CUDA
kernel (``_C.*_cuda``) and a plain torch implementation that runs on any device.

Guard at run time: the first time a process uses a CUDA kernel on a device it runs a small
deterministic self-check (odd sizes, windows on the borders and off the image, float16 and
float64 outputs, per-map weights) against the CPU kernel. A mismatch, or a kernel that
cannot launch (e.g. a GPU architecture the extension was not compiled for), disables that
CUDA kernel for the rest of the process with one ``RuntimeWarning`` naming the op and the
device; the op then runs the torch implementation on that device (so CUDA tensors work,
with that warning, even where the extension was built without nvcc). ``FACESAL_NO_SELFCHECK=1``
skips the check (benchmarks), trusting the CUDA kernels.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Callable, NamedTuple

import numpy as np
import torch

from facesal_fast import _C

__all__ = ["OccludeCall", "SplatCall", "occlude", "splat", "windows", "native_ok", "SELFCHECK_ENV"]

#: Environment variable that turns the CUDA self-check off ("1").
SELFCHECK_ENV = "FACESAL_NO_SELFCHECK"


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


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


# ----------------------------------------------------------------------------- native kernels


def _occlude_args(a: OccludeCall, out: torch.Tensor) -> tuple:
    H, W, C = a.image.shape
    return (
        a.image.data_ptr(),
        a.image.dtype == torch.uint8,
        H,
        W,
        C,
        a.centers.data_ptr(),
        a.centers.shape[0],
        a.patch,
        0 if a.fill_image is None else a.fill_image.data_ptr(),
        a.fill_const,
        float(a.scale),
        a.mean,
        a.std,
        a.nhwc,
        out.dtype == torch.float16,
        out.data_ptr(),
    )


def _splat_args(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> tuple:
    B, N = a.values.shape
    w = a.weights
    return (
        a.values.data_ptr(),
        B,
        N,
        a.points.data_ptr(),
        0 if w is None else w.data_ptr(),
        w is not None and w.ndim == 2,
        a.patch,
        a.H,
        a.W,
        sums.data_ptr(),
        counts.data_ptr(),
        sums.dtype == torch.float64,
    )


def _occlude_cpu(a: OccludeCall, out: torch.Tensor, threads: int = 0) -> None:
    _C.occlude_cpu(*_occlude_args(a, out), threads)


def _require_cuda_build() -> None:
    if not _C.built_with_cuda():
        raise RuntimeError("facesal_fast was built without CUDA kernels (no nvcc at install time)")


def _occlude_cuda(a: OccludeCall, out: torch.Tensor, threads: int = 0) -> None:
    _require_cuda_build()
    with torch.cuda.device(out.device):
        _C.occlude_cuda(*_occlude_args(a, out), _stream(out.device))


def _splat_cpu(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> None:
    _C.splat_cpu(*_splat_args(a, sums, counts))


def _splat_cuda(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> None:
    _require_cuda_build()
    B = a.values.shape[0]
    tasks = B + (B if a.weights is not None and a.weights.ndim == 2 else 1)
    workspace = torch.empty((tasks, a.H + 1, a.W + 1), dtype=torch.float64, device=sums.device)
    with torch.cuda.device(sums.device):
        _C.splat_cuda(*_splat_args(a, sums, counts), workspace.data_ptr(), _stream(sums.device))


# ----------------------------------------------------------------------------- torch implementations


def windows(points: torch.Tensor, patch: int, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The window rule of ``csrc/common.h`` in torch (any device): ``floor(x + 0.5)`` and the
    off-image margin in float32, as the kernels and the numpy reference compute them.

    Args:
        points: ``N x 2`` centres ``(x, y)``.

    Returns:
        ``(lo N x 2, hi N x 2, valid N)``: inclusive corners ``(x, y)`` (int64) and whether
        the clipped window is non-empty.
    """
    c = torch.floor(points.float() + 0.5).double()
    limit = torch.tensor([W, H], dtype=torch.float64, device=points.device)
    margin = float(np.float32(patch) + np.float32(1.0))
    valid = ((c > -margin) & (c < limit + margin)).all(1)
    c = torch.where(valid[:, None], c, torch.zeros_like(c)).long()
    lo = (c - (patch - 1) // 2).clamp(min=0)
    hi = torch.minimum(c + patch // 2, limit.long() - 1)
    return lo, hi, valid & (lo <= hi).all(1)


def _window_masks(points: torch.Tensor, patch: int, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows N x H, cols N x W) booleans: pixel row / column inside each point's window."""
    lo, hi, valid = windows(points, patch, H, W)
    ys = torch.arange(H, device=points.device)
    xs = torch.arange(W, device=points.device)
    rows = valid[:, None] & (ys >= lo[:, 1:2]) & (ys <= hi[:, 1:2])
    cols = (xs >= lo[:, 0:1]) & (xs <= hi[:, 0:1])
    return rows, cols


def _normalized(a: OccludeCall, v: torch.Tensor) -> torch.Tensor:
    """``(v * scale - mean) * (1 / std)`` in float32, the kernels' arithmetic."""
    C = v.shape[-1]
    f32 = dict(dtype=torch.float32, device=v.device)
    inv_std = 1.0 / torch.tensor(a.std[:C], **f32)
    return (v.float() * torch.tensor(a.scale, **f32) - torch.tensor(a.mean[:C], **f32)) * inv_std


@torch.no_grad()
def _occlude_torch(a: OccludeCall, out: torch.Tensor, threads: int = 0) -> None:
    H, W, C = a.image.shape
    base = _normalized(a, a.image)
    fill = (
        a.fill_image if a.fill_image is not None else torch.tensor(a.fill_const[:C], device=base.device).expand(H, W, C)
    )
    fill = _normalized(a, fill)
    rows, cols = _window_masks(a.centers, a.patch, H, W)
    inside = (rows[:, :, None] & cols[:, None, :])[..., None]  # K x H x W x 1
    batch = torch.where(inside, fill, base)  # K x H x W x C
    out.copy_(batch if a.nhwc else batch.permute(0, 3, 1, 2))


def _task_values(a: SplatCall) -> list[torch.Tensor]:
    """Per task, the float64 amount each point adds: the B sums, then the counts."""
    values, w = a.values.double(), a.weights
    w = torch.ones(values.shape[1], dtype=torch.float64, device=values.device) if w is None else w.double()
    rows = w.expand_as(values)
    return list(values * rows) + (list(w) if w.ndim == 2 else [w])


@torch.no_grad()
def _splat_torch(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> None:
    rows, cols = _window_masks(a.points, a.patch, a.H, a.W)
    rows, cols = rows.double(), cols.double()
    targets = list(sums) + (list(counts) if counts.ndim == 3 else [counts])
    for amount, target in zip(_task_values(a), targets):
        target += ((rows * amount[:, None]).T @ cols).to(target.dtype)  # H x W, a fixed-order matmul


# ----------------------------------------------------------------------------- self-check


def _selfcheck_occlude(kernel: Callable, device: torch.device) -> float:
    """Max |CUDA - CPU| over a deterministic occlusion case (inf if shapes differ)."""
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
        _occlude_cpu(call, want, 1)
        on_device = call._replace(
            **{k: getattr(call, k).to(device) for k in ("image", "centers")},
            fill_image=None if fill_image is None else fill_image.to(device),
        )
        got = torch.empty(shape, dtype=dtype, device=device)
        kernel(on_device, got)
        worst = max(worst, _max_diff(got, want, dtype))
    return worst


def _selfcheck_splat(kernel: Callable, device: torch.device) -> float:
    """Max |CUDA - CPU| over a deterministic splat case (weights per map and per point)."""
    H, W, B = 13, 11, 2
    points = torch.tensor([[0, 0], [10, 12], [-1, 6], [11, 6], [5.5, 6.5], [-1e6, 3], [4, -2], [2.49, 11.5]])
    values = torch.linspace(-3.0, 4.0, B * len(points)).reshape(B, -1)
    weights = torch.linspace(0.25, 1.0, B * len(points)).reshape(B, -1)
    worst = 0.0
    for w, dtype in ((weights, torch.float32), (weights[0], torch.float64), (None, torch.float32)):
        call = SplatCall(values, points, w, 4 if w is None else 5, H, W)
        counts_shape = (B, H, W) if w is not None and w.ndim == 2 else (H, W)
        want = (torch.zeros((B, H, W), dtype=dtype), torch.zeros(counts_shape, dtype=dtype))
        _splat_cpu(call, *want)
        on_device = SplatCall(
            values.to(device), points.to(device), None if w is None else w.to(device), call.patch, H, W
        )
        got = tuple(torch.zeros_like(t, device=device) for t in want)
        kernel(on_device, *got)
        worst = max(worst, *(_max_diff(g, t, dtype) for g, t in zip(got, want)))
    return worst


def _max_diff(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> float:
    """Max |got - want| in units of the tolerance (> 1: mismatch; float16: ~1 ulp allowed)."""
    if got.shape != want.shape:
        return float("inf")
    got, want = got.detach().cpu().double(), want.double()
    tol = 1e-3 * (1 + want.abs()) if dtype == torch.float16 else 1e-5 * (1 + want.abs())
    return float(((got - want).abs() / tol).max()) if want.numel() else 0.0


_SELFCHECKS = {"occlude": _selfcheck_occlude, "splat": _selfcheck_splat}
#: Native kernels guarded by the self-check, per device type.
GUARDED: dict[str, dict[str, Callable]] = {"cuda": {"occlude": _occlude_cuda, "splat": _splat_cuda}}
_verdicts: dict[tuple[str, str], bool] = {}
_lock = threading.Lock()


def _device_key(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def _selfcheck(op: str, device: torch.device) -> bool:
    """Run ``op``'s self-check on ``device``; warn once and return False on a mismatch."""
    try:
        worst = _SELFCHECKS[op](GUARDED[device.type][op], device)
        problem = None if worst <= 1.0 else f"it disagrees with the CPU kernel ({worst:.3g} x the tolerance)"
    except Exception as err:  # a kernel that cannot run here (e.g. no image for this GPU)
        problem = f"it failed: {type(err).__name__}: {err}"
    if problem:
        warnings.warn(
            f"facesal_fast: the native {device.type.upper()} {op} kernel is disabled on {_device_key(device)} for this "
            f"process: {problem}; {op} runs the torch implementation on that device instead",
            RuntimeWarning,
            stacklevel=6,
        )
    return problem is None


def native_ok(op: str, device: torch.device) -> bool:
    """Whether ``op``'s native kernel for ``device`` passed its self-check (run once per process
    and device; always True with ``FACESAL_NO_SELFCHECK=1``)."""
    if os.environ.get(SELFCHECK_ENV, "") == "1":
        return True
    key = (op, _device_key(device))
    with _lock:
        if key not in _verdicts:
            _verdicts[key] = _selfcheck(op, device)
        return _verdicts[key]


def _pick(op: str, device: torch.device, cpu: Callable, fallback: Callable) -> Callable:
    native = GUARDED.get(device.type, {}).get(op)
    if native is None:
        return cpu if device.type == "cpu" else fallback
    return native if native_ok(op, device) else fallback


def occlude(a: OccludeCall, out: torch.Tensor, threads: int = 0) -> None:
    """Write the occluded batch of ``a`` into ``out`` (``K x C x H x W`` or ``K x H x W x C``)
    with the best kernel for ``out``'s device."""
    _pick("occlude", out.device, _occlude_cpu, _occlude_torch)(a, out, threads)


def splat(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> None:
    """Accumulate the splat of ``a`` into ``sums`` (``B x H x W``) and ``counts`` (``H x W``
    or ``B x H x W``) with the best kernel for their device."""
    _pick("splat", sums.device, _splat_cpu, _splat_torch)(a, sums, counts)
