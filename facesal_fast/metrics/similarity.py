"""Similarity of two saliency maps: Spearman rank correlation and SSIM.

SSIM follows Wang, Bovik, Sheikh and Simoncelli (2004): local statistics under a Gaussian
window (sigma 1.5, truncated at 3.5 sigma, i.e. 11 x 11), ``C1 = (0.01 L)^2``,
``C2 = (0.03 L)^2`` with ``L`` the data range, population (not sample) covariances, and
the mean SSIM taken over the pixels whose window lies inside the image (the convention of
scikit-image's ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

__all__ = ["spearman", "ssim", "ssim_map"]


def _check(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(f"need two H x W maps of the same shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("maps must be finite")
    return a, b


def spearman(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Spearman rank correlation of two maps (over ``mask`` pixels when given); NaN when
    either map is constant (a rank correlation is undefined then)."""
    a, b = _check(a, b)
    if mask is not None:
        a, b = a[np.asarray(mask, bool)], b[np.asarray(mask, bool)]
    a, b = a.reshape(-1), b.reshape(-1)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def ssim_map(
    a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0, sigma: float = 1.5, truncate: float = 3.5
) -> np.ndarray:
    """Per-pixel SSIM of two maps (Gaussian window), full size."""
    a, b = _check(a, b)
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def g(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, sigma, truncate=truncate, mode="reflect")

    mu_a, mu_b = g(a), g(b)
    var_a = g(a * a) - mu_a**2
    var_b = g(b * b) - mu_b**2
    cov = g(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float = 1.0,
    sigma: float = 1.5,
    truncate: float = 3.5,
    mask: np.ndarray | None = None,
) -> float:
    """Mean SSIM over the pixels whose whole window is inside the image (all pixels for
    images smaller than the window), or over ``mask`` pixels when given."""
    m = ssim_map(a, b, data_range=data_range, sigma=sigma, truncate=truncate)
    if mask is not None:
        return float(m[np.asarray(mask, bool)].mean())
    pad = int(truncate * sigma + 0.5)
    if min(m.shape) > 2 * pad:
        m = m[pad:-pad, pad:-pad]
    return float(m.mean())
