"""Incremental inference equals full inference; adaptive refinement; the benchmark's equality checks."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facesal_fast.scoring import Scorer
from facesal_fast.speed import IncrementalModel, IncrementalScorer, patch_boxes
from facesal_fast.speed.adaptive import adaptive_drops

ROOT = Path(__file__).resolve().parents[1]


def _randomise_bn(net: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, groups=c),
            nn.Conv2d(c, 2 * c, 1),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1),
        )
        self.skip = nn.Conv2d(c, 2 * c, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        out += self.skip(x)
        return out


class _PoolsAndPads(nn.Module):
    """Functional max / average pools, average-pool modules (with zero padding counted) and
    dlib-style ``add_prev``: a channel- and bottom/right-padded shortcut."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 10, 3, stride=2)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)
        self.head = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 3, stride=2, padding=1)  # 32 -> 16
        y = self.conv2(x)  # 16 -> 7
        shortcut = F.avg_pool2d(self.pool(x), 2, 2)  # 16 -> 8
        y = F.pad(y, (0, 1, 0, 1))
        shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, 4))
        return self.head(F.relu(y + shortcut).mean(dim=(2, 3)))


def small_nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    vgg = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 5),
    )
    separable = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        _Residual(8),
        _Residual(16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 4),
    )
    return {
        "vgg": _randomise_bn(vgg),
        "separable-residual": _randomise_bn(separable),
        "pools-and-pads": _PoolsAndPads().eval(),
    }


# Centres at the corners, borders, centre and off the image (occludes nothing).
CENTRES = np.array(
    [[0, 0], [31, 31], [0, 31], [31, 0], [15.6, 16.2], [30, 14], [2, 20], [-40, -40], [8, 9]], np.float32
)


def _full_and_incremental(net: nn.Module, x: torch.Tensor, centres: np.ndarray, patch: int, **options) -> tuple:
    """Outputs of full inference on the occluded copies and of the incremental model."""
    fill = torch.randn(x.shape[1], patch, patch)
    starts, (h, w) = patch_boxes(centres, patch, x.shape[2:])
    batch = x.repeat(len(centres), 1, 1, 1)
    for k, (t, c) in enumerate(starts):
        batch[k, :, t : t + h, c : c + w] = (
            fill[:, :h, :w] if (centres[k] >= 0).all() else batch[k, :, t : t + h, c : c + w]
        )
    values = torch.stack([batch[k, :, t : t + h, c : c + w] for k, (t, c) in enumerate(starts)])
    model = IncrementalModel(net, **options)
    with torch.inference_mode():
        full = net(batch)
    return full, model.run(model.cache(x), values, starts)


@pytest.mark.parametrize("name", ["vgg", "separable-residual", "pools-and-pads"])
@pytest.mark.parametrize("patch", [1, 4, 7])
def test_incremental_equals_full_on_random_nets(name, patch):
    net = small_nets()[name]
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(patch))
    full, incremental = _full_and_incremental(net, x, CENTRES, patch)
    torch.testing.assert_close(incremental, full, atol=1e-4, rtol=1e-4)


def test_incremental_really_skips_work():
    """The first layers run on boxes, not on whole maps (small patch, large map)."""
    net = small_nets()["vgg"]
    model = IncrementalModel(net)
    x = torch.randn(1, 3, 32, 32)
    calls: list[tuple[int, ...]] = []
    model.graph.get_submodule("0").register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    starts, size = patch_boxes(CENTRES[:3], 3, (32, 32))
    model.run(model.cache(x), torch.randn(3, 3, *size), starts)
    assert (3, 8, 32, 32) not in calls  # the first conv never ran on full maps for the batch


def test_incremental_equals_full_on_bundled_gender_model():
    from facesal_fast import models

    scorer = models.load("gender", backend="torch")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 1), dtype=np.uint8)
    centres = np.concatenate([CENTRES * 2, [[63, 63], [0, 63], [63, 0], [32, 32]]]).astype(np.float32)
    for patch in (4, 9):
        expected = scorer.score_occluded(image, centres, patch, fill="mean", target=1)
        got = IncrementalScorer(scorer).score_occluded(image, centres, patch, fill="mean", target=1)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_pools_and_pads_run_on_boxes():
    """Functional pools and constant pads stay incremental: the second conv never sees a whole batch."""
    net = small_nets()["pools-and-pads"]
    model = IncrementalModel(net)
    calls: list[tuple[int, ...]] = []
    model.graph.get_submodule("conv2").register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    starts, size = patch_boxes(CENTRES[:3], 3, (32, 32))
    model.run(model.cache(torch.randn(1, 3, 32, 32)), torch.randn(3, 3, *size), starts)
    assert calls == [(1, 10, 7, 7)]  # the cache's full pass; the batch went through boxes only


def test_incremental_equals_full_on_dlib_resnet():
    """dlib's face ResNet (zero-padded residual adds) through its ``traceable()`` twin."""
    from facesal_fast.models.dlib_resnet import load_dlib_resnet

    net = load_dlib_resnet()
    x = torch.randn(1, 3, 150, 150, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(net.traceable()(x), net(x), atol=0, rtol=0)
    centres = np.array([[0, 0], [149, 149], [75, 70], [149, 3], [40.5, 120.2]], np.float32)
    full, incremental = _full_and_incremental(net, x, centres, 10)
    torch.testing.assert_close(incremental, full, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="traceable"):  # the twin's padding is fixed for 150 px
        IncrementalModel(net).cache(torch.randn(1, 3, 160, 160))


def test_approximate_mode_is_close_and_validated():
    net = small_nets()["vgg"]
    x = torch.randn(1, 3, 32, 32)
    full, approx = _full_and_incremental(net, x, CENTRES, 4, tau=0.6)
    assert torch.allclose(approx, full, atol=0.5)
    with pytest.raises(ValueError, match="tau"):
        IncrementalModel(net, tau=0.0)
    with pytest.raises(ValueError, match="full_fraction"):
        IncrementalModel(net, full_fraction=2.0)


def test_unsupported_layers_fall_back_to_full_inference():
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(4, 4, 3, dilation=2),
        nn.Flatten(),
        nn.LazyLinear(3),
    )
    net(torch.zeros(1, 3, 16, 16))
    x = torch.randn(1, 3, 16, 16)
    full, incremental = _full_and_incremental(net.eval(), x, CENTRES / 2, 3)
    torch.testing.assert_close(incremental, full, atol=1e-5, rtol=1e-5)


class _Viewed(nn.Module):
    """Flattens with ``.view``, which needs NCHW strides."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))
        return self.head(y.view(y.size(0), -1))


def test_incremental_runs_channels_last_and_falls_back_to_nchw_for_views():
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    resnet_like = small_nets()["separable-residual"]
    model = IncrementalModel(resnet_like)
    model.cache(torch.randn(1, 3, 32, 32))
    assert model.channels_last  # the fast layout where the model allows it
    torch.manual_seed(0)
    viewed = _Viewed().eval()
    full, incremental = _full_and_incremental(viewed, x, CENTRES[:5] / 4, 3)
    torch.testing.assert_close(incremental, full, atol=1e-5, rtol=1e-5)
    model = IncrementalModel(viewed)
    model.cache(x)
    assert not model.channels_last


def test_incremental_scorer_needs_a_torch_backend():
    scorer = Scorer.from_callable(lambda b: b.reshape(len(b), -1)[:, :2], 8)
    with pytest.raises(ValueError, match="torch"):
        IncrementalScorer(scorer)


# ---------------------------------------------------------------------------- adaptive


class _Counting:
    """Wraps a scorer and records the centres it scores."""

    def __init__(self, scorer):
        self.scorer, self.centres = scorer, []

    def score_occluded(self, image, centres, patch, fill="black", target=None):
        self.centres.append(np.asarray(centres))
        return self.scorer.score_occluded(image, centres, patch, fill=fill, target=target)


@pytest.fixture(scope="module")
def real_face_and_scorer():
    from facesal_fast import models
    from facesal_fast.align import default_aligner, load_image

    face = default_aligner()(load_image(ROOT / "facesal_fast" / "data" / "demo_faces" / "img1.jpg"))
    return face, models.load("gender", backend="onnx")


def test_adaptive_equals_exact_where_it_refines_and_is_bounded_on_a_real_photo(real_face_and_scorer):
    from facesal_fast.saliency.cis import apply_affine, occlusion_drops

    face, scorer = real_face_and_scorer
    input_image, affine = scorer.prepare(face.image, face.face_box)
    points = apply_affine(affine, np.asarray(face.verts_image, np.float32)[np.asarray(face.visible, bool)][::7, :2])
    base = scorer.base_score(input_image, 1)
    exact, exact_passes = occlusion_drops(scorer, input_image, points, 1, base, patch=4)
    counting = _Counting(scorer)
    result = adaptive_drops(counting, input_image, points, 1, base, patch=4, coarse_step=4, refine=0.2)
    assert result.drops.shape == exact.shape and result.exact.any() and not result.exact.all()
    np.testing.assert_allclose(result.drops[result.exact], exact[result.exact], atol=1e-6)
    assert result.forward_passes == sum(len(c) for c in counting.centres) < exact_passes
    # Error bound on this photo: the approximate points err by far less than the drop range.
    error = np.abs(result.drops - exact)
    assert error.max() <= 0.5 * np.ptp(exact)
    assert np.corrcoef(result.drops, exact)[0, 1] > 0.9
    # Refining everything is exact; refining more never increases the error.
    everything = adaptive_drops(scorer, input_image, points, 1, base, patch=4, coarse_step=4, refine=1.0)
    np.testing.assert_allclose(everything.drops, exact, atol=1e-6)
    more = adaptive_drops(scorer, input_image, points, 1, base, patch=4, coarse_step=4, refine=0.5)
    assert np.abs(more.drops - exact).mean() <= error.mean() + 1e-9


def test_adaptive_rejects_bad_arguments():
    scorer = Scorer.from_callable(lambda b: b.reshape(len(b), -1)[:, :2], 8)
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="refine"):
        adaptive_drops(scorer, image, np.zeros((2, 2), np.float32), 0, 0.0, patch=2, refine=1.5)
    with pytest.raises(ValueError, match="coarse_step"):
        adaptive_drops(scorer, image, np.zeros((2, 2), np.float32), 0, 0.0, patch=2, coarse_step=0)
    with pytest.raises(ValueError, match="no point"):
        adaptive_drops(scorer, image, np.zeros((0, 2), np.float32), 0, 0.0, patch=2)


# ---------------------------------------------------------------------------- benchmark


def test_benchmark_equality_assertions_on_a_tiny_case():
    from facesal_fast.benchmark.cases import ssim, window_centres
    from facesal_fast.benchmark.cis_end_to_end import tiny_equality_case

    rows = tiny_equality_case()
    assert {"captum (ppe=16)", "incremental (exact)"} <= {row["method"] for row in rows}
    centres = window_centres((10, 12), 4, 3)
    assert len(centres) == 3 * 4 and centres[:, 0].max() == 9 + 1
    a = np.random.default_rng(0).random((16, 16))
    assert ssim(a, a) == pytest.approx(1.0)


def test_facesal_bench_runs_from_outside_the_source_tree(tmp_path):
    """The suite is part of the package (an installed wheel has it): ``facesal bench`` runs
    in a fresh process whose working directory is not the checkout."""
    import subprocess

    from facesal_fast.cli import _parser

    args = _parser().parse_args(["bench", "--quick", "--models", "gender", "--json", "out.json"])
    assert (args.command, args.quick, args.models, args.json) == ("bench", True, "gender", "out.json")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-m", "facesal_fast", "bench", "--tiny", "--threads", "1", "--json", "tiny.json"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "| tiny | image | incremental (exact) |" in done.stdout
    assert json.loads((tmp_path / "tiny.json").read_text())["rows"]


def test_grid_cis_through_the_incremental_scorer_equals_plain_grid_cis(real_face_and_scorer):
    """The recommended approximate mode (grid + exact incremental inference) only changes speed."""
    from facesal_fast import models
    from facesal_fast.saliency import cis

    face, _ = real_face_and_scorer
    scorer = models.load("gender", backend="torch")
    plain = cis(face.image, scorer, face=face, mode="grid", grid_step=3)
    fast = cis(face.image, IncrementalScorer(scorer), face=face, mode="grid", grid_step=3)
    assert fast.forward_passes == plain.forward_passes
    np.testing.assert_allclose(fast.drops, plain.drops, atol=1e-5)
    np.testing.assert_allclose(fast.canonical, plain.canonical, atol=1e-5)


def test_a_twin_that_disagrees_with_its_model_is_refused():
    class Twinned(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

        def traceable(self):
            return nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())  # another network

    with pytest.raises(ValueError, match="disagrees"):
        IncrementalModel(Twinned()).cache(torch.randn(1, 3, 8, 8))


# ---------------------------------------------------------------------------- fast by default


def test_multiply_adds_are_counted_box_wise():
    from facesal_fast.speed.auto import mac_ratio

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 2)).eval()
    model = IncrementalModel(net)
    model.cache(torch.randn(1, 3, 16, 16))
    assert model.multiply_adds == 16 * 16 * 4 * 27 + 4 * 16 * 16 * 2
    # Patch 3 away from the border: the conv's box is 5 x 5, the linear layer runs in full.
    ratio = mac_ratio(model, torch.randn(1, 3, 16, 16), 3, centres=np.array([[8.0, 8.0]]))
    assert ratio == pytest.approx((16 * 16 * 4 * 27 + 2048) / (5 * 5 * 4 * 27 + 2048))


def _traceable_scorer(**options) -> Scorer:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).eval()
    return Scorer.from_torch(net, 32, mean=0.5, std=0.25, **options)


def test_auto_incremental_weighs_the_backend_and_falls_back_silently():
    from facesal_fast.scoring.backends import CallableBackend
    from facesal_fast.scoring.selection import ProbeResult
    from facesal_fast.speed.auto import choose_incremental

    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    eager = _traceable_scorer(backend="torch")
    chosen = choose_incremental(eager, image, 3)
    assert chosen.incremental and isinstance(chosen.scorer, IncrementalScorer) and chosen.mac_ratio > 10

    def faster_backend(ms_torch: float, ms_other: float) -> Scorer:
        fn = lambda b: eager.module(torch.from_numpy(b)).detach().numpy()  # noqa: E731
        probe = [ProbeResult("torch-fp32", ms_torch, 0.0), ProbeResult("callable", ms_other, 0.0)]
        return Scorer(CallableBackend(fn), input_size=32, mean=0.5, std=0.25, probe=probe, module=eager.module)

    # Incremental runs in torch eager: it must beat the backend's measured speed-up too.
    assert choose_incremental(faster_backend(2.0, 1.0), image, 3).incremental
    slow = choose_incremental(faster_backend(100.0, 1.0), image, 3, windows=100)  # too little work to race
    assert not slow.incremental and "< 150" in slow.reason
    assert not choose_incremental(_traceable_scorer(backend="onnx"), image, 3).incremental  # named: respected
    box = Scorer.from_callable(lambda b: b.reshape(len(b), -1)[:, :2], 32)
    assert choose_incremental(box, image, 3).scorer is box
    with pytest.raises(ValueError, match="incremental=True, but no torch module"):
        choose_incremental(box, image, 3, incremental=True)
    with pytest.raises(ValueError, match="incremental must be"):
        choose_incremental(eager, image, 3, incremental="yes")


def test_a_race_decides_when_the_count_says_no_and_is_stored(monkeypatch, tmp_path):
    """The multiply-add rule is cautious: where it says no but the count is at least 1.5, one
    race of both (stored on disk, run once) decides."""
    from facesal_fast.scoring.backends import CallableBackend
    from facesal_fast.scoring.probe_cache import CACHE_ENV
    from facesal_fast.scoring.selection import ProbeResult
    from facesal_fast.speed import auto

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    eager = _traceable_scorer(backend="torch")
    fn = lambda b: eager.module(torch.from_numpy(b)).detach().numpy()  # noqa: E731
    probe = [ProbeResult("torch-fp32", 100.0, 0.0), ProbeResult("callable", 1.0, 0.0)]

    def choose(times: dict[str, float], patch: int):
        monkeypatch.setattr(auto, "race", lambda *a: dict(times))
        scorer = Scorer(CallableBackend(fn), input_size=32, mean=0.5, std=0.25, probe=probe, module=eager.module)
        return auto.choose_incremental(scorer, image, patch)

    won = choose({"full": 3.0, "incremental": 1.0}, 3)
    assert won.incremental and isinstance(won.scorer, IncrementalScorer) and "in a race" in won.reason
    assert "at least 1.1x faster" in won.reason and len(list(tmp_path.glob("probes/*.json"))) == 1
    auto._RACES.clear()  # a new process: the race is read back from disk
    stored = choose({"full": 1.0, "incremental": 3.0}, 3)  # the stored race, not this one
    assert stored.incremental and stored.reason == won.reason
    lost = choose({"full": 1.05, "incremental": 1.0}, 5)  # another patch: another race
    assert not lost.incremental and lost.scorer is not won.scorer and "less than 1.1x faster" in lost.reason
    assert len(list(tmp_path.glob("probes/*.json"))) == 2


def test_the_race_times_both_paths_on_the_same_windows():
    from facesal_fast.speed.auto import RACE_WINDOWS, race

    scorer = _traceable_scorer(backend="torch")
    calls = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def score_occluded(self, image, centers, patch):
            calls.append(np.asarray(centers).copy())
            return self.inner.score_occluded(image, centers, patch)

    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    times = race(Counting(scorer), Counting(IncrementalScorer(scorer)), image, 3)
    assert set(times) == {"full", "incremental"} and all(0 < ms < 1e4 for ms in times.values())
    assert len(calls) == 4 and all(len(c) == RACE_WINDOWS for c in calls)
    assert all(np.array_equal(c, calls[0]) for c in calls) and ((calls[0] >= 8) & (calls[0] <= 24)).all()


def test_auto_incremental_logs_its_choice_once(caplog):
    from facesal_fast.speed.auto import choose_incremental

    scorer = _traceable_scorer(backend="torch")
    image = np.zeros((32, 32, 3), np.uint8)
    with caplog.at_level("INFO", logger="facesal_fast.speed"):
        for _ in range(3):
            choose_incremental(scorer, image, 5)
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "incremental inference on" in caplog.records[0].getMessage()


@pytest.fixture(scope="module")
def gender_photo():
    from facesal_fast.align import default_aligner, load_image

    return default_aligner()(load_image(ROOT / "facesal_fast" / "data" / "demo_faces" / "img1.jpg"))


def test_default_cis_picks_incremental_on_a_bundled_model_and_equals_exact(gender_photo):
    from facesal_fast import models
    from facesal_fast.saliency import cis

    scorer, face = models.load("gender", backend="torch"), gender_photo
    fast = cis(face.image, scorer, face=face, stride=25)
    plain = cis(face.image, scorer, face=face, stride=25, incremental=False)
    assert fast.settings["incremental"] and not plain.settings["incremental"]
    assert "multiply-add ratio" in fast.settings["incremental_reason"]
    assert fast.forward_passes == plain.forward_passes == fast.settings["forward_passes"]
    np.testing.assert_allclose(fast.drops, plain.drops, atol=1e-5)
    np.testing.assert_allclose(fast.canonical, plain.canonical, atol=1e-5)


def test_cli_quality_and_no_incremental_reach_the_audit(tmp_path):
    from facesal_fast.audit.options import plan_audit
    from facesal_fast.cli import _parser

    args = _parser().parse_args(["audit", "photos", "--out", "runs/x", "--quality", "fast", "--no-incremental"])
    assert (args.quality, args.incremental) == ("fast", False)
    assert _parser().parse_args(["audit", "photos", "--out", "runs/x"]).incremental == "auto"
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes((ROOT / "facesal_fast" / "data" / "demo_faces" / "img1.jpg").read_bytes())
    plan = plan_audit(photos, tmp_path / "run", quality="fast", incremental=False)
    assert plan.cis_options["quality"] == "fast" and plan.cis_options["incremental"] is False
    assert "quality" not in plan_audit(photos, tmp_path / "run").cis_options  # old runs resume unchanged
    with pytest.raises(ValueError, match="--quality"):
        plan_audit(photos, tmp_path / "run", quality="high", mode="grid")


def test_auto_backend_without_input_size_probes_per_shape_only_when_the_work_pays(tmp_path):
    from facesal_fast.scoring.selection import ProbingBackend

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    ).eval()
    scorer = Scorer.from_torch(net, None, cache_dir=tmp_path)
    backend = scorer.backend
    assert isinstance(backend, ProbingBackend)
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    centres = np.array([[5.0, 5.0], [12.0, 9.0]], np.float32)
    eager = Scorer.from_torch(net, None, backend="torch").score_occluded(image, centres, 3)
    np.testing.assert_allclose(scorer.score_occluded(image, centres, 3), eager, atol=1e-6)
    assert backend.probes == {} and backend.speedup((3, 20, 24)) is None  # tiny work: no probe
    backend.probe_after = 0.0  # now every new shape has paid for its probe
    np.testing.assert_allclose(scorer.score_occluded(image, centres, 3), eager, atol=1e-5)
    assert list(backend.probes) == [(3, 20, 24)] and backend.chosen[(3, 20, 24)].layout == "nchw"
    assert backend.speedup((3, 20, 24)) > 0 and backend.name.startswith("auto(torch-fp32")
    np.testing.assert_allclose(scorer.score_occluded(image, centres, 3), eager, atol=1e-5)
    assert len(backend.probes) == 1  # cached per shape


def test_incremental_model_follows_weights_edited_in_place():
    """The cascading randomisation edits weights in place (through ``.data``, which torch's
    version counters do not see): the traced copy must follow, or CIS would explain the
    trained model at every step."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 2),
    ).eval()
    x = torch.rand(1, 3, 16, 16)
    model = IncrementalModel(net)
    before = model.cache(x)[model._nodes[-1]]
    net[0].weight.data.normal_()
    after = model.cache(x)[model._nodes[-1]]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, net(x), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- shared batches


class _RecordingBackend:
    """A backend that records the size of every batch it runs (everything else delegated)."""

    def __init__(self, backend):
        self.backend, self.sizes = backend, []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def __call__(self, batch):
        self.sizes.append(len(batch))
        return self.backend(batch)


@pytest.mark.parametrize("options", [dict(stride=25), dict(stride=25, mode="adaptive", grid_step=4, refine=0.3)])
def test_a_batch_of_photos_shares_occlusion_batches_and_equals_one_at_a_time(options):
    """``cis`` of several photos scores their windows in shared batches (fewer, fuller
    forward passes) and gives each photo the maps it gets alone."""
    from facesal_fast import models
    from facesal_fast.align import load_image
    from facesal_fast.saliency import cis

    scorer = models.load("gender", backend="torch")
    recording = scorer.backend = _RecordingBackend(scorer.backend)
    images = [load_image(ROOT / "facesal_fast" / "data" / "demo_faces" / f"img{k}.jpg") for k in (1, 2, 3)]
    alone = [cis(image, scorer, incremental=False, **options) for image in images]
    alone_batches = [n for n in recording.sizes if n > 1]
    recording.sizes.clear()
    together = cis(images, scorer, incremental=False, **options)
    together_batches = [n for n in recording.sizes if n > 1]
    assert len(together) == 3 and sum(together_batches) == sum(alone_batches) == sum(r.forward_passes for r in alone)
    assert len(together_batches) < len(alone_batches)
    for one, shared in zip(alone, together):
        assert shared.forward_passes == one.forward_passes
        np.testing.assert_allclose(shared.drops, one.drops, atol=1e-6)
        np.testing.assert_allclose(shared.canonical, one.canonical, atol=1e-6)


def test_incremental_requests_are_scored_one_photo_at_a_time():
    """An IncrementalScorer forwards attributes to its Scorer but not the shared-batch
    capability: each photo's windows run through its own incremental score_occluded."""
    from facesal_fast.scoring.batching import Windows, score_windows

    net = _randomise_bn(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten()))
    scorer = Scorer.from_torch(net, 8, backend="torch", mean=0.0, std=1.0)
    incremental = IncrementalScorer(scorer)
    assert scorer.shares_batches and not incremental.shares_batches
    seen = []
    incremental.score_occluded = lambda *args, **kwargs: seen.append(len(args[1])) or np.zeros(len(args[1]))
    rng = np.random.default_rng(0)
    requests = [
        Windows(incremental, rng.integers(0, 255, (8, 8, 3), np.uint8), np.full((k, 2), 3.0), 3) for k in (2, 5)
    ]
    assert [len(s) for s in score_windows(requests)] == [2, 5] and seen == [2, 5]


def test_a_failing_photo_of_a_batch_raises_its_own_error(tmp_path):
    from facesal_fast import models
    from facesal_fast.align.errors import ImageError
    from facesal_fast.saliency import cis

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    photo = ROOT / "facesal_fast" / "data" / "demo_faces" / "img1.jpg"
    with pytest.raises(ImageError, match="broken.jpg"):
        cis([photo, broken], models.load("gender", backend="torch"), stride=50)


def test_an_audit_explains_a_round_of_photos_in_shared_batches():
    from facesal_fast import models
    from facesal_fast.audit.runner import Audit

    scorer = models.load("gender", backend="torch")
    recording = scorer.backend = _RecordingBackend(scorer.backend)
    photos = [ROOT / "facesal_fast" / "data" / "demo_faces" / f"img{k}.jpg" for k in (1, 2, 3)]
    results = {}
    for per_round in (1, 3):
        recording.sizes.clear()
        audit = Audit(scorer, stride=25, incremental=False, photos_per_round=per_round)
        items = list(audit.feed(photos, progress=False))
        results[per_round] = ([item.result for item in items], [n for n in recording.sizes if n > 1])
    (alone, alone_batches), (shared, shared_batches) = results[1], results[3]
    assert sum(shared_batches) == sum(alone_batches) and len(shared_batches) < len(alone_batches)
    for one, together in zip(alone, shared):
        np.testing.assert_allclose(together.canonical, one.canonical, atol=1e-6)
    with pytest.raises(ValueError, match="photos_per_round"):
        Audit(scorer, photos_per_round=0)
