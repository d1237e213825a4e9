"""Group statistics for saliency maps: permutation tests with family-wise (max-T) or FDR
control, bootstrap confidence intervals, effect sizes and split-half reliability.

Every test compares per-image values (a region's share of an image's saliency, or a pixel
of a low-resolution copy of its map) between two sets of images:

* **unpaired** (two groups of different images): the group labels are exchangeable under
  the null hypothesis, so they are shuffled ``permutations`` times;
* **paired** (the same images under two models): the sign of each image's difference is
  exchangeable, so signs are flipped at random.

The statistic is a t statistic per column (Welch's for unpaired data, one-sample for
paired), with a variance floor so that nearly constant pixels cannot dominate. Raw p-values
compare each column's |t| with its own permutation distribution; family-wise adjusted
p-values use the step-down max-T procedure of Westfall & Young (1993, Algorithm 2.8), the
same max-statistic idea Nichols & Holmes (2002) use for images; ``correction="fdr"`` uses
Benjamini & Hochberg (1995) on the raw permutation p-values instead. All randomness is
seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from facesal_fast._validate import positive_int
from facesal_fast.metrics.stability import split_half

__all__ = [
    "GroupDifference",
    "PermutationTest",
    "RegionTest",
    "Reliability",
    "benjamini_hochberg",
    "bootstrap_interval",
    "check_test_options",
    "group_difference",
    "permutation_test",
    "share_intervals",
    "split_half_reliability",
]

_CHUNK = 256  # permutations evaluated per matrix product (bounds memory for large groups)
_FLOOR = 0.01  # variance floor: this fraction of the mean pooled variance over columns


@dataclass
class PermutationTest:
    """A permutation test of ``D`` columns at once.

    Attributes:
        difference: ``(D,)`` mean of a minus mean of b (paired: mean of the differences).
        statistic: ``(D,)`` observed t statistic.
        effect_size: ``(D,)`` standardised difference: Cohen's d with the pooled SD
            (unpaired), or d_z = mean / SD of the differences (paired); 0 where the SD is 0.
        p_raw: ``(D,)`` two-sided permutation p-value of each column alone.
        p_adjusted: ``(D,)`` step-down max-T family-wise adjusted p (``correction="fwer"``)
            or Benjamini-Hochberg adjusted p (``"fdr"``).
        threshold: the single-step max-T critical ``|t|`` at ``alpha`` (the ``1 - alpha``
            quantile of the permutation distribution of ``max_j |t_j|``).
        permutations, paired, correction: how it was computed.
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


def _check_fraction(value: float, name: str, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number between 0 and 1 (e.g. {example}), got {value!r}")


def check_test_options(permutations: int, confidence: float, min_group: int, correction: str) -> None:
    """``ValueError`` naming the argument when a test option is out of range."""
    positive_int(permutations, "permutations")
    positive_int(min_group, "min_group")
    _check_fraction(confidence, "confidence", "0.95")
    if correction not in ("fwer", "fdr"):
        raise ValueError(
            f"correction must be 'fwer' (max-T family-wise) or 'fdr' (Benjamini-Hochberg), got {correction!r}"
        )


def _as_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"{name} must be a non-empty, finite n x D array, got shape {np.shape(x)}")
    return x


def _welch_t(sa, qa, na, sb, qb, nb, floor):
    """Welch t from sums ``s`` and sums of squares ``q`` (any leading shape)."""
    ma, mb = sa / na, sb / nb
    va = np.maximum(qa - na * ma**2, 0) / max(na - 1, 1)
    vb = np.maximum(qb - nb * mb**2, 0) / max(nb - 1, 1)
    return (ma - mb) / np.sqrt(va / na + vb / nb + floor)


def _one_sample_t(s, q, n, floor):
    m = s / n
    v = np.maximum(q - n * m**2, 0) / max(n - 1, 1)
    return m / np.sqrt(v / n + floor)


def _null_chunks(a: np.ndarray, b: np.ndarray | None, permutations: int, rng: np.random.Generator, floor: float):
    """Yield ``(chunk, D)`` arrays of |t| under random relabelling (or sign flips when b is None)."""
    if b is None:
        q = (a**2).sum(0)
        for start in range(0, permutations, _CHUNK):
            signs = rng.choice([-1.0, 1.0], size=(min(_CHUNK, permutations - start), len(a)))
            yield np.abs(_one_sample_t(signs @ a, q, len(a), floor))
        return
    data = np.concatenate([a, b])
    total, squares, n, na = data.sum(0), (data**2).sum(0), len(data), len(a)
    for start in range(0, permutations, _CHUNK):
        size = min(_CHUNK, permutations - start)
        order = rng.permuted(np.tile(np.arange(n), (size, 1)), axis=1)[:, :na]
        labels = np.zeros((size, n))
        np.put_along_axis(labels, order, 1.0, axis=1)
        sa, qa = labels @ data, labels @ data**2
        yield np.abs(_welch_t(sa, qa, na, total - sa, squares - qa, n - na, floor))


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg (1995) adjusted p-values (q-values) of any-shape ``p``."""
    flat = np.asarray(p, np.float64).ravel()
    order = np.argsort(flat)
    ranked = flat[order] * len(flat) / np.arange(1, len(flat) + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(flat)
    out[order] = np.minimum(adjusted, 1.0)
    return out.reshape(np.shape(p))


def permutation_test(
    a: np.ndarray,
    b: np.ndarray | None = None,
    *,
    paired: bool = False,
    permutations: int = 2000,
    alpha: float = 0.05,
    correction: str = "fwer",
    seed: int | np.random.Generator = 0,
) -> PermutationTest:
    """Two-sided permutation test of every column of ``a`` (``n_a x D``) against ``b`` (``n_b x D``).

    ``paired=True`` needs ``n_a == n_b`` (row i of a and of b: the same image) and flips the
    sign of each row of ``a - b``. ``b=None`` tests ``a`` (already differences) against 0.
    """
    _check_fraction(alpha, "alpha", "0.05")
    check_test_options(permutations, 0.95, 1, correction)
    a = _as_rows(a, "a")
    if b is not None:
        b = _as_rows(b, "b")
        if b.shape[1] != a.shape[1]:
            raise ValueError(f"a and b must have the same number of columns, got {a.shape[1]} and {b.shape[1]}")
        if paired:
            if len(a) != len(b):
                raise ValueError(f"a paired test needs as many rows in a as in b, got {len(a)} and {len(b)}")
            a, b = a - b, None
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if b is None:
        floor = _FLOOR * float((a**2).mean()) / len(a) + 1e-300  # mean square: invariant under sign flips
        observed = _one_sample_t(a.sum(0), (a**2).sum(0), len(a), floor)
        difference, sd = a.mean(0), a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
    else:
        pooled_all = np.concatenate([a, b]).var(0, ddof=1).mean()
        floor = _FLOOR * float(pooled_all) * (1 / len(a) + 1 / len(b)) + 1e-300
        observed = _welch_t(a.sum(0), (a**2).sum(0), len(a), b.sum(0), (b**2).sum(0), len(b), floor)
        difference = a.mean(0) - b.mean(0)
        dof = max(len(a) + len(b) - 2, 1)
        sd = np.sqrt(
            ((len(a) - 1) * a.var(0, ddof=min(1, len(a) - 1)) + (len(b) - 1) * b.var(0, ddof=min(1, len(b) - 1))) / dof
        )
    p_raw, p_fwer, maxima = _permutation_p_values(
        np.abs(observed), _null_chunks(a, b, permutations, rng, floor), permutations
    )
    p_adjusted = p_fwer if correction == "fwer" else benjamini_hochberg(p_raw)
    effect = np.divide(difference, sd, out=np.zeros_like(difference), where=sd > 0)
    threshold = float(np.quantile(maxima, 1 - alpha))
    return PermutationTest(
        difference, observed, effect, p_raw, p_adjusted, threshold, permutations, b is None, correction
    )


def _permutation_p_values(observed: np.ndarray, chunks, permutations: int):
    """Raw and step-down max-T adjusted p-values, ``(1 + #{null >= observed}) / (1 + permutations)``,
    and the per-permutation maxima."""
    order = np.argsort(-observed)  # most significant column first
    sorted_obs = observed[order]
    raw_hits = np.zeros(len(observed))
    step_hits = np.zeros(len(observed))
    maxima = []
    for null in chunks:
        raw_hits += (null >= observed).sum(0)
        successive = np.maximum.accumulate(null[:, order][:, ::-1], axis=1)[:, ::-1]  # max over columns ranked >= k
        step_hits += (successive >= sorted_obs).sum(0)
        maxima.append(successive[:, 0])
    step = np.maximum.accumulate((1 + step_hits) / (1 + permutations))  # monotone in the ranking
    adjusted = np.empty_like(step)
    adjusted[order] = step
    return (1 + raw_hits) / (1 + permutations), adjusted, np.concatenate(maxima)


def bootstrap_interval(
    a: np.ndarray, b: np.ndarray | None, *, paired: bool, resamples: int, confidence: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of ``mean(a) - mean(b)`` per column (rows = images); paired
    resamples images jointly; ``b=None`` gives the CI of ``mean(a)``."""
    a = _as_rows(a, "a")
    alpha = (1 - confidence) / 2

    def weights(n: int) -> np.ndarray:
        return rng.multinomial(n, np.full(n, 1 / n), size=resamples) / n

    if b is None:
        boot = weights(len(a)) @ a
    elif paired:
        boot = weights(len(a)) @ (a - _as_rows(b, "b"))
    else:
        boot = weights(len(a)) @ a - weights(len(b)) @ _as_rows(b, "b")
    return np.quantile(boot, alpha, axis=0), np.quantile(boot, 1 - alpha, axis=0)


@dataclass
class RegionTest:
    """One region of a comparison: shares are fractions (0.081 = 8.1 points).

    ``difference`` is mean share in a minus in b, ``low``/``high`` its bootstrap CI,
    ``effect_size`` the standardised difference, ``p_raw`` / ``p_adjusted`` the permutation
    p-values, ``significant`` = ``p_adjusted < 1 - confidence`` and both groups >= ``min_group``.
    """

    difference: float
    low: float
    high: float
    effect_size: float
    p_raw: float
    p_adjusted: float
    significant: bool


@dataclass
class GroupDifference:
    """``CMS[a] - CMS[b]`` with permutation tests and bootstrap confidence intervals.

    Attributes:
        a, b: group (or run) names.
        difference: ``H_F x W_F`` float32 full-resolution difference map.
        low, high: ``h x w`` float32 per-pixel bootstrap CI bounds at the test resolution.
        significant: ``h x w`` bool: adjusted pixel p-value below ``1 - confidence`` (max-T
            family-wise over all pixels, or FDR with ``correction="fdr"``); all False when a
            group has fewer than ``min_group`` images.
        regions: region -> (difference of mean shares, CI low, CI high), as before.
        n_a, n_b: images per side (paired: both the number of pairs).
        p_raw, p_adjusted: ``h x w`` permutation p-values per pixel.
        threshold: single-step max-T critical ``|t|`` of the pixel test.
        region_tests: region -> :class:`RegionTest` (adjusted over the regions of this comparison).
        paired, correction, confidence, min_group, permutations: how it was computed.
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
    confidence: float = 0.95
    min_group: int = 10
    permutations: int = 2000

    @property
    def too_few(self) -> list[str]:
        """Messages for each side below ``min_group`` (empty when both are large enough)."""
        return [
            f"too few images in group {name} (n={n} < {self.min_group})"
            for name, n in ((self.a, self.n_a), (self.b, self.n_b))
            if n < self.min_group
        ]

    @property
    def significant_regions(self) -> list[str]:
        """Regions whose adjusted test is significant, largest shift first."""
        hits = [r for r, t in self.region_tests.items() if t.significant]
        return sorted(hits, key=lambda r: -abs(self.region_tests[r].difference))


def group_difference(
    a: str,
    b: str,
    difference: np.ndarray,
    small: tuple[np.ndarray, np.ndarray],
    shares: tuple[np.ndarray, np.ndarray],
    region_names: list[str],
    *,
    paired: bool = False,
    permutations: int = 2000,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    min_group: int = 10,
    correction: str = "fwer",
    rng: np.random.Generator | None = None,
) -> GroupDifference:
    """Test a against b at region and pixel level.

    Args:
        a, b: names. difference: full-resolution ``H_F x W_F`` difference map (kept as is).
        small: per-image low-resolution maps ``(n_a x h x w, n_b x h x w)``.
        shares: per-image region shares ``(n_a x R, n_b x R)``, columns in ``region_names`` order.
        paired: row i of a and of b are the same image (sign-flip test, paired bootstrap).
    """
    check_test_options(permutations, confidence, min_group, correction)
    rng = rng or np.random.default_rng(0)
    alpha, (small_a, small_b), (share_a, share_b) = 1 - confidence, small, shares
    n_a, n_b = len(small_a), len(small_b)
    enough = min(n_a, n_b) >= min_group
    side = small_a.shape[1:]
    flat_a, flat_b = small_a.reshape(n_a, -1), small_b.reshape(n_b, -1)
    low, high = bootstrap_interval(flat_a, flat_b, paired=paired, resamples=bootstrap, confidence=confidence, rng=rng)
    pixels = permutation_test(
        flat_a, flat_b, paired=paired, permutations=permutations, alpha=alpha, correction=correction, seed=rng
    )
    reg_low, reg_high = bootstrap_interval(
        share_a, share_b, paired=paired, resamples=bootstrap, confidence=confidence, rng=rng
    )
    reg = permutation_test(
        share_a, share_b, paired=paired, permutations=permutations, alpha=alpha, correction=correction, seed=rng
    )
    tests = {
        name: RegionTest(
            float(reg.difference[i]),
            float(reg_low[i]),
            float(reg_high[i]),
            float(reg.effect_size[i]),
            float(reg.p_raw[i]),
            float(reg.p_adjusted[i]),
            bool(enough and reg.p_adjusted[i] < alpha),
        )
        for i, name in enumerate(region_names)
    }
    return GroupDifference(
        a,
        b,
        np.asarray(difference, np.float32),
        low.reshape(side).astype(np.float32),
        high.reshape(side).astype(np.float32),
        (pixels.p_adjusted.reshape(side) < alpha) & enough,
        {r: (t.difference, t.low, t.high) for r, t in tests.items()},
        n_a,
        n_b,
        pixels.p_raw.reshape(side),
        pixels.p_adjusted.reshape(side),
        pixels.threshold,
        tests,
        paired,
        correction,
        confidence,
        min_group,
        permutations,
    )


def share_intervals(
    shares: np.ndarray,
    region_names: list[str],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    rng: np.random.Generator | None = None,
) -> dict[str, tuple[float, float, float]]:
    """Mean per-image share of each region with its percentile bootstrap CI; ``shares``: ``n x R``."""
    shares = _as_rows(shares, "shares")
    low, high = bootstrap_interval(
        shares, None, paired=False, resamples=resamples, confidence=confidence, rng=rng or np.random.default_rng(0)
    )
    mean = shares.mean(0)
    return {name: (float(mean[i]), float(low[i]), float(high[i])) for i, name in enumerate(region_names)}


@dataclass
class Reliability:
    """Split-half reliability of one group's CMS.

    Attributes:
        n: images in the group.
        reliability: Spearman-Brown corrected split-half correlation of the group CMS with all
            ``n`` images (NaN below 4 images).
        curve: ``[(m, reliability of the CMS of m images)]`` measured on random subsets.
        target: the reliability asked for.
        images_needed: images at which the Spearman-Brown prophecy reaches ``target`` (None
            when it cannot be predicted: too few images or no consistent signal).
    """

    n: int
    reliability: float
    curve: list[tuple[int, float]]
    target: float
    images_needed: int | None

    @property
    def more_needed(self) -> int | None:
        """Images still to collect (0 when the target is met; None when unknown)."""
        return None if self.images_needed is None else max(self.images_needed - self.n, 0)


def _per_image_reliability(r_half: float, half: int) -> float:
    """Reliability of one image's map from the correlation of two means of ``half`` images each."""
    return r_half / (half - (half - 1) * r_half)


def split_half_reliability(maps: np.ndarray, *, target: float = 0.9, repeats: int = 40, seed: int = 0) -> Reliability:
    """Split-half reliability of the mean of ``maps`` (``n x h x w``) and the images needed to reach ``target``.

    Random halves are correlated (:func:`facesal_fast.metrics.stability.split_half`) for
    random subsets of growing size (8 subsets per size); each mean correlation is corrected
    to the subset's full size by Spearman-Brown
    (``2 r / (1 + r)``). The per-image reliability ``rho`` from the full split gives the
    number of images ``N = target (1 - rho) / (rho (1 - target))`` at which the prophecy
    ``N rho / (1 + (N - 1) rho)`` reaches ``target``.
    """
    maps = np.asarray(maps, np.float64)
    n = len(maps)
    if n < 4 or not np.abs(maps).sum() > 0:
        return Reliability(n, math.nan, [], target, None)
    rng = np.random.default_rng(seed)
    sizes = sorted({m for m in (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if m < n} | {n})
    subsets = 8  # a subset size's point averages random subsets, not one draw
    curve = []
    for m in sizes:
        draws = [maps[rng.choice(n, m, replace=False)] for _ in range(subsets)] if m < n else [maps] * subsets
        rs = [split_half(d, repeats=max(repeats // subsets, 1), seed=int(rng.integers(2**31)))["r"] for d in draws]
        curve.append((m, float(np.nanmean(rs)) if np.isfinite(rs).any() else math.nan))
    r_half = curve[-1][1]
    points = [(m, 2 * r / (1 + r) if np.isfinite(r) and r > -1 else math.nan) for m, r in curve]
    if not np.isfinite(r_half) or r_half <= 0:
        return Reliability(n, points[-1][1], points, target, None)
    rho = _per_image_reliability(r_half, n // 2)
    if points[-1][1] >= target:
        return Reliability(n, points[-1][1], points, target, n)
    needed = max(math.ceil(target * (1 - rho) / (rho * (1 - target))), n + 1)
    return Reliability(n, points[-1][1], points, target, needed)
