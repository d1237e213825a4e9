"""Group statistics for saliency maps: tests of a difference in mean share (per region) and
mean map value (per pixel) between groups of images, family-wise (step-down max-T) or FDR
controlled over all pairs of groups at once, studentised bootstrap intervals, effect sizes,
the smallest shift the data could have found, and the share estimates the report prints.

Every test compares per-image values (a region's share of an image's positive saliency, or a
pixel of a low-resolution copy of its map) between sets of images:

* **unpaired** (groups of different images), ``method="bootstrap"`` (default): the null is
  "equal means"; each group is resampled around its own mean (studentised bootstrap,
  Welch t), so unequal spread and unequal sizes do not make false findings.
  ``method="permutation"``: the null is "the groups' maps are interchangeable" (group
  labels shuffled); valid only when the groups are alike in spread and shape too.
* **paired** (the same images under two models): ``"bootstrap"`` resamples the per-image
  differences centred at their mean (null: mean difference 0, no symmetry needed);
  ``"permutation"`` flips signs (null: each difference symmetric about 0).

With ``persons`` (one label per image) whole persons are resampled or relabelled and counted
toward ``min_group``. The engine is :mod:`facesal_fast.saliency.resampling`: one code path for
observed and null statistics, exact enumeration when the distinct labellings are fewer than
the draws asked, p-values never below the exact minimum. All randomness is seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from facesal_fast.core.options import StatsOptions
from facesal_fast.core.renamed import RenamedAttribute, renamed_keywords
from facesal_fast.saliency.difference import (
    METHODS,
    STATS_KEYWORDS,
    DifferenceTest,
    PermutationTest,
    ShareEstimate,
    as_persons,
    as_rows,
    bootstrap_interval,
    build_stats,
    difference_test,
    effect_size,
    family_columns,
    permutation_test,
    run_family,
    share_estimates,
    share_intervals,
)
from facesal_fast.saliency.reliability import Reliability, split_half_reliability
from facesal_fast.saliency.resampling import Family, benjamini_hochberg

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "METHODS",
    "DifferenceTest",
    "GroupDifference",
    "PermutationTest",
    "STATS_KEYWORDS",
    "RegionTest",
    "Reliability",
    "ShareEstimate",
    "StatsOptions",
    "benjamini_hochberg",
    "bootstrap_interval",
    "build_stats",
    "controlled",
    "difference_test",
    "group_difference",
    "group_differences",
    "null_hypothesis",
    "permutation_test",
    "share_estimates",
    "share_intervals",
    "split_half_reliability",
]


def null_hypothesis(method: str, paired: bool, a: str = "a", b: str = "b", persons: bool = False) -> str:
    """The null hypothesis of a test, in one sentence (the report prints it)."""
    unit = "person" if persons else "photo"
    if paired and method == "bootstrap":
        return (
            f"In every region and pixel the mean per-{unit} difference between {a} and {b} is 0 (studentised "
            f"bootstrap of the paired differences centred at their mean; the differences need not be symmetric)."
        )
    if paired:
        return f"Every {unit}'s difference between {a} and {b} is symmetric about 0 (sign-flip permutation test)."
    if method == "bootstrap":
        return (
            f"Every region's mean per-image share and every pixel's mean value are the same in {a} and {b}, "
            f"whatever their spread and size (studentised bootstrap, each group resampled "
            f"{'by whole persons ' if persons else ''}"
            f"around its own mean)."
        )
    return (
        f"The maps of {a} and {b} are interchangeable: same distribution, spread and shape included "
        f"(group labels of whole {unit}s shuffled)."
    )


@dataclass
class RegionTest:
    """One region of a comparison: shares are fractions (0.081 = 8.1 points).

    ``difference`` is mean share in a minus in b, ``low``/``high`` its studentised bootstrap
    CI at ``level``, ``effect_size`` the standardised difference, ``p_raw`` /
    ``p_adjusted`` the p-values (adjusted over the whole family: all pairs x regions),
    ``significant`` = ``p_adjusted < 1 - level`` and both groups >= ``min_group``,
    ``p_error`` the Monte-Carlo standard error of ``p_adjusted`` (0: exact), ``detectable``
    the smallest shift (fraction) these groups find with 80% power in this region.
    """

    difference: float
    low: float
    high: float
    effect_size: float
    p_raw: float
    p_adjusted: float
    significant: bool
    p_error: float = 0.0
    detectable: float = math.nan


@dataclass
class GroupDifference:
    """``CMS[a] - CMS[b]`` with tests and studentised bootstrap confidence intervals.

    Attributes:
        a, b: group (or run) names.
        difference: ``H_F x W_F`` float32 full-resolution difference map.
        low, high: ``h x w`` float32 per-pixel CI bounds at the test resolution.
        significant: ``h x w`` bool: adjusted pixel p-value below ``1 - level``; all False
            when a group has fewer than ``min_group`` persons (images, without persons).
        regions: region -> (difference of mean shares, CI low, CI high).
        n_a, n_b: images per side (paired: both the number of pairs).
        p_raw, p_adjusted: ``h x w`` p-values per pixel (1 off the face: not tested).
        threshold: single-step max-T critical ``|t|`` of the pixel family.
        region_tests: region -> :class:`RegionTest`.
        paired, correction, level, min_group, permutations: how it was computed
            (``permutations``: the null draws made; ``level`` was ``confidence`` before 0.2).
        method: ``"bootstrap"`` or ``"permutation"``. null_hypothesis: one sentence.
        controlled: what the adjusted p-values control, over which family (one sentence).
        persons_a, persons_b: persons per side (= images when no persons were given).
        p_error: ``h x w`` Monte-Carlo standard error of the adjusted pixel p-values.
        exact: the null draws were every distinct labelling.
    """

    a: str
    b: str
    difference: np.ndarray
    low: np.ndarray
    high: np.ndarray
    significant: np.ndarray
    regions: dict[str, tuple[float, float, float]]
    n_a: int = 0
    n_b: int = 0
    p_raw: np.ndarray | None = None
    p_adjusted: np.ndarray | None = None
    threshold: float = math.nan
    region_tests: dict[str, RegionTest] = field(default_factory=dict)
    paired: bool = False
    correction: str = "fwer"
    level: float = 0.95
    min_group: int = 10
    permutations: int = 2000
    method: str = "bootstrap"
    null_hypothesis: str = ""
    controlled: str = ""
    persons_a: int | None = None
    persons_b: int | None = None
    p_error: np.ndarray | None = None
    exact: bool = False

    confidence = RenamedAttribute("level")

    @property
    def too_few(self) -> list[str]:
        """Messages for each side below ``min_group`` (empty when both are large enough)."""
        unit = "images" if self.persons_a is None else "persons"
        counts = (self.n_a, self.n_b) if self.persons_a is None else (self.persons_a, self.persons_b)
        return [
            f"too few {unit} in group {name} (n={n} < {self.min_group})"
            for name, n in zip((self.a, self.b), counts)
            if n < self.min_group
        ]

    @property
    def significant_regions(self) -> list[str]:
        """Regions whose adjusted test is significant, largest shift first."""
        hits = [r for r, t in self.region_tests.items() if t.significant]
        return sorted(hits, key=lambda r: -abs(self.region_tests[r].difference))

    @property
    def detectable_shifts(self) -> dict[str, float]:
        """Region -> smallest shift in share points found with 80% power (the report prints it
        beside "no significant difference")."""
        return {r: 100 * t.detectable for r, t in self.region_tests.items()}


@renamed_keywords(confidence="level")
def controlled(correction: str, level: float, pairs: int, regions: int, pixels: int) -> str:
    """What the adjusted p-values control, over which family, in one sentence."""
    what = (
        "family-wise error (chance of any false finding) by step-down max-T"
        if correction == "fwer"
        else "false discovery rate by Benjamini-Hochberg"
    )
    s, every = ("s", "all") if pairs > 1 else ("", "the")
    return (
        f"{what} at {1 - level:g} over {every} {pairs} pair{s} of groups x {regions} regions, and separately over "
        f"the {pairs} pair{s} x {pixels} face pixels"
    )


def _checked_groups(small, shares, persons, paired: bool):
    """Per-group flattened maps, shares and person labels; paired: the one group of differences."""
    flat = [as_rows(np.reshape(s, (len(s), -1)), "small maps") for s in small]
    share_rows = [as_rows(s, "shares") for s in shares]
    labels = [as_persons(p, r, "persons") for p, r in zip(persons or [None] * len(flat), flat)]
    if not paired:
        return flat, share_rows, labels
    if len(flat) != 2 or len(flat[0]) != len(flat[1]):
        raise ValueError(f"a paired test needs two sides with as many images each, got {[len(f) for f in flat]}")
    return [flat[0] - flat[1]], [share_rows[0] - share_rows[1]], labels[:1]


def _region_tests(
    regions: Family, p: int, region_names: list[str], effect: np.ndarray, enough: bool, level: float
) -> dict[str, RegionTest]:
    """Region -> :class:`RegionTest` of pair ``p`` of the region family."""
    return {
        name: RegionTest(
            float(regions.difference[p, r]),
            float(regions.low[p, r]),
            float(regions.high[p, r]),
            float(effect[r]),
            float(regions.p_raw[p, r]),
            float(regions.p_adjusted[p, r]),
            bool(enough and regions.p_adjusted[p, r] < 1 - level),
            float(regions.p_error[p, r]),
            float(regions.detectable[p, r]),
        )
        for r, name in enumerate(region_names)
    }


def group_differences(
    names: Sequence[str],
    means: Sequence[np.ndarray],
    small: Sequence[np.ndarray],
    shares: Sequence[np.ndarray],
    region_names: list[str],
    stats: StatsOptions | Mapping[str, Any] | None = None,
    *,
    persons: Sequence[np.ndarray | None] | None = None,
    paired: bool = False,
    bootstrap: int = 1000,
    rng: np.random.Generator | None = None,
    **overrides: Any,
) -> list[GroupDifference]:
    """Every pair ``(i, j)``, ``i < j``, of the groups tested as one family at region level
    (all pairs x regions) and one at pixel level (all pairs x face pixels).

    Args:
        names: group names. means: full-resolution ``H_F x W_F`` mean map per group.
        small: per-image low-resolution maps per group (``n_g x h x w``).
        shares: per-image region shares per group (``n_g x R``, columns in ``region_names`` order).
        stats: how to test (a :class:`StatsOptions`, a mapping of its fields, or None: the
            defaults); ``**overrides``: its fields (``permutations``, ``level``, ``correction``,
            ``min_group``, ``method``, ``seed``; ``confidence``: the old name of ``level``).
        persons: per group, one person label per image (or None: each image its own person).
        paired: two sides, row i of each the same image (persons: the first side's labels).
        bootstrap: draws for the intervals after a permutation test.
        rng: the random draws (None: seeded with ``stats.seed``).
    """
    stats = build_stats(stats, overrides)
    rng = rng or np.random.default_rng(stats.seed)
    side = np.shape(small[0])[1:]
    flat, share_rows, labels = _checked_groups(small, shares, persons, paired)
    options = dict(paired=paired, method=stats.method, draws=stats.permutations, bootstrap=bootstrap, level=stats.level)
    pixels, units = run_family(flat, labels, family="pixels", correction=stats.correction, rng=rng, **options)
    regions, _ = run_family(share_rows, labels, family="regions", correction=stats.correction, rng=rng, **options)
    pairs = [(0, 1)] if paired else list(combinations(range(len(names)), 2))
    units, given = (units * 2 if paired else units), labels[0] is not None
    tested = int(family_columns(flat, paired).sum())
    control = controlled(stats.correction, stats.level, len(pairs), len(region_names), tested)
    out = []
    for p, (i, j) in enumerate(pairs):
        enough = min(units[i], units[j]) >= stats.min_group
        effect = effect_size(share_rows[0], None) if paired else effect_size(share_rows[i], share_rows[j])
        tests = _region_tests(regions, p, region_names, effect, enough, stats.level)
        out.append(
            GroupDifference(
                names[i],
                names[j],
                np.asarray(means[i], np.float32) - np.asarray(means[j], np.float32),
                pixels.low[p].reshape(side).astype(np.float32),
                pixels.high[p].reshape(side).astype(np.float32),
                (pixels.p_adjusted[p].reshape(side) < 1 - stats.level) & enough,
                {r: (t.difference, t.low, t.high) for r, t in tests.items()},
                len(small[i]),
                len(small[j]),
                pixels.p_raw[p].reshape(side),
                pixels.p_adjusted[p].reshape(side),
                pixels.threshold,
                tests,
                paired,
                stats.correction,
                stats.level,
                stats.min_group,
                pixels.draws,
                stats.method,
                null_hypothesis(stats.method, paired, names[i], names[j], given),
                control,
                units[i] if given else None,
                units[j] if given else None,
                pixels.p_error[p].reshape(side),
                regions.exact,
            )
        )
    return out


def group_difference(
    a: str,
    b: str,
    difference: np.ndarray,
    small: tuple[np.ndarray, np.ndarray],
    shares: tuple[np.ndarray, np.ndarray],
    region_names: list[str],
    stats: StatsOptions | Mapping[str, Any] | None = None,
    *,
    paired: bool = False,
    persons: tuple[np.ndarray | None, np.ndarray | None] | None = None,
    **options: Any,
) -> GroupDifference:
    """Test a against b at region and pixel level (:func:`group_differences` for two groups).

    Args:
        a, b: names. difference: full-resolution ``H_F x W_F`` difference map (kept as is).
        small: per-image low-resolution maps ``(n_a x h x w, n_b x h x w)``.
        shares: per-image region shares ``(n_a x R, n_b x R)``, columns in ``region_names`` order.
        paired: row i of a and of b are the same image (default method: studentised bootstrap
            of the differences centred at their mean; ``"permutation"``: sign flips).
        persons: one person label per image of each side (paired: of the pairs), or None.
        stats, **options: how to test (``bootstrap``, ``rng`` and the :class:`StatsOptions`
            fields), as :func:`group_differences`.
    """
    zero = np.zeros_like(np.asarray(difference, np.float32))
    (result,) = group_differences(
        (a, b),
        (np.asarray(difference, np.float32), zero),
        small,
        shares,
        region_names,
        build_stats(stats, {k: v for k, v in options.items() if k in STATS_KEYWORDS}, stacklevel=2),
        persons=persons,
        paired=paired,
        **{k: v for k, v in options.items() if k not in STATS_KEYWORDS},
    )
    return result
