"""facesal_fast.interop.quantus: the model and explain_func Quantus takes (no quantus needed here), and
numpy targets for CanonicalOcclusion."""

from pathlib import Path

import numpy as np
import pytest
import torch

import facesal_fast as fs
from facesal_fast.align import default_aligner, load_image
from facesal_fast.interop.captum import _targets
from facesal_fast.interop.quantus import QuantusModel, quantus_explain, quantus_model

PHOTO = Path(__file__).resolve().parents[1] / "facesal_fast" / "data" / "demo_faces" / "img1.jpg"
QUICK = dict(stride=8, mode="grid", grid_step=8)


@pytest.fixture(scope="module")
def setup():
    scorer = fs.models.load("gender", backend="torch")
    model = quantus_model(scorer)
    return scorer, model, model.inputs([PHOTO], space="crop")


def test_numpy_targets_are_taken_as_lists_are():
    assert _targets(np.array([0]), 1) == [0] and _targets(np.array([1, 0]), 2) == [1, 0]
    assert _targets(np.int64(1), 2) == [1, 1] and _targets(np.array(["woman"]), 1) == ["woman"]
    assert _targets(torch.tensor([1, 0]), 2) == [1, 0] and _targets([np.int64(1)], 1) == [1]
    with pytest.raises(ValueError, match="target has 2 entries for 3 inputs"):
        _targets(np.array([0, 1]), 3)


def test_the_model_is_a_module_in_eval_mode_equal_to_the_scorer(setup):
    scorer, model, x = setup
    assert isinstance(model, torch.nn.Module) and not model.training and model.net is scorer.module
    assert x.shape == (1, 1, 64, 64) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    image = load_image(PHOTO)
    face = default_aligner()(image)
    expected = scorer.predict_input(scorer.prepare(image, face)[0]).outputs
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy()[0], expected, rtol=1e-4, atol=1e-4)
    photo = model.inputs([PHOTO], space="photo")  # the photo: aligned, cropped and normalised inside
    np.testing.assert_allclose(model(torch.from_numpy(photo)).detach().numpy()[0], expected, rtol=1e-4, atol=1e-4)


def test_explain_gives_the_cis_map_on_the_crop_and_keeps_the_face_under_noise(setup):
    scorer, model, x = setup
    target = np.array([0])  # numpy targets, as Quantus passes them
    maps = quantus_explain(model, x, target, **QUICK)
    assert maps.shape == (1, 1, 64, 64) and maps.dtype == np.float32
    image = load_image(PHOTO)
    face = default_aligner()(image)
    np.testing.assert_array_equal(maps[0, 0], fs.cis(image, scorer, 0, face=face, **QUICK).occlusion)
    noisy = x + np.random.default_rng(0).uniform(-0.05, 0.05, x.shape).astype(np.float32)  # leaves [0, 1]
    assert quantus_explain(model, noisy, 0, **QUICK).shape == (1, 1, 64, 64)  # clamped, same face
    with pytest.raises(ValueError, match=r"inputs must lie in \[0, 1\]"):
        quantus_explain(model, noisy, 0, clamp=False, **QUICK)
    with pytest.raises(ValueError, match="its face is unknown"):
        quantus_explain(model, np.zeros_like(x), 0, **QUICK)
    with pytest.raises(ValueError, match="one class per input"):
        quantus_explain(model, x, np.array([0, 1]), **QUICK)


def test_explain_on_the_photo_is_zero_outside_the_crop(setup):
    scorer, model, _ = setup
    photo = model.inputs([PHOTO], space="photo")
    maps = quantus_explain(model, photo, np.array([0]), **QUICK)
    assert maps.shape == (1, 1, *photo.shape[2:]) and 0 < (maps != 0).mean() < 0.5


def test_quantus_model_refuses_what_it_cannot_serve():
    from facesal_fast.scoring import Scorer

    black_box = Scorer.from_callable(lambda b: np.zeros((len(b), 2)), input_size=64, mean=0.5, std=0.5)
    with pytest.raises(ValueError, match="built from a torch module"):
        quantus_model(black_box)
    with pytest.raises(ValueError, match="QuantusModel"):
        quantus_explain(torch.nn.Linear(2, 2), np.zeros((1, 1, 64, 64)), 0)
    assert isinstance(quantus_model(fs.models.load("gender", backend="torch")), QuantusModel)
