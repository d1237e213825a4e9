"""The HTML report and ``facesal compare``: shared colour scales with colour bars, findings
written from the tests, pages that render in headless Chromium, paired/unpaired model
comparison and ``--fail-on-shift``."""

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from browser import chromium_dom
from figure_text import assert_readable, recording_figures

from facesal_fast.align import region_masks
from facesal_fast.audit.comparison import compare, write_compare_report
from facesal_fast.audit.run_report import write_report
from facesal_fast.audit.store import RunStore
from facesal_fast.cli import main
from facesal_fast.core.options import StatsOptions
from facesal_fast.report.figures import map_figure, png
from facesal_fast.report.html import findings
from facesal_fast.saliency import CMSAccumulator

FACES = Path(__file__).resolve().parents[1] / "facesal_fast" / "data" / "demo_faces"
FAST = ["--backend", "onnx", "--mode", "grid", "--grid-step", "4", "--stride", "8"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("img1.jpg", "img2.jpg", "img5.jpg", "img20.jpg"):
        shutil.copy(FACES / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def gender_run(photos, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "gender"
    assert main(["audit", str(photos), "--out", str(run), "--groups", "predicted", *FAST]) == 0
    return run


def test_map_figure_shares_one_scale_with_a_colour_bar_per_map():
    rng = np.random.default_rng(0)
    maps = [("a", rng.random((64, 64)) - 0.2), ("b", 3 * rng.random((64, 64)))]
    fig = map_figure(maps)
    images = [ax.images[-1] for ax in fig.axes if ax.images]
    assert len(fig.axes) == 4 and len(images) == 2  # each map and its colour bar
    assert images[0].get_clim() == images[1].get_clim()
    low, high = images[0].get_clim()
    assert low < 0 and high == pytest.approx(max(m.max() for _, m in maps))  # negative saliency is on the scale
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    diff = map_figure([("d", maps[0][1] - 0.5)], kind="difference", significant=[mask])
    d_low, d_high = diff.axes[0].images[-1].get_clim()
    assert d_low == -d_high and diff.axes[0].collections  # centred at 0, significant pixels outlined
    assert diff.axes[0].get_xticklabels()[1].get_text() == "subject's left"
    hostile = map_figure([("$x^{ $_a.jpg", maps[0][1])], label="red: $g^ higher")
    assert png(hostile).startswith(b"\x89PNG")  # a '$' in a file or group name is text, not mathtext


def _planted_result(n_small: int) -> CMSAccumulator:
    rng = np.random.default_rng(4)
    forehead = region_masks((64, 64))["forehead"]
    acc = CMSAccumulator((64, 64), bootstrap_size=16, permutations=500, bootstrap=300)
    for i in range(12 + n_small):
        group = "man" if i < 12 else "woman"
        acc.add(rng.random((64, 64)) + (0.6 * forehead if group == "woman" else 0), group)
    return acc.result()


def test_findings_are_written_from_the_tests():
    result = _planted_result(12)
    (d,) = result.differences
    t = d.region_tests["forehead"]
    text = findings(result.differences)
    assert t.significant and d.significant_regions[0] == "forehead"
    assert (
        f"For group woman the model puts {100 * abs(t.difference):.1f} points more of its saliency on the forehead "
        f"than for group man (95% CI {-100 * t.high:.1f} to {-100 * t.low:.1f}"
    ) in text
    assert "n = 12 / 12" in text
    small = _planted_result(3)
    text = findings(small.differences)
    assert "too few images in group woman (n=3 &lt; 10)" in text and "points more" not in text
    assert "No groups were given" in findings([])


def test_report_has_colour_bars_findings_and_renders(gender_run, tmp_path, capsys):
    assert main(["report", str(gender_run)]) == 0
    assert "facesal: warning: too few images in group" in capsys.readouterr().err  # 4 photos < min_group 10
    html = (gender_run / "report.html").read_text()
    maps = html.count('class="map"')
    assert maps >= 6 and html.count("data-colorbar=1") == maps
    assert 'id="findings"' in html and "too few images in group" in html
    assert "Stability per group" in html and "split-half" in html and "Convergence" in html
    dom = chromium_dom(gender_run / "report.html", tmp_path / "profile").stdout
    assert 'id="findings"' in dom and dom.count("data-colorbar") == maps
    page = tmp_path / "small-groups-allowed.html"
    assert main(["report", str(gender_run), "--out", str(page), "--min-group", "1", "--correction", "fdr"]) == 0
    assert "too few images in group" not in capsys.readouterr().err + page.read_text()


def test_report_and_compare_figures_share_scales_pair_photos_and_keep_text_clear(gender_run, tmp_path):
    with recording_figures() as figures:
        page = write_report(gender_run, tmp_path / "report.html", permutations=200).read_text()
    assert_readable(figures)  # no two texts of any figure overlap, none is cut by the figure's edge
    scales = {
        ax.get_title(): ax.images[-1].get_clim()
        for fig in figures
        for ax in fig.axes
        if re.match("CMS[ ,]", ax.get_title()) and ax.images
    }
    assert any(title.startswith("CMS, all images") for title in scales) and len(scales) >= 2
    assert len(set(scales.values())) == 1  # the CMS of all images on the scale of the group maps
    cells = re.findall(r'<figure class="pair">(.*?)</figure>', page)  # the gallery: each photo beside its map
    assert len(cells) == 4 and all(c.count('class="photo"') == 1 and c.count('class="map"') == 1 for c in cells)
    store = RunStore(gender_run)
    keys, maps = zip(*((row.key, arrays["canonical"]) for row, arrays in store.iter_done()))
    store.close()
    mirrored = _fake_run(tmp_path / "mirrored", np.stack(maps)[:, :, ::-1], list(keys))
    labels = ("a-retrained-model-with-a-long-run-name/2026-12-07", "the-baseline-model-before-retraining")
    with recording_figures() as figures:
        c = compare(mirrored, gender_run, labels=labels, permutations=200, min_group=2)
        write_compare_report(c, tmp_path / "cmp")
    assert_readable(figures)


def _fake_run(
    path: Path,
    maps: np.ndarray,
    keys: list[str],
    groups: list[str] | None = None,
    counts: np.ndarray | None = None,
    photos: str = "photos",
) -> Path:
    """A run of ``maps`` (``n x H x W``) under ``keys``; ``groups`` per map, ``counts`` (``n x H x W``) stored too;
    the photo content hash of each key is that of ``photos/KEY`` (another ``photos``: other photos, same names)."""
    store = RunStore(path, {"model": "synthetic"}, {})
    for i, (key, m) in enumerate(zip(keys, maps)):
        arrays = {"canonical": m.astype(np.float32), "face_box": np.zeros(4, np.float32)}
        if counts is not None:
            arrays["counts"] = counts[i].astype(np.float32)
        store.save_done(
            key,
            key,
            arrays,
            group=None if groups is None else groups[i],
            target=0,
            target_name="x",
            base_score=0.9,
            seconds=0.0,
            sha256=hashlib.sha256(f"{photos}/{key}".encode()).hexdigest(),
        )
    store.close()
    return path


def test_compare_pairs_the_same_photos_and_fails_on_a_shift(gender_run, tmp_path, capsys):
    store = RunStore(gender_run)
    real = np.stack([arrays["canonical"] for _, arrays in store.iter_done()])
    store.close()
    maps = np.concatenate([real, real[:, :, ::-1], 0.8 * real, 0.8 * real[:, :, ::-1]])  # 16 realistic maps
    forehead = region_masks(maps.shape[1:])["forehead"]
    shifted = maps + forehead * (0.15 * np.clip(maps, 0, None).sum((1, 2)) / forehead.sum())[:, None, None]
    keys = [f"p{i:02d}.jpg" for i in range(16)]
    before, after = _fake_run(tmp_path / "before", maps, keys), _fake_run(tmp_path / "after", shifted, keys)
    c = compare(after, before, permutations=500)
    assert c.paired and c.difference.n_a == 16 and c.difference.significant_regions[0] == "forehead"
    assert c.shifts(2.0)[0] == "forehead" and c.shifts(50.0) == []
    command = ["compare", str(after), str(before), "--out", str(tmp_path / "cmp"), "--permutations", "500"]
    assert main([*command, "--fail-on-shift", "2"]) == 1
    assert "forehead moved +" in capsys.readouterr().err
    assert main([*command, "--fail-on-shift", "50"]) == 0
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "points more of its saliency on the forehead" in page and "paired test" in page
    other = _fake_run(tmp_path / "other", shifted[:12], keys[:12], photos="other photos")  # same names, not content
    unpaired = compare(other, before, permutations=500)
    assert not unpaired.paired and unpaired.difference.n_a == 12 and unpaired.difference.n_b == 16
    assert unpaired.difference.region_tests["forehead"].p_adjusted >= c.difference.region_tests["forehead"].p_adjusted


def test_compare_refuses_what_is_not_a_run(gender_run, tmp_path, capsys):
    with pytest.raises(ValueError, match="nothing-here is not a facesal run"):
        compare(tmp_path / "nothing-here", gender_run)
    assert not (tmp_path / "nothing-here").exists()
    assert main(["compare", str(gender_run), str(tmp_path / "nothing-here"), "--out", str(tmp_path / "c")]) == 2
    assert "not a facesal run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(gender_run), str(gender_run), "--out", str(tmp_path / "c"), "--permutations", "0"])
    assert exit_info.value.code == 2 and "--permutations: expected a positive integer" in capsys.readouterr().err
    assert main(["compare", str(gender_run), str(gender_run), "--out", str(tmp_path / "c"), "--level", "5"]) == 2
    assert "level must be a number between 0 and 1" in capsys.readouterr().err


def test_compare_two_bundled_models_renders(gender_run, photos, tmp_path, capsys):
    other = tmp_path / "expression"
    assert main(["audit", str(photos), "--out", str(other), "--model", "expression-fer", *FAST]) == 0
    assert main(["compare", str(gender_run), str(other), "--out", str(tmp_path / "cmp"), "--permutations", "200"]) == 0
    assert "too few images in group" in capsys.readouterr().err
    page = tmp_path / "cmp" / "compare.html"
    html = page.read_text()
    assert "paired test" in html and "No difference between run gender and run expression is claimed" in html
    dom = chromium_dom(page, tmp_path / "profile").stdout
    assert dom.count("data-colorbar") == 2 and 'id="findings"' in dom


def _nose_runs(tmp_path: Path, shift: float = 0.5, paired: bool = True) -> tuple[Path, Path]:
    """Two runs of 12 photos, the first with ``shift`` saliency added on the nose: of the same
    photos (paired by content) or of other photos."""
    rng = np.random.default_rng(3)
    maps = rng.random((12, 64, 64))
    keys = [f"p{i:02d}.jpg" for i in range(12)]
    after = _fake_run(tmp_path / "after", maps + shift * region_masks((64, 64))["nose"], keys, ["a", "b"] * 6)
    other = dict(photos="photos") if paired else dict(photos="other photos")
    return after, _fake_run(tmp_path / "before", maps if paired else rng.random((12, 64, 64)), keys, **other)


def test_compare_and_report_take_level_and_its_old_name_confidence(tmp_path, capsys):
    after, before = _nose_runs(tmp_path)
    fast = ["--permutations", "300", "--min-group", "5"]
    pages = {}
    for option in ("--level", "--confidence"):
        out = tmp_path / option.strip("-")
        assert main(["compare", str(after), str(before), "--out", str(out), option, "0.9", *fast]) == 0
        report = tmp_path / f"report-{option.strip('-')}.html"
        assert main(["report", str(after), "--out", str(report), option, "0.9", *fast]) == 0
        pages[option] = ((out / "compare.html").read_bytes(), report.read_bytes())
        notes = capsys.readouterr().err.count("facesal: --confidence is now --level (the same number)")
        assert notes == (2 if option == "--confidence" else 0)  # one line per command that used the old name
    assert pages["--level"] == pages["--confidence"]
    compared, report = pages["--level"]
    assert b"90% CI" in compared and b"90% bootstrap CI" in report and b"95%" not in compared + report


def test_write_report_under_its_old_path_is_the_run_report_warned():
    """``facesal_fast.report.html.write_report`` (the path before 0.2) still gives the run
    folder's ``write_report``, with a DeprecationWarning; other missing names still fail."""
    import facesal_fast.report.html as report_html

    with pytest.warns(DeprecationWarning, match="is now facesal_fast.audit.run_report.write_report"):
        old = report_html.write_report
    assert old is write_report
    with pytest.raises(AttributeError, match="has no attribute 'write_reports'"):
        report_html.write_reports  # noqa: B018


def test_compare_takes_a_stats_record_a_mapping_or_keywords_and_the_old_confidence(tmp_path):
    after, before = _nose_runs(tmp_path, shift=0.02, paired=False)
    fields = dict(permutations=300, level=0.9, min_group=5, seed=2)
    record = compare(after, before, StatsOptions(**fields))
    with pytest.warns(DeprecationWarning, match="confidence= is now level="):
        old = compare(after, before, permutations=300, confidence=0.9, min_group=5, seed=2)
    for other in (compare(after, before, fields), compare(after, before, **fields), old):
        for name in ("low", "high", "significant", "p_raw", "p_adjusted"):
            np.testing.assert_array_equal(getattr(other.difference, name), getattr(record.difference, name))
        assert other.difference.region_tests == record.difference.region_tests and other.difference.level == 0.9
    with pytest.raises(ValueError, match="level must be a number between 0 and 1"):
        compare(tmp_path / "nothing-here", before, level=95)  # checked before any run is read


def test_compare_method_and_seed_options(tmp_path):
    after, before = _nose_runs(tmp_path, shift=0.02, paired=False)

    def page(*options: str) -> str:
        out = tmp_path / "-".join(options or ("default",))
        assert main(["compare", str(after), str(before), "--out", str(out), "--permutations", "300", *options]) == 0
        return (out / "compare.html").read_text()

    default = page()
    assert "300 bootstrap resamples" in default and "unpaired test" in default
    permuted = page("--method", "permutation")
    assert "300 permutations" in permuted and "300 bootstrap" not in permuted
    assert page("--seed", "0") == default and page("--seed", "1") != default  # the seed of the p-values' draws
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(after), str(before), "--out", str(tmp_path / "x"), "--method", "wild"])
    assert exit_info.value.code == 2
