"""Check the group tests on your own maps: false positive rate under the null, power for a
planted effect.

Two groups are drawn at random (with replacement) from one set of real CIS maps, so they do
not differ: the share of draws in which the test declares anything significant is the
false positive rate, which must stay near ``1 - confidence``. Then a known effect is planted
in one group (extra saliency, a fixed fraction of each map's positive mass, spread over one
region) and the share of draws in which that region is found significant is the power.
``tests/test_stats.py`` runs a small version on the bundled photos; ``benchmarks/calibration.py``
a larger one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facesal_fast.align import region_masks
from facesal_fast.saliency.cms import _shares, small_map
from facesal_fast.saliency.stats import permutation_test

__all__ = ["Calibration", "calibrate", "plant"]


def plant(maps: np.ndarray, region: str, fraction: float) -> np.ndarray:
    """``maps`` (``n x H_F x W_F``) plus positive saliency equal to ``fraction`` of each map's
    positive mass, spread evenly over ``region``."""
    masks = region_masks(maps.shape[1:])
    if region not in masks:
        raise ValueError(f"region must be one of {', '.join(masks)}, got {region!r}")
    mask = masks[region]
    mass = np.clip(maps, 0, None).sum((1, 2))
    return maps + mask[None] * (fraction * mass / mask.sum())[:, None, None]


@dataclass
class Calibration:
    """Outcome of :func:`calibrate`.

    Attributes:
        false_positive_rate: share of null draws with any column (region, or pixel) significant.
        power: share of planted draws in which the planted region was significant (regions
            level), or any pixel of it (pixel level).
        shift_points: mean planted shift of the region's share, in percentage points.
        draws, size, permutations, level: how it was run (``level``: "regions" or "pixels").
    """

    false_positive_rate: float
    power: float
    shift_points: float
    draws: int
    size: int
    permutations: int
    level: str


def _rows(maps: np.ndarray, level: str, side: int) -> np.ndarray:
    if level == "regions":
        masks = region_masks(maps.shape[1:])
        return np.stack([_shares(masks, m) for m in maps])
    return np.stack([small_map(m, side) for m in maps]).reshape(len(maps), -1)


def calibrate(
    maps: np.ndarray,
    *,
    region: str = "left_eye",
    fraction: float = 0.06,
    level: str = "regions",
    draws: int = 200,
    size: int = 12,
    permutations: int = 300,
    confidence: float = 0.95,
    side: int = 16,
    seed: int = 7,
) -> Calibration:
    """False positive rate and power of the ``level`` test ("regions" or "pixels", at
    ``side x side``) for two groups of ``size`` maps drawn from ``maps`` (``n x H_F x W_F``)."""
    if level not in ("regions", "pixels"):
        raise ValueError(f"level must be 'regions' or 'pixels', got {level!r}")
    null_rows, planted = _rows(maps, level, side), plant(maps, region, fraction)
    effect_rows = _rows(planted, level, side)
    masks = region_masks(maps.shape[1:])
    column = list(masks).index(region)
    target = (small_map(masks[region].astype(np.float32), side).reshape(-1) > 0.5) if level == "pixels" else column
    shares_before, shares_after = (np.stack([_shares(masks, m) for m in s])[:, column] for s in (maps, planted))
    rng, alpha = np.random.default_rng(seed), 1 - confidence
    false, found = 0, 0
    for i in range(draws):
        a, b = rng.integers(0, len(maps), size), rng.integers(0, len(maps), size)
        null = permutation_test(null_rows[a], null_rows[b], permutations=permutations, alpha=alpha, seed=i)
        false += bool((null.p_adjusted < alpha).any())
        effect = permutation_test(effect_rows[a], null_rows[b], permutations=permutations, alpha=alpha, seed=i)
        found += bool(np.any(effect.p_adjusted[target] < alpha))
    return Calibration(
        false / draws,
        found / draws,
        float(100 * (shares_after - shares_before).mean()),
        draws,
        size,
        permutations,
        level,
    )
