"""Bundled models: registry, preprocessing, and predictions on real photos."""

import os

import cv2
import numpy as np
import pytest
import torch
from photos import FACES, requires_full_photos

from facesal_fast.models import KERAS_MODELS, from_keras_h5, load, load_module, weights_path
from facesal_fast.models.keras_h5 import read_keras_h5

# face boxes found by dlib's HOG detector (scripts/keras_reference.py); labels checked by eye
KNOWN = {
    "img1.jpg": ((399, 332, 1023, 955), "woman"),
    "img28.jpg": ((241, 68, 464, 291), "woman"),
    "img43.jpg": ((325, 67, 454, 196), "woman"),
    "img17.jpg": ((354, 148, 586, 380), "man"),
    "img33.jpg": ((617, 617, 1439, 1439), "man"),
    "img35.jpg": ((231, 231, 591, 593), "man"),
}


def _rgb(name):
    bgr = cv2.imread(os.path.join(FACES, name))
    if bgr is None:
        pytest.skip(f"shared face photo {name} not found")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_bundled_weights_and_licence_ship_with_the_package():
    folder = weights_path("gender").parent
    assert (folder / "LICENSE-face_classification.txt").is_file()
    for name, spec in KERAS_MODELS.items():
        model = read_keras_h5(weights_path(name))
        assert model.input_shape == (64, 64, 1)
        assert load_module(name).num_outputs == len(spec.classes)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="bundled models are"):
        load("height")


def test_gender_predictions_on_real_photos():
    scorer = load("gender", backend="torch")
    for name, (box, label) in KNOWN.items():
        prediction = scorer.predict(_rgb(name), box)
        assert prediction.label == label, f"{name}: predicted {prediction.label} {prediction.probabilities}"
        assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


@requires_full_photos
def test_expression_model_sees_broad_smiles():
    scorer = load("expression-fer", backend="torch")
    for name in ("img17.jpg", "img28.jpg", "img43.jpg"):
        assert scorer.predict(_rgb(name), KNOWN[name][0]).label == "happy", name


def test_scorer_preprocessing_matches_the_training_recipe():
    """Grey 64 x 64 crop, x/255, (x - 0.5) * 2: the scorer's base score equals the module
    run on that input by hand."""
    scorer = load("gender", backend="torch")
    rgb = _rgb("img1.jpg")
    input_image, affine = scorer.prepare(rgb, KNOWN["img1.jpg"][0])
    assert input_image.shape == (64, 64, 1) and input_image.dtype == np.uint8
    x = torch.from_numpy((input_image.astype(np.float32) / 255.0 - 0.5) * 2.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        probs = torch.softmax(load_module("gender")(x), 1)[0]
    assert scorer.base_score(input_image, "woman") == pytest.approx(float(probs[0]), abs=1e-6)
    # the face box centre maps to the input centre
    x0, y0, x1, y1 = KNOWN["img1.jpg"][0]
    u, v = affine @ np.array([(x0 + x1) / 2, (y0 + y1) / 2, 1.0])
    assert abs(u - 31.5) < 0.1 and abs(v - 31.5) < 0.1


def test_softmax_output_option_matches_logits():
    logits_net, probs_net = load_module("gender"), from_keras_h5(weights_path("gender"), softmax=True)
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(logits_net(x), 1), probs_net(x))


def test_models_is_a_deprecated_name_of_keras_models():
    from facesal_fast import models
    from facesal_fast.models import registry

    assert set(models.KERAS_MODELS) == {"gender", "expression-fer", "expression-kdef"}
    assert set(models.CLASSIFIERS) >= set(models.KERAS_MODELS) | set(models.DLIB_CLASSIFIERS)
    for module in (models, registry):
        with pytest.warns(DeprecationWarning, match=r"MODELS is deprecated; use .*KERAS_MODELS"):
            assert module.MODELS is registry.KERAS_MODELS
        with pytest.raises(AttributeError, match="no attribute 'KERAS'"):
            _ = module.KERAS
    assert "MODELS" not in models.__all__ and set(registry.__all__) <= set(models.__all__)
