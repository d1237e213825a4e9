"""Equal-budget heatmaps and negative explanation images (John et al., eqs. 9 and 10).

**Signed maps: the positive part first.** A map ``h`` is first reduced to its positive
part ``max(h, 0)`` (evidence *for* the target; what the CSM authors' ``SumNormalize``
does), then ``H' = (h+ - min h+) / (max h+ - min h+)`` (eq. 9) and ``H = (s / sum H') H'``
(eq. 10) with the same mass ``s`` for every method on one image, then ``E = (1 - H) (x) I``.
Every method is treated alike. Without the positive part, min-max scaling lifts the
exactly-zero background of a reprojected CIS / CMS / occlusion map (and the negative
values) above zero and spends much of the budget where the map says "no effect".
``positive=False`` keeps the old plain min-max for comparison.

Scaling ``H'`` up can push values above 1, which would make ``1 - H`` negative (an image
that is not an image); we keep ``H`` in ``[0, 1]`` by water-filling: ``H = min(1, k H')``
with ``k`` chosen so that ``sum H = s`` exactly. Only a map whose support (``H' > 0``) has
fewer than ``s`` pixels cannot reach the budget; it gets ``H = 1`` on its support (mass =
support size < ``s``). A constant map (no information, e.g. no positive value at all)
becomes the uniform map ``s / n``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["minmax", "equal_mass", "explanation_image"]


def minmax(h: np.ndarray) -> np.ndarray:
    """``(h - min) / (max - min)`` as float64; all zeros for a constant map."""
    h = np.asarray(h, np.float64)
    if h.size == 0 or not np.isfinite(h).all():
        raise ValueError("heatmap must be non-empty and finite")
    lo, hi = float(h.min()), float(h.max())
    return np.zeros_like(h) if hi <= lo else (h - lo) / (hi - lo)


def equal_mass(h: np.ndarray, s: float, *, positive: bool = True, iterations: int = 60) -> np.ndarray:
    """Positive part, min-max normalise and scale ``h`` to total mass ``s``, values in ``[0, 1]``.

    Args:
        h: ``H x W`` heatmap (any real values).
        s: the budget, ``0 <= s <= h.size`` (pixels' worth of darkening).
        positive: take ``max(h, 0)`` first (default; False: min-max of the signed map).
    Returns:
        float64 ``H x W`` ``H`` with ``H.sum() == s`` (up to float error) unless the
        support of ``H'`` is smaller than ``s`` (then ``H = 1`` on the support).
    """
    hp = minmax(np.maximum(np.asarray(h, np.float64), 0.0) if positive else h)
    n = hp.size
    if not 0 <= s <= n:
        raise ValueError(f"mass s must be in [0, {n}], got {s}")
    total = float(hp.sum())
    if total == 0.0:  # constant map: spread the budget uniformly
        return np.full_like(hp, s / n)
    k = s / total
    if hp.max() * k <= 1.0:  # plain eq. 10, no clipping needed
        return hp * k
    support = int((hp > 0).sum())
    if support <= s:
        return (hp > 0).astype(np.float64)
    lo, hi = k, 2.0 * k
    while np.minimum(1.0, hi * hp).sum() < s:
        lo, hi = hi, 2.0 * hi
    for _ in range(iterations):  # sum(min(1, k H')) is monotone in k
        mid = 0.5 * (lo + hi)
        if np.minimum(1.0, mid * hp).sum() < s:
            lo = mid
        else:
            hi = mid
    return np.minimum(1.0, hi * hp)


def explanation_image(image: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Negative explanation image ``E = (1 - H) (x) I`` as float32 (pixel units).

    Args:
        image: ``h x w`` or ``h x w x C`` image (uint8 or float, pixel units).
        H: ``h x w`` heatmap in ``[0, 1]`` (e.g. from :func:`equal_mass`).
    """
    img = np.asarray(image, np.float64)
    H = np.asarray(H, np.float64)
    if H.shape != img.shape[:2]:
        raise ValueError(f"heatmap shape {H.shape} does not match image {img.shape[:2]}")
    if H.min() < -1e-9 or H.max() > 1 + 1e-9:
        raise ValueError("heatmap must lie in [0, 1] (use equal_mass)")
    w = 1.0 - np.clip(H, 0.0, 1.0)
    return (img * (w[:, :, None] if img.ndim == 3 else w)).astype(np.float32)
