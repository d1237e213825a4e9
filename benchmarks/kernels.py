"""Kernel micro-benchmarks: facesal_fast's native ops against plain torch equivalents.

Run as a script to print ratios (``python benchmarks/kernels.py``), or through
pytest-benchmark (``pytest benchmarks/bench_kernels.py``). Every pair is checked for
equal output before it is timed.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from facesal_fast import ops

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def occlude_case(K: int = 256, size: int = 224, patch: int = 15, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    centers = (rng.random((K, 2)) * size).astype(np.float32)
    return image, centers, patch


def occlude_torch(image: np.ndarray, centers: np.ndarray, patch: int) -> torch.Tensor:
    """What a user writes in plain torch: clone K copies, slice-assign black, normalise."""
    base = torch.from_numpy(image).permute(2, 0, 1).float()
    batch = base.unsqueeze(0).repeat(len(centers), 1, 1, 1)
    H, W = image.shape[:2]
    for k, (x, y) in enumerate(np.floor(centers + 0.5).astype(int)):
        batch[
            k, :, max(y - (patch - 1) // 2, 0) : y + patch // 2 + 1, max(x - (patch - 1) // 2, 0) : x + patch // 2 + 1
        ] = 0
    return (batch / 255 - MEAN) / STD


def occlude_native(image: np.ndarray, centers: np.ndarray, patch: int) -> np.ndarray:
    return ops.occlude_batch(image, centers, patch, "black", MEAN.flatten().tolist(), STD.flatten().tolist())


def splat_case(N: int = 40_000, size: int = 256, patch: int = 15, seed: int = 0):
    rng = np.random.default_rng(seed)
    points = (rng.random((N, 2)) * size).astype(np.float32)
    values = rng.normal(size=(1, N)).astype(np.float32)
    return values, points, patch, (size, size)


def window_indices(points: np.ndarray, patch: int, shape: tuple[int, int]):
    """Flattened (point, y, x) of every in-image pixel of every window, for index_put_."""
    H, W = shape
    offsets = np.arange(patch) - (patch - 1) // 2
    c = np.floor(points + 0.5).astype(np.int64)
    xs = (c[:, 0, None, None] + offsets[None, None, :]).repeat(patch, 1)
    ys = (c[:, 1, None, None] + offsets[None, :, None]).repeat(patch, 2)
    n = np.broadcast_to(np.arange(len(points))[:, None, None], xs.shape)
    keep = (xs >= 0) & (xs < W) & (ys >= 0) & (ys < H)
    return [torch.from_numpy(np.ascontiguousarray(a[keep])) for a in (n, ys, xs)]


def splat_torch(values: np.ndarray, indices, shape: tuple[int, int]):
    """index_put_(accumulate=True) of every window pixel (indices precomputed, not timed)."""
    n, ys, xs = indices
    sums = torch.zeros(shape, dtype=torch.float32)
    counts = torch.zeros(shape, dtype=torch.float32)
    sums.index_put_((ys, xs), torch.from_numpy(values[0])[n], accumulate=True)
    counts.index_put_((ys, xs), torch.ones(len(n)), accumulate=True)
    return sums, counts


def best_of(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run() -> list[tuple[str, float, float]]:
    image, centers, patch = occlude_case()
    np.testing.assert_allclose(
        occlude_native(image, centers, patch), occlude_torch(image, centers, patch).numpy(), rtol=1e-5, atol=1e-5
    )
    rows = [
        (
            "occlude_batch K=256 224x224x3 p=15",
            best_of(lambda: occlude_torch(image, centers, patch)),
            best_of(lambda: occlude_native(image, centers, patch)),
        )
    ]
    values, points, patch, shape = splat_case()
    indices = window_indices(points, patch, shape)
    sums, counts = ops.splat_add(values, points, patch, shape)
    ref_sums, ref_counts = splat_torch(values, indices, shape)
    np.testing.assert_allclose(sums[0], ref_sums.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(counts, ref_counts.numpy())
    rows.append(
        (
            "splat_add N=40k p=15 256x256",
            best_of(lambda: splat_torch(values, indices, shape)),
            best_of(lambda: ops.splat_add(values, points, patch, shape)),
        )
    )
    return rows


if __name__ == "__main__":
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'kernel':40s} {'torch ms':>10s} {'facesal ms':>11s} {'speed-up':>9s}")
    for name, t_torch, t_native in run():
        print(f"{name:40s} {t_torch * 1e3:10.2f} {t_native * 1e3:11.2f} {t_torch / t_native:8.1f}x")
