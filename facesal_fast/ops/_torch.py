"""Plain torch implementations of the ops, on any device: the fallback where a native kernel
is missing or failed its self-check (see :mod:`facesal_fast.ops._dispatch`).

They take the same checked call records and output buffers as the native kernels
(:mod:`facesal_fast.ops._native`) and follow the same arithmetic: the window rule of
``csrc/common.h`` in float32, normalisation as ``(v * scale - mean) * (1 / std)`` in float32,
splat sums in float64 added to the outputs in a fixed order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from facesal_fast.ops._native import OccludeCall, SplatCall

__all__ = ["windows", "occlude_batch", "splat_add"]


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
def occlude_batch(a: OccludeCall, out: torch.Tensor, threads: int = 0) -> None:
    """Write the occluded batch into ``out`` (``K x C x H x W`` or ``K x H x W x C``);
    ``threads`` is unused (torch's own)."""
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
def splat_add(a: SplatCall, sums: torch.Tensor, counts: torch.Tensor) -> None:
    """Accumulate into ``sums`` (``B x H x W``) and ``counts`` (``H x W`` or ``B x H x W``)."""
    rows, cols = _window_masks(a.points, a.patch, a.H, a.W)
    rows, cols = rows.double(), cols.double()
    targets = list(sums) + (list(counts) if counts.ndim == 3 else [counts])
    for amount, target in zip(_task_values(a), targets):
        target += ((rows * amount[:, None]).T @ cols).to(target.dtype)  # H x W, a fixed-order matmul
