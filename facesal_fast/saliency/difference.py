"""Tests of columns of per-image values between groups (or of paired differences), and
one group's share estimates: the checked front of :mod:`facesal_fast.saliency.resampling`,
with the variance floor and the family of columns tested. :mod:`facesal_fast.saliency.stats`
builds the group comparisons on it and re-exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from facesal_fast.core.options import TEST_METHODS, StatsOptions
from facesal_fast.core.renamed import renamed, renamed_keywords
from facesal_fast.core.validate import fraction
from facesal_fast.saliency.resampling import Family, family_test, pool

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "METHODS",
    "DifferenceTest",
    "PermutationTest",
    "ShareEstimate",
    "STATS_KEYWORDS",
    "bootstrap_interval",
    "build_stats",
    "difference_test",
    "permutation_test",
    "share_estimates",
    "share_intervals",
]

METHODS = TEST_METHODS  # the name before the option records (issue 28)
#: The keywords an entry point takes for its :class:`StatsOptions` (and ``confidence``, the old name of ``level``).
STATS_KEYWORDS = frozenset({*(f.name for f in fields(StatsOptions)), "confidence"})
_FLOOR = 0.01  # variance floor of regions and one group's mean, see _floor
_PIXEL_FLOOR = 0.1  # pixels' variance floor: this share of the mean variance over the face pixels


def build_stats(
    stats: StatsOptions | Mapping[str, Any] | None, overrides: Mapping[str, Any], stacklevel: int = 2
) -> StatsOptions:
    """The record a public entry point tests with, built and checked once: ``stats`` (a
    :class:`StatsOptions`, a mapping of its fields, or None: the defaults) with ``overrides``
    (its fields; ``confidence``, the name of ``level`` before 0.2, warns). ``stacklevel``:
    as :func:`warnings.warn`'s, counted from the caller.

    Raises:
        ValueError: naming the field out of range. TypeError: an unknown field.
    """
    if isinstance(stats, Mapping):  # its fields are overrides too (and may use the old name)
        stats, overrides = None, {**stats, **overrides}
    return StatsOptions.build(stats, **renamed(overrides, {"confidence": "level"}, stacklevel + 1))


def as_rows(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as a float64 ``n x D`` array (a vector: one column); ``ValueError`` naming it if not."""
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"{name} must be a non-empty, finite n x D array, got shape {np.shape(x)}")
    return x


def as_persons(persons, rows: np.ndarray, name: str) -> np.ndarray | None:
    """One person label per row of ``rows`` (or None); ``ValueError`` naming ``name`` if not."""
    if persons is None:
        return None
    labels = np.asarray(persons)
    if labels.shape != (len(rows),):
        raise ValueError(f"{name} must give one person label per image ({len(rows)}), got shape {labels.shape}")
    return labels


def _floor(rows: Sequence[np.ndarray], paired: bool, family: str, columns: np.ndarray) -> np.ndarray:
    """``(D,)`` variance floor per unit (divided by the persons of a group later): 1% of each
    column's pooled variance (mean square when paired) for regions; for pixels 10% of the mean
    over the family's pixels, so that pixels (and resamples) of nearly constant values cannot
    dominate the maximum |t| over hundreds of pixels; for an
    ``"estimate"`` (one group's mean share) 1% of its variance, so that a resample of nearly
    constant shares (all 0) cannot give an unbounded t."""
    data = np.concatenate(rows)
    ddof = 1 if len(data) > 1 else 0
    base = (data**2).mean(0) if paired and family != "estimate" else data.var(0, ddof=ddof)
    if family == "pixels" and columns.any():
        return np.full_like(base, _PIXEL_FLOOR * base[columns].mean() + 1e-300)
    return _FLOOR * base + 1e-300


def family_columns(rows: Sequence[np.ndarray], paired: bool) -> np.ndarray:
    """Columns tested: not constant over all images (unpaired), not all 0 (paired differences).
    Off-face pixels of the low-resolution maps (constant 0) are thus outside the family."""
    data = np.concatenate(rows)
    return np.any(data != 0, axis=0) if paired else np.ptp(data, axis=0) > 0


def run_family(
    rows: Sequence[np.ndarray],
    persons: Sequence[np.ndarray | None],
    *,
    paired: bool,
    family: str,
    method: str,
    draws: int,
    bootstrap: int,
    level: float,
    correction: str,
    rng: np.random.Generator,
) -> tuple[Family, list[int]]:
    """One family over all pairs of ``rows`` (groups, ``n_g x D``; paired: one group of
    differences tested against 0); also the persons per group. ``family``: what the columns
    are, ``"regions"``, ``"pixels"`` or ``"estimate"`` (one group's mean shares), for the
    variance floor; ``level``: of the intervals."""
    sample = pool(list(rows), list(persons))
    units = sample.sizes
    pairs = [(0, -1)] if paired else list(combinations(range(len(rows)), 2))
    columns = family_columns(rows, paired)
    unit_floor = _floor(rows, paired, family, columns)
    floor = np.stack([unit_floor * (1 / units[i] + (1 / units[j] if j >= 0 else 0)) for i, j in pairs])
    result = family_test(
        sample,
        pairs,
        floor,
        columns,
        method=method,
        draws=draws,
        bootstrap=bootstrap,
        level=level,
        correction=correction,
        equal_tails=family == "estimate",  # one group's mean share: skewed, so equal tails
        rng=rng,
    )
    return result, units


def effect_size(a: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """Cohen's d with the pooled SD (unpaired) or d_z = mean / SD (``b=None``: differences)."""
    if b is None:
        difference, sd = a.mean(0), a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
    else:
        difference = a.mean(0) - b.mean(0)
        dof = max(len(a) + len(b) - 2, 1)
        sd = np.sqrt(
            ((len(a) - 1) * a.var(0, ddof=min(1, len(a) - 1)) + (len(b) - 1) * b.var(0, ddof=min(1, len(b) - 1))) / dof
        )
    return np.divide(difference, sd, out=np.zeros_like(difference), where=sd > 0)


@dataclass
class DifferenceTest:
    """A test of ``D`` columns at once (one family).

    Attributes:
        difference: ``(D,)`` mean of a minus mean of b (paired: mean of the differences).
        statistic: ``(D,)`` observed t (Welch's, cluster-robust with persons; 0 outside the family).
        effect_size: ``(D,)`` Cohen's d (pooled SD) or d_z (paired); 0 where the SD is 0.
        p_raw: ``(D,)`` two-sided p-value of each column alone.
        p_adjusted: ``(D,)`` step-down max-T family-wise adjusted p (``correction="fwer"``)
            or Benjamini-Hochberg adjusted p (``"fdr"``); 1 outside the family.
        threshold: single-step max-T critical ``|t|`` at ``alpha``.
        permutations: null draws made (all distinct labellings when ``exact``).
        paired, correction, method: how it was computed.
        p_error: ``(D,)`` Monte-Carlo standard error of ``p_adjusted`` (0 when exact).
        low, high: ``(D,)`` studentised bootstrap interval of ``difference`` at ``1 - alpha``.
        detectable: ``(D,)`` smallest |difference| found with 80% power at this family's
            critical value, for these sizes and spreads.
        exact: the null draws were every distinct labelling (or sign pattern).
    """

    difference: np.ndarray
    statistic: np.ndarray
    effect_size: np.ndarray
    p_raw: np.ndarray
    p_adjusted: np.ndarray
    threshold: float
    permutations: int
    paired: bool
    correction: str
    method: str = "bootstrap"
    p_error: np.ndarray | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    detectable: np.ndarray | None = None
    exact: bool = False


PermutationTest = DifferenceTest  # the name before issue 31


@renamed_keywords(level="family")
def difference_test(
    a: np.ndarray,
    b: np.ndarray | None = None,
    *,
    paired: bool = False,
    method: str = "bootstrap",
    permutations: int = 2000,
    alpha: float = 0.05,
    correction: str = "fwer",
    seed: int | np.random.Generator = 0,
    persons: tuple | None = None,
    family: str = "regions",
) -> DifferenceTest:
    """Two-sided test of every column of ``a`` (``n_a x D``) against ``b`` (``n_b x D``).

    ``paired=True`` needs ``n_a == n_b`` (row i of a and of b: the same image) and tests the
    differences ``a - b``; ``b=None`` tests ``a`` (already differences) against 0.
    ``persons``: ``(labels of a, labels of b)`` (paired or ``b=None``: ``(labels,)``), one per
    row, or None. ``family``: what the columns are, ``"regions"`` or ``"pixels"`` (the
    variance floor's rule; ``level``, its name before 0.2, warns). The test's level is
    ``1 - alpha``.
    """
    fraction(alpha, "alpha", "0.05")
    StatsOptions(permutations=permutations, correction=correction, method=method)  # ValueError naming a bad one
    if family not in ("regions", "pixels"):
        raise ValueError(f"family must be 'regions' or 'pixels' (the variance floor's rule), got {family!r}")
    a = as_rows(a, "a")
    rows = [a]
    if b is not None:
        b = as_rows(b, "b")
        if b.shape[1] != a.shape[1]:
            raise ValueError(f"a and b must have the same number of columns, got {a.shape[1]} and {b.shape[1]}")
        if paired and len(a) != len(b):
            raise ValueError(f"a paired test needs as many rows in a as in b, got {len(a)} and {len(b)}")
        rows = [a - b] if paired else [a, b]
    one_sample = len(rows) == 1
    labels = [as_persons(p, r, "persons") for p, r in zip(persons or (None,) * len(rows), rows)]
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    tested, _ = run_family(
        rows,
        labels,
        paired=one_sample,
        family=family,
        method=method,
        draws=permutations,
        bootstrap=permutations,
        level=1 - alpha,
        correction=correction,
        rng=rng,
    )
    return DifferenceTest(
        tested.difference[0],
        tested.statistic[0],
        effect_size(rows[0], None if one_sample else rows[1]),
        tested.p_raw[0],
        tested.p_adjusted[0],
        tested.threshold,
        tested.draws,
        one_sample,
        correction,
        method,
        tested.p_error[0],
        tested.low[0],
        tested.high[0],
        tested.detectable[0],
        tested.exact,
    )


def permutation_test(
    a: np.ndarray,
    b: np.ndarray | None = None,
    *,
    paired: bool = False,
    permutations: int = 2000,
    alpha: float = 0.05,
    correction: str = "fwer",
    seed: int | np.random.Generator = 0,
    persons: tuple | None = None,
) -> DifferenceTest:
    """:func:`difference_test` with ``method="permutation"`` (interchangeable groups; paired:
    sign flips of symmetric differences)."""
    return difference_test(
        a,
        b,
        paired=paired,
        method="permutation",
        permutations=permutations,
        alpha=alpha,
        correction=correction,
        seed=seed,
        persons=persons,
    )


@renamed_keywords(confidence="level")
def bootstrap_interval(
    a: np.ndarray, b: np.ndarray | None, *, paired: bool, resamples: int, level: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric studentised bootstrap CI of ``mean(a) - mean(b)`` per column (rows = images);
    paired: of the mean difference; ``b=None``: of ``mean(a)``. Columns constant over all
    images get the zero-width interval at their value."""
    test = difference_test(a, b, paired=paired, permutations=resamples, alpha=1 - level, seed=rng)
    return test.low, test.high


def estimate_family(
    rows: np.ndarray, persons: np.ndarray | None, resamples: int, level: float, rng: np.random.Generator
) -> Family:
    """One group's means (``rows``: ``n x D``) with studentised bootstrap intervals at ``level`` (pair 0)."""
    family, _ = run_family(
        [rows],
        [persons],
        paired=True,
        family="estimate",
        method="bootstrap",
        draws=resamples,
        bootstrap=resamples,
        level=level,
        correction="fwer",
        rng=rng,
    )
    return family


@dataclass
class ShareEstimate:
    """A group's share of one region: the mean over its images of each image's share of its
    positive saliency (the quantity the tests compare), with its studentised bootstrap CI.
    ``images`` and ``persons`` (None without person labels) say what it rests on."""

    mean: float
    low: float
    high: float
    images: int
    persons: int | None = None


@renamed_keywords(confidence="level")
def share_estimates(
    shares: np.ndarray,
    region_names: list[str],
    *,
    persons: np.ndarray | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
) -> dict[str, ShareEstimate]:
    """Region -> :class:`ShareEstimate` of one group; ``shares``: ``n x R`` per-image shares,
    intervals at ``level``. The report's share tables and bars print these (one definition of
    a share everywhere); intervals are cut to [0, 1], where a share lies."""
    shares = as_rows(shares, "shares")
    labels = as_persons(persons, shares, "persons")
    family = estimate_family(shares, labels, resamples, level, rng or np.random.default_rng(0))
    units = len(np.unique(labels)) if labels is not None else None
    return {
        name: ShareEstimate(
            float(family.difference[0, r]),
            float(max(family.low[0, r], 0.0)),  # a share lies in [0, 1]; its mean too, so stays inside
            float(min(family.high[0, r], 1.0)),
            len(shares),
            units,
        )
        for r, name in enumerate(region_names)
    }


@renamed_keywords(confidence="level")
def share_intervals(shares: np.ndarray, region_names: list[str], **options) -> dict[str, tuple[float, float, float]]:
    """:func:`share_estimates` (same ``options``) as region -> (mean per-image share, CI low, CI high)."""
    return {name: (e.mean, e.low, e.high) for name, e in share_estimates(shares, region_names, **options).items()}
