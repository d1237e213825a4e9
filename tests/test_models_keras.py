"""The PyTorch ports match Keras layer by layer on real photos (keras 3, CPU backend, no TF)."""

import os

import cv2
import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras", reason="keras is not installed (pip install 'keras>=3.5')")

from photos import FACES  # noqa: E402

from facesal_fast.models import KERAS_MODELS, load_module, weights_path  # noqa: E402

PHOTOS = ["img1.jpg", "img5.jpg", "img12.jpg", "couple.jpg"]


def _keras_input() -> np.ndarray:
    """N x 64 x 64 x 1 normalised grey crops (central squares) of real photos."""
    crops = []
    for name in PHOTOS:
        grey = cv2.imread(os.path.join(FACES, name), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            pytest.skip(f"shared face photo {name} not found")
        h, w = grey.shape
        s = min(h, w)
        square = grey[(h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2]
        crops.append(cv2.resize(square, (64, 64), interpolation=cv2.INTER_AREA))
    x = np.stack(crops).astype(np.float32)[..., None] / 255.0
    return (x - 0.5) * 2.0


@pytest.mark.parametrize("name", sorted(KERAS_MODELS))
def test_every_layer_matches_keras(name):
    reference = keras.saving.load_model(str(weights_path(name)), compile=False)
    probe = keras.Model(reference.inputs, [layer.output for layer in reference.layers])
    x = _keras_input()
    keras_outs = [np.asarray(o) for o in probe.predict(x, verbose=0)]
    net = load_module(name)
    with torch.no_grad():
        ours = net.layer_outputs(torch.from_numpy(x).permute(0, 3, 1, 2))
    compared = 0
    for layer, k in zip(reference.layers, keras_outs):
        if layer.name not in ours:  # the final softmax: the port returns logits
            probs = torch.softmax(ours[net.output_name], 1).numpy()
            np.testing.assert_allclose(probs, k, atol=1e-4, rtol=0, err_msg=f"{name}: {layer.name}")
            continue
        t = ours[layer.name]
        t = (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()
        assert t.shape == k.shape, f"{name}: {layer.name} shape {t.shape} != keras {k.shape}"
        np.testing.assert_allclose(t, k, atol=1e-4, rtol=0, err_msg=f"{name}: {layer.name}")
        compared += 1
    assert compared == len(reference.layers) - 1
