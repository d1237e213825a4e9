"""``ops.occlude_batch`` against plain torch: K occluded, normalised copies of one image.

``python benchmarks/occlude_batch.py`` prints both times and the speed-up;
``pytest benchmarks/occlude_batch.py`` runs the same pair through pytest-benchmark. The
outputs are checked for equality before anything is timed.

Shapes: image ``224 x 224 x 3`` uint8, centres ``256 x 2``, batch ``256 x 3 x 224 x 224`` float32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timing import Row, best_of, print_rows

from facesal_fast import ops

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def occlude_case(K: int = 256, size: int = 224, patch: int = 15, seed: int = 0):
    """(image size x size x 3 uint8, centres K x 2 float32, patch)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    centers = (rng.random((K, 2)) * size).astype(np.float32)
    return image, centers, patch


def occlude_torch(image: np.ndarray, centers: np.ndarray, patch: int) -> torch.Tensor:
    """What a user writes in plain torch: clone K copies, slice-assign black, normalise."""
    base = torch.from_numpy(image).permute(2, 0, 1).float()
    batch = base.unsqueeze(0).repeat(len(centers), 1, 1, 1)
    for k, (x, y) in enumerate(np.floor(centers + 0.5).astype(int)):
        batch[
            k, :, max(y - (patch - 1) // 2, 0) : y + patch // 2 + 1, max(x - (patch - 1) // 2, 0) : x + patch // 2 + 1
        ] = 0
    return (batch / 255 - MEAN) / STD


def occlude_native(image: np.ndarray, centers: np.ndarray, patch: int) -> np.ndarray:
    return ops.occlude_batch(image, centers, patch, "black", MEAN.flatten().tolist(), STD.flatten().tolist())


def run() -> list[Row]:
    """Equal outputs asserted, then the timed pair."""
    image, centers, patch = occlude_case()
    np.testing.assert_allclose(
        occlude_native(image, centers, patch), occlude_torch(image, centers, patch).numpy(), rtol=1e-5, atol=1e-5
    )
    return [
        (
            "occlude_batch K=256 224x224x3 p=15",
            best_of(lambda: occlude_torch(image, centers, patch)),
            best_of(lambda: occlude_native(image, centers, patch)),
        )
    ]


@pytest.mark.parametrize("impl", ["torch", "facesal"])
def test_occlude_batch(benchmark, impl):
    image, centers, patch = occlude_case()
    fn = occlude_torch if impl == "torch" else occlude_native
    out = benchmark(fn, image, centers, patch)
    assert tuple(out.shape) == (256, 3, 224, 224)


if __name__ == "__main__":
    print_rows(run())
