"""``splat_add``, ``splat_add_grouped`` and ``normalize_by_counts``: values added over square
windows into maps, and the density-normalised maps; ``splat_mean`` is the two in one call.

Shapes: ``values`` ``B x N``; ``points`` ``N x 2`` ``(x, y)``; ``weights`` ``N`` or ``B x N``;
``sums`` ``B x H x W`` (``G x H x W`` per group); ``counts`` ``H x W``, or ``B x H x W`` with
per-map weights (``G x H x W`` per group); numpy in, numpy out, tensors stay on their device.

Everything of the op on the Python side lives here: the checks into its call record
(:class:`SplatCall`), its kernels (``_C.splat_add_cpu`` / ``_C.splat_add_cuda`` with a
``_C.SplatParams`` record), its torch implementation and its self-check case, registered with
:mod:`facesal_fast.ops._dispatch` at the bottom.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from facesal_fast import _C
from facesal_fast.core.validate import positive_int
from facesal_fast.ops import _dispatch, _native
from facesal_fast.ops._torch import window_masks
from facesal_fast.ops.checks import (
    FLOAT32_MAX,
    Array,
    alloc,
    check_no_overlap,
    check_patch,
    check_size,
    float32,
    restore,
    to_tensor,
)

__all__ = ["SplatCall", "splat_add", "splat_add_grouped", "splat_mean", "normalize_by_counts"]


class SplatCall(NamedTuple):
    """Checked arguments of ``splat_add`` (tensors contiguous float32, on the outputs' device)."""

    values: torch.Tensor  # B x N
    points: torch.Tensor  # N x 2 (x, y)
    weights: torch.Tensor | None  # N or B x N
    patch: int
    H: int
    W: int


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    """The output ``(H, W)``: two positive integers of at most ``MAX_SIZE``."""
    try:
        H, W = shape
    except (TypeError, ValueError) as err:
        raise ValueError(f"shape must be (H, W), got {shape!r}") from err
    for side in (H, W):
        if isinstance(side, bool) or not isinstance(side, (int, np.integer)):
            raise ValueError(f"shape must be (H, W) integers, got {shape!r}")
        if side < 1:
            raise ValueError(f"shape must be positive, got {shape!r}")
    return check_size(H, "shape's H"), check_size(W, "shape's W")


def _check_sum_range(call: SplatCall, dtype: torch.dtype) -> None:
    """Refuse values whose sums could overflow float32 outputs (inf instead of an error)."""
    if dtype != torch.float32 or not call.values.numel():
        return
    w_max = 1.0 if call.weights is None or not call.weights.numel() else float(call.weights.abs().max())
    bound = max(float(call.values.abs().max()), 1.0) * w_max * call.values.shape[1]
    if bound > FLOAT32_MAX:
        raise ValueError(
            f"values x weights summed over {call.values.shape[1]} points can reach {bound:.3g}, beyond float32's "
            f"range: pass float64 out buffers (out=(sums, counts))"
        )


def _check_weights(weights: Array, B: int, N: int, device: torch.device) -> torch.Tensor:
    """``weights`` as float32 ``N`` (per point) or ``B x N`` (per map and point) on ``device``."""
    w = float32(weights, "weights", device, "(N or B x N)")
    if tuple(w.shape) not in ((N,), (B, N)):
        raise ValueError(f"weights must have shape ({N},) or ({B}, {N}), got {tuple(w.shape)}")
    return w


def _check_group_ids(
    group_ids: Array | Sequence[int], num_groups: int | None, values: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, int]:
    """(``B`` int64 group ids on ``device``, the number of groups G): one id in ``[0, G)`` per
    row of ``values``; G is ``num_groups`` or, without it, ``max(group_ids) + 1``."""
    gid = to_tensor(group_ids, "group_ids").to(device)
    if gid.is_floating_point() and not bool((gid == gid.round()).all()):
        raise ValueError("group_ids must be integers")
    gid = gid.long()
    if gid.ndim != 1 or (values.ndim == 2 and gid.shape[0] != values.shape[0]):
        raise ValueError(f"group_ids must have one id per row of values, got shape {tuple(gid.shape)}")
    if num_groups is not None:
        num_groups = check_size(positive_int(num_groups, "num_groups", " or None"), "num_groups")
    G = check_size(
        int(gid.max()) + 1 if num_groups is None and gid.numel() else int(num_groups or 0), "the number of groups"
    )
    if gid.numel() and (int(gid.min()) < 0 or int(gid.max()) >= G):
        raise ValueError(f"group_ids must lie in [0, {G}), got range [{int(gid.min())}, {int(gid.max())}]")
    return gid, G


def _check_out(
    out: tuple[Array, Array], sums_shape: tuple, counts_shape: tuple, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(sums, counts)`` buffers as tensors sharing memory with ``out``, checked to be
    contiguous, float32 or float64 alike, of the given shapes, on ``device`` and apart from
    each other."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ValueError("out must be a (sums, counts) pair")
    for o, name in zip(out, ("out sums", "out counts")):
        if isinstance(o, np.ndarray) and not (o.flags.c_contiguous and o.flags.writeable):
            raise ValueError(f"{name} must be a contiguous, writeable array (it is written in place)")
    sums, counts = (to_tensor(o, name) for o, name in zip(out, ("out sums", "out counts")))
    for t, name, shape in ((sums, "out sums", sums_shape), (counts, "out counts", counts_shape)):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        if t.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{name} must be float32 or float64, got {t.dtype}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (it is written in place)")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device}, expected {device}")
    if sums.dtype != counts.dtype:
        raise ValueError(f"out sums and counts must share a dtype, got {sums.dtype} and {counts.dtype}")
    check_no_overlap(sums, "out sums", {"out counts": counts})
    return sums, counts


def splat_add(
    values: Array,
    points: Array,
    patch: int,
    shape: Sequence[int],
    weights: Array | None = None,
    out: tuple[Array, Array] | None = None,
) -> tuple[Array, Array]:
    """Add each value over the square window around its point.

    ``sums[b, y, x] = sum_n w[n] * values[b, n] * [pixel (x, y) in window(points[n])]`` and
    ``counts[y, x] = sum_n w[n] * [pixel in window(points[n])]`` (``w = 1`` without weights),
    so ``sums / counts`` is the density-normalised map (see :func:`normalize_by_counts`).
    Sums are accumulated in float64 before the final cast; results are deterministic.

    Args:
        values: ``B x N`` float32 (one row per map, e.g. score drops of B images).
        points: ``N x 2`` window centres ``(x, y)`` in output pixels.
        patch: window side in pixels (>= 1).
        shape: output ``(H, W)``.
        weights: optional ``N`` or ``B x N`` weights (e.g. 0/1 visibility per image);
            with ``B x N`` weights the counts are per map, ``B x H x W``.
        out: optional ``(sums, counts)`` float32 or float64 buffers to accumulate into
            (streaming); they are returned. They must not share memory with each other or
            with ``values``, ``points`` or ``weights`` (``ValueError``).

    Returns:
        ``(sums B x H x W, counts H x W or B x H x W)``, float32 unless ``out`` says otherwise.
    """
    as_numpy = isinstance(values, np.ndarray)
    vals = to_tensor(values, "values")
    device = vals.device
    vals = float32(vals, "values", device, "(B x N)")
    if vals.ndim != 2:
        raise ValueError(f"values must be B x N, got shape {tuple(vals.shape)}")
    B, N = (
        check_size(vals.shape[0], "the number of maps (rows of values)"),
        check_size(vals.shape[1], "the number of points"),
    )
    pts = float32(points, "points", device, "(N x 2)")
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] != N:
        raise ValueError(f"points must be N x 2 with N = {N} (columns of values), got shape {tuple(pts.shape)}")
    patch = check_patch(patch)
    H, W = _check_shape(shape)
    w = None if weights is None else _check_weights(weights, B, N, device)
    counts_shape = (B, H, W) if w is not None and w.ndim == 2 else (H, W)
    call = SplatCall(vals, pts, w, patch, H, W)
    if out is None:
        _check_sum_range(call, torch.float32)
        sums = alloc(torch.zeros, (B, H, W), torch.float32, device, "the sums")
        counts = alloc(torch.zeros, counts_shape, torch.float32, device, "the counts")
    else:
        sums, counts = _check_out(out, (B, H, W), counts_shape, device)
        for buffer, name in ((sums, "out sums"), (counts, "out counts")):
            check_no_overlap(buffer, name, {"values": vals, "points": pts, "weights": w})
        _check_sum_range(call, sums.dtype)
    _SPLAT_ADD(call, sums, counts)
    if out is not None:
        return out[0], out[1]
    return restore(sums, as_numpy), restore(counts, as_numpy)


def normalize_by_counts(sums: Array, counts: Array) -> Array:
    """``sums / counts`` where ``counts > 0`` and 0 elsewhere (the CIS rule of docs/architecture.md).

    Args:
        sums: ``... x H x W``.
        counts: broadcastable to ``sums`` (``H x W`` or ``... x H x W``).

    Returns:
        Same shape and kind as ``sums``, in ``sums``' floating dtype.
    """
    as_numpy = isinstance(sums, np.ndarray)
    s, c = to_tensor(sums, "sums"), to_tensor(counts, "counts")
    if not s.is_floating_point():
        s = s.float()
    c = c.to(device=s.device, dtype=s.dtype)
    try:
        torch.broadcast_shapes(s.shape, c.shape)
    except RuntimeError as err:
        raise ValueError(f"counts of shape {tuple(c.shape)} do not broadcast to sums {tuple(s.shape)}") from err
    covered = c > 0
    result = torch.where(covered, s / torch.where(covered, c, torch.ones_like(c)), torch.zeros_like(s))
    return restore(result, as_numpy)


def splat_mean(values: Array, points: Array, patch: int, shape: Sequence[int]) -> tuple[Array, Array]:
    """Each value averaged over the windows covering a pixel, 0 where no window falls:
    :func:`splat_add` then :func:`normalize_by_counts` (the CIS rule of docs/architecture.md;
    with score drops, the occlusion map S or, at canonical points, the CIS).

    Args:
        values: ``(N,)`` (one map) or ``B x N`` (ints and float64 are converted to float32).
        points: ``N x 2`` window centres ``(x, y)`` in output pixels.
        patch: window side in pixels (>= 1).
        shape: output ``(H, W)``.

    Returns:
        ``(maps, counts H x W)``: maps ``H x W`` for ``(N,)`` values, else ``B x H x W``;
        float32, numpy or tensors as ``values``.
    """
    if not isinstance(values, (np.ndarray, torch.Tensor)):
        values = np.asarray(values, np.float32)
    one = values.ndim == 1
    sums, counts = splat_add(values[None] if one else values, points, patch, shape)
    maps = normalize_by_counts(sums, counts)
    return (maps[0] if one else maps), counts


def splat_add_grouped(
    values: Array,
    points: Array,
    patch: int,
    shape: Sequence[int],
    group_ids: Array | Sequence[int],
    num_groups: int | None = None,
    weights: Array | None = None,
    *,
    normalize_each: bool = True,
    out: tuple[Array, Array] | None = None,
) -> tuple[Array, Array]:
    """Per-group sums and counts of splatted maps, for streaming per-group CMS.

    With ``normalize_each`` (default) every map is first density-normalised on its own
    (its CIS), then ``sums[g] = sum of the CIS of the maps in group g`` and
    ``counts[g] = number of those maps that cover each pixel``; the per-group CMS is
    ``sums[g] / n_g`` (mean over images, uncovered pixels counting as 0) or
    ``normalize_by_counts(sums, counts)`` (mean over covering images). Without it,
    ``sums[g]`` and ``counts[g]`` add the raw :func:`splat_add` sums and counts.
    Group reduction runs in a fixed order (float64), so results are deterministic.

    Args:
        values: ``B x N``; points: ``N x 2``; patch, shape, weights: as :func:`splat_add`.
        group_ids: ``B`` integers in ``[0, num_groups)``.
        num_groups: number of groups G (default ``max(group_ids) + 1``).
        out: optional ``(sums G x H x W, counts G x H x W)`` buffers to accumulate into.

    Returns:
        ``(sums G x H x W, counts G x H x W)``, float32 unless ``out`` says otherwise.
    """
    as_numpy = isinstance(values, np.ndarray)
    vals = to_tensor(values, "values")
    device = vals.device
    gid, G = _check_group_ids(group_ids, num_groups, vals, device)
    H, W = _check_shape(shape)
    B = gid.shape[0]
    sums_b, counts_b = splat_add(
        vals,
        points,
        patch,
        (H, W),
        weights,
        out=(
            alloc(torch.zeros, (B, H, W), torch.float64, device, "the per-map sums"),
            alloc(
                torch.zeros,
                (B, H, W) if weights is not None and np.ndim(weights) == 2 else (H, W),
                torch.float64,
                device,
                "the per-map counts",
            ),
        ),
    )
    counts_b = counts_b.expand(B, H, W)
    if normalize_each:
        sums_b, counts_b = normalize_by_counts(sums_b, counts_b), (counts_b > 0).double()
    if out is None:
        sums = alloc(torch.zeros, (G, H, W), torch.float32, device, "the group sums")
        counts = alloc(torch.zeros, (G, H, W), torch.float32, device, "the group counts")
    else:
        sums, counts = _check_out(out, (G, H, W), (G, H, W), device)
    for g in torch.unique(gid).tolist():
        members = gid == g
        sums[g] += sums_b[members].sum(0).to(sums.dtype)
        counts[g] += counts_b[members].sum(0).to(counts.dtype)
    if out is not None:
        return out[0], out[1]
    return restore(sums, as_numpy), restore(counts, as_numpy)


# ----------------------------------------------------------------------------- implementations
# Each takes the checked record and the output buffers sums B x H x W and counts H x W (or
# B x H x W), and adds into them.


def _params(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> _C.SplatParams:
    """``a`` and the output buffers as the kernels' record (keywords: the fields of csrc/splat.h)."""
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


def _splat_add_cpu(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> None:
    """The OpenMP kernel accumulating into CPU ``sums`` and ``counts``."""
    _native.call_cpu("splat_add", _params(a, sums, counts))


def _splat_add_cuda(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> None:
    """The CUDA kernel on the outputs' device and torch's current stream (float64 workspace:
    one ``(H+1) x (W+1)`` difference image per output map)."""
    B = a.values.shape[0]
    tasks = B + (B if a.weights is not None and a.weights.ndim == 2 else 1)
    workspace = torch.empty((tasks, a.H + 1, a.W + 1), dtype=torch.float64, device=sums.device)
    _native.call_cuda("splat_add", _params(a, sums, counts), sums.device, workspace=workspace.data_ptr())


def _task_values(a: SplatCall) -> list[torch.Tensor]:
    """Per task, the float64 amount each point adds: the B sums, then the counts."""
    values, w = a.values.double(), a.weights
    w = torch.ones(values.shape[1], dtype=torch.float64, device=values.device) if w is None else w.double()
    rows = w.expand_as(values)
    return list(values * rows) + (list(w) if w.ndim == 2 else [w])


@torch.no_grad()
def _splat_add_torch(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> None:
    """The torch implementation on the outputs' device (float64 sums, a fixed-order matmul)."""
    rows, cols = window_masks(a.points, a.patch, a.H, a.W)
    rows, cols = rows.double(), cols.double()
    targets = list(sums) + (list(counts) if counts.ndim == 3 else [counts])
    for amount, target in zip(_task_values(a), targets):
        target += ((rows * amount[:, None]).T @ cols).to(target.dtype)  # H x W, a fixed-order matmul


def _splat_add_selfcheck(kernel: _dispatch.Kernel, device: torch.device) -> float:
    """Max |``kernel`` on ``device`` - CPU kernel| over a deterministic case (weights per map
    and per point), in tolerances."""
    H, W, B = 13, 11, 2
    points = torch.tensor([[0, 0], [10, 12], [-1, 6], [11, 6], [5.5, 6.5], [-1e6, 3], [4, -2], [2.49, 11.5]])
    values = torch.linspace(-3.0, 4.0, B * len(points)).reshape(B, -1)
    weights = torch.linspace(0.25, 1.0, B * len(points)).reshape(B, -1)
    worst = 0.0
    for w, dtype in ((weights, torch.float32), (weights[0], torch.float64), (None, torch.float32)):
        call = SplatCall(values, points, w, 4 if w is None else 5, H, W)
        counts_shape = (B, H, W) if w is not None and w.ndim == 2 else (H, W)
        want = (torch.zeros((B, H, W), dtype=dtype), torch.zeros(counts_shape, dtype=dtype))
        _splat_add_cpu(call, *want)
        on_device = SplatCall(
            values.to(device), points.to(device), None if w is None else w.to(device), call.patch, H, W
        )
        got = tuple(torch.zeros_like(t, device=device) for t in want)
        kernel(on_device, *got)
        worst = max(worst, *(_dispatch.max_diff(g, t, dtype) for g, t in zip(got, want)))
    return worst


_SPLAT_ADD = _dispatch.register(
    _dispatch.NativeOp("splat_add", _splat_add_cpu, _splat_add_cuda, _splat_add_torch, _splat_add_selfcheck)
)
