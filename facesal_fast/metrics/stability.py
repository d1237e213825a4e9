"""Stability of a model-level map (CMS): convergence with the number of images, and
split-half reliability."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["convergence_curve", "split_half"]


def _stack(maps: Sequence[np.ndarray]) -> np.ndarray:
    arr = np.stack([np.asarray(m, np.float64) for m in maps])
    if arr.ndim != 3 or len(arr) == 0 or not np.isfinite(arr).all():
        raise ValueError("need a non-empty sequence of finite H x W maps of one shape")
    return arr


def convergence_curve(maps: Sequence[np.ndarray], counts: Sequence[int] | None = None) -> list[tuple[int, float]]:
    """``[(n, ||mean of the first n maps - mean of all|| / ||mean of all||)]`` (L2).

    ``counts`` default: 1, 2, 3, 5, 7, 10, 15, 20, 30, ... up to and including ``len(maps)``.
    """
    arr = _stack(maps)
    n_all = len(arr)
    if counts is None:
        marks = {int(m * 10**e) for e in range(7) for m in (1, 1.5, 2, 3, 5, 7)}
        counts = sorted(m for m in marks if 1 <= m < n_all) + [n_all]
    final = arr.mean(0)
    norm = float(np.linalg.norm(final)) or 1.0
    running = np.cumsum(arr, axis=0)
    return [(int(n), float(np.linalg.norm(running[n - 1] / n - final)) / norm) for n in counts]


def split_half(
    maps: Sequence[np.ndarray], *, repeats: int = 50, seed: int = 0, mask: np.ndarray | None = None
) -> dict[str, float]:
    """Split-half reliability of the mean map.

    The maps are split at random into two halves ``repeats`` times; each time the Pearson
    correlation of the two half means is taken over ``mask`` (default: pixels where any
    map is non-zero, i.e. the face). Returns the mean and the 5th/95th percentiles of
    ``r`` and the Spearman-Brown prediction for the full set ``2 r / (1 + r)``.
    """
    arr = _stack(maps)
    if len(arr) < 2:
        raise ValueError("split-half needs at least 2 maps")
    m = (np.abs(arr).sum(0) > 0) if mask is None else np.asarray(mask, bool)
    flat = arr[:, m]
    rng = np.random.default_rng(seed)
    rs = []
    for _ in range(repeats):
        perm = rng.permutation(len(arr))
        half = len(arr) // 2
        a, b = flat[perm[:half]].mean(0), flat[perm[half : 2 * half]].mean(0)
        if a.std() == 0 or b.std() == 0:
            rs.append(np.nan)
            continue
        rs.append(float(np.corrcoef(a, b)[0, 1]))
    r = np.asarray(rs)
    mean_r = float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")
    return {
        "r": mean_r,
        "r_p05": float(np.nanpercentile(r, 5)) if np.isfinite(r).any() else float("nan"),
        "r_p95": float(np.nanpercentile(r, 95)) if np.isfinite(r).any() else float("nan"),
        "spearman_brown": 2 * mean_r / (1 + mean_r) if np.isfinite(mean_r) and mean_r > -1 else float("nan"),
        "halves_of": float(len(arr) // 2),
        "repeats": float(repeats),
    }
