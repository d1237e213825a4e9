"""Scorer, confidences, geometry and backends, checked against plain numpy/torch references."""

import numpy as np
import pytest
import torch
from torch import nn

from facesal_fast.scoring import OnnxBackend, Scorer, auto_batch_size, class_confidence, export_onnx, resolve_class
from facesal_fast.scoring.batching import run_pipelined
from facesal_fast.scoring.geometry import square_crop_box, to_model_geometry
from facesal_fast.scoring.preprocessing import Preprocessing

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _net(channels=3, classes=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, groups=8),
        nn.Conv2d(8, 16, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, classes),
    ).eval()


def _image(h=20, w=24, c=3, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _occlude_reference(image, center, patch, fill):
    """The window rule (docs/architecture.md) in numpy: columns cx-(p-1)//2 .. cx+p//2, clipped."""
    out = image.astype(np.float32).copy()
    cx, cy = int(np.floor(center[0] + 0.5)), int(np.floor(center[1] + 0.5))
    x0, x1 = max(cx - (patch - 1) // 2, 0), min(cx + patch // 2, image.shape[1] - 1)
    y0, y1 = max(cy - (patch - 1) // 2, 0), min(cy + patch // 2, image.shape[0] - 1)
    if x0 <= x1 and y0 <= y1:
        out[y0 : y1 + 1, x0 : x1 + 1] = fill
    return out


def _reference_scores(net, image, centers, patch, fill, target, kind="softmax"):
    batch = np.stack([_occlude_reference(image, c, patch, fill) for c in centers])
    x = (batch / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    with torch.no_grad():
        out = net(torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2))
    return (torch.softmax(out, 1) if kind == "softmax" else out)[:, target].numpy()


def _scorer(net, **kw):
    kw.setdefault("backend", "torch")
    return Scorer.from_torch(net, (20, 24), mean=MEAN, std=STD, classes=["a", "b", "c", "d"], **kw)


# ----------------------------------------------------------------------------- confidences


def test_class_confidence_softmax_logit_and_probability_outputs():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    probs = torch.softmax(logits, 1)
    torch.testing.assert_close(class_confidence(1)(logits), probs[:, 1])
    torch.testing.assert_close(class_confidence(2, "logit")(logits), logits[:, 2])
    torch.testing.assert_close(class_confidence(0, "softmax", "probabilities")(probs), probs[:, 0])
    torch.testing.assert_close(class_confidence(0, "logit", "probabilities")(probs), torch.log(probs[:, 0]))
    with pytest.raises(ValueError, match="confidence kind"):
        class_confidence(0, "margin")
    with pytest.raises(ValueError, match="K x D"):
        class_confidence(5)(logits)


def test_resolve_class_by_name_and_index():
    assert resolve_class("b", ["a", "b"], 2) == 1
    assert resolve_class(np.int64(1), None, 2) == 1
    with pytest.raises(ValueError, match="unknown class"):
        resolve_class("z", ["a", "b"], 2)
    with pytest.raises(ValueError, match="no class names"):
        resolve_class("a", None, 2)
    with pytest.raises(ValueError, match="out of range"):
        resolve_class(2, None, 2)


# ----------------------------------------------------------------------------- geometry


def test_prepare_crop_affine_maps_image_points_to_input_pixels():
    image = np.zeros((100, 120, 3), np.uint8)
    image[40, 70] = 255  # one bright pixel
    box = (50, 30, 90, 70)  # 40 x 40 box, margin 0.25 -> 60 px square at (40, 20)
    assert square_crop_box(box, 0.25) == (40, 20, 60)
    crop, affine = to_model_geometry(image, (60, 60), False, box, 0.25)  # no resize
    np.testing.assert_allclose(affine, [[1, 0, -40], [0, 1, -20]], atol=1e-12)
    assert crop[20, 30].max() == 255 and crop.sum() == 3 * 255
    small, affine = to_model_geometry(image, (30, 30), True, box, 0.25)  # halve + grey
    assert small.shape == (30, 30, 1)
    u, v = affine @ np.array([70.0, 40.0, 1.0])
    assert (u, v) == pytest.approx((14.75, 9.75))  # pixel (30, 20) of the crop, area-averaged
    assert small[9:11, 14:16].sum() > 0 and small[:8].sum() == 0


def test_prepare_without_crop_is_identity_and_box_past_the_edge_replicates():
    image = _image(16, 16)
    same, affine = to_model_geometry(image, None, False, None, 0.2)
    np.testing.assert_array_equal(same, image)
    np.testing.assert_allclose(affine, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    edge, _ = to_model_geometry(image, (20, 20), False, (-10, -10, 10, 10), 0.0)
    np.testing.assert_array_equal(edge[0, 0], image[0, 0])


def test_prepare_checks_its_inputs():
    scorer = Scorer.from_torch(_net(1), 16, grayscale=True, crop="face", backend="torch")
    with pytest.raises(ValueError, match="pass face_box"):
        scorer.prepare(_image())
    with pytest.raises(ValueError, match="x1 > x0"):
        scorer.prepare(_image(), (5, 5, 2, 9))
    aligned = type("AlignedFace", (), {"face_box": (2, 2, 18, 18)})()
    assert scorer.prepare(_image(), aligned)[0].shape == (16, 16, 1)


# ----------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("fill", ["black", (30.0, 60.0, 90.0)])
def test_score_occluded_equals_naive_loop(fill):
    net, image = _net(), _image()
    centers = np.array([[0, 0], [5.4, 7.6], [23, 19], [12, 3], [-3, 10], [11.5, 11.5], [30, 30]], np.float32)
    scorer = _scorer(net)
    got = scorer.score_occluded(image, centers, 5, fill, target="c", batch_size=3)
    value = 0.0 if fill == "black" else np.array(fill, np.float32)
    want = _reference_scores(net, image, centers, 5, value, 2)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # a window wholly off the image occludes nothing: exactly the base score
    assert got[-1] == scorer.base_score(image, "c")


def test_default_target_is_the_predicted_class_and_logit_confidence():
    net, image = _net(), _image()
    centers = np.array([[4, 4], [10, 10]], np.float32)
    scorer = _scorer(net, confidence="logit")
    with torch.no_grad():
        x = (image / 255.0 - np.array(MEAN)) / np.array(STD)
        predicted = int(net(torch.tensor(x, dtype=torch.float32).permute(2, 0, 1)[None]).argmax())
    got = scorer.score_occluded(image, centers, 3)
    np.testing.assert_allclose(got, _reference_scores(net, image, centers, 3, 0.0, predicted, "logit"), atol=1e-5)


def test_score_on_model_ready_batches():
    net = _net()
    scorer = _scorer(net)
    x = torch.randn(5, 3, 20, 24)
    with torch.no_grad():
        probs = torch.softmax(net(x), 1)
    np.testing.assert_allclose(scorer.score(x, 1), probs[:, 1].numpy(), atol=1e-6)
    np.testing.assert_allclose(scorer.score(x.numpy()), probs.max(1).values.numpy(), atol=1e-6)


def test_pluggable_confidence_function():
    net, image = _net(), _image()
    centers = np.array([[3, 3], [15, 8]], np.float32)
    custom = _scorer(net).with_confidence(lambda out: out[:, 0] - out[:, 3])
    base = _scorer(net, confidence="logit")
    np.testing.assert_allclose(
        custom.score_occluded(image, centers, 4),
        base.score_occluded(image, centers, 4, target=0) - base.score_occluded(image, centers, 4, target=3),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="binds its own target"):
        custom.score_occluded(image, centers, 4, target=1)


def test_scorer_rejects_bad_inputs():
    scorer = _scorer(_net())
    with pytest.raises(ValueError, match="input image must be"):
        scorer.score_occluded(_image(10, 10), np.zeros((1, 2), np.float32), 3)
    with pytest.raises(ValueError, match="K x 2"):
        scorer.score_occluded(_image(), np.zeros((3,), np.float32), 3)
    assert Scorer.from_torch(_net(), None).backend.name == "auto(torch-fp32)"  # any size: probed per shape, later
    with pytest.raises(ValueError, match="needs a fixed input_size"):
        Scorer.from_torch(_net(), None, backend="onnx")
    with pytest.raises(ValueError, match="backend must be one of"):
        Scorer.from_torch(_net(), 20, backend="tvm")
    with pytest.raises(ValueError, match="need a CUDA device"):
        Scorer.from_torch(_net(), 20, backend="torch", precision="fp16", device="cpu")


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(input_size=0), "input_size must be"),
        (dict(channels=2), "channels must be 1 or 3"),
        (dict(crop="head"), "crop must be one of"),
        (dict(crop="face"), "needs an input_size"),
        (dict(crop="chip", input_size=(20, 24)), "input_size must be square"),
        (dict(crop_margin=-0.1), "crop_margin must be"),
        (dict(chip_padding=float("nan")), "chip_padding must be"),
        (dict(std=0.0), "std must be positive"),
        (dict(mean=(0.1, 0.2)), "mean: expected"),
        (dict(scale=1e300), "non-finite"),
    ],
)
def test_preprocessing_spec_names_the_bad_field(fields, match):
    with pytest.raises(ValueError, match=match):
        Preprocessing(**fields)
    with pytest.raises(ValueError, match=match):
        Scorer.from_callable(lambda b: np.zeros((len(b), 2)), **fields)


def test_constructors_share_one_frozen_spec():
    spec = Preprocessing(input_size=20, mean=[0.4, 0.5, 0.6], std=STD, crop="face", crop_margin=0.1)
    assert spec.input_size == (20, 20) and spec.mean == MEAN and spec == Preprocessing.of(spec)
    with pytest.raises(AttributeError):
        spec.scale = 1.0
    scorer = Scorer.from_torch(_net(), spec=spec, backend="torch")
    assert scorer.spec == spec and scorer.crop == "face" and scorer.crop_margin == 0.1
    assert "Preprocessing" not in repr(scorer) and len(repr(scorer)) < 200
    with pytest.raises(AttributeError, match="frozen spec"):
        scorer.mean = 0.0
    # keywords replace the spec's fields; the model's input shape replaces an ONNX spec's
    grey = Scorer.from_callable(lambda b: np.zeros((len(b), 2)), spec=spec, channels=1, mean=0.5, std=0.25, crop="none")
    assert (grey.channels, grey.crop, grey.input_size, grey.crop_margin, grey.std) == (1, "none", (20, 20), 0.1, 0.25)
    assert Scorer.from_torch(_net(1), 24, grayscale=True, backend="torch").spec == Preprocessing(24, 1, crop="auto")
    with pytest.raises(TypeError, match="unexpected keyword argument.*'padding'"):
        Scorer.from_torch(_net(), 20, padding=0.3)


# ----------------------------------------------------------------------------- backends


def test_backends_agree_with_torch_eager(tmp_path):
    net, image = _net(), _image()
    centers = np.random.default_rng(2).uniform(-2, 25, (37, 2)).astype(np.float32)
    want = _scorer(net).score_occluded(image, centers, 6, target=1)
    channels_last = _scorer(net, channels_last=True)
    onnx = _scorer(net, backend="onnx", cache_dir=tmp_path)
    mean, std = np.array(MEAN, np.float32), np.array(STD, np.float32)

    def black_box(batch):  # numpy NHWC in, numpy out: the model code is not visible
        with torch.no_grad():
            return net(torch.from_numpy(batch).permute(0, 3, 1, 2)).numpy()

    callable_ = Scorer.from_callable(black_box, (20, 24), layout="nhwc", mean=mean, std=std)
    assert channels_last.backend.layout == "nhwc" and onnx.backend.name == "onnx-cpu"
    for scorer in (channels_last, onnx, callable_):
        np.testing.assert_allclose(scorer.score_occluded(image, centers, 6, target=1, batch_size=8), want, atol=1e-5)


def test_onnx_export_is_cached_and_from_onnx_reads_nhwc_models(tmp_path):
    net = _net()
    path = export_onnx(net, (3, 20, 24), tmp_path)
    stamp = path.stat().st_mtime_ns
    assert export_onnx(net, (3, 20, 24), tmp_path) == path and path.stat().st_mtime_ns == stamp
    assert export_onnx(_net(seed=5), (3, 20, 24), tmp_path) != path  # other weights, other file

    class NHWC(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x.permute(0, 3, 1, 2))

    nhwc_path = tmp_path / "nhwc.onnx"
    torch.onnx.export(
        NHWC().eval(),
        (torch.zeros(1, 20, 24, 3),),
        str(nhwc_path),
        dynamo=False,
        dynamic_axes={"x": {0: "n"}},
        input_names=["x"],
    )
    scorer = Scorer.from_onnx(nhwc_path, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="input_size: read from the ONNX model"):
        Scorer.from_onnx(nhwc_path, input_size=20)
    assert scorer.backend.layout == "nhwc" and scorer.input_size == (20, 24) and scorer.channels == 3
    image, centers = _image(), np.array([[3, 3], [12, 9], [20, 15]], np.float32)
    np.testing.assert_allclose(
        scorer.score_occluded(image, centers, 5, target=2), _reference_scores(net, image, centers, 5, 0.0, 2), atol=1e-5
    )
    assert isinstance(OnnxBackend(path), OnnxBackend)


def test_auto_backend_probes_and_keeps_a_correct_one(tmp_path, monkeypatch):
    from facesal_fast.scoring.selection import ProbingBackend, select_backend

    monkeypatch.setenv("FACESAL_CACHE_DIR", str(tmp_path / "cache"))
    net, image = _net(), _image()
    first = _scorer(net, backend="auto", cache_dir=tmp_path)  # nothing stored: eager until the work pays
    assert isinstance(first.backend, ProbingBackend) and first.probe == []
    select_backend(net, (3, 20, 24), torch.device("cpu"), "fp32", 8, tmp_path)  # a full probe, stored
    scorer = _scorer(net, backend="auto", cache_dir=tmp_path)
    names = [p.name for p in scorer.probe]
    assert "torch-fp32" in names and "onnx-cpu" in names and scorer.backend.name in names
    timed = [p for p in scorer.probe if p.ms_per_image is not None]
    assert min(timed, key=lambda p: p.ms_per_image).name == scorer.backend.name
    centers = np.array([[2, 2], [9, 14]], np.float32)
    np.testing.assert_allclose(
        scorer.score_occluded(image, centers, 4, target=0), _reference_scores(net, image, centers, 4, 0.0, 0), atol=1e-5
    )


def test_pipeline_keeps_order_and_batch_sizes():
    seen = []

    def produce(lo, hi):
        seen.append(hi - lo)
        return torch.arange(lo, hi, dtype=torch.float32)

    out = run_pipelined(produce, lambda b: b * 2, 10, 4, torch.device("cpu"))
    np.testing.assert_array_equal(out, np.arange(10) * 2.0)
    assert seen == [4, 4, 2]
    assert run_pipelined(produce, lambda b: b, 0, 4, torch.device("cpu")).shape == (0,)
    assert auto_batch_size((1, 64, 64), torch.device("cpu")) == 256
    assert auto_batch_size((3, 224, 224), torch.device("cpu")) == 8
    assert auto_batch_size((3, 224, 224), torch.device("cpu"), total=5) == 5
    assert auto_batch_size((1, 64, 64), torch.device("cpu"), cpu_max=64) == 64
    assert auto_batch_size((1, 64, 64), torch.device("cuda"), cpu_max=64) == 1024


# ----------------------------------------------------------------------------- accelerators


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "options",
    [
        dict(backend="torch"),  # channels_last + CUDA graphs by default on CUDA
        dict(backend="torch", precision="fp16"),
        dict(backend="auto"),
    ],
)
def test_cuda_backends_agree_with_cpu_eager(options, tmp_path):
    net, image = _net(), _image()
    centers = np.random.default_rng(3).uniform(0, 24, (300, 2)).astype(np.float32)
    want = _scorer(net).score_occluded(image, centers, 5, target=1)
    scorer = _scorer(_net(), device="cuda", cache_dir=tmp_path, **options)
    got = scorer.score_occluded(torch.from_numpy(image).cuda(), centers, 5, target=1, batch_size=128)
    np.testing.assert_allclose(got, want, atol=2e-2 if options.get("precision") == "fp16" else 1e-4)


def test_tensorrt_backend_agrees_with_torch(tmp_path):
    from facesal_fast.scoring import tensorrt_available

    ok, reason = tensorrt_available()
    if not ok:
        pytest.skip(reason)
    net, image = _net(), _image()
    centers = np.random.default_rng(4).uniform(0, 24, (100, 2)).astype(np.float32)
    want = _scorer(net).score_occluded(image, centers, 5, target=1)
    scorer = _scorer(_net(), backend="tensorrt", device="cuda", batch_size=64, cache_dir=tmp_path)
    np.testing.assert_allclose(scorer.score_occluded(image, centers, 5, target=1), want, atol=1e-3)


def test_scorer_without_input_size_takes_images_as_they_are():
    net = _net()
    scorer = Scorer.from_torch(net, None, mean=MEAN, std=STD)
    for h, w in ((20, 24), (13, 31)):
        image = _image(h, w)
        prepared, affine = scorer.prepare(image, face_box=(1, 1, 5, 5))  # crop="none": box ignored
        np.testing.assert_array_equal(prepared, image)
        centers = np.array([[2, 2], [w - 3, h - 3]], np.float32)
        np.testing.assert_allclose(
            scorer.score_occluded(prepared, centers, 5, target=3),
            _reference_scores(net, image, centers, 5, 0.0, 3),
            atol=1e-6,
        )


# ----------------------------------------------------------------------------- shared batches, batch sizes


def _counting_scorer(cls=Scorer, batch_size=64):
    """A black-box ``cls`` scorer on 8 x 8 RGB inputs and the list of its backend's batch sizes."""
    calls = []

    def fn(batch):
        calls.append(len(batch))
        return np.stack([batch.mean((1, 2, 3)), -batch.mean((1, 2, 3))], 1).astype(np.float32)

    return cls.from_callable(fn, 8, batch_size=batch_size), calls


def _two_requests(scorer):
    from facesal_fast.scoring.batching import Windows

    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    centers = np.array([[1.0, 1.0], [4.0, 4.0], [6.0, 2.0]], np.float32)
    return [Windows(scorer, image, centers, 3, target=0), Windows(scorer, image[::-1].copy(), centers, 3, target=0)]


class _LoggedScorer(Scorer):
    """Overrides score_occluded (to count calls) but scores as Scorer does, and says so."""

    shares_batches = True
    calls = 0

    def score_occluded(self, *args, **kwargs):
        type(self).calls += 1
        return super().score_occluded(*args, **kwargs)


class _OwnScoring(Scorer):
    """Overrides score_occluded with other scores and does not declare shared batches."""

    def score_occluded(self, input_image, centers, patch, fill="black", target=None, batch_size=None):
        return np.full(len(centers), 7.0, np.float32)


def test_shared_batches_follow_the_declared_capability_not_the_method_name():
    from facesal_fast.scoring.batching import score_windows

    plain, plain_calls = _counting_scorer()
    alone = [r.score() for r in _two_requests(plain)]
    plain_calls.clear()
    np.testing.assert_array_equal(np.concatenate(score_windows(_two_requests(plain))), np.concatenate(alone))
    assert plain_calls == [6]  # both photos' windows in one batch

    logged, logged_calls = _counting_scorer(_LoggedScorer)
    assert logged.shares_batches
    got = score_windows(_two_requests(logged))
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(alone))
    assert logged_calls == [6]  # an override that declares it still shares (by name it did not)

    own, own_calls = _counting_scorer(_OwnScoring)
    assert not own.shares_batches and not _OwnScoring.shares_batches
    assert [list(s) for s in score_windows(_two_requests(own))] == [[7.0] * 3] * 2  # its override, not the batch
    assert own_calls == []


class _ForeignScorer:
    """Another package's ``Scorer``: its ``score_occluded`` has the qualified name of ours and it
    has an ``occluded_batch``, but it says nothing about shared batches."""

    def __init__(self):
        self.requests = 0

    def occluded_batch(self, *args):
        raise AssertionError("a foreign scorer's batches are not built by score_windows")

    def score_occluded(self, image, centers, patch, fill="black", target=None):
        self.requests += 1
        return np.zeros(len(centers), np.float32)


_ForeignScorer.__qualname__ = _ForeignScorer.__name__ = "Scorer"
_ForeignScorer.score_occluded.__qualname__ = "Scorer.score_occluded"


def test_a_foreign_class_named_scorer_scores_each_request_alone():
    from facesal_fast.scoring.batching import score_windows

    foreign = _ForeignScorer()
    assert [len(s) for s in score_windows(_two_requests(foreign))] == [3, 3]
    assert foreign.requests == 2


def test_one_batch_size_policy_requested_then_fixed_then_automatic():
    from facesal_fast.scoring.batching import batch_size_for

    cpu = torch.device("cpu")
    fixed, _ = _counting_scorer(batch_size=5)
    auto, _ = _counting_scorer(batch_size=None)
    assert fixed.batch_size_for((3, 8, 8), 100) == 5
    assert fixed.batch_size_for((3, 8, 8), 100, requested=2) == 2
    assert auto.batch_size_for((3, 8, 8), 100) == 100 == auto_batch_size((3, 8, 8), cpu, 100)
    assert auto.batch_size_for((3, 224, 224), 100) == 8
    # the backend's CPU cap (CallableBackend: 256; a torch backend: 64)
    assert auto.batch_size_for((1, 8, 8)) == auto.backend.cpu_max_batch == 256
    assert _scorer(_net()).batch_size_for((1, 8, 8)) == 64
    # batches of patch boxes (incremental inference): 4x the uncapped size, at most 256 and the total
    assert auto.batch_size_for((3, 224, 224), 1000, boxes=True) == 32
    assert auto.batch_size_for((1, 64, 64), 1000, boxes=True) == 256
    assert auto.batch_size_for((1, 64, 64), 10, boxes=True) == 10
    assert auto.batch_size_for((1, 64, 64), 0, boxes=True) == 1
    assert batch_size_for((3, 224, 224), cpu, requested=3, fixed=4) == 3
    assert batch_size_for((3, 224, 224), cpu, fixed=4) == 4


def test_every_scoring_path_asks_the_scorer_for_its_batch_size(monkeypatch):
    from facesal_fast.scoring.batching import score_windows
    from facesal_fast.speed import IncrementalScorer

    asked = []

    def three(self, input_shape, total=None, requested=None, *, boxes=False):
        asked.append((tuple(input_shape), total, requested, boxes))
        return 3

    monkeypatch.setattr(Scorer, "batch_size_for", three)
    scorer, calls = _counting_scorer(batch_size=None)
    image, centers = np.zeros((8, 8, 3), np.uint8), np.full((7, 2), 4.0, np.float32)
    scorer.score_occluded(image, centers, 3, target=0)
    assert calls == [3, 3, 1] and asked[-1] == ((3, 8, 8), 7, None, False)
    calls.clear()
    score_windows(_two_requests(scorer))
    assert calls == [3, 3] and asked[-1] == ((3, 8, 8), 6, None, False)
    net = _net()
    incremental = IncrementalScorer(_scorer(net))
    scores = incremental.score_occluded(_image(), centers, 3, target=0, batch_size=2)
    assert asked[-1] == ((3, 20, 24), 7, 2, True)
    np.testing.assert_allclose(scores, _scorer(net).score_occluded(_image(), centers, 3, target=0), atol=1e-5)


def test_kind_is_a_deprecated_alias_of_confidence_name():
    scorer = _scorer(_net(), confidence="logit")
    assert scorer.confidence_name == "logit"
    with pytest.warns(DeprecationWarning, match="confidence_name"):
        assert scorer.kind == "logit"
    assert "confidence='logit'" in repr(scorer)


# ----------------------------------------------------------------------------- face preparation


def test_prepare_is_the_scorers_face_preparation():
    import warnings

    from facesal_fast.scoring.face_input import FacePreparation

    scorer, image, box = _scorer(_net()), _image(40, 48), (8, 6, 30, 28)
    assert isinstance(scorer.face_preparation, FacePreparation) and scorer.face_preparation.spec is scorer.spec
    for got, want in zip(scorer.prepare(image, box), FacePreparation(scorer.spec)(image, box)):
        np.testing.assert_array_equal(got, want)
    whole = Scorer.from_torch(_net(), (20, 24), backend="torch", crop="none", mean=MEAN, std=STD)
    bound = whole.with_confidence(lambda out: out[:, 0])
    wide = np.zeros((400, 480, 3), np.uint8)
    with pytest.warns(UserWarning, match="crop='none'") as caught:
        whole.prepare(wide, box)
    assert caught[0].filename == __file__  # the warning points at the caller of prepare
    with pytest.warns(UserWarning, match="crop='none'"):
        bound.prepare(wide, box)  # a scorer of its own: warned once too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole.prepare(wide, box)
        bound.prepare(wide, box)
