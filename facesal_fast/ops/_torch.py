"""The window rule in torch, on any device: what the ops' torch implementations share.

Each op's torch implementation (in its module, e.g. ``ops/splat.py``) is the fallback where a
native kernel is missing or failed its self-check (see :mod:`facesal_fast.ops._dispatch`); it
follows the kernels' arithmetic, starting from these windows: the rule of ``csrc/common.h`` in
float32.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["windows", "window_masks"]


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


def window_masks(points: torch.Tensor, patch: int, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows N x H, cols N x W) booleans: pixel row / column inside each point's window."""
    lo, hi, valid = windows(points, patch, H, W)
    ys = torch.arange(H, device=points.device)
    xs = torch.arange(W, device=points.device)
    rows = valid[:, None] & (ys >= lo[:, 1:2]) & (ys <= hi[:, 1:2])
    cols = (xs >= lo[:, 0:1]) & (xs <= hi[:, 0:1])
    return rows, cols
