"""Adaptive refinement of occlusion scores (Krypton's adaptive drill-down).

Score a coarse grid of occlusion windows first; estimate every exact window's drop by
bilinear interpolation of the grid; then score exactly only the windows whose grid cell
shows a large drop (the ``refine`` fraction with the largest ``|drop|`` at the cell's
corners, plus every window whose cell exceeds ``threshold``). Refined windows are exact;
windows on grid nodes are exact for free; the others keep the interpolated estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from facesal_fast.core.grid import bilinear, bounding_grid, unique_windows
from facesal_fast.core.validate import positive_int
from facesal_fast.scoring.batching import Steps, Windows, run_steps

__all__ = ["AdaptiveDrops", "adaptive_drops", "adaptive_steps"]


@dataclass
class AdaptiveDrops:
    """Result of :func:`adaptive_drops` for N points.

    Attributes:
        drops: ``(N,)`` float32 score drop per point (exact where ``exact``, else interpolated).
        exact: ``(N,)`` bool, points whose window was scored exactly (refined or on the grid).
        forward_passes: occluded images scored (grid + refined windows).
        coarse_passes: of which on the coarse grid.
    """

    drops: np.ndarray
    exact: np.ndarray
    forward_passes: int
    coarse_passes: int


def adaptive_drops(
    scorer: Any,
    input_image: np.ndarray,
    points: np.ndarray,
    target: int | None,
    base_score: float,
    *,
    patch: int,
    fill: Any = "black",
    coarse_step: int | None = None,
    refine: float = 0.25,
    threshold: float | None = None,
) -> AdaptiveDrops:
    """Score drops at ``points`` by coarse-to-fine occlusion.

    Args:
        scorer: anything with ``score_occluded(input_image, centers K x 2, patch, fill, target)``.
        input_image: ``h x w x C`` uint8 in the scorer's input geometry.
        points: ``N x 2`` float32 ``(x, y)`` occlusion points in input pixels.
        target, base_score: the class and phi(I, c), as in ``cis.occlusion_drops``.
        patch: occlusion window side in input pixels; fill: as ``ops.occlude_batch``.
        coarse_step: grid step in pixels (default ``max(2, patch)``).
        refine: fraction in ``[0, 1]`` of distinct windows to score exactly, those whose grid
            cell has the largest corner ``|drop|``.
        threshold: also refine every window whose cell's corner ``|drop|`` is at least this.

    Returns:
        :class:`AdaptiveDrops`.
    """
    windows = Windows.template(scorer, input_image, patch, fill, target)
    return run_steps(adaptive_steps(windows, points, base_score, coarse_step, refine, threshold))


def adaptive_steps(
    windows: Windows,
    points: np.ndarray,
    base_score: float,
    coarse_step: int | None = None,
    refine: float = 0.25,
    threshold: float | None = None,
) -> Steps:
    """:func:`adaptive_drops` as requests (:mod:`facesal_fast.scoring.batching`): ``windows``
    gives the scorer, image, patch, fill and target; yields the grid, then the refined windows."""
    if len(points) == 0:
        raise ValueError("no point to occlude")
    if not 0.0 <= refine <= 1.0:
        raise ValueError(f"refine must be in [0, 1], got {refine!r}")
    patch, image = windows.patch, windows.image
    step = positive_int(max(2, int(patch)) if coarse_step is None else coarse_step, "coarse_step")
    centers, inverse = unique_windows(points)
    xs, ys, grid_centers = bounding_grid(points, image.shape[:2], step)
    grid_scores = yield replace(windows, centers=grid_centers)
    grid = (base_score - np.asarray(grid_scores, np.float64)).reshape(len(ys), len(xs))
    estimate = bilinear(grid, xs, ys, centers).astype(np.float64)
    importance = _cell_peak(np.abs(grid), xs, ys, centers)
    on_grid = np.isin(centers[:, 0], xs) & np.isin(centers[:, 1], ys)
    ranked = np.argsort(-importance, kind="stable")
    chosen = np.zeros(len(centers), bool)
    chosen[ranked[: int(round(refine * len(centers)))]] = True
    if threshold is not None:
        chosen |= importance >= threshold
    chosen &= ~on_grid
    if chosen.any():
        scores = yield replace(windows, centers=centers[chosen])
        estimate[chosen] = base_score - np.asarray(scores, np.float64)
    exact = chosen | on_grid
    return AdaptiveDrops(
        estimate.astype(np.float32)[inverse], exact[inverse], len(grid_centers) + int(chosen.sum()), len(grid_centers)
    )


def _cell_peak(values: np.ndarray, xs: np.ndarray, ys: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Largest of ``values`` (len(ys) x len(xs)) at the corners of each point's grid cell."""
    i = np.clip(np.searchsorted(xs, points[:, 0], side="right") - 1, 0, len(xs) - 1)
    j = np.clip(np.searchsorted(ys, points[:, 1], side="right") - 1, 0, len(ys) - 1)
    i1, j1 = np.minimum(i + 1, len(xs) - 1), np.minimum(j + 1, len(ys) - 1)
    return np.max([values[j, i], values[j, i1], values[j1, i], values[j1, i1]], axis=0)
