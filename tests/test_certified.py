"""Approximate CIS that certifies its own error, presets defined by the SSIM they promise,
and runs that record the mode actually used (issue 29 items 1-2, issue 27 item 8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facesal_fast.scoring.batching import Windows, run_steps
from facesal_fast.speed.certified import (
    PRESET_SAMPLE,
    CanonicalSplat,
    Certificate,
    _tail_share,
    certificate_steps,
    certified_steps,
    quality_target,
    stopping_ssim,
)

FACES = Path(__file__).resolve().parents[1] / "facesal_fast" / "data" / "demo_faces"


class BumpScorer:
    """A model-free scorer: occluding a window at (x, y) scores ``1 - bump(x, y)``, a sum of
    narrow Gaussians (sharp changes a coarse grid misses); counts the windows it scored."""

    def __init__(self, width: float = 1.5):
        rng = np.random.default_rng(1)
        self.peaks, self.width, self.scored = rng.uniform(4, 44, (12, 2)), width, 0

    def drop(self, centers: np.ndarray) -> np.ndarray:
        d2 = ((np.asarray(centers, np.float64)[:, None, :] - self.peaks[None]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * self.width**2)).sum(1)

    def score_occluded(self, image, centers, patch, fill="black", target=None):
        self.scored += len(centers)
        return (1.0 - self.drop(centers)).astype(np.float32)


def _synthetic(width: float = 1.5):
    """(scorer, windows, points N x 2, splat): every pixel of a 48 x 48 box is a window."""
    scorer = BumpScorer(width)
    xs, ys = np.meshgrid(np.arange(2.0, 46.0), np.arange(2.0, 46.0))
    points = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    windows = Windows.template(scorer, np.zeros((48, 48, 3), np.uint8), 5)
    return scorer, windows, points, CanonicalSplat(points * 2, 9, (96, 96))


@pytest.mark.parametrize(
    "quality, target", [("high", 0.95), ("fast", 0.90), (0.97, 0.97), ("exact", None), (1.0, None), (1, None)]
)
def test_quality_names_a_target_ssim(quality, target):
    assert quality_target(quality) == target


@pytest.mark.parametrize("quality", ["medium", "0.9", 0, 1.5, -0.2, True, float("nan"), None])
def test_a_bad_quality_is_one_clear_error(quality):
    with pytest.raises(ValueError, match=r"quality must be 'exact', 'high' .* or a target SSIM in \(0, 1\]"):
        quality_target(quality)


def test_certificate_of_an_exact_interpolation_is_one():
    """Residuals all zero (a linear drop, which the grid interpolates exactly): SSIM 1, no
    share error; the sampled windows are counted."""
    _, windows, points, splat = _synthetic()
    linear = Windows.template(
        type("Linear", (), {"score_occluded": lambda self, i, c, p, **k: -c[:, 0] / 50})(), windows.image, 5
    )
    drops = points[:, 0].astype(np.float64) / 50
    skipped = np.ones(len(points), bool)
    certificate, (sample, exact) = run_steps(
        certificate_steps(linear, 0.0, drops, skipped, points, np.arange(len(points)), splat)
    )
    assert certificate.ssim == pytest.approx(1.0) and certificate.share_error == pytest.approx(0.0, abs=1e-6)
    assert certificate.sampled == len(sample) >= 32
    np.testing.assert_allclose(exact, drops[sample], atol=1e-6)


def test_a_reachable_target_is_met_with_fewer_windows_and_an_unreachable_one_falls_back_to_exact():
    scorer, windows, points, splat = _synthetic(width=4.0)
    found = run_steps(certified_steps(windows, points, 1.0, 0.9, splat))
    assert found.mode == "certified" and found.certificate.ssim >= stopping_ssim(0.9)
    assert found.forward_passes == scorer.scored < 0.7 * len(points)
    exact_map = splat.maps(scorer.drop(points))
    truth = _ssim(splat.maps(found.drops), exact_map)
    assert abs(found.certificate.ssim - truth) <= 0.03
    scorer, windows, points, splat = _synthetic(width=0.6)  # needles: no grid finds them
    found = run_steps(certified_steps(windows, points, 1.0, 0.99, splat))
    assert found.mode == "exact" and found.certificate == Certificate.exact()
    np.testing.assert_allclose(found.drops, scorer.drop(points), atol=1e-6)


def test_needles_a_small_sample_misses_fall_back_to_exact_not_a_false_certificate():
    """0.6 px bumps: a 5 % sample caught one needle in round 2 and read SSIM 0.944 for a map at
    0.872 (the promise broken). One residual holding all of the sample's squared error now
    stops the round from certifying; whatever the mode, the map keeps the promise."""
    for target in (0.90, 0.95):
        scorer, windows, points, splat = _synthetic(width=0.6)
        found = run_steps(certified_steps(windows, points, 1.0, target, splat))
        assert _ssim(splat.maps(found.drops), splat.maps(scorer.drop(points))) >= target
        assert found.mode == "exact"


def test_a_preset_keeps_its_sampled_windows_in_the_map():
    """Every forward pass is a scored window or grid node, and the sampled windows' exact drops
    are in the map: at least the certificate's sample are exact there beyond the grid."""
    scorer, windows, points, splat = _synthetic(width=4.0)
    found = run_steps(certified_steps(windows, points, 1.0, 0.9, splat))
    assert found.mode == "certified" and found.forward_passes == scorer.scored
    exact_here = np.abs(found.drops - scorer.drop(points)) < 1e-6
    exact_windows = len(np.unique(np.floor(points[exact_here] + 0.5), axis=0))
    assert exact_windows >= found.certificate.sampled >= PRESET_SAMPLE


def test_stopping_ssim_leaves_six_tenths_of_the_promised_deficit():
    assert stopping_ssim(0.95) == pytest.approx(0.97) and stopping_ssim(0.90) == pytest.approx(0.94)
    assert stopping_ssim(1.0) == 1.0


@pytest.mark.parametrize(
    "residuals, share",
    [([0.0, 0.0], 0.0), ([1.0, 1.0, 1.0, 1.0], 0.25), ([3.0, 0.0, 0.0, 0.0], 1.0), ([-2.0, 1.0], 0.8)],
)
def test_tail_share_is_the_largest_squared_residuals_share(residuals, share):
    assert _tail_share(np.array(residuals)) == pytest.approx(share)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from facesal_fast.metrics.similarity import ssim

    return ssim(a, b, data_range=float(np.ptp(b)) or 1.0)


@pytest.fixture(scope="module")
def gender():
    from facesal_fast import models

    return models.load("gender", backend="onnx")


@pytest.mark.parametrize("photo", ["img7.jpg", "img8.jpg"])
def test_fast_preset_keeps_its_promise_and_its_certificate_tracks_the_truth(gender, photo):
    """Bundled gender model on photos neither the former presets (img1, img2) nor the
    certificate's calibration (img3-img6) saw: ``fast`` >= 0.90 SSIM against exact, the
    estimate within 0.03 of the truth, fewer forward passes than exact."""
    from facesal_fast.align import default_aligner, load_image
    from facesal_fast.saliency import cis

    face = default_aligner()(load_image(FACES / photo), source=photo)
    exact = cis(face.image, gender, face=face)
    assert (exact.settings["mode"], exact.settings["estimated_ssim"], exact.settings["estimated_share_error"]) == (
        "exact",
        1.0,
        0.0,
    )
    fast = cis(face.image, gender, face=face, quality="fast")
    truth = _ssim(fast.canonical, exact.canonical)
    assert fast.settings["quality"] == "fast" and fast.settings["target_ssim"] == 0.9
    assert fast.settings["mode"] == "certified" and fast.forward_passes < exact.forward_passes / 2
    assert truth >= 0.90 and fast.settings["estimated_ssim"] >= stopping_ssim(0.90)
    assert abs(fast.settings["estimated_ssim"] - truth) <= 0.03
    assert fast.settings["estimated_share_error"] >= 0 and fast.settings["certificate_passes"] > 0


def test_grid_mode_is_certified_unless_told_not_to(gender):
    from facesal_fast.align import default_aligner, load_image
    from facesal_fast.saliency import cis

    face = default_aligner()(load_image(FACES / "img9.jpg"), source="img9.jpg")
    plain = cis(face.image, gender, face=face, mode="grid", grid_step=3, certify=False, stride=3)
    checked = cis(face.image, gender, face=face, mode="grid", grid_step=3, stride=3)
    np.testing.assert_array_equal(plain.canonical, checked.canonical)  # the sample is not put into the map
    assert plain.settings["estimated_ssim"] is None and plain.settings["certificate_passes"] == 0
    assert checked.forward_passes == plain.forward_passes + checked.settings["certificate_passes"]
    assert 0 < checked.settings["estimated_ssim"] < 1
    with pytest.raises(ValueError, match="quality must be"):
        cis(face.image, gender, face=face, quality="best")
    with pytest.raises(ValueError, match="either quality"):
        cis(face.image, gender, face=face, quality=0.95, mode="grid")


def test_cli_quality_takes_a_target_and_refuses_nonsense(capsys):
    from facesal_fast.cli import _parser

    assert _parser().parse_args(["audit", "p", "--out", "o", "--quality", "0.97"]).quality == 0.97
    assert _parser().parse_args(["audit", "p", "--out", "o", "--quality", "fast"]).quality == "fast"
    with pytest.raises(SystemExit) as stop:
        _parser().parse_args(["audit", "p", "--out", "o", "--quality", "best"])
    assert stop.value.code == 2 and "target SSIM in (0, 1]" in capsys.readouterr().err


def test_a_quality_run_records_the_mode_it_used_not_exact(tmp_path, gender):
    """Issue 27.8: ``--quality fast`` was recorded as ``"mode": "exact", "grid_step": 2``."""
    from facesal_fast import Audit
    from facesal_fast.audit.approximation import approximation_line, result_settings
    from facesal_fast.audit.options import plan_audit

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes((FACES / "img7.jpg").read_bytes())
    plan = plan_audit(photos, tmp_path / "planned", quality="fast")
    assert plan.cis_options["quality"] == "fast" and not {"mode", "grid_step"} & set(plan.cis_options)
    assert {"mode", "grid_step"} <= set(plan_audit(photos, tmp_path / "planned").cis_options)
    with Audit(gender, tmp_path / "run", quality="fast", stride=2) as audit:
        assert audit.run([photos / "a.jpg"], progress=False)["done"] == 1
        stored = result_settings(audit.store, audit.store.rows("done")[0].key)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "mode" not in meta["settings"] and meta["settings"]["quality"] == "fast"
    summary = meta["resolved"]["approximation"]
    assert summary["modes"] == {stored["mode"]: 1} and stored["mode"] in ("certified", "exact")
    assert summary["estimated_ssim"]["min"] == stored["estimated_ssim"]
    assert "quality fast" in approximation_line(meta)


def test_grid_certificate_is_not_biased_low(gender):
    """Issue 29: plain ``mode="grid"`` certificates read 0.03-0.08 below the true SSIM (a
    random 4 % sample whose holes and clusters the nearest-sample residuals blew up). On
    three bundled photos at grid step 2 the estimate is within 0.03 of the truth on each and
    within 0.015 on average (the former sample: -0.034, -0.027, -0.028, mean -0.030)."""
    from facesal_fast.align import default_aligner, load_image
    from facesal_fast.saliency import cis

    errors = []
    for photo in ("img2.jpg", "img6.jpg", "img9.jpg"):
        face = default_aligner()(load_image(FACES / photo), source=photo)
        exact = cis(face.image, gender, face=face)
        grid = cis(face.image, gender, face=face, mode="grid", grid_step=2)
        errors.append(grid.settings["estimated_ssim"] - _ssim(grid.canonical, exact.canonical))
    assert max(abs(e) for e in errors) <= 0.03 and abs(np.mean(errors)) <= 0.015, errors
