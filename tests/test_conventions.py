"""Conventions that follow the papers (issue 23): odd default patches and the window rule,
Guided Backprop / eq. 1 from P(y), the fixed-image variant of eq. 7."""

import numpy as np
import pytest
import torch
from photos import BUNDLED

from facesal_fast import ops
from facesal_fast.saliency.cis import default_patch, odd_patch


def test_default_patch_is_the_nearest_odd_size_to_15_px_at_224():
    assert default_patch((64, 64)) == 5 and default_patch((224, 224)) == 15  # 15 * 64 / 224 = 4.29 -> 5, not 4
    for side in range(8, 400):
        v, p = 15 * side / 224, default_patch((side, side))
        assert p % 2 == 1 and abs(p - v) <= 1.0  # the nearest odd size is never more than 1 away
        assert all(abs(q - v) >= abs(p - v) for q in range(1, 40, 2))
    assert odd_patch(16, 224) == 17 and odd_patch(14, 224) == 15  # exact ties go to the larger odd size
    assert [odd_patch(p, 64) for p in (5, 9, 15, 25)] == [1, 3, 5, 7]
    with pytest.raises(ValueError, match="paper_patch"):
        odd_patch(0, 64)


def _window(patch: int, x: float, y: float) -> np.ndarray:
    """Pixels a window of ``patch`` at ``(x, y)`` blanks out of a 12 x 12 white image."""
    image = np.full((12, 12, 1), 255, np.uint8)
    out = ops.occlude_batch(image, np.array([[x, y]], np.float32), patch, "black", scale=1.0, layout="nhwc")
    return np.argwhere(np.asarray(out)[0, :, :, 0] == 0)


def test_window_placement_rule_odd_centred_even_one_pixel_past_the_centre():
    # odd: centred on the rounded point, as Algorithm 1's |i - x| < sz / 2
    cells = _window(5, 6.0, 4.4)
    assert (cells[:, 1].min(), cells[:, 1].max(), cells[:, 0].min(), cells[:, 0].max()) == (4, 8, 2, 6)
    # even (documented rule): cx - (p-1)//2 .. cx + p//2, i.e. one more pixel right / below;
    # Algorithm 1's slice x - sz/2 : x + sz/2 would give 4 .. 7, one pixel to the left
    cells = _window(4, 6.0, 6.0)
    assert (cells[:, 1].min(), cells[:, 1].max()) == (5, 8) and (cells[:, 0].min(), cells[:, 0].max()) == (5, 8)


@pytest.fixture(scope="module")
def fer_input():
    import cv2

    from facesal_fast import models

    grey = cv2.imread(str(BUNDLED / "img1.jpg"), cv2.IMREAD_GRAYSCALE)
    crop = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = torch.from_numpy((crop / 255.0 - 0.5) / 0.5)[None, None]
    return models.load_module("expression-fer").eval(), x


def test_guided_backprop_from_the_probability_on_a_bundled_model(fer_input):
    from facesal_fast.methods.guided_backprop import guided_backprop, guided_gradient, saliency_difference
    from facesal_fast.methods.masks import top_k_mask

    model, x = fer_input
    target = int(model(x).argmax())
    softmax_model = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))  # P(y) as the model's output
    prob = guided_gradient(model, x, target, output="probability")
    torch.testing.assert_close(prob, guided_gradient(softmax_model, x, target), rtol=1e-4, atol=1e-9)
    logit_map, prob_map = guided_backprop(model, x, target), guided_backprop(model, x, target, "probability")
    a, b = top_k_mask(logit_map, 5), top_k_mask(prob_map, 5)
    assert (a & b).sum() / (a | b).sum() < 0.99  # 7 classes: the two starting points give other maps
    other = (target + 1) % 7
    diff = saliency_difference(model, x, target, other, output="probability")
    ref = guided_gradient(softmax_model, x, target).clamp(min=0) - guided_gradient(softmax_model, x, other).clamp(min=0)
    np.testing.assert_allclose(diff, ref[0].clamp(min=0).amax(0).numpy(), rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="output"):
        guided_backprop(model, x, target, "softmax")


def test_identification_fixed_image_variant_keeps_the_anchor():
    from facesal_fast.scoring.embedding import identification_confidence

    def unit(deg):
        return [np.cos(np.radians(deg)), np.sin(np.radians(deg)), 0.0]

    gallery = torch.tensor([unit(0), unit(90), unit(-60)], dtype=torch.float32)
    labels = ["ann", "bob", "ann"]
    query = torch.tensor(unit(-50), dtype=torch.float32)  # closest ann image: -60 degrees
    fixed = identification_confidence(gallery, labels, "ann", query=query)
    per_copy = identification_confidence(gallery, labels, "ann")
    copies = torch.tensor([unit(-50), unit(5)], dtype=torch.float32)  # unoccluded, then an occluded copy
    expected = torch.tensor([np.cos(np.radians(10)), np.cos(np.radians(65))], dtype=torch.float32)
    torch.testing.assert_close(fixed(copies), expected)
    torch.testing.assert_close(per_copy(copies)[0], fixed(copies)[0])  # the same on the unoccluded image
    assert per_copy(copies)[1] > fixed(copies)[1]  # the per-copy default re-picks the 0 degree image
    with pytest.raises(ValueError, match="query"):
        identification_confidence(gallery, labels, "ann", query=torch.ones(4))
