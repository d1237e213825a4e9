"""Occlusion windows on a grid: the distinct windows of a point set, a coarse grid over the
points, and bilinear reading of that grid (the ``grid`` and ``adaptive`` CIS modes).

A window is named by its centre pixel ``floor(p + 0.5)`` (the window rule of
docs/architecture.md); points are ``(x, y)`` in input pixels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bilinear", "bounding_grid", "unique_windows"]


def unique_windows(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct occlusion windows: (centre pixels U x 2k float32, index (N,) of each row's windows).

    ``points`` may hold several (x, y) pairs per row (N x 2k, e.g. one per image of a pair):
    rows are then distinct when any of their windows differs."""
    pixels = np.floor(points.astype(np.float64) + 0.5).astype(np.int64)
    if len(pixels) == 0:
        return np.zeros((0, pixels.shape[1]), np.float32), np.zeros(0, np.int64)
    lo, extent = pixels.min(0), pixels.max(0) - pixels.min(0) + 1
    if np.sum(np.log2(extent.astype(np.float64))) >= 62:  # mixed-radix key would overflow int64
        unique, inverse = np.unique(pixels, axis=0, return_inverse=True)
        return unique.astype(np.float32), inverse.reshape(-1)
    radix = np.cumprod(np.append(extent[1:], 1)[::-1])[::-1]  # row-major: lexicographic order kept
    _, first, inverse = np.unique((pixels - lo) @ radix, return_index=True, return_inverse=True)
    return pixels[first].astype(np.float32), inverse.reshape(-1)


def bounding_grid(points: np.ndarray, shape: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid of step ``step`` over the bounding box of ``points`` (N x 2) inside an ``H x W`` image.

    Returns ``(xs (X,), ys (Y,), centres (Y * X) x 2)`` float32: the axes (the box's far edge
    always included) and the grid nodes, row by row."""
    H, W = shape
    lo = np.clip(np.floor(points.min(0) + 0.5), 0, [W - 1, H - 1]).astype(int)
    hi = np.clip(np.floor(points.max(0) + 0.5), 0, [W - 1, H - 1]).astype(int)
    xs = np.unique(np.append(np.arange(lo[0], hi[0] + 1, step), hi[0])).astype(np.float32)
    ys = np.unique(np.append(np.arange(lo[1], hi[1] + 1, step), hi[1])).astype(np.float32)
    gx, gy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([gx.ravel(), gy.ravel()], axis=1)


def bilinear(grid: np.ndarray, xs: np.ndarray, ys: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Values of ``grid`` (len(ys) x len(xs)) sampled at ``points`` (N x 2) -> ``(N,)`` float32,
    clamped to the grid's extent."""
    px = np.clip(points[:, 0], xs[0], xs[-1])
    py = np.clip(points[:, 1], ys[0], ys[-1])
    i = np.clip(np.searchsorted(xs, px, side="right") - 1, 0, len(xs) - 2) if len(xs) > 1 else np.zeros(len(px), int)
    j = np.clip(np.searchsorted(ys, py, side="right") - 1, 0, len(ys) - 2) if len(ys) > 1 else np.zeros(len(py), int)
    i1, j1 = np.minimum(i + 1, len(xs) - 1), np.minimum(j + 1, len(ys) - 1)
    tx = np.where(i1 > i, (px - xs[i]) / np.maximum(xs[i1] - xs[i], 1e-9), 0.0)
    ty = np.where(j1 > j, (py - ys[j]) / np.maximum(ys[j1] - ys[j], 1e-9), 0.0)
    top = grid[j, i] * (1 - tx) + grid[j, i1] * tx
    bottom = grid[j1, i] * (1 - tx) + grid[j1, i1] * tx
    return (top * (1 - ty) + bottom * ty).astype(np.float32)
