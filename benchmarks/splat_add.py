"""``ops.splat_add`` against plain torch ``index_put_(accumulate=True)``.

``python benchmarks/splat_add.py`` prints both times and the speed-up;
``pytest benchmarks/splat_add.py`` runs the same pair through pytest-benchmark. The
outputs are checked for equality before anything is timed.

Shapes: values ``1 x 40000``, points ``40000 x 2``, sums ``1 x 256 x 256``, counts ``256 x 256``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timing import Row, best_of, print_rows

from facesal_fast import ops


def splat_case(N: int = 40_000, size: int = 256, patch: int = 15, seed: int = 0):
    """(values 1 x N float32, points N x 2 float32, patch, (size, size))."""
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


def run() -> list[Row]:
    """Equal outputs asserted, then the timed pair."""
    values, points, patch, shape = splat_case()
    indices = window_indices(points, patch, shape)
    sums, counts = ops.splat_add(values, points, patch, shape)
    ref_sums, ref_counts = splat_torch(values, indices, shape)
    np.testing.assert_allclose(sums[0], ref_sums.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(counts, ref_counts.numpy())
    return [
        (
            "splat_add N=40k p=15 256x256",
            best_of(lambda: splat_torch(values, indices, shape)),
            best_of(lambda: ops.splat_add(values, points, patch, shape)),
        )
    ]


@pytest.mark.parametrize("impl", ["torch", "facesal"])
def test_splat_add(benchmark, impl):
    values, points, patch, shape = splat_case()
    if impl == "torch":
        indices = window_indices(points, patch, shape)
        sums, _ = benchmark(splat_torch, values, indices, shape)
    else:
        sums, _ = benchmark(ops.splat_add, values, points, patch, shape)
    assert np.isfinite(np.asarray(sums)).all()


if __name__ == "__main__":
    print_rows(run())
