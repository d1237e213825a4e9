"""pytest-benchmark twins of :mod:`facesal_fast.benchmark.cis_end_to_end` (small sizes):
image-space occlusion of the bundled gender model by captum, facesal_fast and incremental inference, and CIS exact /
grid on a real photo. Each exact method is checked equal to its peer before it is timed.

    pytest benchmarks/bench_cis_end_to_end.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest

from facesal_fast.benchmark.cases import FACES, bundled_case, csm_loop, window_centres
from facesal_fast.benchmark.cis_end_to_end import captum_map, scored_map
from facesal_fast.saliency import cis
from facesal_fast.saliency.cis import apply_affine
from facesal_fast.speed import IncrementalScorer

STRIDE = 4


@pytest.fixture(scope="module")
def case_and_face():
    return bundled_case("gender", FACES / "img1.jpg")


@pytest.fixture(scope="module")
def centres(case_and_face):
    case, _ = case_and_face
    return window_centres(case.input_image.shape[:2], case.patch, STRIDE)


@pytest.fixture(scope="module")
def captum_reference(case_and_face):
    return captum_map(case_and_face[0], STRIDE, 64)


def test_captum_occlusion(benchmark, case_and_face, captum_reference):
    benchmark(captum_map, case_and_face[0], STRIDE, 64)


@pytest.mark.parametrize("method", ["full", "onnxruntime", "incremental"])
def test_facesal_occlusion(benchmark, case_and_face, centres, captum_reference, method):
    case, _ = case_and_face
    scorer = {"full": case.scorer, "onnxruntime": case.onnx, "incremental": IncrementalScorer(case.scorer)}[method]
    np.testing.assert_allclose(scored_map(scorer, case, centres), captum_reference, atol=1e-5)
    benchmark(scored_map, scorer, case, centres)


@pytest.mark.parametrize("mode", ["exact", "grid"])
def test_cis(benchmark, case_and_face, mode):
    case, face = case_and_face
    run = dict(target=case.target, patch=case.patch, stride=100, face=face, mode=mode)
    if mode == "exact":
        exact = cis(face.image, case.scorer, **run)
        points = apply_affine(exact.affine, np.asarray(face.verts_image, np.float32)[exact.used, :2])
        loop, _ = csm_loop(case, face, exact.used, points, exact.canonical_patch)
        np.testing.assert_allclose(exact.canonical, loop, atol=1e-5)
    benchmark(cis, face.image, case.scorer, **run)
