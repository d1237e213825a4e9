"""Canonical Model Saliency (CMS): the mean of CIS maps, streamed, overall and per group.

``CMS = (1/|D|) sum_i CIS_i`` (eq. 6), taken per pixel over the images that cover the pixel
(a face seen from the side, or cut by the photo's edge, covers part of the canonical face:
counting it as 0 elsewhere would leave a hard edge in the mean); the coverage map (the
fraction of images covering each pixel) comes with it. Maps are added one at a time into
float64 sums, so memory does not grow with the number of images, except for what the
statistics need: each image's region-share vector, and a low-resolution copy of each
grouped map (``bootstrap_size``, default 32 x 32). From those, every pair of groups gets
permutation tests (region and pixel level, family-wise adjusted), bootstrap confidence
intervals and effect sizes (:mod:`facesal_fast.saliency.stats`), and every group a
split-half reliability. Region shares are always the mean of the per-image shares: the
numbers the tests compare are the numbers the tables show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from facesal_fast.align import region_masks
from facesal_fast.core.renamed import RenamedAttribute
from facesal_fast.saliency.stats import (
    GroupDifference,
    Reliability,
    build_stats,
    group_differences,
    share_intervals,
    split_half_reliability,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from facesal_fast.core.options import StatsOptions

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
        cms: ``H_F x W_F`` float32, per pixel the mean CIS over the images covering it (0 where
            none does).
        count: number of images.
        groups: group name -> (CMS ``H_F x W_F``, image count), the CMS as ``cms``.
        differences: every pair of groups, see :class:`GroupDifference`.
        overall_shares: region -> mean over all images of the image's share of its positive
            saliency mass (the quantity the region tests compare).
        group_shares: group -> region -> the same mean over the group's images (a group may be
            called anything, ``"all"`` included: it never replaces ``overall_shares``).
        convergence: ``[(n, relative L2 distance of the running CMS to the final)]`` at every
            checkpoint of :func:`convergence_checkpoints` below ``count``, then ``(count, 0)``.
        share_intervals: group -> region -> (mean per-image share, CI low, CI high).
        reliability: group -> :class:`~facesal_fast.saliency.stats.Reliability` (split-half).
        min_group, level: the thresholds the statistics used (``level`` was ``confidence`` before 0.2).
        coverage: ``H_F x W_F`` float32 fraction of the images covering each pixel (None: not
            computed, e.g. a result built by hand).
        group_coverage: group -> ``H_F x W_F`` float32 fraction of the group's images.
        overall_intervals: region -> (mean per-image share over all images, CI low, CI high).
        persons: group -> persons in it, for groups whose photos were given persons (they
            count toward ``min_group`` instead of photos).
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
    level: float = 0.95
    coverage: np.ndarray | None = None
    group_coverage: dict[str, np.ndarray] = field(default_factory=dict)
    overall_intervals: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    persons: dict[str, int] = field(default_factory=dict)

    confidence = RenamedAttribute("level")

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
        counts = {
            g: (("persons", self.persons[g]) if g in self.persons else ("images", n))
            for g, (_, n) in self.groups.items()
        }
        return [
            f"too few {unit} in group {g} (n={n} < {self.min_group})"
            for g, (unit, n) in counts.items()
            if n < self.min_group
        ]


def _shares(masks: dict[str, np.ndarray], canonical_map: np.ndarray) -> np.ndarray:
    """Share of positive mass per region (0 when the map has no positive mass)."""
    positive = np.clip(canonical_map, 0, None)
    total = float(positive.sum())
    return np.array([float(positive[m].sum()) / total if total > 0 else 0.0 for m in masks.values()])


def covered_mean(total: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """``H x W`` float32 per-pixel mean: ``total / covered`` where ``covered`` (images covering the
    pixel) > 0, else 0."""
    return np.divide(total, covered, out=np.zeros(np.shape(total)), where=covered > 0).astype(np.float32)


def _coverage_mask(coverage: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """``H x W`` bool pixels an image covers: ``coverage > 0`` (e.g. its CIS ``counts``), all when None."""
    if coverage is None:
        return np.ones(shape, bool)
    coverage = np.asarray(coverage)
    if coverage.shape != shape:
        raise ValueError(f"coverage has shape {coverage.shape}, expected the CIS map's {shape}")
    if not np.isfinite(coverage).all():
        raise ValueError("coverage contains NaN or Inf: give the CIS counts (or a bool mask) of the same image")
    return coverage > 0


def small_map(canonical_map: np.ndarray, size: int) -> np.ndarray:
    """``size x size`` float32 area-average of a canonical map (the resolution of the pixel tests)."""
    return cv2.resize(np.asarray(canonical_map, np.float32), (size, size), interpolation=cv2.INTER_AREA)


class _FromStats:
    """An accumulator's attribute that is a field of its :class:`StatsOptions` (the attributes
    before the record): read from it; set, a checked copy of the record replaces it."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        return self if instance is None else getattr(instance.stats, self.name)

    def __set__(self, instance: Any, value: Any) -> None:
        instance.stats = instance.stats.replace(**{self.name: value})


class CMSAccumulator:
    """Streaming CMS: ``add(cis_map, group)`` one map at a time, then ``result()``.

    Args:
        shape: canonical ``(H_F, W_F)``.
        stats: how groups are tested (a :class:`~facesal_fast.core.options.StatsOptions`, a
            mapping of its fields, or None: the defaults): ``permutations`` (null draws per
            test), ``level`` (a test is significant when its adjusted p < ``1 - level``; the
            level of every interval), ``correction`` (``"fwer"``: max-T family-wise, or
            ``"fdr"``: Benjamini-Hochberg), ``min_group`` (smaller groups are never declared
            different), ``method`` (``"bootstrap"``: equal means, valid whatever the groups'
            spread and size, or ``"permutation"``: interchangeable groups; see
            :mod:`facesal_fast.saliency.stats`; all pairs of groups form one family) and ``seed``
            (of every draw: results are reproducible).
        bootstrap_size: side of the low-resolution copies kept for the pixel tests and CIs.
        bootstrap: number of bootstrap resamples (confidence intervals).
        reliability_target: split-half reliability the "images needed" estimate aims at.
        **overrides: fields of ``stats`` (``confidence``: the old name of ``level``, warns).
    """

    permutations, level, correction, min_group, method, seed = (_FromStats() for _ in range(6))
    confidence = RenamedAttribute("level")

    def __init__(
        self,
        shape: tuple[int, int],
        stats: StatsOptions | Mapping[str, Any] | None = None,
        *,
        bootstrap_size: int = 32,
        bootstrap: int = 1000,
        reliability_target: float = 0.9,
        **overrides: Any,
    ) -> None:
        self.stats = build_stats(stats, overrides)
        self._persons: dict[str, list[str | None]] = {}  # group -> person of each image (None: unknown)
        self.shape = (int(shape[0]), int(shape[1]))
        self.bootstrap_size, self.bootstrap = bootstrap_size, bootstrap
        self.reliability_target = reliability_target
        self.masks = region_masks(self.shape)
        self._sums: dict[str, np.ndarray] = {}
        self._covered: dict[str, np.ndarray] = {}  # group -> images covering each pixel
        self._counts: dict[str, int] = {}
        self._small: dict[str, list[np.ndarray]] = {}
        self._region: dict[str, list[np.ndarray]] = {}
        self._all_shares: list[np.ndarray] = []  # every image's region shares, grouped or not
        self._total = np.zeros(self.shape, np.float64)
        self._total_covered = np.zeros(self.shape, np.int64)
        self._count = 0
        self._checkpoints = iter(convergence_checkpoints())
        self._next_checkpoint = next(self._checkpoints)
        self._snapshots: list[tuple[int, np.ndarray]] = []

    def add(
        self,
        cis_map: np.ndarray,
        group: str | None = None,
        coverage: np.ndarray | None = None,
        person: str | None = None,
    ) -> None:
        """Add one ``H_F x W_F`` CIS map (to its group, when given).

        ``person``: who the photo shows (any label; None: a person of its own). A group's
        photos of one person are resampled together and count once toward ``min_group``.

        ``coverage``: ``H_F x W_F``, the pixels this image covers (``> 0``; its CIS ``counts``);
        the map is 0 elsewhere and the CMS there is the mean of the other images. None: all.
        """
        cis_map = np.asarray(cis_map, np.float64)
        if cis_map.shape != self.shape:
            raise ValueError(f"CIS map has shape {cis_map.shape}, expected {self.shape}")
        if not np.isfinite(cis_map).all():
            raise ValueError("CIS map contains NaN or Inf")
        covered = _coverage_mask(coverage, self.shape)
        cis_map = np.where(covered, cis_map, 0.0)
        shares = _shares(self.masks, cis_map)
        self._total += cis_map
        self._total_covered += covered
        self._all_shares.append(shares)
        self._count += 1
        if self._count == self._next_checkpoint:
            self._snapshots.append((self._count, covered_mean(self._total, self._total_covered)))
            self._next_checkpoint = next(self._checkpoints)
        if group is None:
            return
        group = str(group)
        if group not in self._sums:
            self._sums[group], self._counts[group] = np.zeros(self.shape, np.float64), 0
            self._covered[group] = np.zeros(self.shape, np.int64)
            self._small[group], self._region[group], self._persons[group] = [], [], []
        self._persons[group].append(None if person is None else str(person))
        self._sums[group] += cis_map
        self._covered[group] += covered
        self._counts[group] += 1
        self._small[group].append(small_map(cis_map, self.bootstrap_size))
        self._region[group].append(shares)

    def _person_labels(self, group: str) -> np.ndarray | None:
        """One label per image of ``group`` (an unlabelled image is a person of its own), or
        None when no image of the group has a person."""
        labels = self._persons[group]
        if all(p is None for p in labels):
            return None
        return np.array([f"person:{p}" if p is not None else f"image:{i}" for i, p in enumerate(labels)])

    def _differences(self, order: list[str], rng: np.random.Generator) -> list[GroupDifference]:
        """Every pair of groups, tested as one family (all pairs x regions; all pairs x pixels)."""
        if len(order) < 2:
            return []
        return group_differences(
            order,
            [covered_mean(self._sums[g], self._covered[g]) for g in order],
            [np.stack(self._small[g]) for g in order],
            [np.stack(self._region[g]) for g in order],
            list(self.masks),
            self.stats,
            persons=[self._person_labels(g) for g in order],
            bootstrap=self.bootstrap,
            rng=rng,
        )

    def _convergence(self, cms: np.ndarray) -> list[tuple[int, float]]:
        norm = float(np.linalg.norm(cms)) or 1.0
        convergence = [(n, float(np.linalg.norm(snap - cms)) / norm) for n, snap in self._snapshots]
        if not convergence or convergence[-1][0] != self._count:
            convergence.append((self._count, 0.0))
        return convergence

    def result(self) -> CMSResult:
        """The CMS, per-group CMS, coverage, pairwise group tests, region shares, reliability and convergence."""
        if self._count == 0:
            raise ValueError("no CIS map was added: every image failed or the input was empty")
        cms = covered_mean(self._total, self._total_covered)
        order = sorted(self._sums)
        groups = {g: (covered_mean(self._sums[g], self._covered[g]), self._counts[g]) for g in order}
        rng = np.random.default_rng(self.stats.seed)
        differences = self._differences(order, rng)
        names = list(self.masks)

        def intervals_of(shares: list[np.ndarray], persons=None) -> dict[str, tuple[float, float, float]]:
            return share_intervals(
                np.stack(shares), names, persons=persons, resamples=self.bootstrap, level=self.stats.level, rng=rng
            )

        intervals = {g: intervals_of(self._region[g], self._person_labels(g)) for g in groups}
        overall = intervals_of(self._all_shares)  # drawn after the groups': their intervals stay as before
        reliability = {
            g: split_half_reliability(
                np.stack(self._small[g]), target=self.reliability_target, seed=self.stats.seed, level=self.stats.level
            )
            for g in groups
        }
        return CMSResult(
            cms,
            self._count,
            groups,
            differences,
            {r: mean for r, (mean, _, _) in overall.items()},
            {g: {r: mean for r, (mean, _, _) in intervals[g].items()} for g in groups},
            self._convergence(cms),
            intervals,
            reliability,
            self.stats.min_group,
            self.stats.level,
            (self._total_covered / self._count).astype(np.float32),
            {g: (self._covered[g] / self._counts[g]).astype(np.float32) for g in groups},
            overall,
            {g: len(set(labels)) for g in groups if (labels := self._person_labels(g)) is not None},
        )
