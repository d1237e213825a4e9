"""Reliability of a group's CMS, with intervals on it and on the images needed.

The reliability of the mean of ``n`` maps is the average split-half reliability over *all*
splits (Spearman-Brown corrected), which has a closed form: Cronbach's alpha with the images
as items and the face pixels as the units of variance (Cronbach 1951),
``alpha = n / (n - 1) * (1 - sum_i var(map_i) / var(sum of maps))``. Averaging a few random
splits instead (the estimate before issue 31) is biased low at small ``n`` (each split's
correlation is). The per-image reliability ``rho = alpha / (n - (n - 1) alpha)`` gives the
Spearman-Brown prophecy ``N rho / (1 + (N - 1) rho)`` and the images ``N`` needed to reach
a target. The intervals are jackknife (leave one image out) t-intervals on ``rho``, carried
to the reliability and to ``N`` (both monotone in ``rho``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from facesal_fast.core.renamed import RenamedAttribute, renamed_keywords

__all__ = ["Reliability", "cronbach_alpha", "split_half_reliability"]


@dataclass
class Reliability:
    """Reliability of one group's CMS.

    Attributes:
        n: images in the group.
        reliability: reliability of the group CMS of all ``n`` images (mean split-half
            reliability over all splits; NaN below 4 images).
        curve: ``[(m, reliability of the CMS of m images)]`` measured on random subsets.
        target: the reliability asked for.
        images_needed: images at which the Spearman-Brown prophecy reaches ``target`` (None
            when it cannot be predicted: too few images or no consistent signal).
        low, high: ``level`` interval of ``reliability`` (NaN when not computed).
        needed_low, needed_high: the same interval for ``images_needed`` (None when that end
            cannot be predicted: no consistent signal).
        level: the intervals' level (``confidence`` before 0.2).
    """

    n: int
    reliability: float
    curve: list[tuple[int, float]]
    target: float
    images_needed: int | None
    low: float = math.nan
    high: float = math.nan
    needed_low: int | None = None
    needed_high: int | None = None
    level: float = 0.95

    confidence = RenamedAttribute("level")

    @property
    def more_needed(self) -> int | None:
        """Images still to collect (0 when the target is met; None when unknown)."""
        return None if self.images_needed is None else max(self.images_needed - self.n, 0)

    @property
    def more_needed_range(self) -> tuple[int | None, int | None]:
        """``(low, high)`` interval of :attr:`more_needed` (None: unknown)."""
        low = None if self.needed_low is None else max(self.needed_low - self.n, 0)
        return low, None if self.needed_high is None else max(self.needed_high - self.n, 0)


def cronbach_alpha(maps: np.ndarray) -> float:
    """Reliability of the mean of ``maps`` (``n x P``, one flattened map per row): the mean
    Spearman-Brown corrected split-half reliability over all splits (NaN below 2 maps or
    without variation)."""
    n = len(maps)
    total = maps.sum(0).var()
    if n < 2 or not total > 0:
        return math.nan
    return n / (n - 1) * (1 - maps.var(1).sum() / total)


def _per_image(alpha: np.ndarray | float, n: int) -> np.ndarray:
    """Reliability of one map from the reliability ``alpha`` of the mean of ``n``."""
    return np.asarray(alpha) / (n - (n - 1) * np.asarray(alpha))


def _prophecy(rho: float, n: int) -> float:
    return n * rho / (1 + (n - 1) * rho)


def _needed(rho: float, target: float, n: int) -> int | None:
    """Images at which the prophecy from per-image ``rho`` reaches ``target`` (at least ``n``)."""
    if not rho > 0:
        return None
    return max(math.ceil(target * (1 - rho) / (rho * (1 - target))), n)


def _jackknife_rho(flat: np.ndarray, level: float) -> tuple[float, float]:
    """Jackknife t-interval ``(low, high)`` of the per-image reliability, leaving out one map at a time."""
    n = len(flat)
    total, own = flat.sum(0), flat.var(1)
    rho = float(_per_image(cronbach_alpha(flat), n))
    left = []
    for i in range(n):
        rest = (total - flat[i]).var()
        alpha = (n - 1) / (n - 2) * (1 - (own.sum() - own[i]) / rest) if rest > 0 else math.nan
        left.append(float(_per_image(alpha, n - 1)))
    pseudo = n * rho - (n - 1) * np.array(left)
    half = stats.t.ppf((1 + level) / 2, n - 1) * pseudo.std(ddof=1) / math.sqrt(n)
    centre = float(pseudo.mean())
    return centre - half, centre + half


@renamed_keywords(confidence="level")
def split_half_reliability(
    maps: np.ndarray, *, target: float = 0.9, repeats: int = 40, seed: int = 0, level: float = 0.95
) -> Reliability:
    """Reliability of the mean of ``maps`` (``n x h x w``), its curve over subset sizes, and
    the images needed to reach ``target``, with intervals at ``level``.

    Pixels that are 0 in every map (off the face) are left out. The curve averages
    ``repeats // 5`` random subsets per size (4, 6, 8, 12, ... below ``n``, then ``n``).
    """
    maps = np.asarray(maps, np.float64)
    n = len(maps)
    if n < 4 or not np.abs(maps).sum() > 0:
        return Reliability(n, math.nan, [], target, None, level=level)
    flat = maps.reshape(n, -1)
    flat = flat[:, np.abs(flat).sum(0) > 0]
    rng = np.random.default_rng(seed)
    sizes = sorted({m for m in (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if m < n})
    subsets = max(repeats // 5, 1)
    curve = [
        (m, float(np.nanmean([cronbach_alpha(flat[rng.choice(n, m, replace=False)]) for _ in range(subsets)])))
        for m in sizes
    ]
    alpha = cronbach_alpha(flat)
    curve.append((n, alpha))
    if not np.isfinite(alpha):
        return Reliability(n, alpha, curve, target, None, level=level)
    rho = float(_per_image(alpha, n))
    low, high = _jackknife_rho(flat, level)  # centred on the bias-corrected estimate: widened to hold rho
    low, high = min(max(low, 0.0), rho), max(min(high, 1.0), rho)
    needed = n if alpha >= target else _needed(rho, target, n + 1)
    return Reliability(
        n,
        alpha,
        curve,
        target,
        needed,
        _prophecy(low, n),
        _prophecy(high, n),
        n if _prophecy(high, n) >= target else _needed(high, target, n + 1),
        n if _prophecy(low, n) >= target else _needed(low, target, n + 1),
        level,
    )
