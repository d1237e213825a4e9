"""Eq. 7 / eq. 8 saliency end to end: dlib chips from MediaPipe landmarks, the "dlib-resnet"
registry entry, identification CIS through ``facesal_fast.cis`` and verification CIS.

Real photos (bundled demo faces; deepface-unit's master.csv pairs when FACESAL_TEST_PHOTOS names
that set), the real dlib ResNet port; strides keep each CIS to ~100 occlusions on 2 CPU cores.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from photos import FACES as PHOTOS  # noqa: E402

import facesal_fast as fs
from facesal_fast import models
from facesal_fast.align import default_aligner, load_image
from facesal_fast.core.options import CISOptions
from facesal_fast.models.dlib_resnet import CHIP_PADDING, load_dlib_resnet
from facesal_fast.ops import splat_mean
from facesal_fast.saliency.cis import apply_affine
from facesal_fast.saliency.identity import (
    VerificationCISResult,
    identification_scorer,
    verification_cis,
    verification_scorer,
)
from facesal_fast.scoring import Scorer
from facesal_fast.scoring.embedding import embed_faces, verification_pair_scores
from facesal_fast.scoring.geometry import DLIB5_FROM_MEDIAPIPE, DLIB_TEMPLATE_5, chip_affine, extract_chip, five_points

DEMO = Path(fs.__file__).resolve().parent / "data" / "demo_faces"

STRIDE, PATCH = 500, 20  # ~70 points of ~36k, 20 px windows on the 150 px chip


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return models.load("dlib-resnet", backend="torch", batch_size=32)


@pytest.fixture(scope="module")
def faces() -> dict:
    aligner = default_aligner()
    return {name: aligner(load_image(DEMO / f"{name}.jpg")) for name in ("img1", "img2", "img4", "img13")}


def _genuine_pair() -> tuple[Path, Path]:
    """First genuine pair of deepface-unit's master.csv, else two bundled photos of one person."""
    if (PHOTOS / "master.csv").exists():
        with open(PHOTOS / "master.csv") as fh:
            row = next(r for r in csv.DictReader(fh) if r["Decision"] == "Yes")
        return PHOTOS / row["file_x"], PHOTOS / row["file_y"]
    return DEMO / "img1.jpg", DEMO / "img2.jpg"  # same person in master.csv


def test_registry_entry_loads_without_dlib(monkeypatch, scorer):
    monkeypatch.setitem(sys.modules, "dlib", None)  # any `import dlib` now fails
    fresh = models.load("dlib-resnet", backend="torch")
    assert (fresh.crop, fresh.outputs, fresh.classes, fresh.input_size) == ("chip", "embedding", None, (150, 150))
    assert "dlib-resnet" in models.EMBEDDING_MODELS and "dlib-resnet" not in models.MODELS
    chip = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="embeddings"):
        fresh.score_occluded(chip, np.zeros((1, 2), np.float32), 5)
    # the scorer's fused normalisation equals the module's own uint8 path
    x = torch.from_numpy(chip).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = load_dlib_resnet()(x)[0].numpy()
    out = fresh._base_outputs(fresh.input_tensor(chip))[0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_five_points_from_landmark_sets():
    mp = np.random.default_rng(1).normal(size=(478, 3)) * 50 + 200
    got = five_points(mp)
    for row, idx in zip(got, DLIB5_FROM_MEDIAPIPE):
        np.testing.assert_allclose(row, mp[list(idx), :2].mean(0))
    five = np.arange(10.0).reshape(5, 2)
    np.testing.assert_array_equal(five_points(five), five)
    ibug = np.random.default_rng(2).normal(size=(68, 2))
    np.testing.assert_array_equal(five_points(ibug)[[0, 2, 4]], ibug[[45, 36, 33]])
    with pytest.raises(ValueError, match="5 points"):
        five_points(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="square"):
        Scorer.from_callable(lambda b: b.reshape(len(b), -1)[:, :4], (150, 140), crop="chip")


def test_chip_prepare_matches_landmark_affine(scorer, faces):
    face = faces["img1"]
    chip, affine = scorer.prepare(face.image, face)
    expected = chip_affine(five_points(face))
    np.testing.assert_allclose(affine, expected)
    np.testing.assert_array_equal(chip, extract_chip(face.image, expected))
    # the eyes and nose land near dlib's template (least-squares fit of 5 points)
    template = (CHIP_PADDING + DLIB_TEMPLATE_5) / (1 + 2 * CHIP_PADDING) * 150
    assert np.abs(apply_affine(affine, five_points(face)) - template).max() < 6.0
    # cis passes only face.face_box: the photo is re-aligned (deterministically) to the same chip
    chip_box, affine_box = scorer.prepare(face.image, face.face_box)
    np.testing.assert_allclose(affine_box, affine, atol=1e-6)
    np.testing.assert_array_equal(chip_box, chip)
    # other crops are untouched
    gender = models.load("gender", backend="torch")
    assert gender.prepare(face.image, face)[0].shape == (64, 64, 1)


def test_chip_close_to_dlib_chip():
    pytest.importorskip("dlib")
    from facesal_fast.models.dlib_resnet import DlibReference

    ref, aligner = DlibReference(), default_aligner()
    grid = np.stack(np.meshgrid(np.arange(150.0), np.arange(150.0)), -1).reshape(-1, 2)
    for name in ("img1", "img13"):
        image = load_image(DEMO / f"{name}.jpg")
        face = aligner(image)
        dlib5 = ref.landmarks5(image)
        centre = np.array(face.face_box).reshape(2, 2).mean(0)
        dlib5 = dlib5[np.argmin([np.linalg.norm(p.mean(0) - centre) for p in dlib5])]
        ours, theirs = chip_affine(five_points(face)), chip_affine(dlib5)
        iod = np.linalg.norm(dlib5[0] - dlib5[2])
        assert np.linalg.norm(five_points(face) - dlib5, axis=1).max() / iod < 0.06
        # where our chip's pixels sit in dlib's chip
        lin = np.linalg.inv(ours[:, :2])
        in_image = (grid - ours[:, 2]) @ lin.T
        moved = np.linalg.norm(in_image @ theirs[:, :2].T + theirs[:, 2] - grid, axis=1)
        assert np.sqrt((moved**2).mean()) < 3.0, name
        with torch.no_grad():
            net = load_dlib_resnet()
            descs = [net(torch.from_numpy(extract_chip(image, a)).permute(2, 0, 1)[None])[0] for a in (ours, theirs)]
        assert float(torch.linalg.norm(descs[0] - descs[1])) < 0.3, name  # dlib's match threshold is 0.6


def test_identification_cis_on_genuine_photo(scorer, faces):
    gallery = embed_faces(scorer, [faces["img2"], faces["img4"], faces["img13"]])
    assert gallery.shape == (3, 128)
    ident = identification_scorer(gallery, ["A", "A", "B"], "A", scorer)
    result = fs.cis(faces["img1"].image, ident, face=faces["img1"], stride=STRIDE, patch=PATCH)
    assert 0.9 < result.base_score <= 1.0  # img1 and img2/img4 are one person (master.csv)
    assert result.input_image.shape == (150, 150, 3)
    assert np.isfinite(result.canonical).all() and np.isfinite(result.drops).all()
    assert result.canonical.clip(min=0).sum() > 0 and result.drops.max() > 0
    # photos as the gallery give the same confidence
    from_photos = identification_scorer([faces["img2"], faces["img4"]], ["A", "A"], "A", scorer)
    chip, _ = scorer.prepare(faces["img1"].image, faces["img1"])
    assert abs(from_photos.base_score(chip) - result.base_score) < 1e-5
    with pytest.raises(ValueError, match="binds its own target"):
        fs.cis(faces["img1"].image, ident, 0, face=faces["img1"], stride=STRIDE)


def test_verification_cis_genuine_pair(scorer):
    path1, path2 = _genuine_pair()
    aligner = default_aligner()
    face1, face2 = aligner(load_image(path1)), aligner(load_image(path2))
    result = verification_cis(None, None, scorer, 1, 0.923, face1=face1, face2=face2, stride=STRIDE, patch=PATCH)
    assert isinstance(result, VerificationCISResult)
    assert result.cosine > 0.923 and result.base_score > 0  # a genuine pair decided correctly
    assert np.isfinite(result.canonical).all() and result.counts.sum() > 0
    assert result.input_image2.shape == (150, 150, 3) and np.isfinite(result.occlusion2).all()
    assert result.drops.shape == (int(result.used.sum()),)
    # eq. 8 with one image left intact: the plain Scorer path
    one_sided = verification_scorer(face2, 1, 0.923, scorer)
    chip1, _ = scorer.prepare(face1.image, face1)
    assert abs(one_sided.base_score(chip1) - result.base_score) < 1e-5


def test_verification_cis_takes_the_options_record_and_is_algorithm_1(scorer, faces):
    face1, face2 = faces["img1"], faces["img2"]
    pair = dict(face1=face1, face2=face2)
    keywords = verification_cis(None, None, scorer, 1, 0.9, **pair, stride=STRIDE, patch=PATCH, batch_size=7)
    result = verification_cis(None, None, scorer, 1, 0.9, CISOptions(stride=STRIDE, patch=PATCH), **pair)
    np.testing.assert_allclose(result.drops, keywords.drops, atol=1e-5)  # batches of 7 or automatic
    assert result.settings == keywords.settings and result.forward_passes == keywords.forward_passes
    # Algorithm 1 by hand: each used point occluded in both chips, its drop splatted on the canonical face
    both = face1.visible & face2.visible & (np.arange(len(face1.visible)) % STRIDE == 0)
    np.testing.assert_array_equal(result.used, both)
    p1 = apply_affine(result.affine, face1.verts_image[both, :2])
    p2 = apply_affine(result.affine2, face2.verts_image[both, :2])
    scores = verification_pair_scores(scorer, result.input_image, result.input_image2, p1, PATCH, 1, 0.9, centers2=p2)
    np.testing.assert_allclose(result.drops, result.base_score - scores.numpy(), atol=1e-5)
    distinct = len(np.unique(np.floor(np.concatenate([p1, p2], 1) + 0.5), axis=0))
    assert result.forward_passes == 2 * (distinct + 1)
    canonical, _ = splat_mean(result.drops, face1.verts_canonical[both, :2], result.canonical_patch, (256, 256))
    np.testing.assert_array_equal(result.canonical, canonical)
    with pytest.raises(ValueError, match="scores every window"):
        verification_cis(None, None, scorer, 1, 0.9, **pair, stride=STRIDE, mode="grid")
    with pytest.raises(ValueError, match="face1= and face2="):
        verification_cis(None, None, scorer, 1, 0.9, **pair, face_index=0)
    with pytest.raises(TypeError, match="strides"):
        verification_cis(None, None, scorer, 1, 0.9, **pair, strides=4)


def test_pair_scores_scorer_matches_module(scorer, faces):
    chip1, _ = scorer.prepare(faces["img1"].image, faces["img1"])
    chip2, _ = scorer.prepare(faces["img2"].image, faces["img2"])
    centers = np.array([[40.0, 50.0], [75.0, 100.0], [-1e6, -1e6]], np.float32)
    from facesal_fast.models.dlib_resnet import DLIB_INPUT_STD, DLIB_MEAN_RGB

    norm = dict(mean=DLIB_MEAN_RGB, std=DLIB_INPUT_STD, scale=1.0)
    by_module = verification_pair_scores(load_dlib_resnet(), chip1, chip2, centers, 15, 1, 0.9, **norm)
    by_scorer = verification_pair_scores(scorer, chip1, chip2, centers, 15, 1, 0.9)
    torch.testing.assert_close(by_scorer, by_module, atol=1e-5, rtol=0)
    shifted = verification_pair_scores(scorer, chip1, chip2, centers, 15, 1, 0.9, centers2=centers + 30)
    assert abs(float(shifted[2] - by_scorer[2])) < 1e-6 and float(shifted[0]) != float(by_scorer[0])
