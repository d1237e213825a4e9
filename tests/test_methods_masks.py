"""Top-k masks, group heatmaps, relative saliency and R² by class."""

import numpy as np
import pytest

from facesal_fast.methods.masks import group_mean_heatmaps, r2_by_class, relative_saliency, top_k_count, top_k_mask


@pytest.mark.parametrize("shape,percent", [((40, 50), 5.0), ((64, 64), 25.0), ((10, 10), 1.0), ((20, 30), 10.0)])
def test_top_k_mask_keeps_exactly_k_percent_of_the_highest_pixels(shape, percent):
    saliency = np.random.default_rng(0).random(shape)
    mask = top_k_mask(saliency, percent)
    k = shape[0] * shape[1] * percent / 100
    assert mask.sum() == k == top_k_count(saliency.size, percent)
    assert saliency[mask].min() > saliency[~mask].max()


def test_top_k_mask_breaks_ties_deterministically():
    mask = top_k_mask(np.zeros((10, 10)), 5)
    assert mask.sum() == 5 and mask.ravel()[:5].all()
    assert top_k_mask(np.zeros((64, 64))).sum() == round(0.05 * 4096)


def test_group_heatmaps_average_the_masks_per_person():
    maps = np.zeros((3, 4, 5))
    maps[0, 0, 0] = maps[1, 0, 1] = maps[2, 3, 4] = 1.0
    heat = group_mean_heatmaps(maps, ["ann", "ann", "bob"], percent=5)  # 1 pixel of 20
    assert list(heat) == ["ann", "bob"]
    assert heat["ann"][0, 0] == heat["ann"][0, 1] == 0.5 and heat["ann"].sum() == 1.0
    assert heat["bob"][3, 4] == 1.0 and heat["bob"].sum() == 1.0
    np.testing.assert_allclose(group_mean_heatmaps(maps, [0, 0, 1], percent=None)[0], maps[:2].mean(0))


def test_relative_saliency_of_the_mean_person_is_zero():
    rng = np.random.default_rng(1)
    heat = {p: rng.random((8, 8)) for p in "abc"}
    heat["mean"] = np.mean([heat[p] for p in "abc"], axis=0)
    relative = relative_saliency(heat)
    np.testing.assert_allclose(relative["mean"], 0, atol=1e-6)
    np.testing.assert_allclose(sum(relative.values()), 0, atol=1e-5)
    np.testing.assert_allclose(relative["a"], heat["a"] - np.mean(list(heat.values()), axis=0), atol=1e-6)


def test_r2_by_class():
    rng = np.random.default_rng(2)
    centres = rng.random((3, 6, 6))
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    exact = centres[labels]
    assert r2_by_class(exact, labels) == pytest.approx(1.0)
    noisy = exact + 0.1 * rng.standard_normal(exact.shape)
    within = sum(
        ((noisy[i] - noisy[[j for j in range(9) if labels[j] == labels[i]]].mean(0)) ** 2).sum() for i in range(9)
    )
    total = ((noisy - noisy.mean(0)) ** 2).sum()
    assert r2_by_class(noisy, labels) == pytest.approx(1 - within / total)
    assert 0.5 < r2_by_class(noisy, labels) < 1
    assert r2_by_class(exact, [0, 1, 2] * 3) < 0.5


def test_mask_errors():
    with pytest.raises(ValueError, match="percent"):
        top_k_mask(np.ones((4, 4)), 0)
    with pytest.raises(ValueError, match="H x W"):
        top_k_mask(np.ones(4))
    with pytest.raises(ValueError, match="one label per map"):
        r2_by_class(np.ones((2, 3, 3)), [0])
    with pytest.raises(ValueError, match="do not vary"):
        r2_by_class(np.ones((2, 3, 3)), [0, 1])


def test_top_k_count_rounds_halves_up():
    # 5 % of 50 pixels is 2.5: the nearest count with halves up is 3 (Python's round gives 2)
    assert top_k_count(50, 5) == 3 and top_k_count(10, 25) == 3 and top_k_count(90, 5) == 5  # 4.5 -> 5
    assert top_k_count(70, 5) == 4 and top_k_count(49, 5) == 2  # 3.5 -> 4, 2.45 -> 2
    mask = top_k_mask(np.arange(50.0).reshape(5, 10), 5)
    assert mask.sum() == 3 and mask.ravel()[-3:].all()
