"""Group statistics: family-wise error on real CIS maps under realistic nulls (unequal spread
and size, skewed paired differences, several photos per person, three groups), power for a
planted shift, exact small-sample p-values, interval coverage, the smallest detectable
shift, reliability intervals, convergence checkpoints, group-name collisions and argument
checks. The full measurement is ``benchmarks/calibration.py``."""

from pathlib import Path

import numpy as np
import pytest

from facesal_fast.align import load_image, region_masks
from facesal_fast.core.options import StatsOptions
from facesal_fast.report.figures import region_share_figure
from facesal_fast.saliency import CMSAccumulator
from facesal_fast.saliency.calibration import (
    CALIBRATE_STATS,
    Rows,
    Scenario,
    calibrate,
    coverage,
    error_rate,
    plant,
    power,
)
from facesal_fast.saliency.cms import _shares, convergence_checkpoints, small_map
from facesal_fast.saliency.resampling import exact_minimum
from facesal_fast.saliency.stats import (
    benjamini_hochberg,
    bootstrap_interval,
    controlled,
    difference_test,
    group_difference,
    group_differences,
    permutation_test,
    share_estimates,
    share_intervals,
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


@pytest.fixture(scope="module")
def region_rows(real_maps) -> Rows:
    return Rows.of(real_maps, "regions", region="left_eye", points=4.0)


def test_three_vs_three_cannot_go_below_the_exact_minimum():
    rng = np.random.default_rng(4)
    a, b = rng.normal(1, 0.1, (3, 13)), rng.normal(0, 0.1, (3, 13))
    for method in ("bootstrap", "permutation"):
        test = difference_test(a, b, method=method, permutations=2000)
        assert test.p_adjusted.min() >= 0.1 and test.p_raw.min() >= 0.1, method  # 2 of C(6, 3) = 20 labellings
    exact = permutation_test(a, b, permutations=2000)
    assert exact.exact and exact.permutations == 20 and (exact.p_error == 0).all()
    assert exact.p_adjusted.min() == pytest.approx(0.1)  # the observed split and its mirror: one code path, no rounding
    assert exact_minimum((3, 3)) == 0.1 and exact_minimum((3, 4)) == pytest.approx(1 / 35)
    assert exact_minimum((10,), one_sample=True) == pytest.approx(2 / 1024)
    signs = permutation_test(a - b, permutations=2000)
    assert signs.exact and signs.permutations == 8 and signs.p_adjusted.min() == pytest.approx(0.25)


def test_unequal_spread_keeps_the_family_wise_error_on_real_maps(region_rows):
    wide = Scenario("3x spread, 10 vs 40", (10, 40), (3.0, 1.0))
    valid = error_rate(region_rows, wide, draws=100, resamples=200, seed=1)
    exchangeable = error_rate(region_rows, wide, method="permutation", draws=100, resamples=200, seed=1)
    assert valid.rate <= 0.1, valid  # 0.05 expected; the default test's null is "equal means"
    assert exchangeable.rate >= 0.15, exchangeable  # shuffling labels of unlike groups finds what is not there


def test_skewed_paired_differences_and_repeated_persons_keep_the_error(region_rows):
    skewed = Scenario("skewed paired, 10", (10,), paired=True, skewed=True)
    assert error_rate(region_rows, skewed, draws=100, resamples=200, seed=2).rate <= 0.1
    persons = Scenario("10 persons x 4 photos", (10, 10), photos=4)
    assert error_rate(region_rows, persons, draws=60, resamples=200, seed=3).rate <= 0.1
    # the same photos as if each were another person: the test is fooled
    rng, hits = np.random.default_rng(3), 0
    from facesal_fast.saliency.calibration import draw

    for _ in range(60):
        groups, _ = draw(region_rows, persons, rng)
        hits += bool((difference_test(*groups, permutations=200, seed=rng).p_adjusted < 0.05).any())
    assert hits / 60 >= 0.15


def test_power_for_a_planted_eye_shift_on_real_maps(region_rows, real_maps):
    found = power(region_rows, Scenario("20 vs 20"), draws=60, resamples=300, seed=4)
    assert 3.5 < region_rows.shift_points < 4.5
    assert found.rate >= 0.7, found  # the permutation test's power before issue 31 at 20 vs 20
    old_interface = calibrate(real_maps, fraction=0.06, draws=40, permutations=200)
    assert old_interface.false_positive_rate <= 0.1 and 3.0 < old_interface.shift_points < 6.0


def test_intervals_cover_at_ten_per_group(region_rows):
    difference = coverage(region_rows, Scenario("10 vs 10", (10, 10)), draws=60, resamples=300, seed=5)
    assert difference.rate >= 0.93, difference
    estimate = coverage(region_rows, Scenario("10", (10, 10)), estimate=True, draws=60, resamples=300, seed=5)
    assert estimate.rate >= 0.93 and estimate.worst >= 0.85, estimate  # skewed lips: 0.77 without calibration
    shares = np.random.default_rng(6).dirichlet(np.ones(4), 12)
    wide = share_estimates(shares, list("abcd"), level=0.99)
    narrow = share_estimates(shares, list("abcd"), level=0.8)
    for r in "abcd":
        assert wide[r].low < narrow[r].low <= narrow[r].mean <= narrow[r].high < wide[r].high
        assert narrow[r].mean == pytest.approx(shares[:, "abcd".index(r)].mean())  # the mean of per-image shares


def test_pixel_test_finds_a_concentrated_shift_among_sparse_pixels_and_stays_valid():
    """Sparse, skewed pixels (most 0): with a 1% variance floor, resamples of ~0 SE inflated
    the null max |t| over the pixels, and a 12-pixel shift of 1.2 SD was outlined in ~1.5 of 12 (now ~6)."""
    rng = np.random.default_rng(12)

    def maps(n: int, spread: float = 1.0) -> np.ndarray:  # mean 0.3 whatever the spread
        return 0.3 + spread * (rng.exponential(1.0, (n, 256)) * (rng.random((n, 256)) < 0.3) - 0.3)

    found = 0
    for seed in range(10):
        a, b = maps(20), maps(20)
        a[:, :12] += 1.2
        found += (difference_test(a, b, family="pixels", permutations=300, seed=seed).p_adjusted[:12] < 0.05).sum()
    assert found / 120 >= 0.4, found
    false = [difference_test(maps(10, 3.0), maps(30), family="pixels", permutations=300, seed=s) for s in range(40)]
    assert np.mean([(t.p_adjusted < 0.05).any() for t in false]) <= 0.125  # 3x the spread, 10 vs 30


def test_share_interval_of_rare_shares_stays_bounded():
    """Resamples of nearly all-0 shares have SE ~0: their t must not blow the interval up."""
    rare = np.zeros((10, 3))
    rare[:3] = [[0.05, 0.002, 0], [0, 0.001, 0.03], [0.01, 0, 0]]
    rare[:, 1] = 0.2  # constant: rounding noise in its bootstrap t must not move the interval off it
    for name, e in share_estimates(rare, list("abc")).items():
        assert 0 <= e.low <= e.mean <= e.high < 20 * max(e.mean, 0.001), (name, e)


def test_three_groups_form_one_family():
    rng = np.random.default_rng(7)
    small = [rng.normal(size=(12, 4, 4)) for _ in range(3)]
    shares = [rng.normal(size=(12, 5)) for _ in range(3)]
    shares[0][:, 1] += 1.2
    means = [s.mean(0) for s in small]
    joint = group_differences("abc", means, small, shares, list("vwxyz"), permutations=400, min_group=5)
    alone = group_difference("a", "b", means[0] - means[1], small[:2], shares[:2], list("vwxyz"), permutations=400)
    assert [(d.a, d.b) for d in joint] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert joint[0].region_tests["w"].significant and joint[0].region_tests["w"].difference > 1
    assert joint[0].threshold > alone.threshold + 0.2  # the critical |t| of the max over 3 pairs, not 1
    assert "3 pairs of groups x 5 regions" in joint[0].controlled and "16 face pixels" in joint[0].controlled
    assert "mean per-image share and every pixel's mean value are the same in a and b" in joint[0].null_hypothesis
    assert "over the 1 pair of groups x" in controlled("fwer", 0.95, 1, 13, 790)


def test_persons_are_resampled_whole_and_counted_toward_min_group():
    rng = np.random.default_rng(8)
    acc = CMSAccumulator((16, 16), bootstrap_size=8, permutations=200, bootstrap=200, min_group=4)
    for i in range(24):  # 3 persons per group, 4 photos each
        acc.add(rng.random((16, 16)), "ab"[i % 2], person=f"p{i % 6}")
    result = acc.result()
    (difference,) = result.differences
    assert result.persons == {"a": 3, "b": 3} and (difference.persons_a, difference.n_a) == (3, 12)
    assert difference.too_few == ["too few persons in group a (n=3 < 4)", "too few persons in group b (n=3 < 4)"]
    assert result.small_groups == difference.too_few and "whole persons" in difference.null_hypothesis
    labels = np.repeat(np.arange(3), 4)
    test = permutation_test(rng.random((12, 3)), rng.random((12, 3)), persons=(labels, labels))
    assert test.exact and test.permutations == 20  # C(6, 3) labellings of whole persons, not C(24, 12) of photos


def test_detectable_shift_is_found_with_about_80_percent_power():
    rng = np.random.default_rng(9)
    first = difference_test(rng.normal(size=(15, 5)), rng.normal(size=(15, 5)), permutations=400, seed=0)
    shift, hits = first.detectable[0], 0
    assert 0.5 < shift < 2.5  # about (critical t + 0.84) standard errors of sqrt(2 / 15)
    for i in range(80):
        a, b = rng.normal(size=(15, 5)), rng.normal(size=(15, 5))
        a[:, 0] += shift
        hits += bool(difference_test(a, b, permutations=300, seed=i).p_adjusted[0] < 0.05)
    assert 0.6 <= hits / 80 <= 0.97


def test_p_values_corrections_and_monte_carlo_error():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(15, 6)), rng.normal(size=(15, 6))
    a[:, 2] += 2.0
    for method in ("bootstrap", "permutation"):
        test = difference_test(a, b, method=method, permutations=999, seed=3)
        assert test.p_adjusted[2] < 0.01 and (test.p_adjusted >= test.p_raw - 1e-12).all(), method
        assert not test.exact and (test.p_error > 0).all() and test.low[2] > 0 and test.high[0] > 0 > test.low[0]
        again = difference_test(a, b, method=method, permutations=999, seed=3)
        np.testing.assert_array_equal(test.p_adjusted, again.p_adjusted)  # seeded
    fdr = difference_test(a, b, permutations=999, seed=3, correction="fdr")
    np.testing.assert_allclose(fdr.p_adjusted, benjamini_hochberg(fdr.p_raw))
    np.testing.assert_allclose(
        benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5])), [0.04, 0.16 / 3, 0.16 / 3, 0.5]
    )  # R: p.adjust(.., "BH")
    paired = difference_test(a, a - 0.3 + rng.normal(0, 0.05, a.shape), paired=True, permutations=999)
    assert paired.paired and (paired.p_adjusted < 0.01).all()  # a consistent per-image shift


def test_bad_test_options_name_the_argument():
    x = np.ones((4, 3))
    for kwargs, word in (
        ({"permutations": 0}, "permutations"),
        ({"correction": "bonferroni"}, "correction"),
        ({"alpha": 1.5}, "alpha must be a number between 0 and 1"),
        ({"method": "wild"}, "method must be 'bootstrap'"),
        ({"family": "voxels"}, "family must be 'regions' or 'pixels'"),
        ({"persons": (np.arange(3), None)}, "persons must give one person label per image"),
    ):
        with pytest.raises(ValueError, match=word):
            difference_test(x, x, **kwargs)
    with pytest.raises(ValueError, match="paired"):
        permutation_test(x, x[:3], paired=True)
    with pytest.raises(ValueError, match="min_group"):
        CMSAccumulator((8, 8), min_group=0)
    with pytest.raises(ValueError, match="level"):
        CMSAccumulator((8, 8), level=95)
    with pytest.raises(ValueError, match="method"):
        CMSAccumulator((8, 8), method="wild")


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


def test_reliability_is_unbiased_and_its_intervals_cover():
    rng = np.random.default_rng(3)
    signal = np.linspace(0, 1, 64).reshape(8, 8)
    rho = signal.var() / (signal.var() + 0.3**2)  # one map's reliability
    truth = 10 * rho / (1 + 9 * rho)
    needed = 0.95 * (1 - rho) / (rho * 0.05)
    runs = [split_half_reliability(signal + rng.normal(0, 0.3, (10, 8, 8)), target=0.95) for _ in range(40)]
    assert abs(np.mean([r.reliability for r in runs]) - truth) < 0.03  # the random-split estimate was biased low
    assert np.mean([r.low <= truth <= r.high for r in runs]) >= 0.85
    assert np.mean([r.needed_low <= needed <= (r.needed_high or np.inf) for r in runs]) >= 0.85
    one = runs[0]
    assert one.low <= one.reliability <= one.high and one.needed_low <= one.images_needed
    assert one.more_needed == one.images_needed - 10 and one.more_needed_range[0] == one.needed_low - 10
    assert [m for m, _ in one.curve] == [4, 6, 8, 10]
    assert split_half_reliability(signal[None].repeat(3, 0)).images_needed is None  # too few to split


def test_paired_group_difference_uses_the_same_images(real_maps):
    masks = region_masks(real_maps.shape[1:])
    shifted = plant(real_maps, "forehead", 0.05)
    small = [np.stack([small_map(m, 16) for m in s]) for s in (shifted, real_maps)]
    shares = [np.stack([_shares(masks, m) for m in s]) for s in (shifted, real_maps)]
    args = ("A", "B", shifted.mean(0) - real_maps.mean(0), tuple(small), tuple(shares), list(masks))
    paired = group_difference(*args, paired=True, permutations=500, bootstrap=200, min_group=5)
    unpaired = group_difference(*args, paired=False, permutations=500, bootstrap=200, min_group=5)
    forehead_p = paired.region_tests["forehead"].p_adjusted
    assert paired.paired and paired.region_tests["forehead"].significant and forehead_p < 0.01
    assert unpaired.region_tests["forehead"].p_adjusted > forehead_p  # pairing removes the between-image spread
    assert paired.significant_regions[0] == "forehead"
    assert "need not be symmetric" in paired.null_hypothesis
    assert (paired.p_adjusted[0, 0], paired.p_raw[0, 0]) == (1.0, 1.0)  # an off-face corner: not in the family


def _three_groups(seed: int = 9):
    """Means, low-resolution maps (``n x 4 x 4``) and region shares (``n x 5``) of groups of 9, 11, 7."""
    rng = np.random.default_rng(seed)
    small = [rng.normal(size=(n, 4, 4)) for n in (9, 11, 7)]
    shares = [rng.normal(size=(n, 5)) for n in (9, 11, 7)]
    shares[0][:, 1] += 1.0
    return [s.mean(0) for s in small], small, shares


def _assert_same_tests(first, second) -> None:
    """Two lists of GroupDifference with equal p-values, intervals, flags and settings, bit for bit."""
    assert len(first) == len(second)
    for x, y in zip(first, second):
        for name in ("low", "high", "significant", "p_raw", "p_adjusted", "p_error"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)
        assert x.region_tests == y.region_tests and x.controlled == y.controlled
        assert (x.level, x.correction, x.method, x.min_group, x.permutations) == (
            y.level,
            y.correction,
            y.method,
            y.min_group,
            y.permutations,
        )


def test_stats_options_as_a_record_a_mapping_or_keywords_test_the_same():
    fields = dict(permutations=300, level=0.9, correction="fdr", min_group=5, method="permutation", seed=3)
    record = StatsOptions(**fields)
    means, small, shares = _three_groups()
    args = ("abc", means, small, shares, list("vwxyz"))
    by_record = group_differences(*args, record, bootstrap=200)
    _assert_same_tests(by_record, group_differences(*args, fields, bootstrap=200))
    _assert_same_tests(by_record, group_differences(*args, bootstrap=200, **fields))
    _assert_same_tests(by_record, group_differences(*args, StatsOptions(seed=3, level=0.5), bootstrap=200, **fields))
    _assert_same_tests(by_record, group_differences(*args, record, bootstrap=200, rng=np.random.default_rng(3)))
    assert (by_record[0].level, by_record[0].method, by_record[0].correction, by_record[0].min_group) == (
        0.9,
        "permutation",
        "fdr",
        5,
    )
    reseeded = group_differences(*args, record.replace(seed=4), bootstrap=200)
    assert not np.array_equal(reseeded[0].p_raw, by_record[0].p_raw)  # the record's seed seeds the draws
    maps = np.random.default_rng(5).random((16, 16, 16))
    results = []
    for stats, overrides in ((record, {}), (fields, {}), (None, fields)):
        accumulator = CMSAccumulator((16, 16), stats, bootstrap_size=8, bootstrap=100, **overrides)
        assert accumulator.stats == record and (accumulator.permutations, accumulator.level) == (300, 0.9)
        for i, m in enumerate(maps):
            accumulator.add(m, "ab"[i % 2])
        results.append(accumulator.result())
    for result in results[1:]:
        _assert_same_tests(results[0].differences, result.differences)
        assert result.share_intervals == results[0].share_intervals and (result.level, result.min_group) == (0.9, 5)
    small_maps = np.random.default_rng(6).random((20, 64, 64))
    own = calibrate(small_maps, draws=4, permutations=100)  # calibrate's own seed (7) where none is given
    assert own == calibrate(small_maps, StatsOptions(permutations=100, seed=7), draws=4)
    assert own == calibrate(small_maps, {"permutations": 100}, draws=4)
    with pytest.raises(TypeError, match="'permutation'"):
        group_differences(*args, permutation=300)
    with pytest.raises(ValueError, match="method must be 'bootstrap'"):
        CMSAccumulator((8, 8), {"method": "wild"})
    accumulator = CMSAccumulator((8, 8))
    accumulator.permutations = 300  # the attributes before the record: set, a checked copy replaces it
    assert accumulator.stats == StatsOptions(permutations=300)
    with pytest.raises(ValueError, match="level"):
        accumulator.level = 95


def test_the_old_confidence_keyword_sets_the_level_and_warns():
    means, small, shares = _three_groups()
    args = ("abc", means, small, shares, list("vwxyz"))
    new = group_differences(*args, permutations=300, level=0.9)
    with pytest.warns(DeprecationWarning, match="confidence= is now level=") as caught:
        old = group_differences(*args, permutations=300, confidence=0.9)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    _assert_same_tests(new, old)
    assert not np.array_equal(new[0].low, group_differences(*args, permutations=300)[0].low)  # 0.9, not 0.95
    with pytest.warns(DeprecationWarning, match=r"GroupDifference.confidence is now .level"):
        assert old[0].confidence == 0.9
    with pytest.raises(TypeError, match="not both"):
        group_differences(*args, level=0.9, confidence=0.9)
    with pytest.warns(DeprecationWarning) as caught:
        accumulator = CMSAccumulator((16, 16), bootstrap_size=8, permutations=200, bootstrap=100, confidence=0.8)
    assert caught[0].filename == __file__ and accumulator.level == 0.8
    for m in np.random.default_rng(2).random((8, 16, 16)):
        accumulator.add(m)
    result = accumulator.result()
    for thing in (accumulator, result):
        with pytest.warns(DeprecationWarning, match=r"\.confidence is now \.level"):
            assert thing.confidence == 0.8
    with pytest.warns(DeprecationWarning):
        assert share_estimates(shares[0], list("vwxyz"), confidence=0.8) == share_estimates(
            shares[0], list("vwxyz"), level=0.8
        )
    with pytest.warns(DeprecationWarning) as caught:
        intervals = share_intervals(shares[0], list("vwxyz"), confidence=0.8)
    assert len(caught) == 1 and caught[0].filename == __file__
    assert intervals == share_intervals(shares[0], list("vwxyz"), level=0.8)
    with pytest.warns(DeprecationWarning):
        reliability = split_half_reliability(small[1], confidence=0.8)
    assert repr(reliability) == repr(split_half_reliability(small[1], level=0.8))
    with pytest.warns(DeprecationWarning, match="Reliability.confidence"):
        assert reliability.confidence == 0.8
    interval = bootstrap_interval(
        shares[0], shares[1], paired=False, resamples=200, level=0.8, rng=np.random.default_rng(1)
    )
    with pytest.warns(DeprecationWarning):
        old_interval = bootstrap_interval(
            shares[0], shares[1], paired=False, resamples=200, confidence=0.8, rng=np.random.default_rng(1)
        )
    np.testing.assert_array_equal(interval, old_interval)
    with pytest.warns(DeprecationWarning):
        assert controlled("fwer", confidence=0.9, pairs=1, regions=13, pixels=10) == controlled("fwer", 0.9, 1, 13, 10)
    maps = np.random.default_rng(6).random((20, 64, 64))
    rows = Rows.of(maps, "regions")
    with pytest.warns(DeprecationWarning):
        rate = error_rate(rows, Scenario("8 vs 8", (8, 8)), draws=4, resamples=100, confidence=0.8)
    assert repr(rate) == repr(error_rate(rows, Scenario("8 vs 8", (8, 8)), draws=4, resamples=100, level=0.8))
    with pytest.warns(DeprecationWarning):
        found = power(rows, Scenario("8 vs 8", (8, 8)), draws=4, resamples=100, confidence=0.8)
    assert repr(found) == repr(power(rows, Scenario("8 vs 8", (8, 8)), draws=4, resamples=100, level=0.8))
    with pytest.warns(DeprecationWarning):
        calibration = calibrate(maps, draws=4, confidence=0.8)
    assert calibration == calibrate(maps, CALIBRATE_STATS.replace(level=0.8), draws=4)
    with pytest.warns(DeprecationWarning):
        legend = region_share_figure([("all", {"nose": (0.2, 0.1, 0.3)})], confidence=0.8).axes[0].get_legend()
    assert "80% CI" in legend.get_texts()[0].get_text()


def test_the_columns_family_is_family_and_level_its_old_name_warned():
    """What the columns are ("regions" / "pixels") is ``family``; ``level=`` and ``.level``, its
    names before 0.2, still work, warned, with the same results bit for bit. ``calibrate``
    takes its test's level in ``stats`` only: a number as ``level=`` is refused."""
    rng = np.random.default_rng(3)
    a, b = rng.random((8, 20)), 0.5 * rng.random((9, 20))
    new = difference_test(a, b, family="pixels", permutations=200, seed=1)
    with pytest.warns(DeprecationWarning, match="level= is now family=") as caught:
        old = difference_test(a, b, level="pixels", permutations=200, seed=1)
    assert len(caught) == 1 and caught[0].filename == __file__
    regions = difference_test(a, b, permutations=200, seed=1)
    assert not np.array_equal(new.statistic, regions.statistic)  # the pixel floor, not the regions' one
    for name, value in vars(new).items():
        np.testing.assert_array_equal(value, vars(old)[name], err_msg=name)
    maps = np.random.default_rng(6).random((20, 64, 64))
    with pytest.warns(DeprecationWarning, match="level= is now family="):
        rows = Rows.of(maps, level="pixels")
    assert rows.family == "pixels" and rows.null.shape == (20, 32 * 32)
    with pytest.warns(DeprecationWarning, match="Rows.level is now .family"):
        assert rows.level == "pixels"
    calibration = calibrate(maps, family="pixels", draws=2, permutations=100)
    with pytest.warns(DeprecationWarning, match="level= is now family=") as caught:
        assert calibrate(maps, level="pixels", draws=2, permutations=100) == calibration
    assert len(caught) == 1 and caught[0].filename == __file__
    assert calibration.family == "pixels" and calibrate(maps, draws=2, permutations=100).family == "regions"
    with pytest.warns(DeprecationWarning, match="Calibration.level is now .family"):
        assert calibration.level == "pixels"
    with pytest.raises(
        ValueError, match=r"level= is the old name of family= .*got 0.9; give the test's level in stats="
    ):
        calibrate(maps, level=0.9, draws=2)
    with pytest.raises(TypeError, match="pass family= .* not both"):
        calibrate(maps, level="pixels", family="regions", draws=2)
