"""pytest-benchmark view of benchmarks/kernels.py (``pytest benchmarks/bench_kernels.py``)."""

import kernels
import numpy as np
import pytest

from facesal_fast import ops


@pytest.mark.parametrize("impl", ["torch", "facesal"])
def test_occlude_batch(benchmark, impl):
    image, centers, patch = kernels.occlude_case()
    fn = kernels.occlude_torch if impl == "torch" else kernels.occlude_native
    out = benchmark(fn, image, centers, patch)
    assert tuple(out.shape) == (256, 3, 224, 224)


@pytest.mark.parametrize("impl", ["torch", "facesal"])
def test_splat_add(benchmark, impl):
    values, points, patch, shape = kernels.splat_case()
    if impl == "torch":
        indices = kernels.window_indices(points, patch, shape)
        sums, _ = benchmark(kernels.splat_torch, values, indices, shape)
    else:
        sums, _ = benchmark(ops.splat_add, values, points, patch, shape)
    assert np.isfinite(np.asarray(sums)).all()
