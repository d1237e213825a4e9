"""Canonical Model Saliency (CMS): the mean of CIS maps, streamed, overall and per group.

``CMS = (1/|D|) sum_i CIS_i`` (eq. 6). Maps are added one at a time into float64 sums, so
memory does not grow with the number of images, except for what the group statistics
need: a low-resolution copy of each map (``bootstrap_size``, default 32 x 32) and its
region-share vector, from which bootstrap confidence intervals of group differences are
drawn per pixel and per region.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Iterable

import cv2
import numpy as np

from facesal_fast.align import region_masks

__all__ = ["CMSAccumulator", "CMSResult", "GroupDifference", "convergence_checkpoints"]


def convergence_checkpoints(limit: int = 10**7) -> list[int]:
    """Image counts at which the running CMS is snapshotted: 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, ..."""
    marks = {m * 10**e for e in range(8) for m in (1, 1.5, 2, 3, 5, 7)}
    return sorted(int(m) for m in marks if 1 <= m <= limit)


@dataclass
class GroupDifference:
    """``CMS[a] - CMS[b]`` with bootstrap confidence intervals.

    Attributes:
        a, b: group names.
        difference: ``H_F x W_F`` float32 full-resolution difference map.
        low, high: ``h x w`` float32 per-pixel CI bounds at the bootstrap resolution.
        significant: ``h x w`` bool, CI excludes 0.
        regions: region -> (difference of shares, CI low, CI high).
    """

    a: str
    b: str
    difference: np.ndarray
    low: np.ndarray
    high: np.ndarray
    significant: np.ndarray
    regions: dict[str, tuple[float, float, float]]


@dataclass
class CMSResult:
    """Model-level saliency.

    Attributes:
        cms: ``H_F x W_F`` float32, mean CIS over all images.
        count: number of images.
        groups: group name -> (CMS ``H_F x W_F``, image count).
        differences: every pair of groups, see :class:`GroupDifference`.
        region_shares: ``"all"`` and each group -> region -> share of positive mass.
        convergence: ``[(n, relative L2 distance of the running CMS to the final)]``.
    """

    cms: np.ndarray
    count: int
    groups: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    differences: list[GroupDifference] = field(default_factory=list)
    region_shares: dict[str, dict[str, float]] = field(default_factory=dict)
    convergence: list[tuple[int, float]] = field(default_factory=list)


def _shares(masks: dict[str, np.ndarray], canonical_map: np.ndarray) -> np.ndarray:
    """Share of positive mass per region (0 when the map has no positive mass)."""
    positive = np.clip(canonical_map, 0, None)
    total = float(positive.sum())
    return np.array([float(positive[m].sum()) / total if total > 0 else 0.0 for m in masks.values()])


class CMSAccumulator:
    """Streaming CMS: ``add(cis_map, group)`` one map at a time, then ``result()``.

    Args:
        shape: canonical ``(H_F, W_F)``.
        bootstrap_size: side of the low-resolution copies kept for bootstrap CIs.
        bootstrap: number of bootstrap resamples.
        confidence: two-sided CI level.
        seed: bootstrap RNG seed (results are reproducible).
    """

    def __init__(self, shape: tuple[int, int], *, bootstrap_size: int = 32, bootstrap: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.bootstrap_size, self.bootstrap, self.confidence, self.seed = bootstrap_size, bootstrap, confidence, seed
        self.masks = region_masks(self.shape)
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._small: dict[str, list[np.ndarray]] = {}
        self._region: dict[str, list[np.ndarray]] = {}
        self._total = np.zeros(self.shape, np.float64)
        self._count = 0
        self._checkpoints = iter(convergence_checkpoints())
        self._next_checkpoint = next(self._checkpoints)
        self._snapshots: list[tuple[int, np.ndarray]] = []

    def add(self, cis_map: np.ndarray, group: str | None = None) -> None:
        """Add one ``H_F x W_F`` CIS map (to its group, when given)."""
        cis_map = np.asarray(cis_map, np.float64)
        if cis_map.shape != self.shape:
            raise ValueError(f"CIS map has shape {cis_map.shape}, expected {self.shape}")
        if not np.isfinite(cis_map).all():
            raise ValueError("CIS map contains NaN or Inf")
        self._total += cis_map
        self._count += 1
        if self._count == self._next_checkpoint:
            self._snapshots.append((self._count, (self._total / self._count).astype(np.float32)))
            self._next_checkpoint = next(self._checkpoints)
        if group is None:
            return
        group = str(group)
        if group not in self._sums:
            self._sums[group], self._counts[group] = np.zeros(self.shape, np.float64), 0
            self._small[group], self._region[group] = [], []
        self._sums[group] += cis_map
        self._counts[group] += 1
        size = (self.bootstrap_size, self.bootstrap_size)
        self._small[group].append(cv2.resize(cis_map.astype(np.float32), size, interpolation=cv2.INTER_AREA))
        self._region[group].append(_shares(self.masks, cis_map))

    def _bootstrap_mean_difference(self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator):
        """Bootstrap distribution of mean(a) - mean(b) over rows (images); a, b: n x D."""
        wa = rng.multinomial(len(a), np.full(len(a), 1 / len(a)), size=self.bootstrap) / len(a)
        wb = rng.multinomial(len(b), np.full(len(b), 1 / len(b)), size=self.bootstrap) / len(b)
        return wa @ a - wb @ b

    def _difference(self, a: str, b: str, rng: np.random.Generator) -> GroupDifference:
        alpha = (1 - self.confidence) / 2
        small_a, small_b = (np.stack(self._small[g]).reshape(self._counts[g], -1) for g in (a, b))
        boot = self._bootstrap_mean_difference(small_a, small_b, rng)
        low, high = (np.quantile(boot, q, axis=0).reshape(self.bootstrap_size, self.bootstrap_size) for q in (alpha, 1 - alpha))
        reg_a, reg_b = np.stack(self._region[a]), np.stack(self._region[b])
        reg_boot = self._bootstrap_mean_difference(reg_a, reg_b, rng)
        reg_diff = reg_a.mean(0) - reg_b.mean(0)
        reg_low, reg_high = np.quantile(reg_boot, alpha, axis=0), np.quantile(reg_boot, 1 - alpha, axis=0)
        regions = {name: (float(d), float(lo), float(hi)) for name, d, lo, hi in zip(self.masks, reg_diff, reg_low, reg_high)}
        diff = (self._sums[a] / self._counts[a] - self._sums[b] / self._counts[b]).astype(np.float32)
        return GroupDifference(a, b, diff, low.astype(np.float32), high.astype(np.float32), (low > 0) | (high < 0), regions)

    def result(self) -> CMSResult:
        """The CMS, per-group CMS, pairwise group differences, region shares and convergence."""
        if self._count == 0:
            raise ValueError("no CIS map was added: every image failed or the input was empty")
        cms = (self._total / self._count).astype(np.float32)
        groups = {g: ((self._sums[g] / self._counts[g]).astype(np.float32), self._counts[g]) for g in sorted(self._sums)}
        rng = np.random.default_rng(self.seed)
        differences = [self._difference(a, b, rng) for a, b in combinations(groups, 2)]
        names = list(self.masks)
        shares = {"all": dict(zip(names, _shares(self.masks, cms).tolist()))}
        shares.update({g: dict(zip(names, _shares(self.masks, m).tolist())) for g, (m, _) in groups.items()})
        norm = float(np.linalg.norm(cms)) or 1.0
        convergence = [(n, float(np.linalg.norm(snap - cms)) / norm) for n, snap in self._snapshots]
        if not convergence or convergence[-1][0] != self._count:
            convergence.append((self._count, 0.0))
        return CMSResult(cms, self._count, groups, differences, shares, convergence)


def cms(
    images: Iterable[Any],
    scorer: Any,
    target: int | str | None = None,
    groups: Iterable[str] | None = None,
    *,
    progress: bool = True,
    **cis_options: Any,
) -> CMSResult:
    """Canonical Model Saliency of ``scorer`` over ``images`` (paths or ``H x W x 3`` arrays).

    Args:
        images: photos to explain, streamed (an iterator is fine).
        scorer: a :class:`~facesal_fast.scoring.Scorer`.
        target: class index or name, or ``None``/``"predicted"`` for each image's predicted class.
        groups: one group name per image (e.g. a demographic attribute), or ``None``.
        progress: show a progress bar.
        **cis_options: passed to :func:`facesal_fast.cis` (patch, stride, fill, mode, ...).

    Returns:
        :class:`CMSResult`. Images that fail (unreadable, no face) are skipped with a warning.
    """
    from facesal_fast.audit.runner import Audit

    audit = Audit(scorer, target=target, **cis_options)
    for _ in audit.feed(images, groups=groups, progress=progress):
        pass
    return audit.cms()
