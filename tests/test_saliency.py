"""CIS (Algorithm 1) against the naive per-vertex loop, grid mode, and the streamed CMS."""

from pathlib import Path

import numpy as np
import pytest
import torch
from reference import splat_add_ref
from torch import nn

from facesal_fast import ops
from facesal_fast.align import AlignedFace, load_image
from facesal_fast.core.options import CISOptions
from facesal_fast.saliency import CMSAccumulator, cis
from facesal_fast.saliency import cis as cis_module
from facesal_fast.saliency.cis import FacePoints, cis_steps, occlusion_drops
from facesal_fast.scoring import Scorer
from facesal_fast.scoring.batching import run_steps

FACES = Path(__file__).resolve().parents[1] / "facesal_fast" / "data" / "demo_faces"


def tiny_scorer() -> Scorer:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 3)
    ).eval()
    return Scorer.from_torch(net, None, mean=0.5, std=0.25, backend="torch", device="cpu", batch_size=64)


def synthetic_face(rng: np.random.Generator) -> AlignedFace:
    image = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    verts_image = (rng.random((300, 2)) * [36, 40]).astype(np.float32)
    verts_image[150:] = verts_image[:150] + 0.2  # many points share a window centre
    verts_canonical = (rng.random((300, 2)) * 32).astype(np.float32)
    visible = rng.random(300) > 0.2
    return AlignedFace.from_arrays(
        image,
        verts_image,
        verts_canonical,
        (32, 32),
        visible,
        mode="points",
        face_box=(0, 0, 36, 40),
        face_scale=36.0,
        canonical_scale=32.0,
    )


def test_cis_equals_naive_per_vertex_loop():
    rng = np.random.default_rng(0)
    face, scorer = synthetic_face(rng), tiny_scorer()
    result = cis(face.image, scorer, target=1, patch=5, canonical_patch=3, stride=2, face=face)
    used = face.visible & (np.arange(300) % 2 == 0)
    # Algorithm 1 literally: one occluded copy per vertex, scored, splatted one by one.
    image = face.image
    base = scorer.score(ops.occlude_batch(image, [[-1e6, -1e6]], 1, mean=0.5, std=0.25), target=1)[0]
    drops = []
    for x, y in face.verts_image[used]:
        occluded = ops.occlude_batch(image, [[x, y]], 5, "black", 0.5, 0.25)
        drops.append(base - scorer.score(occluded, target=1)[0])
    sums, counts = splat_add_ref(np.array(drops)[None], face.verts_canonical[used], 3, (32, 32))
    naive = np.where(counts > 0, sums[0] / np.where(counts > 0, counts, 1), 0)
    np.testing.assert_allclose(result.drops, drops, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.canonical, naive, rtol=1e-5, atol=1e-7)
    unique = len(np.unique(np.floor(face.verts_image[used] + 0.5), axis=0))
    assert result.forward_passes == unique < used.sum()
    assert result.target == 1 and result.canonical.shape == (32, 32)


def test_grid_mode_with_step_one_equals_exact():
    face, scorer = synthetic_face(np.random.default_rng(1)), tiny_scorer()
    exact = cis(face.image, scorer, target=0, patch=4, face=face)
    grid = cis(face.image, scorer, target=0, patch=4, face=face, mode="grid", grid_step=1)
    np.testing.assert_allclose(grid.canonical, exact.canonical, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def gender():
    from facesal_fast import models

    return models.load("gender", backend="onnx")


@pytest.fixture(scope="module")
def real_faces():
    from facesal_fast.align import default_aligner

    aligner = default_aligner()
    return [aligner(load_image(FACES / name), source=name) for name in ("img1.jpg", "img5.jpg", "img20.jpg")]


def test_grid_mode_tracks_exact_on_real_photos(gender, real_faces):
    correlations = []
    for face in real_faces:
        exact = cis(face.image, gender, face=face)
        grid = cis(face.image, gender, face=face, mode="grid", grid_step=2)
        covered = exact.counts > 0
        correlations.append(np.corrcoef(exact.canonical[covered], grid.canonical[covered])[0, 1])
        assert grid.forward_passes < exact.forward_passes
    # measured with the old 4 px patch: 0.973, 0.979, 0.990; with the odd 5 px default (issue 23):
    # 0.982, 0.984, 0.954 in a separate script (this test passed twice at >= 0.96 on img20, so
    # img20 sits near the old bound): the bound on the worst photo is 0.95 (docs/saliency.md)
    assert np.mean(correlations) >= 0.97 and min(correlations) >= 0.95


def test_real_cis_is_meaningful(gender, real_faces):
    result = cis(real_faces[0].image, gender, face=real_faces[0])
    assert result.target_name in ("woman", "man")
    assert np.isfinite(result.canonical).all() and result.canonical.max() > 0
    assert (result.counts > 0).mean() > 0.3  # the face covers much of the canonical frame
    shares = result.region_shares  # regions overlap (mouth = lips + between), 'other' is the rest
    assert all(0.0 <= v <= 1.0 for v in shares.values()) and sum(shares.values()) >= 1.0 - 1e-6
    assert result.overlay().shape == (256, 256, 3) and result.reprojected().shape == real_faces[0].image.shape


def test_bad_arguments(gender, real_faces):
    face = real_faces[0]
    with pytest.raises(ValueError, match="unknown class 'cat'"):
        cis(face.image, gender, target="cat", face=face)
    with pytest.raises(ValueError, match="mode must be"):
        cis(face.image, gender, face=face, mode="fast")
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        cis(face.image, gender, face=face, stride=0)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="grid_step must be a positive integer"):
            cis(face.image, gender, face=face, mode="grid", grid_step=bad)
    with pytest.raises(ValueError, match="patch must be a positive integer"):
        cis(face.image, gender, face=face, patch=-2)


def test_cms_accumulator_streams_the_mean_and_groups():
    rng = np.random.default_rng(2)
    maps = rng.random((12, 16, 16)).astype(np.float32)
    groups = ["a"] * 6 + ["b"] * 6
    maps[6:, :8] += 1.0  # group b relies more on the top half
    acc = CMSAccumulator((16, 16), bootstrap_size=8, bootstrap=200, permutations=500, min_group=6)
    for m, g in zip(maps, groups):
        acc.add(m, g)
    result = acc.result()
    np.testing.assert_allclose(result.cms, maps.mean(0), rtol=1e-6)
    np.testing.assert_allclose(result.groups["b"][0], maps[6:].mean(0), rtol=1e-6)
    (diff,) = result.differences
    assert (diff.a, diff.b) == ("a", "b")
    assert diff.significant[:4].all() and diff.high[:4].max() < 0  # b > a on top, CI excludes 0
    assert not diff.significant[4:].all()
    assert result.convergence[-1] == (12, 0.0) and result.convergence[0][1] > 0
    assert diff.p_adjusted[:4].max() < 0.05 and diff.n_a == diff.n_b == 6 and diff.too_few == []


def test_cms_checks_group_lengths_before_work_and_warns_about_failures(gender, tmp_path):
    from facesal_fast import cms

    photo, broken = FACES / "img1.jpg", tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="groups has 1 names but images has 2 items"):
        cms([photo, broken], gender, groups=["a"], progress=False, mode="grid", grid_step=4, stride=8)
    with pytest.warns(UserWarning, match=r"1 of 2 images failed.*broken\.jpg"):
        result = cms([photo, broken], gender, groups=["a", "b"], progress=False, mode="grid", grid_step=4, stride=8)
    assert result.count == 1 and list(result.groups) == ["a"]
    with pytest.raises(ValueError, match="groups has 1 names but images had 2 items"):
        cms(iter([photo, broken]), gender, groups=["a"], progress=False, mode="grid", grid_step=4, stride=8)


def test_cms_rejects_bad_maps():
    acc = CMSAccumulator((4, 4))
    with pytest.raises(ValueError, match="shape"):
        acc.add(np.zeros((5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        acc.add(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="no CIS map"):
        acc.result()


def test_adaptive_mode_refines_towards_exact():
    face, scorer = synthetic_face(np.random.default_rng(3)), tiny_scorer()
    exact = cis(face.image, scorer, target=2, patch=4, face=face)
    full = cis(face.image, scorer, target=2, patch=4, face=face, mode="adaptive", grid_step=3, refine=1.0)
    np.testing.assert_allclose(full.canonical, exact.canonical, rtol=1e-5, atol=1e-7)
    cheap = cis(face.image, scorer, target=2, patch=4, face=face, mode="adaptive", grid_step=6, refine=0.2)
    assert cheap.forward_passes < exact.forward_passes and cheap.settings["refine"] == 0.2


def test_cis_takes_its_options_as_one_record_a_mapping_or_keywords():
    face, scorer = synthetic_face(np.random.default_rng(4)), tiny_scorer()
    keywords = cis(face.image, scorer, 1, face=face, patch=4, mode="grid", grid_step=3, certify=False)
    record = CISOptions(patch=4, mode="grid", grid_step=3, certify=False)
    for options in (record, record.as_dict(), {"patch": 4, "mode": "grid", "grid_step": 3, "certify": False}):
        again = cis(face.image, scorer, 1, options, face=face)
        np.testing.assert_array_equal(again.canonical, keywords.canonical)
        assert again.settings == keywords.settings and again.forward_passes == keywords.forward_passes
    over = cis(face.image, scorer, 1, record, face=face, mode="exact")  # keywords override the record
    exact = cis(face.image, scorer, 1, face=face, patch=4)
    np.testing.assert_array_equal(over.canonical, exact.canonical)
    assert over.settings["mode"] == "exact" and keywords.settings["mode"] == "grid"
    steps = run_steps(cis_steps(face.image, scorer, 1, record, face=face))  # the twin takes the same
    np.testing.assert_array_equal(steps.canonical, keywords.canonical)
    with pytest.raises(TypeError, match="grid_stepp"):
        cis(face.image, scorer, 1, face=face, grid_stepp=3)
    with pytest.raises(TypeError, match="options must be a CISOptions"):
        cis(face.image, scorer, 1, "grid", face=face)
    with pytest.raises(ValueError, match="face= already chooses the face"):
        cis(face.image, scorer, 1, face=face, face_index=0)
    with pytest.raises(ValueError, match="face= already chooses the face"):
        run_steps(cis_steps(face.image, scorer, 1, {"faces": "all"}, face=face))
    assert not hasattr(cis_module, "MODES")  # the modes are named in core/options only


def test_occlusion_drops_take_the_options_record():
    face, scorer = synthetic_face(np.random.default_rng(5)), tiny_scorer()
    result = cis(face.image, scorer, 0, face=face, patch=4, mode="adaptive", grid_step=3, refine=0.5, certify=False)
    points = FacePoints.of(face, result.affine, 1)
    np.testing.assert_array_equal(points.used, result.used)
    options = CISOptions(patch=4, mode="adaptive", grid_step=3, refine=0.5)
    drops, passes = occlusion_drops(scorer, result.input_image, points.input, 0, result.base_score, options)
    np.testing.assert_array_equal(drops, result.drops)
    assert passes == result.forward_passes
    keywords = dict(patch=4, mode="adaptive", grid_step=3, refine=0.5)  # the old keyword call
    same, _ = occlusion_drops(scorer, result.input_image, points.input, 0, result.base_score, **keywords)
    np.testing.assert_array_equal(same, drops)


@pytest.mark.parametrize("columns, spread", [(2, 64.0), (4, 64.0), (2, 1.0), (2, 3.0e9)])
def test_unique_windows_matches_numpy_unique_rows(columns, spread):
    """Integer-key dedup == ``np.unique(axis=0)``: same rows, same (lexicographic) order, same
    inverse; ``spread`` 3e9 takes the overflow fallback, 1.0 puts every point in one window."""
    from facesal_fast.core.grid import unique_windows

    points = (np.random.default_rng(columns).random((5000, columns)) * spread - 3.0).astype(np.float32)
    points[::7] = points[1::7][: len(points[::7])]  # plenty of repeats
    centres, inverse = unique_windows(points)
    expected, expected_inverse = np.unique(
        np.floor(points.astype(np.float64) + 0.5).astype(np.int64), axis=0, return_inverse=True
    )
    np.testing.assert_array_equal(centres, expected.astype(np.float32))
    np.testing.assert_array_equal(inverse, expected_inverse.reshape(-1))
    np.testing.assert_array_equal(centres[inverse], np.floor(points.astype(np.float64) + 0.5).astype(np.float32))
    empty, empty_inverse = unique_windows(np.zeros((0, columns), np.float32))
    assert empty.shape == (0, columns) and empty_inverse.shape == (0,)
