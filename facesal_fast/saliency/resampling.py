"""The resampling engine behind :mod:`facesal_fast.saliency.stats`: one t statistic, several
ways to redraw the data, and family-wise (step-down max-T) p-values over a whole family.

Data are pooled over the groups compared and summed per *person* (a cluster of photos; each
photo is its own person when none are given). A draw is a pair of weight matrices over the
pooled persons (``linear``, ``square``: ``B x U``), and every statistic, the observed one
included, comes out of :func:`_moments` applied to weights:

* observed: each group's persons with weight 1 (the actual labelling);
* ``"bootstrap"`` null: each group's persons redrawn with replacement (multinomial counts)
  from the group's data centred at the group's own mean, so the null it reproduces is
  "equal means", whatever the spread of each group;
* ``"permutation"`` null: the persons' group labels shuffled (weights 0/1), the null being
  "the groups' maps are interchangeable"; one-sample (paired) data: the sign of each person's
  difference flipped (``linear`` = +-1, ``square`` = 1).

The variance of a weighted mean is the cluster-robust (sandwich) one,
``k / (k - 1) * sum_p w_p (S_p - m_p mean)^2 / n^2`` (``S_p``: a person's sum, ``m_p`` its
photo count, ``k`` persons drawn, ``n`` photos drawn): with one photo per person it is the
usual ``s^2 / n``. When the distinct permutation labellings (or sign patterns) are no more
than the draws asked, all of them are enumerated (exact test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations, product

import numpy as np

from facesal_fast.core.renamed import renamed_keywords

__all__ = ["Family", "Sample", "benjamini_hochberg", "distinct_labellings", "exact_minimum", "family_test", "pool"]

_CHUNK = 256  # draws evaluated per matrix product (bounds memory)
_CALIBRATION = 200  # outer and inner resamples of the double bootstrap of one group's interval
_TIES = 1e-9  # a null |t| within this relative distance of the observed one counts as a tie (>=)


@dataclass(frozen=True)
class Sample:
    """Groups' rows pooled and summed per person.

    Attributes:
        sums: ``U x D`` sum of each person's rows. counts: ``(U,)`` photos per person.
        group: ``(U,)`` group index of each person.
    """

    sums: np.ndarray
    counts: np.ndarray
    group: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "squares", self.sums**2)  # U x D, reused by every draw
        object.__setattr__(self, "cross", self.sums * self.counts[:, None])

    @property
    def sizes(self) -> list[int]:
        """Persons per group."""
        return np.bincount(self.group, minlength=int(self.group.max()) + 1).tolist()

    def centred(self) -> Sample:
        """Each person's rows minus its group's mean row (photo-weighted)."""
        out = self.sums.copy()
        for g in range(len(self.sizes)):
            members = self.group == g
            mean = self.sums[members].sum(0) / self.counts[members].sum()
            out[members] -= self.counts[members, None] * mean
        return Sample(out, self.counts, self.group)


def pool(groups: list[np.ndarray], persons: list[np.ndarray | None]) -> Sample:
    """Pool ``groups`` (each ``n_g x D``) into a :class:`Sample`; ``persons[g]``: one label per
    row of group g (``None``: each row its own person). A label is local to its group."""
    sums, counts, group = [], [], []
    for g, (rows, labels) in enumerate(zip(groups, persons)):
        labels = np.arange(len(rows)) if labels is None else np.asarray(labels)
        _, inverse = np.unique(labels, return_inverse=True)
        onehot = np.zeros((int(inverse.max()) + 1, len(rows)))
        onehot[inverse, np.arange(len(rows))] = 1.0
        sums.append(onehot @ rows)
        counts.append(onehot.sum(1))
        group.append(np.full(len(onehot), g))
    return Sample(np.concatenate(sums), np.concatenate(counts), np.concatenate(group))


def _moments(sample: Sample, linear: np.ndarray, square: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean ``(B, D)`` and its cluster-robust variance ``(B, D)`` for weights ``B x U``."""
    n = square @ sample.counts
    mean = (linear @ sample.sums) / n[:, None]
    cross = linear @ sample.cross
    e2 = square @ sample.squares - 2 * mean * cross + mean**2 * (square @ sample.counts**2)[:, None]
    k = square.sum(1)
    return mean, np.maximum(e2, 0) * (k / np.maximum(k - 1, 1) / n**2)[:, None]


def _pair_t(sample: Sample, weights: list[tuple[np.ndarray, np.ndarray]], pairs, floor: np.ndarray):
    """``(B, pairs, D)`` differences ``mean_i - mean_j`` and their standard errors
    ``sqrt(var_i + var_j + floor)``; a pair ``(i, -1)`` is one-sample (``mean_i``,
    ``sqrt(var_i + floor)``). ``floor``: ``(pairs, D)``. The t statistic is their ratio."""
    moments = [_moments(sample, lin, sq) for lin, sq in weights]
    differences, errors = [], []
    for p, (i, j) in enumerate(pairs):
        mean, var = moments[i]
        if j >= 0:
            mean, var = mean - moments[j][0], var + moments[j][1]
        differences.append(mean)
        errors.append(np.sqrt(var + floor[p]))
    return np.stack(differences, 1), np.stack(errors, 1)


def _t(sample: Sample, weights, pairs, floor: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``(B, pairs, D_family)`` t statistics at the family's columns."""
    difference, error = _pair_t(sample, weights, pairs, floor)
    return difference[:, :, columns] / error[:, :, columns]


def _observed_weights(sample: Sample) -> list[tuple[np.ndarray, np.ndarray]]:
    member = [(sample.group == g).astype(np.float64)[None] for g in range(len(sample.sizes))]
    return [(m, m) for m in member]


def _labellings(sizes: list[int]) -> list[np.ndarray]:
    """Every distinct assignment of ``sum(sizes)`` persons to groups of these sizes."""
    if len(sizes) == 1:
        return [np.zeros(sizes[0], int)]
    total, out = sum(sizes), []
    for chosen in combinations(range(total), sizes[0]):
        rest = [i for i in range(total) if i not in chosen]
        for tail in _labellings(sizes[1:]):
            labels = np.empty(total, int)
            labels[list(chosen)] = 0
            labels[rest] = tail + 1
            out.append(labels)
    return out


def distinct_labellings(sizes: list[int], one_sample: bool) -> int:
    """Distinct permutation labellings of groups of ``sizes`` persons (sign patterns when one-sample)."""
    if one_sample:
        return 2 ** sizes[0]
    return math.factorial(sum(sizes)) // math.prod(math.factorial(s) for s in sizes)


def exact_minimum(sizes: tuple[int, int] | tuple[int], one_sample: bool = False) -> float:
    """Smallest p-value a test valid without distributional assumptions can give for one pair:
    its share of the distinct labellings that give the same two-sided statistic (the labelling
    and its mirror: the groups swapped when equal in size, all signs flipped)."""
    if one_sample:
        return 2.0 / 2 ** sizes[0]
    mirrors = 2 if sizes[0] == sizes[1] else 1
    return mirrors / math.comb(sizes[0] + sizes[1], sizes[0])


def _permutation_draws(sample: Sample, one_sample: bool, count: int, rng: np.random.Generator):
    """Yield chunks of weights of random (or, when few enough, all) labellings / sign patterns;
    the first yield is the number of draws and whether they are exhaustive."""
    sizes, units = sample.sizes, len(sample.counts)
    exact = distinct_labellings(sizes, one_sample) <= count
    if one_sample:
        signs = np.array(list(product((1.0, -1.0), repeat=units))) if exact else None
        yield (len(signs) if exact else count), exact
        for start in range(0, len(signs) if exact else count, _CHUNK):
            size = min(_CHUNK, (len(signs) if exact else count) - start)
            chunk = signs[start : start + size] if exact else rng.choice((-1.0, 1.0), size=(size, units))
            yield [(chunk, np.ones_like(chunk))]
        return
    labels = np.stack(_labellings(sizes)) if exact else None
    total = len(labels) if exact else count
    yield total, exact
    for start in range(0, total, _CHUNK):
        size = min(_CHUNK, total - start)
        chunk = labels[start : start + size] if exact else rng.permuted(np.tile(sample.group, (size, 1)), axis=1)
        yield [((chunk == g).astype(np.float64),) * 2 for g in range(len(sizes))]


def _bootstrap_draws(sample: Sample, count: int, rng: np.random.Generator):
    """Yield chunks of weights: each group's persons redrawn with replacement."""
    sizes, units = sample.sizes, len(sample.counts)
    for start in range(0, count, _CHUNK):
        size = min(_CHUNK, count - start)
        weights = []
        for g, u in enumerate(sizes):
            w = np.zeros((size, units))
            w[:, sample.group == g] = rng.multinomial(u, np.full(u, 1 / u), size=size)
            weights.append((w, w))
        yield weights


@dataclass
class Family:
    """One family of tests (all pairs x all columns) and its intervals.

    Attributes (``P`` pairs, ``D`` columns; columns outside the family get t 0 and p 1):
        difference, statistic, standard_error: ``(P, D)`` observed mean difference, t, and
            ``sqrt(var_i + var_j + floor)``.
        p_raw, p_adjusted: ``(P, D)`` per-column and step-down max-T adjusted p-values.
        p_error: ``(P, D)`` Monte-Carlo standard error of ``p_adjusted`` (0 when exact).
        low, high: ``(P, D)`` symmetric studentised-bootstrap interval of the difference.
        detectable: ``(P, D)`` shift found with 80% power at the family's critical value.
        threshold: single-step critical |t| (``1 - alpha`` quantile of the null max |t|).
        draws, exact: null draws made and whether they were all distinct labellings.
    """

    difference: np.ndarray
    statistic: np.ndarray
    standard_error: np.ndarray
    p_raw: np.ndarray
    p_adjusted: np.ndarray
    p_error: np.ndarray
    low: np.ndarray
    high: np.ndarray
    detectable: np.ndarray
    threshold: float
    draws: int
    exact: bool


def _max_t_p_values(observed: np.ndarray, chunks, draws: int, exact: bool):
    """Raw and step-down max-T adjusted p-values of ``observed`` |t| ``(F,)``: ``(1 + hits) /
    (1 + draws)`` (Monte-Carlo; the observed draw counted once) or ``hits / draws`` (exact,
    where the observed labelling is one of the draws), and the null maxima ``(draws,)``; an
    empty family (no column varies, e.g. the same photos in both groups) has maxima 0."""
    if observed.size == 0:
        return np.ones(0), np.ones(0), np.zeros(max(draws, 1))
    order = np.argsort(-observed)
    sorted_obs = observed[order] * (1 - _TIES)
    raw_hits, step_hits, maxima = np.zeros(len(observed)), np.zeros(len(observed)), []
    for null in chunks:
        null = np.abs(null)
        raw_hits += (null >= observed * (1 - _TIES)).sum(0)
        successive = np.maximum.accumulate(null[:, order][:, ::-1], axis=1)[:, ::-1]
        step_hits += (successive >= sorted_obs).sum(0)
        maxima.append(successive[:, 0])
    extra = 0 if exact else 1
    step = np.maximum.accumulate((extra + step_hits) / (extra + draws))
    adjusted = np.empty_like(step)
    adjusted[order] = step
    return (extra + raw_hits) / (extra + draws), adjusted, np.concatenate(maxima)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg (1995) adjusted p-values (q-values) of any-shape ``p``."""
    flat = np.asarray(p, np.float64).ravel()
    order = np.argsort(flat)
    ranked = flat[order] * len(flat) / np.arange(1, len(flat) + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(flat)
    out[order] = np.minimum(adjusted, 1.0)
    return out.reshape(np.shape(p))


def _bootstrap_t(sample: Sample, pairs, floor, columns, draws: int, rng, store: list):
    """Chunks ``(b, P * D_family)`` of bootstrap t (each group redrawn around its own mean);
    each chunk is also appended to ``store`` as ``(b, P, D_family)`` float32 for the intervals."""
    centred = sample.centred()
    for weights in _bootstrap_draws(centred, draws, rng):
        t = _t(centred, weights, pairs, floor, columns)
        store.append(np.clip(t, -1e15, 1e15).astype(np.float32))
        yield t.reshape(len(t), -1)


def _permutation_t(sample: Sample, pairs, floor, columns, generator):
    for weights in generator:
        t = _t(sample, weights, pairs, floor, columns)
        yield t.reshape(len(t), -1)


@renamed_keywords(confidence="level")
def family_test(
    sample: Sample,
    pairs: list[tuple[int, int]],
    floor: np.ndarray,
    columns: np.ndarray,
    *,
    method: str = "bootstrap",
    draws: int = 2000,
    bootstrap: int = 1000,
    level: float = 0.95,
    correction: str = "fwer",
    equal_tails: bool = False,
    rng: np.random.Generator,
) -> Family:
    """Test every pair (``(i, j)``: group i minus group j; ``(0, -1)``: group 0 against 0) at
    every column in ``columns`` (``(D,)`` bool) as one family; ``floor``: ``(P, D)`` variance
    floor added to each squared standard error. ``method``: ``"bootstrap"`` (equal means,
    each group resampled around its own mean) or ``"permutation"`` (interchangeable groups,
    or symmetric differences when one-sample). Intervals come from the studentised bootstrap
    (the test's own draws when ``method="bootstrap"``, else ``bootstrap`` more draws; 0: no
    intervals, NaN) at ``level``: symmetric (estimate +- the |t| quantile x SE), or with ``equal_tails``
    (one group's skewed mean, ``pairs == [(0, -1)]``) the equal-tailed bootstrap-t interval at
    the tail probabilities of :func:`_calibrated_tails`."""
    difference, error = (x[0] for x in _pair_t(sample, _observed_weights(sample), pairs, floor))
    t_obs = difference / error
    observed, store = np.abs(t_obs[:, columns]).ravel(), []
    if method == "bootstrap":
        count, exact = draws, False
        p_raw, p_adj, maxima = _max_t_p_values(
            observed, _bootstrap_t(sample, pairs, floor, columns, draws, rng, store), count, exact
        )
    else:
        generator = _permutation_draws(sample, pairs[0][1] < 0, draws, rng)
        count, exact = next(generator)
        p_raw, p_adj, maxima = _max_t_p_values(
            observed, _permutation_t(sample, pairs, floor, columns, generator), count, exact
        )
        for _ in _bootstrap_t(sample, pairs, floor, columns, bootstrap, rng, store):
            pass
    if correction == "fdr":
        p_adj = benjamini_hochberg(p_raw)
    p_raw, p_adj = _floored(p_raw, p_adj, sample.sizes, pairs, columns.sum())
    alpha = 1 - level
    threshold = float(np.quantile(maxima, 1 - alpha))
    tails = _calibrated_tails(sample, floor, columns, level, rng) if equal_tails else None
    below, above, tail = (x * error[:, columns] for x in _bootstrap_spread(store, level, tails))
    spread = tuple(np.zeros_like(t_obs) for _ in range(3))
    spread[0][:, columns], spread[1][:, columns] = below, above
    spread[2][:, columns] = threshold * error[:, columns] + tail
    p = (np.ones_like(t_obs), np.ones_like(t_obs))
    p[0][:, columns], p[1][:, columns] = p_raw.reshape(len(pairs), -1), p_adj.reshape(len(pairs), -1)
    p_error = np.zeros_like(t_obs) if exact else np.sqrt(p[1] * (1 - p[1]) / count)
    statistic = np.where(columns, t_obs, 0.0)
    return Family(
        difference,
        statistic,
        error,
        p[0],
        p[1],
        p_error,
        difference - spread[0],
        difference + spread[1],
        spread[2],
        threshold,
        count,
        exact,
    )


def _calibrated_tails(sample: Sample, floor: np.ndarray, columns: np.ndarray, level: float, rng):
    """Lower and upper tail probabilities of the bootstrap t at which one group's equal-tailed
    interval of its mean covers ``level`` when the group's own persons are the population
    (a double bootstrap, Beran 1987: the interval of each of ``_CALIBRATION`` resamples, from
    ``_CALIBRATION`` resamples of it, must hold the group's mean). Pooled over the family's
    columns; never nearer the middle than ``(1 -+ level) / 2``, never beyond a tenth of it."""
    alpha = (1 - level) / 2
    if not columns.any():
        return alpha, 1 - alpha
    units = sample.sizes[0]
    truth = _moments(sample, *_observed_weights(sample)[0])[0][0]
    outer = rng.multinomial(units, np.full(units, 1 / units), size=_CALIBRATION).astype(np.float64)
    positions = []
    for weights, (mean, var) in zip(outer, zip(*_moments(sample, outer, outer))):
        inner = rng.multinomial(units, weights / units, size=_CALIBRATION).astype(np.float64)
        inner_mean, inner_var = _moments(sample, inner, inner)
        t_inner = (inner_mean - mean) / np.sqrt(inner_var + floor[0])
        t_outer = (mean - truth) / np.sqrt(var + floor[0])
        positions.append((t_inner[:, columns] <= t_outer[columns]).mean(0))
    low, high = np.quantile(np.concatenate(positions), [alpha, 1 - alpha])
    return float(np.clip(low, alpha / 10, alpha)), float(np.clip(high, 1 - alpha, 1 - alpha / 10))


def _bootstrap_spread(store: list[np.ndarray], level: float, tails: tuple[float, float] | None):
    """From the bootstrap t ``(b, P, D_family)`` chunks, in units of t: how far the interval
    reaches below and above the estimate (the ``level`` quantile of |t| both ways, or
    with ``tails`` the upper and lower quantiles of t at these probabilities), and the larger
    of the 80% one-sided quantiles (for the detectable shift). NaN without draws (``bootstrap=0``)."""
    if not store:
        return (np.array(math.nan),) * 3
    boot = np.concatenate(store).astype(np.float64)
    tail = np.maximum(-np.quantile(boot, 0.2, axis=0), np.quantile(boot, 0.8, axis=0))
    if tails is not None:
        low, high = np.quantile(boot, tails, axis=0)
        return np.maximum(high, 0.0), np.maximum(-low, 0.0), tail  # the interval holds its estimate
    both = np.quantile(np.abs(boot), level, axis=0)
    return both, both, tail


def _floored(p_raw: np.ndarray, p_adj: np.ndarray, sizes: list[int], pairs, width: int):
    """p-values (flattened ``P * D_family``) raised to each pair's :func:`exact_minimum`, the
    adjusted ones kept monotone in the ranking of the raw ones."""
    minimum = np.repeat(
        [exact_minimum((sizes[i],), True) if j < 0 else exact_minimum((sizes[i], sizes[j])) for i, j in pairs], width
    )
    order = np.argsort(p_adj, kind="stable")  # the adjusted p-values already rise along the ranking
    adjusted = np.empty_like(p_adj)
    adjusted[order] = np.maximum.accumulate(np.maximum(p_adj, minimum)[order])
    return np.maximum(p_raw, minimum), adjusted
