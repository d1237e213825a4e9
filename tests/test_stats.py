"""Group statistics: permutation tests calibrated on real CIS maps (null: false positive
rate; planted effect: power), max-T / BH corrections, split-half reliability, convergence
checkpoints, group-name collisions and ``fs.cms`` argument checks."""

from pathlib import Path

import numpy as np
import pytest

from facesal_fast.align import load_image, region_masks
from facesal_fast.saliency import CMSAccumulator
from facesal_fast.saliency.calibration import calibrate, plant
from facesal_fast.saliency.cms import _shares, convergence_checkpoints, small_map
from facesal_fast.saliency.stats import (
    benjamini_hochberg,
    group_difference,
    permutation_test,
    split_half_reliability,
)

FACES = Path(__file__).resolve().parents[1] / "facesal_fast" / "data" / "demo_faces"
PHOTOS = [f"img{i}.jpg" for i in range(1, 13)]


@pytest.fixture(scope="module")
def real_maps() -> np.ndarray:
    """CIS maps of 12 bundled photos under the bundled gender model (coarse grid: ~1.5 s each)."""
    import facesal_fast as fs

    scorer = fs.models.load("gender", backend="onnx")
    return np.stack(
        [fs.cis(load_image(FACES / name), scorer, mode="grid", grid_step=4, stride=8).canonical for name in PHOTOS]
    )


def test_region_tests_are_calibrated_on_real_maps(real_maps):
    result = calibrate(real_maps, region="left_eye", fraction=0.06, draws=200, permutations=300)
    assert 3.0 < result.shift_points < 6.0  # a realistic shift: a few points of the saliency moved onto one eye
    assert result.false_positive_rate <= 0.1, result  # family-wise over 13 regions at 0.95
    assert result.power >= 0.8, result


def test_pixel_max_t_controls_the_family_wise_error_on_real_maps(real_maps):
    result = calibrate(real_maps, region="nose", fraction=0.3, level="pixels", draws=100, permutations=300)
    assert result.false_positive_rate <= 0.1, result
    assert result.power >= 0.8, result
    small = np.stack([small_map(m, 16) for m in real_maps]).reshape(len(real_maps), -1)
    planted = np.stack([small_map(m, 16) for m in plant(real_maps, "nose", 0.3)]).reshape(len(real_maps), -1)
    nose = small_map(region_masks(real_maps.shape[1:])["nose"].astype(np.float32), 16).reshape(-1) > 0.5
    test = permutation_test(planted, small, permutations=500, seed=1)
    hits = test.p_adjusted < 0.05
    assert hits.any() and hits[nose].mean() > hits[~nose].mean()
    assert hits.sum() <= (test.p_raw < 0.05).sum()  # the max-T family is stricter than pixel-by-pixel


def test_permutation_p_values_and_corrections():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(15, 6)), rng.normal(size=(15, 6))
    a[:, 2] += 2.0
    test = permutation_test(a, b, permutations=999, seed=3)
    assert test.p_adjusted[2] < 0.01 and (test.p_adjusted >= test.p_raw - 1e-12).all()
    assert test.p_raw.min() >= 1 / 1000 and test.effect_size[2] > 1.5
    again = permutation_test(a, b, permutations=999, seed=3)
    np.testing.assert_array_equal(test.p_adjusted, again.p_adjusted)  # seeded
    fdr = permutation_test(a, b, permutations=999, seed=3, correction="fdr")
    np.testing.assert_allclose(fdr.p_adjusted, benjamini_hochberg(fdr.p_raw))
    np.testing.assert_allclose(
        benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5])), [0.04, 0.16 / 3, 0.16 / 3, 0.5]
    )  # R: p.adjust(.., "BH")
    paired = permutation_test(a, a - 0.3 + rng.normal(0, 0.05, a.shape), paired=True, permutations=999)
    assert paired.paired and (paired.p_adjusted < 0.01).all()  # a consistent per-image shift
    assert not (permutation_test(a, b, paired=False, permutations=999).p_adjusted[[0, 1, 3, 4, 5]] < 0.05).any()


def test_bad_test_options_name_the_argument():
    x = np.ones((4, 3))
    for kwargs, word in (
        ({"permutations": 0}, "permutations"),
        ({"correction": "bonferroni"}, "correction"),
        ({"alpha": 1.5}, "alpha must be a number between 0 and 1"),
    ):
        with pytest.raises(ValueError, match=word):
            permutation_test(x, x, **kwargs)
    with pytest.raises(ValueError, match="paired"):
        permutation_test(x, x[:3], paired=True)
    with pytest.raises(ValueError, match="min_group"):
        CMSAccumulator((8, 8), min_group=0)
    with pytest.raises(ValueError, match="confidence"):
        CMSAccumulator((8, 8), confidence=95)


def test_small_groups_claim_nothing():
    rng = np.random.default_rng(1)
    maps = rng.random((13, 16, 16))
    maps[:3, :8] += 5.0  # a huge effect, but only 3 images in group b
    acc = CMSAccumulator((16, 16), bootstrap_size=8, permutations=200, bootstrap=200)
    for i, m in enumerate(maps):
        acc.add(m, "b" if i < 3 else "a")
    result = acc.result()
    (diff,) = result.differences
    assert not diff.significant.any() and not any(t.significant for t in diff.region_tests.values())
    assert (diff.p_adjusted < 0.05).any()  # the test itself saw it; the flags are withheld
    assert diff.too_few == ["too few images in group b (n=3 < 10)"]
    assert result.small_groups == ["too few images in group b (n=3 < 10)"]


def test_convergence_has_a_snapshot_at_every_checkpoint():
    marks = convergence_checkpoints(1000)
    assert marks[:10] == [1, 2, 3, 5, 7, 10, 15, 20, 30, 50] and all(x < y for x, y in zip(marks, marks[1:]))
    acc = CMSAccumulator((8, 8))
    rng = np.random.default_rng(2)
    for _ in range(40):
        acc.add(rng.random((8, 8)))
    curve = acc.result().convergence
    assert [n for n, _ in curve] == [1, 2, 3, 5, 7, 10, 15, 20, 30, 40]
    assert curve[-1][1] == 0.0 and all(d > 0 for _, d in curve[:-1])


def test_group_named_all_does_not_replace_the_overall_shares():
    acc = CMSAccumulator((64, 64))
    masks = region_masks((64, 64))
    for group, region in (("all", "nose"), ("all", "nose"), ("other", "forehead")):
        acc.add(masks[region] / masks[region].sum(), group)  # unit mass on one region
    result = acc.result()
    assert result.group_shares["all"]["nose"] == pytest.approx(1.0)
    assert result.overall_shares["nose"] == pytest.approx(2 / 3, abs=0.05)  # 2 of 3 maps
    assert result.region_shares["all"] == result.overall_shares
    assert result.region_shares["other"] == result.group_shares["other"]


def test_split_half_reliability_predicts_the_images_needed():
    rng = np.random.default_rng(3)
    signal = np.linspace(0, 1, 64).reshape(8, 8)
    noisy = signal + rng.normal(0, 2.0, (12, 8, 8))
    low = split_half_reliability(noisy, target=0.95)
    assert low.reliability < 0.95 and low.images_needed > 12 and low.more_needed == low.images_needed - 12
    # the prediction holds: that many maps from the same source reach about the target
    more = signal + rng.normal(0, 2.0, (low.images_needed, 8, 8))
    assert split_half_reliability(more, target=0.95).reliability > 0.9
    assert [m for m, _ in low.curve] == [4, 6, 8, 12]
    assert split_half_reliability(noisy[:3]).images_needed is None  # too few to split


def test_paired_group_difference_uses_the_same_images(real_maps):
    masks = region_masks(real_maps.shape[1:])
    shifted = plant(real_maps, "forehead", 0.05)
    small = [np.stack([small_map(m, 16) for m in s]) for s in (shifted, real_maps)]
    shares = [np.stack([_shares(masks, m) for m in s]) for s in (shifted, real_maps)]
    args = ("A", "B", shifted.mean(0) - real_maps.mean(0), tuple(small), tuple(shares), list(masks))
    paired = group_difference(*args, paired=True, permutations=500, bootstrap=200)
    unpaired = group_difference(*args, paired=False, permutations=500, bootstrap=200)
    forehead_p = paired.region_tests["forehead"].p_adjusted
    assert paired.paired and paired.region_tests["forehead"].significant and forehead_p < 0.01
    assert unpaired.region_tests["forehead"].p_adjusted > forehead_p  # pairing removes the between-image spread
    assert paired.significant_regions[0] == "forehead"
