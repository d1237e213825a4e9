"""facesal_fast.metrics against hand-computed values on tiny arrays."""

import numpy as np
import pytest
import torch

from facesal_fast.metrics import (
    average_drop,
    cascading_randomization,
    convergence_curve,
    curve_auc,
    deletion_curve,
    equal_mass,
    explanation_image,
    faithfulness_table,
    increase_in_confidence,
    insertion_curve,
    minmax,
    perturbation_batch,
    randomizable_layers,
    rise_blur,
    saliency_rank,
    spearman,
    split_half,
    ssim,
    win_percent,
)
from facesal_fast.metrics.similarity import ssim_map


def test_minmax_and_equal_mass_hand_values():
    h = np.array([[0.0, 1.0], [2.0, 4.0]])
    np.testing.assert_allclose(minmax(h), [[0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(equal_mass(h, 1.0), [[0, 1 / 7], [2 / 7, 4 / 7]])  # eq. 10, no clipping
    # s = 2.5 needs k = 2: min(1, [0, .5, 1, 2]) = [0, .5, 1, 1] sums to 2.5 (water-filling, H <= 1)
    np.testing.assert_allclose(equal_mass(h, 2.5), [[0, 0.5], [1, 1]], atol=1e-9)
    # budget larger than the support (3 pixels): H = 1 on the support
    np.testing.assert_allclose(equal_mass(h, 3.5), [[0, 1], [1, 1]])
    np.testing.assert_allclose(equal_mass(np.full((2, 2), 7.0), 1.0), np.full((2, 2), 0.25))  # constant map
    # same mass for very different maps: the equal-budget rule
    rng = np.random.default_rng(0)
    for _ in range(5):
        H = equal_mass(rng.normal(size=(8, 8)) ** 3, 10.0)
        assert H.min() >= 0 and H.max() <= 1 and H.sum() == pytest.approx(10.0, abs=1e-6)
    with pytest.raises(ValueError):
        equal_mass(h, 5.0)
    with pytest.raises(ValueError):
        minmax(np.array([[np.nan]]))


def test_explanation_image_hand_values():
    image = np.array([[100, 200], [50, 0]], np.uint8)
    H = np.array([[0.0, 0.5], [1.0, 0.25]])
    np.testing.assert_allclose(explanation_image(image, H), [[100, 100], [0, 0]])
    rgb = np.dstack([image] * 3)
    np.testing.assert_allclose(explanation_image(rgb, H)[:, :, 1], [[100, 100], [0, 0]])
    with pytest.raises(ValueError):
        explanation_image(image, H * 3)


def test_average_drop_increase_hand_values():
    base, expl = [0.8, 0.5, 0.9], [0.4, 0.6, 0.9]
    # drops: (0.8-0.4)/0.8 = 0.5, max(0, -0.2) = 0, 0 -> mean 1/6
    assert average_drop(base, expl) == pytest.approx(100 / 6)
    assert increase_in_confidence(base, expl) == pytest.approx(100 / 3)
    with pytest.raises(ValueError):
        average_drop([0.0], [0.1])
    with pytest.raises(ValueError):
        average_drop([0.5, 0.5], [0.1])


def test_win_percent_hand_values_and_sums_to_100():
    wins = win_percent({"a": [0.1, 0.5, 0.3], "b": [0.2, 0.4, 0.3], "c": [0.3, 0.6, 0.9]})
    # image 1: a; image 2: b; image 3: a and b tie -> half each
    assert wins == pytest.approx({"a": 50.0, "b": 50.0, "c": 0.0})
    rng = np.random.default_rng(1)
    for _ in range(20):
        m = rng.integers(1, 6)
        table = {f"m{i}": rng.integers(0, 3, size=7) / 2 for i in range(m)}  # many ties
        assert sum(win_percent(table).values()) == pytest.approx(100.0)
    t = faithfulness_table([0.8, 0.5, 0.9], {"x": [0.4, 0.6, 0.9], "y": [0.8, 0.1, 0.95]})
    assert t.rows["x"]["average_drop"] == pytest.approx(100 / 6)
    assert t.rows["y"]["increase"] == pytest.approx(100 / 3)
    assert t.rows["x"]["win"] + t.rows["y"]["win"] == pytest.approx(100.0)
    assert "| x |" in t.markdown()


def test_perturbation_batch_and_auc_hand_values():
    image = np.array([[10.0, 20.0], [30.0, 40.0]])
    sal = np.array([[0.1, 0.9], [0.5, 0.5]])  # order: (0,1), then (1,0) and (1,1) by index
    fr, batch = perturbation_batch(image, sal, 4, image, np.zeros_like(image), ties="row-major")
    np.testing.assert_allclose(fr, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(batch[1], [[10, 0], [30, 40]])
    np.testing.assert_allclose(batch[2], [[10, 0], [0, 40]])
    np.testing.assert_allclose(batch[4], 0)
    assert curve_auc([0, 0.5, 1], [1, 0.5, 0]) == pytest.approx(0.5)
    assert curve_auc([0, 1], [1, 1]) == pytest.approx(1.0)


def test_spearman_and_ssim_hand_values():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[10.0, 20.0], [40.0, 30.0]])
    assert spearman(a, b) == pytest.approx(0.8)  # 1 - 6 * (0 + 0 + 1 + 1) / (4 * 15)
    assert np.isnan(spearman(a, np.ones_like(a)))
    # constant images: sigma = cov = 0, SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = 1e-4
    x, y = np.full((16, 16), 0.2), np.full((16, 16), 0.6)
    assert ssim(x, y) == pytest.approx((2 * 0.2 * 0.6 + 1e-4) / (0.04 + 0.36 + 1e-4))
    rng = np.random.default_rng(2)
    img = rng.random((20, 20))
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(img, rng.random((20, 20))) < 0.2
    assert ssim(img, 1 - img) < 0
    mask = np.zeros((20, 20), bool)
    mask[:, :10] = True
    assert ssim(img, img * mask, mask=mask) == pytest.approx(ssim_map(img, img * mask)[mask].mean())
    assert spearman(a, b, mask=np.array([[True, True], [True, False]])) == pytest.approx(1.0)


def test_ssim_matches_explicit_gaussian_window():
    """At an interior pixel, SSIM from an explicit 11 x 11 Gaussian window (sigma 1.5) loop."""
    rng = np.random.default_rng(3)
    a, b = rng.random((15, 15)), rng.random((15, 15))
    r = np.arange(-5, 6)
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    i = j = 7
    pa, pb = a[i - 5 : i + 6, j - 5 : j + 6], b[i - 5 : i + 6, j - 5 : j + 6]
    ma, mb = (w * pa).sum(), (w * pb).sum()
    va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
    cov = (w * pa * pb).sum() - ma * mb
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    assert ssim_map(a, b)[i, j] == pytest.approx(expected, rel=1e-9)


def test_stability_hand_values():
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    conv = convergence_curve([a, b])
    final = (a + b) / 2
    assert conv == [(1, pytest.approx(np.linalg.norm(a - final) / np.linalg.norm(final))), (2, 0.0)]
    same = [np.array([[1.0, 2.0, 3.0]])] * 6
    assert split_half(same)["r"] == pytest.approx(1.0)
    rng = np.random.default_rng(4)
    signal = rng.random((5, 5))
    noisy = [signal + 0.05 * rng.normal(size=(5, 5)) for _ in range(20)]
    pure_noise = [rng.normal(size=(5, 5)) for _ in range(20)]
    assert split_half(noisy)["r"] > 0.9 > split_half(pure_noise)["r"]


def _region_model(region: np.ndarray):
    """Synthetic 2-class 'model': the logit of class 1 is the mean brightness of ``region``."""

    def score(batch: np.ndarray) -> np.ndarray:
        b = np.asarray(batch, np.float64).reshape(len(batch), *region.shape)
        z = 10 * (b[:, region].mean(axis=1) / 255 - 0.3)
        return 1 / (1 + np.exp(-z))  # softmax of [0, z] for class 1

    return score


def test_heatmap_on_the_sensitive_pixels_beats_a_random_one():
    rng = np.random.default_rng(5)
    region = np.zeros((16, 16), bool)
    region[4:8, 9:13] = True  # the only pixels the model looks at
    score = _region_model(region)
    images = [rng.integers(120, 256, (16, 16)).astype(np.float64) for _ in range(10)]
    base = [score(im[None])[0] for im in images]
    s = 0.1 * 256
    good = [
        score(explanation_image(im, equal_mass(region.astype(float) + 0.01 * rng.random((16, 16)), s))[None])[0]
        for im in images
    ]
    rand = [score(explanation_image(im, equal_mass(rng.random((16, 16)), s))[None])[0] for im in images]
    assert average_drop(base, good) > average_drop(base, rand) + 20
    assert win_percent({"good": good, "random": rand})["good"] == 100.0
    # deletion: lower AUC; insertion: higher AUC
    for _ in range(3):  # a bright feature on a dark face: blurring (insertion start) dims it
        im = np.where(region, rng.integers(200, 256, (16, 16)), rng.integers(0, 60, (16, 16))).astype(np.float64)
        good_map, rand_map = region + 0.01 * rng.random((16, 16)), rng.random((16, 16))
        assert deletion_curve(score, im, good_map, steps=16)[2] < deletion_curve(score, im, rand_map, steps=16)[2]
        assert insertion_curve(score, im, good_map, steps=16)[2] > insertion_curve(score, im, rand_map, steps=16)[2]


def test_cascading_randomization_on_a_small_cnn():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 2),
    )
    layers = randomizable_layers(model)
    assert [name for name, _ in layers] == ["5", "2", "0"]  # output layer first
    x = torch.randn(1, 1, 8, 8)

    def grad(m, i):
        xi = x.clone().requires_grad_(True)
        m(xi)[0, 1].backward()
        return xi.grad[0, 0].abs().numpy()

    before = [p.detach().clone() for p in model.parameters()]
    rows, maps = cascading_randomization(model, {"grad": grad}, 1, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the model is not touched
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and len(maps["grad"]) == 4
    assert rows[0]["spearman"] == 1.0 and rows[-1]["spearman"] < 0.5


def test_equal_mass_takes_the_positive_part_of_a_signed_map():
    h = np.array([[-1.0, 0.0], [1.0, 3.0]])  # positive part [0, 0, 1, 3] -> H' = [0, 0, 1/3, 1]
    np.testing.assert_allclose(equal_mass(h, 1.0), [[0, 0], [0.25, 0.75]])
    np.testing.assert_allclose(equal_mass(h, 1.0, positive=False), [[0, 0.25], [0.5, 1.0]] / np.float64(1.75))
    np.testing.assert_allclose(equal_mass(-np.abs(h) - 1, 2.0), np.full((2, 2), 0.5))  # no positive evidence: uniform
    # the minimal case: a signed blob on an exactly-zero background
    rng = np.random.default_rng(0)
    blob = np.zeros((64, 64))
    blob[16:48, 16:48] = rng.normal(0.1, 0.1, (32, 32))
    H = equal_mass(blob, 0.2 * blob.size)
    assert H.sum() == pytest.approx(0.2 * blob.size) and H[blob <= 0].sum() == 0.0
    assert equal_mass(blob, 0.2 * blob.size, positive=False)[blob == 0].sum() / H.sum() > 0.6  # the old rule


def test_random_tie_order_is_seeded_and_unbiased():
    sal = np.zeros((8, 8))
    sal[0, :3] = [3.0, 2.0, 1.0]  # three ordered pixels, 61 tied at 0
    a, b, c = (saliency_rank(sal, seed=k) for k in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert [a[0, 0], a[0, 1], a[0, 2]] == [0, 1, 2] and sorted(a.ravel()) == list(range(64))
    np.testing.assert_array_equal(saliency_rank(sal, ties="row-major").ravel()[3:], np.arange(3, 64))
    with pytest.raises(ValueError, match="ties"):
        saliency_rank(sal, ties="first")
    # null: a map that says nothing (all tied) must not score like a map of the right pixels.
    # The 'model' reads the top rows; row-major ties delete those first, random ties do not.
    rng = np.random.default_rng(3)
    region = np.zeros((16, 16), bool)
    region[:4] = True
    score = _region_model(region)
    flat, good = np.zeros((16, 16)), region + 0.01 * rng.random((16, 16))
    null_random, null_rowmajor, random_maps, planted = [], [], [], []
    for k in range(12):
        im = rng.integers(150, 256, (16, 16)).astype(np.float64)
        null_random.append(deletion_curve(score, im, flat, steps=16, draws=3, seed=k)[2])
        null_rowmajor.append(deletion_curve(score, im, flat, steps=16, ties="row-major")[2])
        random_maps.append(deletion_curve(score, im, rng.random((16, 16)), steps=16)[2])
        planted.append(deletion_curve(score, im, good, steps=16)[2])
    # calibration: the all-tied map matches random maps (within 0.03 AUC; measured 0.617 vs 0.622),
    # while the row-major order makes it look as good as the planted map (0.189 vs 0.189)
    assert abs(np.mean(null_random) - np.mean(random_maps)) < 0.03
    assert np.mean(null_rowmajor) < np.mean(random_maps) - 0.1
    assert np.mean(planted) < np.mean(random_maps) - 0.1  # power: the planted map still wins


def test_rise_substrates_match_the_reference_in_the_normalised_tensor():
    from scipy import ndimage

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (20, 24, 3)).astype(np.float32)
    mean, std, scale = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3]), 1 / 255
    x = torch.from_numpy(((image * scale - mean) / std).transpose(2, 0, 1)[None]).float()
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    kernel = torch.from_numpy(ndimage.gaussian_filter(delta, 5)).float()  # RISE's gkern(11, 5)
    weight = torch.zeros(3, 3, 11, 11)
    for c in range(3):
        weight[c, c] = kernel
    ref = torch.nn.functional.conv2d(x, weight, padding=5)[0].numpy().transpose(1, 2, 0)  # zero padding
    grey = (mean / scale).astype(np.float32)
    mine = (rise_blur(image, grey) * scale - mean) / std
    np.testing.assert_allclose(mine, ref, atol=2e-5)
    # deletion ends at the normalised zero (mean grey); insertion starts from the blur
    seen = []
    fr, curve, _ = deletion_curve(
        lambda b: seen.append(b.copy()) or np.zeros(len(b)), image, rng.random((20, 24)), steps=4, baseline=grey
    )
    np.testing.assert_allclose(seen[0][-1], np.broadcast_to(grey, image.shape))
    seen.clear()
    insertion_curve(
        lambda b: seen.append(b.copy()) or np.zeros(len(b)), image, rng.random((20, 24)), steps=4, baseline=grey
    )
    np.testing.assert_allclose(seen[0][0], rise_blur(image, grey))
    with pytest.raises(ValueError, match="blur"):
        insertion_curve(lambda b: np.zeros(len(b)), image, rng.random((20, 24)), blur="box")


def test_randomisation_cascade_has_one_step_per_weighted_layer():
    import torchvision

    vgg = randomizable_layers(torchvision.models.vgg16())
    assert len(vgg) == 16 and all(len(mods) == 1 for _, mods in vgg)
    assert [name for name, _ in vgg[:4]] == ["classifier.6", "classifier.3", "classifier.0", "features.28"]
    assert len(randomizable_layers(torchvision.models.alexnet())) == 8


def test_randomisation_cascade_on_a_bundled_model():
    from facesal_fast import models

    layers = randomizable_layers(models.load_module("gender"))
    names = [n for n, _ in layers]
    assert len(layers) == 15 and names[:3] == ["blocks.conv2d_7", "blocks.conv2d_6", "blocks.separable_conv2d_8"]
    separable = [mods for n, mods in layers if "separable" in n]
    assert len(separable) == 8 and all(len(m) == 2 for m in separable)  # depthwise + pointwise = one Keras layer
    assert sum(len(m) for _, m in layers) == 23  # every weighted module randomised exactly once
