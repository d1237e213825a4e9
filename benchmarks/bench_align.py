"""Alignment speed on CPU: images per second for a batch of 32 real photos.

``pytest benchmarks/bench_align.py`` (pytest-benchmark) or ``python benchmarks/bench_align.py``
(prints a small table). Photos: the folder named by ``FACESAL_TEST_PHOTOS`` (the deepface unit-test
set; default: the bundled demo faces), single-face ones, resized
to 512 px on the long side ("512") or at their native sizes ("native", 400-4600 px). Stages:
``align`` = detection + Face Mesh + dense grid + visibility (N ~ 37k points), ``to_canonical``
= texture unwrap of the aligned faces, ``to_image`` = reprojecting a canonical map. ``main``
also times ``align`` with ``Aligner(check_orientation=False)``: the cost of the upside-down
check (both face detectors on the photo turned 180 degrees).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

FACES = Path(
    os.environ.get("FACESAL_TEST_PHOTOS")
    or Path(__file__).resolve().parents[1] / "facesal_fast" / "data" / "demo_faces"
)
BATCH = 32


def load_batch(size: int | None = 512, n: int = BATCH) -> list[np.ndarray]:
    from facesal_fast.align import load_image

    files = [p for p in sorted(FACES.glob("img*.jpg")) if "reflection" not in p.name][:n]
    out = []
    for p in files:
        im = load_image(p)
        if size is not None:
            s = size / max(im.shape[:2])
            im = cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        out.append(im)
    return out


@pytest.fixture(scope="module")
def aligner():
    from facesal_fast.align import default_aligner

    a = default_aligner()
    a(load_batch(512, 1)[0])  # load the MediaPipe graphs
    return a


@pytest.mark.skipif(not FACES.is_dir(), reason="shared face photos not available")
@pytest.mark.parametrize("size", [512, None], ids=["512", "native"])
def test_align_batch32(benchmark, aligner, size):
    images = load_batch(size)
    faces = benchmark.pedantic(aligner.batch, args=(images,), rounds=3, iterations=1)
    assert len(faces) == BATCH
    benchmark.extra_info["images_per_s"] = BATCH / benchmark.stats.stats.mean
    benchmark.extra_info["n_points"] = faces[0].n_points


@pytest.mark.skipif(not FACES.is_dir(), reason="shared face photos not available")
def test_warps_batch32(benchmark, aligner):
    faces = aligner.batch(load_batch(512))
    cmap = np.random.default_rng(0).random((256, 256), np.float32)

    def run():
        for f in faces:
            f.to_canonical()
            f.to_image(cmap)

    benchmark.pedantic(run, rounds=3, iterations=1)


def _best_of_3(aligner, images: list[np.ndarray]) -> tuple[float, list]:
    """(best seconds of three runs of ``aligner.batch(images)``, the faces of the last)."""
    aligner(images[0])
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        faces = aligner.batch(images)
        best = min(best, time.perf_counter() - t)
    return best, faces


def main() -> int:
    from facesal_fast.align import Aligner, default_aligner

    a, unchecked = default_aligner(), Aligner(check_orientation=False)
    rows = []
    for label, size in (("512 px", 512), ("native", None)):
        images = load_batch(size)
        best, faces = _best_of_3(a, images)
        rows.append((f"align, batch {BATCH}, {label}", BATCH / best, best / BATCH * 1e3))
        best = _best_of_3(unchecked, images)[0]  # the upside-down check's cost: two detector passes
        rows.append((f"  without the orientation check, {label}", BATCH / best, best / BATCH * 1e3))
        cmap = np.random.default_rng(0).random(faces[0].canonical_shape, np.float32)
        for name, fn in (("to_canonical", lambda f: f.to_canonical()), ("to_image", lambda f: f.to_image(cmap))):
            t = time.perf_counter()
            for f in faces:
                fn(f)
            dt = time.perf_counter() - t
            rows.append((f"{name}, {label}", BATCH / dt, dt / BATCH * 1e3))
    print(f"N dense points: {faces[0].n_points}; MediaPipe Face Mesh + detectors on CPU")
    print(f"{'stage':36s} {'images/s':>9s} {'ms/image':>9s}")
    for name, ips, ms in rows:
        print(f"{name:36s} {ips:9.1f} {ms:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
