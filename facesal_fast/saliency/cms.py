"""Canonical Model Saliency (CMS): the mean of CIS maps, streamed, overall and per group.

``CMS = (1/|D|) sum_i CIS_i`` (eq. 6). Maps are added one at a time into float64 sums, so
memory does not grow with the number of images, except for what the group statistics
need: a low-resolution copy of each grouped map (``bootstrap_size``, default 32 x 32) and
its region-share vector. From those, every pair of groups gets permutation tests (region
and pixel level, family-wise adjusted), bootstrap confidence intervals and effect sizes
(:mod:`facesal_fast.saliency.stats`), and every group a split-half reliability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import cv2
import numpy as np

from facesal_fast.align import region_masks
from facesal_fast.saliency.stats import (
    GroupDifference,
    Reliability,
    check_test_options,
    group_difference,
    share_intervals,
    split_half_reliability,
)

__all__ = ["CMSAccumulator", "CMSResult", "GroupDifference", "convergence_checkpoints"]


def convergence_checkpoints(limit: int = 10**7) -> list[int]:
    """Image counts at which the running CMS is snapshotted, strictly increasing:
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, ..."""
    marks = {int(m * 10**e) for e in range(8) for m in (1, 1.5, 2, 3, 5, 7)}
    return sorted(m for m in marks if 1 <= m <= limit)


@dataclass
class CMSResult:
    """Model-level saliency.

    Attributes:
        cms: ``H_F x W_F`` float32, mean CIS over all images.
        count: number of images.
        groups: group name -> (CMS ``H_F x W_F``, image count).
        differences: every pair of groups, see :class:`GroupDifference`.
        overall_shares: region -> share of positive mass of the overall CMS.
        group_shares: group -> region -> share of positive mass of the group's CMS (a group
            may be called anything, ``"all"`` included: it never replaces ``overall_shares``).
        convergence: ``[(n, relative L2 distance of the running CMS to the final)]`` at every
            checkpoint of :func:`convergence_checkpoints` below ``count``, then ``(count, 0)``.
        share_intervals: group -> region -> (mean per-image share, CI low, CI high).
        reliability: group -> :class:`~facesal_fast.saliency.stats.Reliability` (split-half).
        min_group, confidence: the thresholds the statistics used.
    """

    cms: np.ndarray
    count: int
    groups: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    differences: list[GroupDifference] = field(default_factory=list)
    overall_shares: dict[str, float] = field(default_factory=dict)
    group_shares: dict[str, dict[str, float]] = field(default_factory=dict)
    convergence: list[tuple[int, float]] = field(default_factory=list)
    share_intervals: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)
    reliability: dict[str, Reliability] = field(default_factory=dict)
    min_group: int = 10
    confidence: float = 0.95

    def __repr__(self) -> str:
        """Shape, counts and key figures, not arrays."""
        groups = ", ".join(f"{name!r}: {n}" for name, (_, n) in self.groups.items())
        top = max(self.overall_shares.items(), key=lambda kv: kv[1], default=None)
        lead = f", top region {top[0]!r} {top[1]:.2f}" if top else ""
        return (
            f"CMSResult(cms={tuple(np.shape(self.cms))}, count={self.count}, groups={{{groups}}}, "
            f"differences={len(self.differences)}{lead})"
        )

    @property
    def region_shares(self) -> dict[str, dict[str, float]]:
        """Backward-compatible view: ``"all"`` -> :attr:`overall_shares`, then each group's
        shares by name. A group literally named ``"all"`` is left out of this view (read
        :attr:`group_shares`), so it can never stand in for the whole model."""
        return {"all": dict(self.overall_shares), **{g: s for g, s in self.group_shares.items() if g != "all"}}

    @property
    def small_groups(self) -> list[str]:
        """Messages for every group below ``min_group`` (no significance is claimed for them)."""
        return [
            f"too few images in group {g} (n={n} < {self.min_group})"
            for g, (_, n) in self.groups.items()
            if n < self.min_group
        ]


def _shares(masks: dict[str, np.ndarray], canonical_map: np.ndarray) -> np.ndarray:
    """Share of positive mass per region (0 when the map has no positive mass)."""
    positive = np.clip(canonical_map, 0, None)
    total = float(positive.sum())
    return np.array([float(positive[m].sum()) / total if total > 0 else 0.0 for m in masks.values()])


def small_map(canonical_map: np.ndarray, size: int) -> np.ndarray:
    """``size x size`` float32 area-average of a canonical map (the resolution of the pixel tests)."""
    return cv2.resize(np.asarray(canonical_map, np.float32), (size, size), interpolation=cv2.INTER_AREA)


class CMSAccumulator:
    """Streaming CMS: ``add(cis_map, group)`` one map at a time, then ``result()``.

    Args:
        shape: canonical ``(H_F, W_F)``.
        bootstrap_size: side of the low-resolution copies kept for the pixel tests and CIs.
        bootstrap: number of bootstrap resamples (confidence intervals).
        confidence: CI level; a test is significant when its adjusted p < ``1 - confidence``.
        seed: RNG seed of the bootstrap and the permutations (results are reproducible).
        permutations: random relabellings per permutation test.
        min_group: groups with fewer images are never declared significantly different.
        correction: ``"fwer"`` (max-T family-wise, default) or ``"fdr"`` (Benjamini-Hochberg)
            for the pixel and region tests.
        reliability_target: split-half reliability the "images needed" estimate aims at.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        bootstrap_size: int = 32,
        bootstrap: int = 1000,
        confidence: float = 0.95,
        seed: int = 0,
        permutations: int = 2000,
        min_group: int = 10,
        correction: str = "fwer",
        reliability_target: float = 0.9,
    ) -> None:
        check_test_options(permutations, confidence, min_group, correction)
        self.shape = (int(shape[0]), int(shape[1]))
        self.bootstrap_size, self.bootstrap, self.confidence, self.seed = bootstrap_size, bootstrap, confidence, seed
        self.permutations, self.min_group, self.correction = permutations, min_group, correction
        self.reliability_target = reliability_target
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
        self._small[group].append(small_map(cis_map, self.bootstrap_size))
        self._region[group].append(_shares(self.masks, cis_map))

    def _difference(self, a: str, b: str, rng: np.random.Generator) -> GroupDifference:
        diff = self._sums[a] / self._counts[a] - self._sums[b] / self._counts[b]
        return group_difference(
            a,
            b,
            diff,
            (np.stack(self._small[a]), np.stack(self._small[b])),
            (np.stack(self._region[a]), np.stack(self._region[b])),
            list(self.masks),
            permutations=self.permutations,
            bootstrap=self.bootstrap,
            confidence=self.confidence,
            min_group=self.min_group,
            correction=self.correction,
            rng=rng,
        )

    def result(self) -> CMSResult:
        """The CMS, per-group CMS, pairwise group tests, region shares, reliability and convergence."""
        if self._count == 0:
            raise ValueError("no CIS map was added: every image failed or the input was empty")
        cms = (self._total / self._count).astype(np.float32)
        groups = {
            g: ((self._sums[g] / self._counts[g]).astype(np.float32), self._counts[g]) for g in sorted(self._sums)
        }
        rng = np.random.default_rng(self.seed)
        differences = [self._difference(a, b, rng) for a, b in combinations(groups, 2)]
        names = list(self.masks)
        intervals = {
            g: share_intervals(
                np.stack(self._region[g]), names, resamples=self.bootstrap, confidence=self.confidence, rng=rng
            )
            for g in groups
        }
        reliability = {
            g: split_half_reliability(np.stack(self._small[g]), target=self.reliability_target, seed=self.seed)
            for g in groups
        }
        norm = float(np.linalg.norm(cms)) or 1.0
        convergence = [(n, float(np.linalg.norm(snap - cms)) / norm) for n, snap in self._snapshots]
        if not convergence or convergence[-1][0] != self._count:
            convergence.append((self._count, 0.0))
        return CMSResult(
            cms,
            self._count,
            groups,
            differences,
            dict(zip(names, _shares(self.masks, cms).tolist())),
            {g: dict(zip(names, _shares(self.masks, m).tolist())) for g, (m, _) in groups.items()},
            convergence,
            intervals,
            reliability,
            self.min_group,
            self.confidence,
        )
