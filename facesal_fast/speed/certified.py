"""Approximate CIS that states its own error, and presets defined by the error they promise.

**Certificate.** An approximate CIS (``mode="grid"``, ``"adaptive"``, a ``quality`` preset)
scores exactly a stratified random sample of the windows it did not score (seeded) and
compares those drops with the values it interpolated. The residuals stand in for the
unknown errors of the other skipped windows: each skipped window takes the residual of its
nearest sampled window, shrunk by :func:`shrinkage` (replicating a residual over the
sample spacing overstates the error where residuals decorrelate over fewer pixels, i.e.
for small patches; the factor's constant :data:`KAPPA` was fitted on bundled photos
img3-img6). The map of those drops plays the exact one: the SSIM of the approximate map
against it (the SSIM of docs/performance.md: Gaussian window, data range of the exact map)
is ``estimated_ssim``, the largest region-share difference, in percentage points,
``estimated_share_error``. A grid or adaptive map samples 8 % of its skipped windows and
does *not* put them into the map, so the estimate is of the map returned; a preset keeps
its samples in the map (below).

**Presets.** ``quality="high"`` promises SSIM >= 0.95 against exact, ``"fast"`` >= 0.90,
a float in (0, 1] that SSIM (1: exact). Per photo: score a coarse grid (step ``max(2,
round(8 (1 - target) p))`` for patch p, the nodes of cells holding a window) and
interpolate the other windows linearly over the Delaunay triangles of what was scored.
Each round then scores a stratified sample of :data:`PRESET_FRACTION` of the unscored
windows (at least :data:`PRESET_SAMPLE`) and *keeps them in the map*: their residuals come
from :data:`FOLDS`-fold interpolation (each fold from the anchors and the other folds), so
they measure interpolations that did not see them, and certify the map that holds them.
While the estimate is below :func:`stopping_ssim` (the promised deficit ``1 - target``
less :data:`MARGIN` of it), or one sampled residual holds more than :data:`TAIL_SHARE` of
their sum of squares (a sharp feature barely caught), refine where the sampled residuals
are largest (the best window of each of the worst cells, as many as the deficit asks for,
at most doubling the scored windows) and certify again.
When the next round would bring the scored windows past :data:`EXACT_FRACTION` of all
windows, score the rest exactly instead (the result is exact, its certificate 1 and 0).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from facesal_fast import ops
from facesal_fast.align import region_shares
from facesal_fast.core.grid import bounding_grid, unique_windows
from facesal_fast.core.options import QUALITY_TARGETS, quality_target
from facesal_fast.metrics.similarity import ssim

if TYPE_CHECKING:
    from facesal_fast.scoring.batching import Steps, Windows

__all__ = [
    "EXACT_FRACTION",
    "MARGIN",
    "PRESET_SAMPLE",
    "QUALITY_TARGETS",
    "Certificate",
    "CanonicalSplat",
    "certificate_steps",
    "certified_steps",
    "quality_target",
    "stopping_ssim",
]

#: A preset promising SSIM ``target`` stops once its estimated deficit ``1 - SSIM`` is at
#: most ``1 - MARGIN`` of the promised one (:func:`stopping_ssim`): the estimate's error
#: grows with the deficit (docs/performance.md), so the margin does too.
MARGIN = 0.4
#: A preset that would score more than this fraction of the windows scores them all.
EXACT_FRACTION = 0.7
SAMPLE_FRACTION, SAMPLE_MIN = 0.08, 32  # windows sampled per certificate of a grid or adaptive map
#: Windows each round of a preset samples, certifies with and keeps in the map: this
#: fraction of the unscored windows, at least PRESET_SAMPLE.
PRESET_FRACTION, PRESET_SAMPLE = 0.08, 64
#: A round stops only if no sampled residual holds more than this share of their sum of
#: squares: one that does is a sharp feature the sample barely caught, and more like it are
#: likely unsampled (0.07-0.08 on the bundled photos, 1.0 on 0.6 px needles).
TAIL_SHARE = 0.3
FOLDS = 4  # a preset's sampled residuals: each fold interpolated from the anchors and the other folds
NEIGHBOURS = 3  # sampled windows whose residuals predict an unscored window's error
#: Calibration of the shrinkage (:func:`shrinkage`), fitted on photos img3-img6 (docs/performance.md).
KAPPA = 0.85
SEED = 0
MAX_ROUNDS = 6


@dataclass(frozen=True)
class CanonicalSplat:
    """How drops become the CIS map: ``points`` ``N x 2`` canonical positions, the splat
    window ``patch`` and the map ``shape`` ``(H_F, W_F)``."""

    points: np.ndarray
    patch: int
    shape: tuple[int, int]

    def maps(self, drops: np.ndarray) -> np.ndarray:
        """``(N,)`` drops -> ``H_F x W_F`` map; ``B x N`` -> ``B x H_F x W_F``."""
        return ops.splat_mean(np.asarray(drops, np.float32), self.points, self.patch, self.shape)[0]


@dataclass(frozen=True)
class Certificate:
    """An approximate map's estimated distance from the exact one.

    Attributes:
        ssim: estimated SSIM against the exact map.
        share_error: estimated largest region-share error, percentage points.
        sampled: skipped windows scored exactly to estimate it (extra forward passes).
    """

    ssim: float
    share_error: float
    sampled: int

    @classmethod
    def exact(cls) -> Certificate:
        return cls(1.0, 0.0, 0)


def _sample_size(skipped: int, fraction: float = SAMPLE_FRACTION, least: int = SAMPLE_MIN) -> int:
    """Windows a certificate samples from ``skipped`` unscored ones (:func:`_draw_sample`
    takes them all when there are fewer)."""
    return max(least, int(round(fraction * skipped)))


def _draw_sample(rng: np.random.Generator, candidates: np.ndarray, centers: np.ndarray, size: int) -> np.ndarray:
    """Sorted indices (into ``centers`` ``U x 2``) of the ``size`` windows a certificate scores:
    a stratified draw from ``candidates``, one random window in each of as many random square
    cells (side: the sample spacing) as the sample size, the rest at random. A plain random
    draw left holes and clusters whose nearest-sample residuals swung the estimate (sd 0.024
    against 0.020 at 4 %, and read 0.01-0.02 low on grid maps)."""
    size = min(size, len(candidates))
    if size == len(candidates):
        return np.sort(candidates)
    xy = centers[candidates]
    cells = np.floor((xy - xy.min(0)) / np.sqrt(len(candidates) / size)).astype(np.int64)
    order = rng.permutation(len(candidates))
    first = order[np.unique((cells[:, 0] * 1_000_003 + cells[:, 1])[order], return_index=True)[1]]
    pick = rng.choice(first, min(size, len(first)), replace=False)
    rest = np.setdiff1d(np.arange(len(candidates)), pick)
    return np.sort(candidates[np.concatenate([pick, rng.choice(rest, size - len(pick), replace=False)])])


def _nearest(centers: np.ndarray, sample: np.ndarray, k: int) -> np.ndarray:
    """``(U, k)`` indices into ``sample`` (``S x 2``) of each centre's ``k`` nearest sampled windows."""
    d = ((centers[:, None, :] - sample[None, :, :]) ** 2).sum(-1)
    k = min(k, len(sample))
    return np.argpartition(d, k - 1, axis=1)[:, :k]


def _largest_share_gap(a: dict[str, float], b: dict[str, float]) -> float:
    return 100.0 * max(abs(a[name] - b[name]) for name in a)


def shrinkage(patch: int, skipped: int, sampled: int) -> float:
    """How much of a sampled residual the windows around it take: ``min(1, sqrt(KAPPA^2 p /
    (3 s)))`` for patch ``p`` and sample spacing ``s = sqrt(skipped / sampled)`` px (see the
    module docstring)."""
    spacing = np.sqrt(max(skipped, 1) / max(sampled, 1))
    return float(min(1.0, KAPPA * np.sqrt(patch / (3.0 * spacing))) ** 0.5)


def estimate_error(
    drops: np.ndarray,
    skipped: np.ndarray,
    centers: np.ndarray,
    inverse: np.ndarray,
    sample: np.ndarray,
    residuals: np.ndarray,
    splat: CanonicalSplat,
    patch: int,
) -> Certificate:
    """The certificate of the map of ``drops`` (``(U,)`` per distinct window at ``centers``
    ``U x 2``; ``inverse`` ``(N,)`` maps points to windows), whose ``skipped`` windows
    (``(U,)`` bool) are interpolated; ``residuals`` are exact minus interpolated drops at the
    ``sample`` windows (indices into ``centers``, all skipped); ``patch`` in input pixels."""
    nearest = _nearest(centers[skipped], centers[sample], 1)[:, 0]
    likely = drops.astype(np.float64).copy()
    likely[skipped] += shrinkage(patch, int(skipped.sum()), len(sample)) * residuals[nearest]
    with one_torch_thread():
        approx, truth = splat.maps(np.stack([drops, likely])[:, inverse])  # one splat for both maps
    similarity = ssim(approx, truth, data_range=float(np.ptp(truth)) or 1.0)
    return Certificate(float(similarity), _largest_share_gap(region_shares(approx), region_shares(truth)), len(sample))


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread inside the block: the certificate's maps are small, and on a busy
    2-core machine each of their torch ops waited ~20 ms for a second thread (splats 0.2 s
    instead of 5 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def certificate_steps(
    windows: Windows,
    base_score: float,
    drops: np.ndarray,
    skipped: np.ndarray,
    centers: np.ndarray,
    inverse: np.ndarray,
    splat: CanonicalSplat,
    rng: np.random.Generator | None = None,
) -> Steps:
    """As requests: score a random sample of the ``skipped`` windows (``(U,)`` bool over
    ``centers`` ``U x 2``, drops ``(U,)``) and return :func:`estimate_error`'s
    :class:`Certificate` (and ``(sample indices, exact drops)``)."""
    rng = np.random.default_rng(SEED) if rng is None else rng
    candidates = np.flatnonzero(skipped)
    if len(candidates) == 0:
        return Certificate.exact(), (candidates, np.zeros(0))
    sample = _draw_sample(rng, candidates, centers, _sample_size(len(candidates)))
    scores = yield replace(windows, centers=centers[sample])
    exact = base_score - np.asarray(scores, np.float64)
    residuals = exact - drops[sample]
    certificate = estimate_error(drops, skipped, centers, inverse, sample, residuals, splat, windows.patch)
    return certificate, (sample, exact)


def _interpolate(anchors: np.ndarray, values: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation over the Delaunay triangles of ``anchors`` (``A x 2``,
    ``values`` ``(A,)``) at ``centers`` (``U x 2`` window pixels, clamped to the anchors' box;
    a centre outside every triangle takes the mean value). The weights are computed here in
    closed form: scipy's ``LinearNDInterpolator`` inverts every triangle through a threaded
    BLAS, which took 0.2-7 s per call on a loaded 2-core machine (1 ms on one thread)."""
    from scipy.spatial import Delaunay  # scipy.spatial (~1 s): only the presets need it

    query = np.clip(centers, anchors.min(0), anchors.max(0)).astype(np.float64)
    simplices = Delaunay(anchors.astype(np.float64)).simplices
    corners = anchors[simplices].astype(np.float64)  # T x 3 x 2
    owner = _containing_triangle(corners, np.floor(query + 0.5).astype(np.int64))
    weights = _barycentric(corners[np.maximum(owner, 0)], query)
    out = (weights * np.asarray(values, np.float64)[simplices[np.maximum(owner, 0)]]).sum(1)
    return np.where(owner >= 0, out, float(np.mean(values)))


def _barycentric(corners: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``K x 3`` barycentric weights of points ``xy`` (``K x 2``) in triangles ``corners``
    (``K x 3 x 2``); NaN for a flat triangle."""
    v0, v1, d = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], xy - corners[:, 0]
    det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        l1 = (d[:, 0] * v1[:, 1] - d[:, 1] * v1[:, 0]) / det
        l2 = (v0[:, 0] * d[:, 1] - v0[:, 1] * d[:, 0]) / det
    return np.stack([1.0 - l1 - l2, l1, l2], 1)


def _containing_triangle(corners: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """``(K,)`` index of a triangle (``T x 3 x 2``) containing each integer pixel of ``pixels``
    (``K x 2``), -1 for none: every triangle is rasterised over its bounding box."""
    lo = np.floor(corners.min(1)).astype(np.int64)
    size = np.ceil(corners.max(1)).astype(np.int64) - lo + 1  # T x 2
    count = size[:, 0] * size[:, 1]
    which = np.repeat(np.arange(len(corners)), count)
    local = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    xy = lo[which] + np.stack([local % size[which, 0], local // size[which, 0]], 1)
    inside = (_barycentric(corners[which], xy.astype(np.float64)) >= -1e-9).all(1)
    origin = pixels.min(0) if len(pixels) else np.zeros(2, np.int64)
    extent = pixels.max(0) - origin + 1 if len(pixels) else np.ones(2, np.int64)
    xy, which = xy[inside] - origin, which[inside]
    keep = ((xy >= 0) & (xy < extent)).all(1)
    owner = np.full((int(extent[1]), int(extent[0])), -1, np.int64)
    owner[xy[keep, 1], xy[keep, 0]] = which[keep]
    return owner[pixels[:, 1] - origin[1], pixels[:, 0] - origin[0]]


def _refinement(
    centers: np.ndarray, scored: np.ndarray, sample: np.ndarray, residuals: np.ndarray, count: int, cell: int
) -> np.ndarray:
    """Indices of up to ``count`` unscored windows to score next: each unscored window's
    expected error is the mean ``|residual|`` of its nearest sampled windows; the best window
    of each ``cell``-pixel cell competes, the cells with the largest errors win."""
    todo = np.flatnonzero(~scored)
    if len(todo) == 0 or count <= 0:
        return todo[:0]
    nearest = _nearest(centers[todo], centers[sample], NEIGHBOURS)
    error = np.abs(residuals)[nearest].mean(1)
    cells = np.floor(centers[todo] / max(cell, 1)).astype(np.int64)
    key = cells[:, 0] * 1_000_003 + cells[:, 1]
    order = np.lexsort((-error, key))  # per cell, largest error first
    first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
    best = first[np.argsort(-error[first], kind="stable")][:count]
    return todo[best]


@dataclass
class CertifiedDrops:
    """What :func:`certified_steps` found for N points.

    Attributes:
        drops: ``(N,)`` float32 drops (exact at scored windows, interpolated elsewhere).
        forward_passes: occluded images scored (grid, refinements and certificate samples).
        certificate: the :class:`Certificate` of the map of ``drops``.
        mode: ``"certified"``, or ``"exact"`` when it fell back to scoring every window.
        grid_step: the starting grid's step; rounds: certificates computed.
    """

    drops: np.ndarray
    forward_passes: int
    certificate: Certificate
    mode: str
    grid_step: int
    rounds: int


def start_step(target: float, patch: int) -> int:
    """The coarse grid a preset starts from: ``max(2, round(8 (1 - target) patch))`` px."""
    return max(2, int(round(8.0 * (1.0 - target) * int(patch))))


def start_grid(points: np.ndarray, centers: np.ndarray, shape: tuple[int, int], step: int) -> np.ndarray:
    """``A x 2`` nodes of the grid of ``step`` over the points' box (``points`` ``N x 2`` in an
    ``H x W`` image) that are corners of a cell holding one of the windows ``centers``
    (``U x 2``): the nodes of empty cells (the box's corners around a face) would be scored
    for nothing."""
    xs, ys, nodes = bounding_grid(points, shape, step)
    i = np.clip(np.searchsorted(xs, centers[:, 0], side="right") - 1, 0, max(len(xs) - 2, 0))
    j = np.clip(np.searchsorted(ys, centers[:, 1], side="right") - 1, 0, max(len(ys) - 2, 0))
    used = np.zeros((len(ys), len(xs)), bool)
    for dj in (0, 1):
        for di in (0, 1):
            used[np.minimum(j + dj, len(ys) - 1), np.minimum(i + di, len(xs) - 1)] = True
    return nodes[used.ravel()]


def certified_steps(
    windows: Windows, points: np.ndarray, base_score: float, target: float, splat: CanonicalSplat
) -> Steps:
    """Drops at ``points`` (``N x 2`` input pixels) whose map's estimated SSIM against exact
    is at least :func:`stopping_ssim` of ``target`` (see the module docstring), as requests;
    returns :class:`CertifiedDrops`."""
    centers, inverse = unique_windows(points)
    step = start_step(target, windows.patch)
    grid = start_grid(points, centers, windows.image.shape[:2], step)
    if len(grid) >= EXACT_FRACTION * len(centers):  # dense points: the grid saves nothing
        exact = base_score - np.asarray((yield replace(windows, centers=centers)), np.float64)
        return CertifiedDrops(exact[inverse].astype(np.float32), len(centers), Certificate.exact(), "exact", step, 0)
    known = _Known.of(centers, grid, base_score - np.asarray((yield replace(windows, centers=grid)), np.float64))
    rng, sampled = np.random.default_rng(SEED), 0
    for rounds in range(1, MAX_ROUNDS + 1):
        if known.scored.all():
            break
        sample = _draw_sample(rng, np.flatnonzero(~known.scored), centers, known.sample_size)
        exact = base_score - np.asarray((yield replace(windows, centers=centers[sample])), np.float64)
        residuals = _fold_residuals(known, centers[sample], exact, rng)
        known.add(sample, exact)
        sampled += len(sample)
        if known.scored.all():  # the sample took the last windows: exact
            break
        drops = known.drops()
        cert = estimate_error(drops, ~known.scored, centers, inverse, sample, residuals, splat, windows.patch)
        if cert.ssim >= stopping_ssim(target) and _tail_share(residuals) <= TAIL_SHARE:
            found = replace(cert, sampled=sampled)
            return CertifiedDrops(drops[inverse].astype(np.float32), known.passes, found, "certified", step, rounds)
        count = min(_refine_count(int(known.scored.sum()), cert.ssim, target), known.passes)  # at most doubling
        if known.passes + count + known.sample_size >= EXACT_FRACTION * len(centers):
            break
        chosen = _refinement(centers, known.scored, sample, residuals, count, max(1, step // 2**rounds))
        if len(chosen):
            known.add(chosen, base_score - np.asarray((yield replace(windows, centers=centers[chosen])), np.float64))
    rest = np.flatnonzero(~known.scored)
    if len(rest):
        known.add(rest, base_score - np.asarray((yield replace(windows, centers=centers[rest])), np.float64))
    return CertifiedDrops(
        known.drops()[inverse].astype(np.float32), known.passes, Certificate.exact(), "exact", step, rounds
    )


@dataclass
class _Known:
    """A preset's scored windows: ``anchors`` ``A x 2`` with exact drops ``values`` ``(A,)``
    (grid nodes, which need not be windows, and scored windows), ``scored`` ``(U,)`` bool
    over the windows ``centers`` ``U x 2`` and their exact ``exact`` ``(U,)`` drops there."""

    centers: np.ndarray
    anchors: np.ndarray
    values: np.ndarray
    scored: np.ndarray
    exact: np.ndarray

    @classmethod
    def of(cls, centers: np.ndarray, grid: np.ndarray, values: np.ndarray) -> _Known:
        scored, exact = _coincide(centers, grid), np.zeros(len(centers))
        exact[scored] = values[_coincide_index(centers[scored], grid)]
        return cls(centers, grid, values, scored, exact)

    @property
    def passes(self) -> int:
        return len(self.anchors)

    @property
    def sample_size(self) -> int:
        """Windows the next round samples: :data:`PRESET_FRACTION` of the unscored, at least
        :data:`PRESET_SAMPLE`."""
        return _sample_size(int((~self.scored).sum()), PRESET_FRACTION, PRESET_SAMPLE)

    def add(self, windows: np.ndarray, drops: np.ndarray) -> None:
        """Windows ``(K,)`` (indices into ``centers``) scored exactly: ``drops`` ``(K,)``."""
        self.anchors, self.values = np.vstack([self.anchors, self.centers[windows]]), np.append(self.values, drops)
        self.exact[windows], self.scored[windows] = drops, True

    def drops(self) -> np.ndarray:
        """``(U,)`` drops: exact where scored, interpolated from the anchors elsewhere."""
        return np.where(self.scored, self.exact, _interpolate(self.anchors, self.values, self.centers))


def _fold_residuals(known: _Known, xy: np.ndarray, exact: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(S,)`` exact minus interpolated drops at the sampled windows ``xy`` (``S x 2``), each
    interpolated from the anchors and the sample's other :data:`FOLDS` - 1 folds: the sample
    goes into the map, so its residuals must come from interpolations that did not see it."""
    folds = rng.permutation(len(xy)) % FOLDS
    residuals = np.zeros(len(xy))
    for fold in np.unique(folds):
        out = folds == fold
        anchors = np.vstack([known.anchors, xy[~out]])
        residuals[out] = exact[out] - _interpolate(anchors, np.append(known.values, exact[~out]), xy[out])
    return residuals


def _tail_share(residuals: np.ndarray) -> float:
    """Share of the largest squared residual in their sum (0 when all are 0)."""
    squares = np.square(residuals)
    return float(squares.max() / squares.sum()) if squares.sum() > 0 else 0.0


def stopping_ssim(target: float) -> float:
    """The estimated SSIM at which a preset promising ``target`` stops refining:
    ``1 - (1 - MARGIN) (1 - target)`` (``high``: 0.97, ``fast``: 0.94)."""
    return 1.0 - (1.0 - MARGIN) * (1.0 - float(target))


def _refine_count(scored: int, estimate: float, target: float) -> int:
    """Windows to add so that the deficit ``1 - SSIM`` falls to ``1 - stopping_ssim(target)``,
    taking it as inversely proportional to the scored windows (at least a tenth more)."""
    now, goal = max(1.0 - estimate, 1e-6), max(1.0 - stopping_ssim(target), 1e-6)
    return int(np.ceil(scored * max(now / goal - 1.0, 0.1)))


def _coincide(centers: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``(U,)`` bool: the windows whose centre is one of ``anchors``."""
    return np.isin(_keys(centers), _keys(anchors))


def _coincide_index(centers: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Index into ``anchors`` of each of ``centers`` (all of which are anchors)."""
    keys = _keys(anchors)
    order = np.argsort(keys)
    return order[np.searchsorted(keys[order], _keys(centers))]


def _keys(xy: np.ndarray) -> np.ndarray:
    pixels = np.floor(np.asarray(xy, np.float64) + 0.5).astype(np.int64)
    return pixels[:, 0] * 1_000_003 + pixels[:, 1]
