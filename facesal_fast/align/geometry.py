"""Point-set geometry shared by the aligner, the models and the evaluation: the least-squares
similarity transform (Umeyama 1991)."""

from __future__ import annotations

import numpy as np

__all__ = ["similarity_transform"]


def similarity_transform(src: np.ndarray, dst: np.ndarray, *, reflection: bool = False) -> np.ndarray:
    """Least-squares similarity ``dst ~ s R src + t`` (rotation, uniform scale, translation)
    taking ``src`` onto ``dst`` (Umeyama 1991, as used for 5-point face alignment).

    Args:
        src, dst: ``(N, D)`` corresponding points (``N >= 1``, ``D >= 1``).
        reflection: allow ``R`` to be a reflection where that fits better (the scale is
            then the sum of the singular values); default a proper rotation.

    Returns:
        ``A (D, D + 1)`` float64 ``[s R | t]``: ``dst[n] ~ A[:, :D] @ src[n] + A[:, D]``;
        the scale is ``np.linalg.norm(A[:, 0])``.

    Raises:
        ValueError: naming ``src``/``dst`` when their shapes differ or are not ``(N, D)``,
            a coordinate is not finite, or all ``src`` points coincide (no scale to fit).
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.ndim != 2 or src.shape != dst.shape or src.size == 0:
        raise ValueError(f"src and dst must be (N, D) point sets of one shape, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("src and dst must have finite coordinates")
    mean_src, mean_dst = src.mean(0), dst.mean(0)
    a, b = src - mean_src, dst - mean_dst
    variance = a.var(0).sum()
    if variance <= 0:
        raise ValueError("src points all coincide: a similarity transform has no scale to fit")
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    sign = np.ones(src.shape[1])
    if not reflection and np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    linear = float((sig * sign).sum() / variance) * (u @ np.diag(sign) @ vt)
    return np.hstack([linear, (mean_dst - linear @ mean_src)[:, None]])
