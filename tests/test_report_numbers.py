"""The report's numbers: one definition per number (the findings, the region table and the
bars show the mean per-image shares the tests compare), intervals around their estimates and
labelled with the level asked for, and the CMS as a per-pixel mean over the images that
cover the pixel, with its coverage map."""

import html
import re
from pathlib import Path

import numpy as np
import pytest
from test_report import _fake_run

import facesal_fast as fs
import facesal_fast.report.html as report_html
from facesal_fast import models
from facesal_fast.align import canonical_mask, load_image, region_masks
from facesal_fast.audit.comparison import compare, write_compare_report
from facesal_fast.audit.run_report import write_report
from facesal_fast.audit.runner import cms_from_store
from facesal_fast.audit.store import RunStore
from facesal_fast.saliency import CMSAccumulator
from facesal_fast.saliency.stats import share_intervals, split_half_reliability

SHAPE = (64, 64)
FAST_STATS = {"permutations": 400, "bootstrap": 300}


def _grouped_maps(rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """12 "man" maps ten times as strong as 12 "woman" maps, which put more on the nose."""
    nose = region_masks(SHAPE)["nose"]
    man = 10 * rng.random((12, *SHAPE))
    woman = rng.random((12, *SHAPE)) + 0.8 * nose
    return np.concatenate([man, woman]), ["man"] * 12 + ["woman"] * 12


def _cells(page: str) -> tuple[list[str], dict[str, list[tuple[float, float, float]]]]:
    """The region table: column labels and region label -> [(mean, low, high)] in percent."""
    table = re.search(r"<table class=shares>(.*?)</table>", page).group(1)
    labels = re.findall(r"<th>([^<]*)</th>", table)[1:]
    rows = {}
    for region, cells in re.findall(r"<tr><td>([^<]*)</td>(.*?)</tr>", table):
        found = re.findall(r"<td>([-\d.]+)% <small>\[([-\d.]+), ([-\d.]+)\]</small></td>", cells)
        rows[region] = [tuple(map(float, cell)) for cell in found]
    return labels, rows


def _quoted_shift(page: str, unit: str, first: str, second: str, region: str) -> tuple[float, float, float]:
    """(shift, first's share, second's share) in points / percent, from the findings sentence."""
    sentence = re.search(
        rf"For {unit} {first} the model puts ([\d.]+) points more of its saliency on the {region} than for {unit} "
        rf"{second} \(on average ([\d.]+)% of an image&#x27;s saliency against ([\d.]+)%",
        page,
    )
    assert sentence, f"the planted {region} shift is found and its sentence quotes both shares"
    return tuple(map(float, sentence.groups()))


def _report_and_bars(tmp_path, monkeypatch, seed: int, **options):
    """The report of :func:`_grouped_maps` as a run, and the region-share figure it drew."""
    maps, groups = _grouped_maps(np.random.default_rng(seed))
    run = _fake_run(tmp_path / "run", maps, [f"p{i:02d}.jpg" for i in range(24)], groups)
    drawn = []
    real_figure = report_html.region_share_figure
    monkeypatch.setattr(report_html, "region_share_figure", lambda *a: drawn.append(real_figure(*a)) or drawn[-1])
    page = write_report(run, **options, **FAST_STATS).read_text()
    (figure,) = drawn
    return page, figure


def test_findings_table_and_bars_show_one_number_per_region_and_group(tmp_path, monkeypatch):
    page, figure = _report_and_bars(tmp_path, monkeypatch, 0)
    labels, rows = _cells(page)
    assert labels == ["all images (n=24)", "man (n=12)", "woman (n=12)"]
    shift, woman, man = _quoted_shift(page, "group", "woman", "man", "nose")
    every, man_cell, woman_cell = rows["nose"]
    assert (woman, man) == (woman_cell[0], man_cell[0])  # the sentence's numbers are the table's
    assert shift == pytest.approx(woman - man, abs=0.11)  # its shift is their difference (each rounded)
    # "all images" is the mean over all 24 images: between the groups, not the strong group's share
    assert every[0] == pytest.approx((man + woman) / 2, abs=0.11)
    for cells in rows.values():  # every printed interval is around the estimate printed beside it
        assert all(low <= mean <= high for mean, low, high in cells)
    differences = re.findall(r"<td>([-+][\d.]+)</td><td>\[([-+][\d.]+), ([-+][\d.]+)\]</td>", page)
    assert len(differences) == len(rows) and all(float(lo) <= float(d) <= float(hi) for d, lo, hi in differences)
    heights = [np.round(c.datavalues, 1) for c in figure.axes[0].containers if hasattr(c, "datavalues")]
    names = list(region_masks(SHAPE))
    assert [h[names.index("nose")] for h in heights] == [every[0], man_cell[0], woman_cell[0]]


def test_compare_page_quotes_the_numbers_of_its_table(tmp_path):
    rng = np.random.default_rng(2)
    maps = 10 * rng.random((16, *SHAPE))
    keys = [f"p{i:02d}.jpg" for i in range(16)]
    before = _fake_run(tmp_path / "before", maps, keys)
    after = _fake_run(tmp_path / "after", maps / 10 + 0.8 * region_masks(SHAPE)["nose"], keys)
    c = compare(after, before, **FAST_STATS)
    page = write_compare_report(c, tmp_path / "cmp").read_text()
    shift, first, second = _quoted_shift(page, "run", "after", "before", "nose")
    table = re.search(r"<table class=shares>(.*?)</table>", page).group(1)
    cells = re.search(r"<tr><td>nose</td><td>([\d.]+)%</td><td>([\d.]+)%</td></tr>", table).groups()
    assert (first, second) == tuple(map(float, cells))  # the sentence's numbers are the table's
    assert shift == pytest.approx(first - second, abs=0.11)
    assert c.shares_a["nose"] - c.shares_b["nose"] == pytest.approx(c.difference.region_tests["nose"].difference)


def test_interval_labels_follow_the_level(tmp_path, monkeypatch):
    page, figure = _report_and_bars(tmp_path, monkeypatch, 1, level=0.9)
    assert "90% bootstrap CI" in page and "90% CI" in page and "95%" not in page
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend and all("90% CI" in text for text in legend)


def _partly_covered_run(tmp_path) -> tuple[RunStore, np.ndarray]:
    """12 maps of 1.0 on the face; 6 of them cover only its left 83% (counts 0 on the right)."""
    face = canonical_mask(SHAPE)
    cut = int(0.83 * SHAPE[1])
    counts = np.repeat(face[None].astype(np.float32), 12, axis=0)
    counts[6:, :, cut:] = 0
    maps = (counts > 0).astype(np.float32)
    run = _fake_run(tmp_path / "run", maps, [f"p{i:02d}.jpg" for i in range(12)], ["a", "b"] * 6, counts)
    strip = face.copy()
    strip[:, :cut] = False
    return run, strip


def test_cms_is_the_mean_over_the_images_covering_each_pixel(tmp_path):
    run, strip = _partly_covered_run(tmp_path)
    face = canonical_mask(SHAPE)
    with RunStore(run) as store:
        result = cms_from_store(store)
    assert strip.any() and np.allclose(result.cms[face], 1.0)  # no stripe where half the faces end
    assert np.allclose(result.coverage[strip], 0.5) and np.allclose(result.coverage[face & ~strip], 1.0)
    for group, (cmap, n) in result.groups.items():
        assert n == 6 and np.allclose(cmap[face], 1.0), group
        assert np.allclose(result.group_coverage[group][strip], 0.5)
    page = write_report(run, **FAST_STATS).read_text()
    assert "<h2>Coverage</h2>" in page and "least covered pixel by 6 of 12 images" in page
    assert "fraction of images covering each pixel" in page


def test_a_face_cut_by_the_photo_edge_leaves_no_stripe_in_the_cms():
    photo = load_image(Path(fs.__file__).parent / "data" / "demo_faces" / "img1.jpg")
    scorer = models.load("gender", backend="onnx")
    options = {"mode": "grid", "grid_step": 8, "stride": 8}
    full = fs.cis(photo, scorer, **options)
    x0, _, x1, _ = full.face.face_box
    cut = np.ascontiguousarray(photo[:, : int(x0 + 0.8 * (x1 - x0))])  # the subject's left fifth is gone
    result = fs.cms([photo, cut], scorer, progress=False, **options)
    face = canonical_mask(full.canonical.shape)
    alone = face & (result.coverage == 0.5)  # where only the whole face covers
    assert 0.03 < alone.sum() / face.sum() < 0.3
    np.testing.assert_allclose(result.cms[alone], full.canonical[alone], rtol=1e-5, atol=1e-7)


def test_accumulator_coverage_is_checked_and_defaults_to_every_pixel():
    acc = CMSAccumulator((8, 8))
    with pytest.raises(ValueError, match="coverage has shape"):
        acc.add(np.ones((8, 8)), coverage=np.ones((4, 4)))
    with pytest.raises(ValueError, match="coverage contains NaN"):
        acc.add(np.ones((8, 8)), coverage=np.full((8, 8), np.nan))
    acc.add(np.ones((8, 8)))
    left = np.zeros((8, 8))
    left[:, :4] = 1
    acc.add(np.full((8, 8), 3.0), coverage=left)  # values outside the coverage do not count
    result = acc.result()
    assert np.allclose(result.cms[:, :4], 2.0) and np.allclose(result.cms[:, 4:], 1.0)
    assert np.allclose(result.coverage[:, :4], 1.0) and np.allclose(result.coverage[:, 4:], 0.5)


def test_no_difference_says_what_could_have_been_found_and_states_the_test(tmp_path):
    rng = np.random.default_rng(3)
    signal = np.linspace(0, 1, SHAPE[0] * SHAPE[1]).reshape(SHAPE)
    maps = signal + rng.normal(0, 0.6, (24, *SHAPE))  # the same distribution in both groups
    run = _fake_run(tmp_path / "run", maps, [f"p{i:02d}.jpg" for i in range(24)], ["a", "b"] * 12)
    with RunStore(run) as store:
        (d,) = cms_from_store(store, **FAST_STATS).differences
    page = write_report(run, **FAST_STATS).read_text()
    assert "No region differs between group a and group b" in page
    found = re.search(
        r"with these groups a shift of ([\d.]+) points \(([^)]+)\) to ([\d.]+) points \(([^)]+)\) would be found "
        r"with 80% power",
        page,
    )
    shifts = d.detectable_shifts
    assert found and [float(found.group(1)), float(found.group(3))] == [
        round(min(shifts.values()), 1),
        round(max(shifts.values()), 1),
    ]
    assert f"Null hypothesis: {html.escape(d.null_hypothesis)}" in page and d.null_hypothesis
    assert f"Controlled: {html.escape(d.controlled)}." in page and d.controlled
    assert "detectable shift (points, 80% power)" in page


def test_reliability_and_images_needed_are_printed_with_intervals_around_them(tmp_path):
    rng = np.random.default_rng(5)
    signal = np.linspace(0, 1, SHAPE[0] * SHAPE[1]).reshape(SHAPE)
    maps = signal + rng.normal(0, 4.0, (24, *SHAPE))  # a weak pattern: more images are needed
    run = _fake_run(tmp_path / "run", maps, [f"p{i:02d}.jpg" for i in range(24)], ["a", "b"] * 12)
    page = write_report(run, level=0.9, **FAST_STATS).read_text()
    lines = re.findall(r"<li>(group [ab] \(n=12\): split-half reliability[^<]*)</li>", page)
    assert len(lines) == 2
    for line in lines:
        value, low, high = map(
            float, re.search(r"reliability ([-\d.]+) \(90% CI ([-\d.]+) to ([-\d.]+)\)", line).groups()
        )
        assert low <= value <= high
        needed = re.search(r"collect about (\d+) more images of group [ab] \(90% CI (\w+) to (\w+)\)", line)
        assert needed, line
        more, fewest, most = needed.groups()
        assert fewest == "unknown" or int(fewest) <= int(more)
        assert most == "unknown" or int(more) <= int(most)


def test_engine_intervals_hold_their_estimates_and_stay_where_the_quantity_lies():
    column = np.array([0.001, 0.0, 0.002, 0.0, 0.03, 0.0015, 0.0, 0.001, 0.0005, 0.0])  # a skewed share near 0
    rare = np.stack([column, column[::-1], np.roll(column, 3)], axis=1)
    for mean, low, high in share_intervals(rare, ["a", "b", "c"]).values():
        assert 0 <= low <= mean <= high <= 1
    for seed in range(4):  # no pattern: the reliability can come out below 0
        rel = split_half_reliability(np.random.default_rng(seed).random((12, 16, 16)))
        assert rel.low <= rel.reliability <= rel.high, (seed, rel.low, rel.reliability, rel.high)
