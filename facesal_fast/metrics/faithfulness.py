"""Faithfulness of saliency maps: the CAM metrics with negative explanation images, and
deletion / insertion curves.

John et al. (TBIOM 2021, sec. IV-B), with ``M(.)`` the model's confidence in the target:

- Average Drop % = ``mean_n max(0, (M(I_n) - M(E_n)) / M(I_n)) x 100`` (eq. 11; the paper
  prints ``M(I_N)`` in the denominator, a typo for ``M(I_n)``). Higher is better.
- % Increase in confidence = ``mean_n 1[M(E_n) > M(I_n)] x 100`` (eq. 12). Lower is better.
- Win % = share of images where a method's ``M(E_n)`` is the lowest of the methods
  compared (eq. 13). Ties split the image equally between the tied methods, so the
  shares always sum to 100.

Deletion / insertion (Petsiuk et al., RISE 2018): pixels are removed from (deletion) or
inserted into (insertion) the image in order of decreasing saliency, ``steps`` equal
chunks; the curve is the confidence after each chunk and its area under the curve
(trapezoid over the fraction of pixels, in ``[0, 1]``) summarises it: a low deletion AUC
and a high insertion AUC are better. Defaults follow the RISE reference code:

- ties: pixels of equal saliency (a reprojected CIS is ~63% exactly 0) are taken in a
  random order, seeded, and the curve is the mean over ``draws`` orders
  (``ties="row-major"``: the old deterministic pixel order, one draw);
- deleted pixels take ``baseline``: pass the pixel value that the model's normalisation
  maps to 0 (the reference zeroes the normalised tensor: mean grey); 0 is black;
- insertion starts from the reference's blur: the 11 x 11 kernel of
  ``scipy.ndimage.gaussian_filter`` (sigma 5) applied to a centred delta, zero padding in
  the normalised tensor (``baseline`` in pixel units) (``blur="wide"``: the old Gaussian of
  sigma ``side / 8`` with reflected borders; a number: that sigma, reflected borders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np
from scipy import ndimage

__all__ = [
    "average_drop",
    "increase_in_confidence",
    "win_percent",
    "FaithfulnessTable",
    "faithfulness_table",
    "perturbation_batch",
    "deletion_curve",
    "insertion_curve",
    "curve_auc",
    "saliency_rank",
    "rise_blur",
    "TIES",
    "BLURS",
]

TIES = ("random", "row-major")
BLURS = ("rise", "wide")
RISE_KERNEL_SIZE, RISE_KERNEL_SIGMA = 11, 5.0


def _pair(base: Sequence[float], explained: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(base, np.float64).reshape(-1)
    e = np.asarray(explained, np.float64).reshape(-1)
    if b.shape != e.shape or b.size == 0:
        raise ValueError(f"need as many base as explanation confidences (> 0), got {b.size} and {e.size}")
    if not (np.isfinite(b).all() and np.isfinite(e).all()):
        raise ValueError("confidences must be finite")
    if (b <= 0).any():
        raise ValueError("base confidences M(I) must be > 0 (Average Drop divides by them)")
    return b, e


def average_drop(base: Sequence[float], explained: Sequence[float]) -> float:
    """Average Drop % (eq. 11) from ``M(I_n)`` and ``M(E_n)``."""
    b, e = _pair(base, explained)
    return float(np.mean(np.maximum(0.0, (b - e) / b)) * 100.0)


def increase_in_confidence(base: Sequence[float], explained: Sequence[float]) -> float:
    """% Increase in confidence (eq. 12): share of images with ``M(E_n) > M(I_n)``, x 100."""
    b, e = _pair(base, explained)
    return float(np.mean(e > b) * 100.0)


def win_percent(explained: Mapping[str, Sequence[float]], *, atol: float = 0.0) -> dict[str, float]:
    """Win % (eq. 13) of every method: share of images where its ``M(E_n)`` is lowest.

    Args:
        explained: method -> ``M(E_n)`` for the same N images.
        atol: confidences within ``atol`` of the minimum count as tied.
    Returns:
        method -> Win % (ties split equally; the values sum to 100).
    """
    names = list(explained)
    if not names:
        raise ValueError("no method to compare")
    table = np.stack([np.asarray(explained[n], np.float64).reshape(-1) for n in names])  # M x N
    if table.shape[1] == 0 or not np.isfinite(table).all():
        raise ValueError("need the same positive number of finite confidences for every method")
    winners = table <= table.min(axis=0, keepdims=True) + atol
    share = winners / winners.sum(axis=0, keepdims=True)
    return {n: float(v) for n, v in zip(names, share.mean(axis=1) * 100.0)}


@dataclass
class FaithfulnessTable:
    """Per-method Average Drop %, % Increase and Win % over the same images.

    ``rows``: method -> {"average_drop", "increase", "win", "n"}; ``base`` the ``M(I_n)``
    and ``explained`` method -> ``M(E_n)``.
    """

    rows: dict[str, dict[str, float]]
    base: np.ndarray
    explained: dict[str, np.ndarray] = field(default_factory=dict)

    def markdown(self, digits: int = 1) -> str:
        """The table as GitHub Markdown."""
        lines = [
            "| method | Average Drop % (higher better) | % Increase (lower better) | Win % (higher better) | images |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, r in self.rows.items():
            lines.append(
                f"| {name} | {r['average_drop']:.{digits}f} | {r['increase']:.{digits}f} | "
                f"{r['win']:.{digits}f} | {int(r['n'])} |"
            )
        return "\n".join(lines)


def faithfulness_table(base: Sequence[float], explained: Mapping[str, Sequence[float]]) -> FaithfulnessTable:
    """Average Drop %, % Increase and Win % for every method (same images, same order)."""
    b = np.asarray(base, np.float64).reshape(-1)
    wins = win_percent(explained)
    rows = {
        name: {
            "average_drop": average_drop(b, e),
            "increase": increase_in_confidence(b, e),
            "win": wins[name],
            "n": float(len(b)),
        }
        for name, e in explained.items()
    }
    return FaithfulnessTable(rows, b, {k: np.asarray(v, np.float64) for k, v in explained.items()})


def saliency_rank(saliency: np.ndarray, *, ties: str = "random", seed: int = 0) -> np.ndarray:
    """``H x W`` int64 rank of every pixel in order of decreasing saliency (0 = most salient).

    ``ties="random"``: equal values in a random order drawn from ``seed``;
    ``"row-major"``: equal values by pixel index.
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    sal = np.asarray(saliency, np.float64)
    flat = -sal.reshape(-1)
    if ties == "random":
        order = np.lexsort((np.random.default_rng(seed).random(flat.size), flat))
    else:
        order = np.argsort(flat, kind="stable")
    rank = np.empty(flat.size, np.int64)
    rank[order] = np.arange(flat.size)
    return rank.reshape(sal.shape)


def perturbation_batch(
    image: np.ndarray,
    saliency: np.ndarray,
    steps: int,
    start: np.ndarray,
    end: np.ndarray,
    *,
    ties: str = "random",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Images moving from ``start`` to ``end`` pixel by pixel in order of decreasing saliency.

    Returns ``(fractions (steps+1,), images (steps+1, *image.shape) float32)``: image k has
    the ``round(k / steps * n)`` most salient pixels taken from ``end``, the rest from
    ``start`` (ties ordered by :func:`saliency_rank` with ``ties`` and ``seed``).
    """
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    img = np.asarray(image)
    sal = np.asarray(saliency, np.float64)
    if sal.shape != img.shape[:2]:
        raise ValueError(f"saliency shape {sal.shape} does not match image {img.shape[:2]}")
    if not np.isfinite(sal).all():
        raise ValueError("saliency must be finite")
    n = sal.size
    counts = np.round(np.arange(steps + 1) / steps * n).astype(np.int64)
    taken = saliency_rank(sal, ties=ties, seed=seed)[None] < counts[:, None, None]  # K x h x w
    if img.ndim == 3:
        taken = taken[..., None]
    a, b = np.asarray(start, np.float32), np.asarray(end, np.float32)
    return counts / n, np.where(taken, b[None], a[None]).astype(np.float32)


def curve_auc(fractions: Sequence[float], scores: Sequence[float]) -> float:
    """Trapezoid area under ``scores`` over ``fractions`` (in ``[0, 1]``)."""
    x, y = np.asarray(fractions, np.float64), np.asarray(scores, np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def _rise_kernel() -> np.ndarray:
    """RISE's ``gkern(11, 5)``: ``gaussian_filter`` of a centred delta (sums to 1)."""
    delta = np.zeros((RISE_KERNEL_SIZE, RISE_KERNEL_SIZE))
    delta[RISE_KERNEL_SIZE // 2, RISE_KERNEL_SIZE // 2] = 1.0
    return ndimage.gaussian_filter(delta, RISE_KERNEL_SIGMA)


def rise_blur(image: np.ndarray, border: float | np.ndarray = 0.0) -> np.ndarray:
    """The RISE insertion substrate: the 11 x 11, sigma 5 kernel with zero padding in the
    normalised tensor, i.e. padding with ``border`` (pixel units, per channel) here.

    Args:
        image: ``h x w`` or ``h x w x C`` float image (pixel units).
        border: the pixel value that normalises to 0 (scalar or ``(C,)``).
    Returns:
        float32 array of ``image``'s shape.
    """
    img = np.asarray(image, np.float32)
    grey = np.broadcast_to(np.asarray(border, np.float32), img.shape)
    out = cv2.filter2D(img - grey, -1, _rise_kernel().astype(np.float32), borderType=cv2.BORDER_CONSTANT)
    return out.reshape(img.shape) + grey


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    img = np.asarray(image, np.float32)
    out = cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return out.reshape(img.shape)


def _substrate_blur(img: np.ndarray, blur: str | float, border: float | np.ndarray) -> np.ndarray:
    if isinstance(blur, str):
        if blur not in BLURS:
            raise ValueError(f"blur must be one of {BLURS} or a sigma > 0, got {blur!r}")
        return rise_blur(img, border) if blur == "rise" else _blur(img, max(img.shape[:2]) / 8.0)
    if not (isinstance(blur, (int, float, np.number)) and blur > 0):
        raise ValueError(f"blur must be one of {BLURS} or a sigma > 0, got {blur!r}")
    return _blur(img, float(blur))


def _mean_curve(
    score: Callable[[np.ndarray], np.ndarray],
    img: np.ndarray,
    saliency: np.ndarray,
    steps: int,
    start: np.ndarray,
    end: np.ndarray,
    ties: str,
    draws: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The curve averaged over ``draws`` tie orders (one when ``ties`` is row-major or the
    map has no ties: every draw would give the same order)."""
    if not isinstance(draws, (int, np.integer)) or draws < 1:
        raise ValueError(f"draws must be an integer >= 1, got {draws!r}")
    sal = np.asarray(saliency, np.float64)
    if ties == "row-major" or np.unique(sal).size == sal.size:
        draws = 1
    curves = []
    for d in range(draws):
        fr, batch = perturbation_batch(img, sal, steps, start, end, ties=ties, seed=seed + d)
        curves.append(np.asarray(score(batch), np.float64).reshape(-1))
    s = np.mean(curves, axis=0)
    return fr, s, curve_auc(fr, s)


def deletion_curve(
    score: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    steps: int = 32,
    baseline: float | np.ndarray = 0.0,
    ties: str = "random",
    draws: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Deletion: the most salient pixels first replaced by ``baseline``.

    Args:
        score: ``K x h x w [x C]`` float images (pixel units) -> ``(K,)`` confidences.
        image: ``h x w [x C]`` image (pixel units); saliency: ``h x w`` map.
        baseline: value of a deleted pixel (pixel units, scalar or ``(C,)``): the RISE
            reference uses the value that normalises to 0 (mean grey); 0 is black.
        ties, draws, seed: tie order (see :func:`saliency_rank`) and how many random
            orders are averaged.
    Returns:
        ``(fractions (steps+1,), confidences (steps+1,), AUC)``; lower AUC is better.
    """
    img = np.asarray(image, np.float32)
    end = np.broadcast_to(np.asarray(baseline, np.float32), img.shape)
    return _mean_curve(score, img, saliency, steps, img, end, ties, draws, seed)


def insertion_curve(
    score: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    steps: int = 32,
    blur: str | float = "rise",
    baseline: float | np.ndarray = 0.0,
    ties: str = "random",
    draws: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Insertion: start from a blurred copy and insert the most salient pixels first.

    Args:
        blur: ``"rise"`` (11 x 11, sigma 5, padded with ``baseline``), ``"wide"`` (sigma
            ``side / 8``, reflected) or a sigma in pixels (reflected).
        baseline: the pixel value that normalises to 0, the padding of the RISE blur.
        Other arguments as :func:`deletion_curve`.
    Returns:
        ``(fractions, confidences, AUC)``; higher AUC is better.
    """
    img = np.asarray(image, np.float32)
    return _mean_curve(score, img, saliency, steps, _substrate_blur(img, blur, baseline), img, ties, draws, seed)
