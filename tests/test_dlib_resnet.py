"""The PyTorch port of dlib's face-recognition ResNet against dlib itself, and the chip alignment."""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from photos import FACES, photo

from facesal_fast.models.dlib_resnet import CHIP_PADDING, CHIP_SIZE, DlibReference, load_dlib_resnet, normalize_chips
from facesal_fast.scoring.geometry import DLIB_TEMPLATE_5, chip_affine, extract_chip

HAVE_DLIB = (
    importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models") is not None
)
needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason="dlib reference not installed: pip install 'facesal_fast[dlib]'")
needs_faces = pytest.mark.skipif(not FACES.is_dir(), reason=f"face photos not found at {FACES}")


def _rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(photo(name))), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_dlib_resnet()


@pytest.fixture(scope="module")
def reference() -> DlibReference:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
        return DlibReference()


def test_shapes_and_uint8_normalisation(model: torch.nn.Module) -> None:
    chips = torch.randint(0, 256, (2, 3, CHIP_SIZE, CHIP_SIZE), dtype=torch.uint8)
    with torch.no_grad():
        a = model(chips)
        b = model(normalize_chips(chips))
    assert a.shape == (2, 128) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_dlib
def test_converter_reproduces_shipped_weights(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import convert_dlib_weights as conv

    out = tmp_path / "w.npz"
    assert conv.main([str(conv.default_dat_path()), str(out)]) == 0
    fresh, shipped = (
        np.load(out),
        np.load(Path(__file__).resolve().parents[1] / "facesal_fast/models/weights/dlib_face_recognition_resnet.npz"),
    )
    assert sorted(fresh.files) == sorted(shipped.files)
    for key in fresh.files:
        np.testing.assert_array_equal(fresh[key], shipped[key], err_msg=key)


@needs_dlib
@needs_faces
@pytest.mark.parametrize("name", ["img1.jpg", "img10.jpg", "couple.jpg", "img11_reflection.jpg"])
def test_port_matches_dlib_descriptors(model: torch.nn.Module, reference: DlibReference, name: str) -> None:
    image = _rgb(name)
    shapes = reference.shapes(image)
    assert shapes, f"dlib found no face in {name}"
    chips = np.stack([reference.chip(image, s) for s in shapes])
    expected = reference.descriptors(chips)
    with torch.no_grad():
        got = model(torch.from_numpy(chips).permute(0, 3, 1, 2).contiguous()).numpy()
    assert np.abs(got - expected).max() <= 1e-4


def test_chip_affine_identity_and_rotation() -> None:
    template = (CHIP_PADDING + DLIB_TEMPLATE_5) / (2 * CHIP_PADDING + 1) * CHIP_SIZE
    # dlib's chip rectangle spans size*scale - 1 pixels about the template centre: at scale 1
    # the mapping is a half-pixel shift.
    np.testing.assert_allclose(chip_affine(template), [[1, 0, -0.5], [0, 1, -0.5]], atol=1e-9)
    theta, s, t = math.radians(25.0), 3.0, np.array([40.0, -7.0])
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    landmarks = template @ (s * rot).T + t
    a = chip_affine(landmarks)
    k = (CHIP_SIZE - 1) / (CHIP_SIZE * s - 1)
    np.testing.assert_allclose(a[:, :2], k * rot.T, atol=1e-9)


@needs_dlib
@needs_faces
@pytest.mark.parametrize("name", ["img10.jpg", "img5.jpg"])
def test_chip_matches_dlib_get_face_chip(reference: DlibReference, name: str) -> None:
    """Same geometry as dlib's get_face_chip_details + get_mapping_to_chip, same pixels without a pyramid."""
    import dlib

    image = _rgb(name)
    shape = reference.shapes(image)[0]
    details = dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
    r, angle = details.rect, details.angle
    centre = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    corners = np.array([[r.left(), r.top()], [r.right(), r.top()], [r.right(), r.bottom()]])
    src = (corners - centre) @ rot.T + centre
    dst = np.array([[0, 0], [CHIP_SIZE - 1, 0], [CHIP_SIZE - 1, CHIP_SIZE - 1]], dtype=np.float64)
    expected = np.linalg.solve(np.c_[src, np.ones(3)], dst).T
    landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    affine = chip_affine(landmarks)
    np.testing.assert_allclose(affine, expected, atol=1e-6)
    ours = extract_chip(image, affine)
    theirs = reference.chip(image, shape)
    assert np.abs(ours.astype(int) - theirs).mean() < 0.01
