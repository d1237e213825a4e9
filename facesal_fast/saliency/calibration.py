"""Check the group tests on real maps: family-wise error under realistic nulls, power for a
planted shift, coverage of the intervals.

Groups are drawn at random (with replacement) from one set of real CIS maps, reduced to the
rows the tests compare (region shares, or the pixels of low-resolution copies). A
:class:`Scenario` says how the draws depart from "two interchangeable groups" while the
groups' *means* stay equal: a group's spread scaled about the common mean, unequal sizes,
several groups, several photos per person (a person's photos: one real map plus half the
difference of two others), or paired differences that are skewed but of mean 0. The share of
draws with anything significant is the family-wise error; a shift planted in one group
(extra saliency on one region, :func:`plant`) gives the power; the share of intervals that
hold the true value gives the coverage. ``tests/test_stats.py`` runs small versions on the
bundled photos; ``benchmarks/calibration.py`` the full table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from facesal_fast.align import region_masks
from facesal_fast.core.options import StatsOptions
from facesal_fast.core.renamed import RenamedAttribute, renamed, renamed_keywords
from facesal_fast.saliency.cms import _shares, small_map
from facesal_fast.saliency.difference import build_stats, estimate_family, run_family

__all__ = [
    "CALIBRATE_STATS",
    "Calibration",
    "calibrate",
    "Rate",
    "Rows",
    "Scenario",
    "coverage",
    "draw",
    "error_rate",
    "plant",
    "power",
    "shift_fraction",
]

_WITHIN = 0.5  # a person's photos: the person's map plus this times the difference of two others / sqrt 2
#: :func:`calibrate`'s test options where none are given: fewer draws than a report's, its own seed.
CALIBRATE_STATS = StatsOptions(permutations=300, seed=7)


def plant(maps: np.ndarray, region: str, fraction: float) -> np.ndarray:
    """``maps`` (``n x H_F x W_F``) plus positive saliency equal to ``fraction`` of each map's
    positive mass, spread evenly over ``region``."""
    masks = region_masks(maps.shape[1:])
    if region not in masks:
        raise ValueError(f"region must be one of {', '.join(masks)}, got {region!r}")
    mask = masks[region]
    mass = np.clip(maps, 0, None).sum((1, 2))
    return maps + mask[None] * (fraction * mass / mask.sum())[:, None, None]


def shift_fraction(maps: np.ndarray, region: str, points: float) -> float:
    """The ``fraction`` of :func:`plant` that moves ``region``'s mean share by ``points``."""
    column = list(region_masks(maps.shape[1:])).index(region)
    before = _share_rows(maps)[:, column].mean()
    low, high = 0.0, 4.0
    for _ in range(30):  # bisection: the shift grows with the fraction
        mid = (low + high) / 2
        low, high = (
            (mid, high)
            if 100 * (_share_rows(plant(maps, region, mid))[:, column].mean() - before) < points
            else (low, mid)
        )
    return (low + high) / 2


def _share_rows(maps: np.ndarray) -> np.ndarray:
    masks = region_masks(maps.shape[1:])
    return np.stack([_shares(masks, m) for m in maps])


@dataclass
class Rows:
    """The rows the tests compare, of real maps and of the same maps with a planted shift.

    Attributes:
        family: ``"regions"`` (``N x 13`` shares) or ``"pixels"`` (``N x side^2``) (``level``:
            its name before 0.2, warns).
        null, planted: ``N x D`` rows. target: ``(D,)`` bool columns of the planted region.
        shift_points: mean planted change of the region's share, in points.
    """

    family: str
    null: np.ndarray
    planted: np.ndarray
    target: np.ndarray
    shift_points: float
    level = RenamedAttribute("family")

    @classmethod
    @renamed_keywords(level="family")
    def of(
        cls,
        maps: np.ndarray,
        family: str,
        region: str = "left_eye",
        points: float = 4.0,
        side: int = 32,
        fraction: float | None = None,
    ) -> Rows:
        """Rows of ``maps`` (``N x H_F x W_F``) with ``points`` planted on ``region`` (or
        ``fraction`` of each map's positive mass, as :func:`plant`, when given)."""
        if family not in ("regions", "pixels"):
            raise ValueError(f"family must be 'regions' or 'pixels', got {family!r}")
        masks = region_masks(maps.shape[1:])
        planted = plant(maps, region, shift_fraction(maps, region, points) if fraction is None else fraction)
        column = list(masks).index(region)
        shift = 100 * float((_share_rows(planted)[:, column] - _share_rows(maps)[:, column]).mean())
        if family == "regions":
            target = np.arange(len(masks)) == column
            return cls(family, _share_rows(maps), _share_rows(planted), target, shift)
        target = small_map(masks[region].astype(np.float32), side).reshape(-1) > 0.5

        def pixels(m):
            return np.stack([small_map(x, side) for x in m]).reshape(len(m), -1).astype(np.float64)

        return cls(family, pixels(maps), pixels(planted), target, shift)


@dataclass(frozen=True)
class Scenario:
    """How the groups are drawn. ``sizes``: persons per group; ``spread``: each group's spread
    about the common mean (1: as the real maps); ``photos``: photos per person (persons are
    given to the test when > 1); ``paired``: one group of ``sizes[0]`` images seen twice, the
    second time shifted by a mean-0 difference, ``skewed`` (exponential - 1) or symmetric."""

    name: str
    sizes: tuple[int, ...] = (20, 20)
    spread: tuple[float, ...] = (1.0, 1.0)
    photos: int = 1
    paired: bool = False
    skewed: bool = False


def _group(rows: np.ndarray, mean: np.ndarray, scenario: Scenario, g: int, rng, source: np.ndarray):
    """One group's rows (from ``source``: null or planted rows) and person labels."""
    n, photos = scenario.sizes[g], scenario.photos
    base = source[rng.integers(0, len(rows), n)]
    if photos > 1:
        noise = rows[rng.integers(0, len(rows), (n, photos))] - rows[rng.integers(0, len(rows), (n, photos))]
        base = (base[:, None] + _WITHIN * noise / np.sqrt(2)).reshape(n * photos, -1)
    return mean + scenario.spread[g] * (base - mean), (np.repeat(np.arange(n), photos) if photos > 1 else None)


def draw(rows: Rows, scenario: Scenario, rng: np.random.Generator, planted: bool = False):
    """One draw: the groups' rows and person labels (group 0 from the planted rows when
    ``planted``); paired: ``([shifted, original], [None, None])``."""
    mean = rows.null.mean(0)
    if scenario.paired:
        index = rng.integers(0, len(rows.null), scenario.sizes[0])
        other = rows.null[rng.integers(0, len(rows.null), (2, len(index)))]
        if scenario.skewed:
            difference = (rng.exponential(1.0, (len(index), 1)) - 1) * np.abs(other[0] - mean)
        else:
            difference = _WITHIN * (other[0] - other[1]) / np.sqrt(2)
        first = (rows.planted if planted else rows.null)[index]
        return [first + difference, rows.null[index]], [None, None]
    groups = [
        _group(rows.null, mean, scenario, g, rng, rows.planted if planted and g == 0 else rows.null)
        for g in range(len(scenario.sizes))
    ]
    return [x for x, _ in groups], [p for _, p in groups]


def _family(rows: Rows, groups, persons, scenario: Scenario, method: str, resamples: int, level: float, rng):
    """The test of one draw (no extra bootstrap for intervals after a permutation test)."""
    if scenario.paired:
        groups, persons = [groups[0] - groups[1]], persons[:1]
    family, _ = run_family(
        groups,
        persons,
        paired=scenario.paired,
        family=rows.family,
        method=method,
        draws=resamples,
        bootstrap=0,
        level=level,
        correction="fwer",
        rng=rng,
    )
    return family


@dataclass
class Rate:
    """A share of draws (``rate``) out of ``draws``; ``error``: its binomial standard error.
    ``worst``: for a coverage, the lowest share over the columns. ``other``: for a power, the
    share of draws in which a column outside the planted region was significant too (shares
    form a composition: a shift in one region moves the others)."""

    rate: float
    draws: int
    worst: float = float("nan")
    other: float = float("nan")

    @property
    def error(self) -> float:
        return float(np.sqrt(self.rate * (1 - self.rate) / self.draws))


def _share_of_draws(rows: Rows, scenario: Scenario, planted: bool, method: str, draws, resamples, level, seed):
    """The share of draws (group 0 planted or not) with a significant column: any (null), or
    one of the planted region's (planted), in the pair of groups 0 and 1."""
    rng = np.random.default_rng(seed)
    hits, elsewhere = 0, 0
    for _ in range(draws):
        groups, persons = draw(rows, scenario, rng, planted=planted)
        family = _family(rows, groups, persons, scenario, method, resamples, level, rng)
        found = family.p_adjusted[0, rows.target] if planted else family.p_adjusted
        hits += bool((found < 1 - level).any())
        elsewhere += bool((family.p_adjusted[0, ~rows.target] < 1 - level).any())
    return Rate(hits / draws, draws, other=elsewhere / draws if planted else float("nan"))


@renamed_keywords(confidence="level")
def error_rate(
    rows: Rows,
    scenario: Scenario,
    *,
    method: str = "bootstrap",
    draws: int = 200,
    resamples: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> Rate:
    """Family-wise error: the share of null draws with any pair x column significant at ``level``."""
    return _share_of_draws(rows, scenario, False, method, draws, resamples, level, seed)


@renamed_keywords(confidence="level")
def power(rows: Rows, scenario: Scenario, **options: Any) -> Rate:
    """The share of draws with the planted shift (in group 0) found: its region (regions), or
    any pixel of it (pixels), significant in the pair of groups 0 and 1. ``options``: as
    :func:`error_rate`."""
    settings = {"method": "bootstrap", "draws": 200, "resamples": 500, "level": 0.95, "seed": 0, **options}
    return _share_of_draws(rows, scenario, True, **settings)


@renamed_keywords(confidence="level")
def coverage(
    rows: Rows,
    scenario: Scenario,
    *,
    estimate: bool = False,
    draws: int = 200,
    resamples: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> Rate:
    """The share of ``level`` intervals that hold the true value, over draws and columns (``worst``: the
    lowest column): of the difference between groups 0 and 1 (true value 0), or with
    ``estimate`` of group 0's mean (true value: the mean of all rows), as the report prints."""
    rng = np.random.default_rng(seed)
    truth = rows.null.mean(0)
    held = []
    for _ in range(draws):
        groups, persons = draw(rows, scenario, rng)
        if estimate:
            family = estimate_family(groups[0], persons[0], resamples, level, rng)
            held.append((family.low[0] <= truth) & (truth <= family.high[0]))
        else:
            family = _family(rows, groups, persons, scenario, "bootstrap", resamples, level, rng)
            held.append((family.low[0] <= 0) & (0 <= family.high[0]))
    held = np.array(held)[:, np.ptp(rows.null, axis=0) > 0]
    return Rate(float(held.mean()), draws, float(held.mean(0).min()))


@dataclass
class Calibration:
    """Outcome of :func:`calibrate` (the interface before issue 31).

    Attributes:
        false_positive_rate: share of null draws with any column significant.
        power: share of planted draws with the planted region (or a pixel of it) significant.
        shift_points: mean planted shift of the region's share, in percentage points.
        draws, size, permutations, family: how it was run (``family``: ``"regions"`` or
            ``"pixels"``; ``level``, its name before 0.2, warns).
    """

    false_positive_rate: float
    power: float
    shift_points: float
    draws: int
    size: int
    permutations: int
    family: str
    level = RenamedAttribute("family")


F = TypeVar("F", bound=Callable[..., Any])


def _old_family_keyword(function: F) -> F:
    """``level="regions"|"pixels"`` (the name of ``family=`` before 0.2) as ``family=``, warned;
    any other ``level=`` is refused: the test's level is given in ``stats=``."""

    @functools.wraps(function)
    def call(*args: Any, **keywords: Any) -> Any:
        if "level" in keywords and not isinstance(keywords["level"], str):
            raise ValueError(
                f"level= is the old name of family= ('regions' or 'pixels'), got {keywords['level']!r}; "
                "give the test's level in stats=, e.g. stats={'level': 0.9}"
            )
        return function(*args, **renamed(keywords, {"level": "family"}, stacklevel=2))

    return call  # type: ignore[return-value]


@_old_family_keyword
def calibrate(
    maps: np.ndarray,
    stats: StatsOptions | Mapping[str, Any] | None = None,
    *,
    region: str = "left_eye",
    fraction: float = 0.06,
    family: str = "regions",
    draws: int = 200,
    size: int = 12,
    side: int = 16,
    **overrides: Any,
) -> Calibration:
    """False positive rate and power of the ``family`` (``"regions"`` or ``"pixels"``) test for
    two interchangeable groups of ``size`` maps drawn from ``maps``; :func:`error_rate` and
    :func:`power` take any :class:`Scenario`.

    ``stats``: the test's :class:`StatsOptions` (``permutations``, ``method``, ``seed`` and its
    ``level``, e.g. ``StatsOptions(level=0.9)``; the fields not given as in
    :data:`CALIBRATE_STATS`); ``**overrides``: its fields but ``level`` (``confidence``: the
    old name of the test's level, warns). ``level="regions"|"pixels"``: the name of
    ``family=`` before 0.2, warns."""
    if stats is None or isinstance(stats, Mapping):  # calibrate's own defaults under the fields given
        stats, overrides = CALIBRATE_STATS, {**(stats or {}), **overrides}
    stats = build_stats(stats, overrides)
    rows = Rows.of(maps, family, region, side=side, fraction=fraction)
    scenario = Scenario(f"{size} vs {size}", (size, size))
    options = dict(method=stats.method, draws=draws, resamples=stats.permutations, level=stats.level, seed=stats.seed)
    null, found = error_rate(rows, scenario, **options), power(rows, scenario, **options)
    return Calibration(null.rate, found.rate, rows.shift_points, draws, size, stats.permutations, family)
