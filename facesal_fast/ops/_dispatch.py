"""Device dispatch behind the ops: native CPU, native CUDA (guarded), torch.

Every op has three implementations taking the same checked call record and output buffers:
the OpenMP kernel and the CUDA kernel (:mod:`facesal_fast.ops._native`) and a plain torch
implementation that runs on any device (:mod:`facesal_fast.ops._torch`). Each is reached
under the op's own name: :func:`occlude_batch`, :func:`splat_add`.

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
from typing import Callable

import numpy as np
import torch

from facesal_fast.ops import _native, _torch
from facesal_fast.ops._native import OccludeCall, SplatCall

__all__ = ["GUARDED", "SELFCHECK_ENV", "native_ok", "occlude_batch", "splat_add"]

#: Environment variable that turns the CUDA self-check off ("1").
SELFCHECK_ENV = "FACESAL_NO_SELFCHECK"


def _selfcheck_occlude_batch(kernel: Callable, device: torch.device) -> float:
    """Max |device - CPU| over a deterministic occlusion case, in tolerances (inf if shapes differ)."""
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
        _native.occlude_batch_cpu(call, want, 1)
        on_device = call._replace(
            **{k: getattr(call, k).to(device) for k in ("image", "centers")},
            fill_image=None if fill_image is None else fill_image.to(device),
        )
        got = torch.empty(shape, dtype=dtype, device=device)
        kernel(on_device, got)
        worst = max(worst, _max_diff(got, want, dtype))
    return worst


def _selfcheck_splat_add(kernel: Callable, device: torch.device) -> float:
    """Max |device - CPU| over a deterministic splat case (weights per map and per point)."""
    H, W, B = 13, 11, 2
    points = torch.tensor([[0, 0], [10, 12], [-1, 6], [11, 6], [5.5, 6.5], [-1e6, 3], [4, -2], [2.49, 11.5]])
    values = torch.linspace(-3.0, 4.0, B * len(points)).reshape(B, -1)
    weights = torch.linspace(0.25, 1.0, B * len(points)).reshape(B, -1)
    worst = 0.0
    for w, dtype in ((weights, torch.float32), (weights[0], torch.float64), (None, torch.float32)):
        call = SplatCall(values, points, w, 4 if w is None else 5, H, W)
        counts_shape = (B, H, W) if w is not None and w.ndim == 2 else (H, W)
        want = (torch.zeros((B, H, W), dtype=dtype), torch.zeros(counts_shape, dtype=dtype))
        _native.splat_add_cpu(call, *want)
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


_SELFCHECKS = {"occlude_batch": _selfcheck_occlude_batch, "splat_add": _selfcheck_splat_add}
#: Native kernels guarded by the self-check, per device type and op.
GUARDED: dict[str, dict[str, Callable]] = {
    "cuda": {"occlude_batch": _native.occlude_batch_cuda, "splat_add": _native.splat_add_cuda}
}
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


def occlude_batch(a: OccludeCall, out: torch.Tensor, threads: int = 0) -> None:
    """Write the occluded batch of ``a`` into ``out`` (``K x C x H x W`` or ``K x H x W x C``)
    with the best kernel for ``out``'s device."""
    _pick("occlude_batch", out.device, _native.occlude_batch_cpu, _torch.occlude_batch)(a, out, threads)


def splat_add(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> None:
    """Accumulate the splat of ``a`` into ``sums`` (``B x H x W``) and ``counts`` (``H x W``
    or ``B x H x W``) with the best kernel for their device."""
    _pick("splat_add", sums.device, _native.splat_add_cpu, _torch.splat_add)(a, sums, counts)
