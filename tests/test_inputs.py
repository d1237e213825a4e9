"""Inputs of the public API: value ranges of array images, torch tensors and batches in,
tensors out, face choice, scorer output and normalisation checks, reprs."""

import dataclasses
import inspect
import logging
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from photos import BUNDLED
from torch import nn

import facesal_fast as fs
from facesal_fast.align import (
    ImageError,
    as_rgb_uint8,
    default_aligner,
    load_image,
)
from facesal_fast.core.options import CISOptions
from facesal_fast.saliency.cis import cis_steps
from facesal_fast.scoring import Scorer
from facesal_fast.scoring.batching import run_steps
from facesal_fast.scoring.photos import AlignerLike, ScorerLike, photos
from facesal_fast.scoring.selection import ProbingBackend

PHOTO = BUNDLED / "img1.jpg"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return load_image(PHOTO)


@pytest.fixture(scope="module")
def face(image):
    return default_aligner()(image)


def _tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer.from_torch(_tiny_net(), 32, backend="torch", crop="face", classes=["a", "b"])


FAST = dict(stride=16)  # a few hundred windows on a 32 px input: each cis call takes well under a second


# ----------------------------------------------------------------------------- value ranges (issue 16, item 5)


def test_float_image_in_0_255_is_refused_not_made_white(image):
    with pytest.raises(ImageError, match=r"\[0, 1\].*image / 255"):
        as_rgb_uint8(image.astype(np.float64), "photo.png")
    with pytest.raises(ValueError, match="photo.png"):
        default_aligner()(image.astype(np.float64), source="photo.png")
    np.testing.assert_array_equal(as_rgb_uint8(image.astype(np.float64) / 255), image)
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        as_rgb_uint8(np.full((4, 4, 3), -0.5))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int16, np.uint32])
def test_integer_images_hold_8_bit_values(image, dtype):
    np.testing.assert_array_equal(as_rgb_uint8(image.astype(dtype)), image)  # was black (divided by 2**31 - 1)
    wide = image.astype(dtype)
    wide[0, 0, 0] = 300
    with pytest.raises(ImageError, match=r"0\.\.255.*\[0, 300\]"):
        as_rgb_uint8(wide, "wide.png")


def test_signed_integer_image_below_zero_is_refused(image):
    neg = image.astype(np.int32) - 1
    with pytest.raises(ImageError, match=r"\[-1, "):
        as_rgb_uint8(neg)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused_naming_the_image(image, bad):
    img = image.astype(np.float32) / 255
    img[10, 10, 1] = bad
    with pytest.raises(ImageError, match=r"holiday\.png.*1 NaN or Inf"):
        as_rgb_uint8(img, "holiday.png")
    with pytest.raises(ImageError, match=r"images\[1\].*NaN or Inf"):
        fs.cis([image, img], Scorer.from_callable(lambda b: np.zeros((len(b), 2)), 32, crop="face"))


def test_black_box_returning_one_score_per_image_is_refused(image, face):
    one_column = Scorer.from_callable(lambda b: b.mean(axis=(1, 2, 3)), 32, crop="face")  # (K,) from a 2-class model
    with pytest.raises(ValueError, match=r"one score per image.*\(1, 1\).*D >= 2"):
        fs.cis(image, one_column, face=face, **FAST)
    named = Scorer.from_callable(lambda b: b.mean(axis=(1, 2, 3)), 32, crop="face", classes=["woman", "man"])
    with pytest.raises(ValueError, match=r"expected \(1, 2\)"):
        fs.cis(image, named, face=face, **FAST)
    three = Scorer.from_callable(lambda b: b.reshape(len(b), -1)[:, :3], 32, crop="face", classes=["woman", "man"])
    with pytest.raises(ValueError, match=r"shape \(4, 3\).*expected \(4, 2\)"):
        three.score(np.zeros((4, 3, 32, 32), np.float32))
    logit = Scorer.from_callable(lambda b: b.mean(axis=(1, 2, 3)), 32, crop="face", confidence="logit")
    result = fs.cis(image, logit, face=face, **FAST)  # one logit is a legitimate score
    assert np.abs(result.drops).max() > 0


@pytest.mark.parametrize("bad", [dict(std=1e-300), dict(scale=1e300), dict(std=(0.5, 1e-40, 0.5)), dict(mean=1e39)])
def test_normalisation_giving_non_finite_batches_is_refused_at_construction(bad):
    with pytest.raises(ValueError, match="non-finite|NaN or Inf"):
        Scorer.from_callable(lambda b: np.zeros((len(b), 2)), 32, **bad)
    with pytest.raises(ValueError, match="non-finite|NaN or Inf"):
        Scorer.from_torch(_tiny_net(), 32, backend="torch", **{"mean": 0.0, "std": 1.0, **bad})


def test_float16_batches_must_fit_float16():
    from facesal_fast.scoring.scorer import check_normalisation

    check_normalisation(0.0, 1e-3, 1 / 255, 3)  # 1000 fits float32
    check_normalisation(0.0, 1e-3, 1 / 255, 3, half=True)
    with pytest.raises(ValueError, match="float16"):
        check_normalisation(0.0, 1e-5, 1 / 255, 3, half=True)  # 100000 overflows float16


# ----------------------------------------------------------------------------- tensors and batches (issue 18)


def _chw(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(image.copy()).permute(2, 0, 1).to(device)


def test_cis_takes_tensors_and_gives_tensor_maps_on_their_device(image, face, scorer, device):
    want = fs.cis(image, scorer, face=face, **FAST)
    assert isinstance(want.canonical, np.ndarray)  # numpy in, numpy out: unchanged
    for tensor in (_chw(image, device), _chw(image, device).float() / 255):
        got = fs.cis(tensor, scorer, face=face, **FAST)
        for name in ("canonical", "counts", "occlusion", "drops"):
            value = getattr(got, name)
            assert isinstance(value, torch.Tensor) and value.device == tensor.device, name
            np.testing.assert_array_equal(value.cpu().numpy(), getattr(want, name))
        assert got.region_shares == want.region_shares and got.overlay().shape == want.overlay().shape
        assert "tensor on" in repr(got)


def test_cis_on_a_batch_gives_one_result_per_photo(image, scorer):
    want = fs.cis(image, scorer, **FAST)
    batch = torch.stack([_chw(image, torch.device("cpu"))] * 2).float() / 255
    results = fs.cis(batch, scorer, **FAST)
    assert isinstance(results, list) and len(results) == 2
    for got in results:
        np.testing.assert_array_equal(got.canonical.numpy(), want.canonical)
    mixed = fs.cis([PHOTO, image, image.astype(np.float32) / 255], scorer, **FAST)
    assert [type(r.canonical) for r in mixed] == [np.ndarray] * 3
    for got in mixed:
        np.testing.assert_array_equal(got.canonical, want.canonical)
    assert len(fs.cis(np.stack([image, image]), scorer, **FAST)) == 2  # N x H x W x 3 array
    with pytest.raises(ValueError, match="batch"):
        fs.cis([image, image], scorer, face=default_aligner()(image), **FAST)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(2, 3, 4, 5, 6), "C x H x W"),
        (torch.zeros(4, 20, 20), "C = 1 or 3"),
        (torch.full((3, 20, 20), 255.0), r"\[0, 1\]"),
        ([], "empty list"),
        (3.5, "path, an H x W x 3 array"),
    ],
)
def test_bad_tensor_or_batch_is_a_clear_value_error(scorer, bad, match):
    with pytest.raises(ValueError, match=match):
        fs.cis(bad, scorer)


def test_methods_take_tensors_and_batches(image, scorer):
    net = scorer.backend.module
    small = image[::8, ::8][:32, :32]
    want = fs.methods.explain("gradcam", net, small, 1)
    tensor = _chw(small, torch.device("cpu")).float() / 255
    got = fs.methods.explain("gradcam", net, tensor, 1)
    assert isinstance(got.image_map, torch.Tensor) and got.canonical_map is None
    np.testing.assert_allclose(got.image_map.numpy(), want.image_map, atol=1e-6)
    batch = fs.methods.explain("gradcam", net, torch.stack([tensor, tensor]), 1)
    assert len(batch) == 2 and "tensor on cpu" in repr(batch[0])
    assert repr(want).startswith("MethodResult('gradcam', image_map=(32, 32)")


def test_face_choice_on_a_group_photo(scorer, caplog):
    couple = BUNDLED / "couple.jpg"
    faces = default_aligner()(couple, all_faces=True)
    with caplog.at_level(logging.WARNING, logger="facesal_fast.align.aligner"):
        largest = fs.cis(couple, scorer, **FAST)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "couple.jpg" in r.getMessage()]
    box = tuple(round(v) for v in largest.face.face_box)
    assert warned and str(box) in warned[0].getMessage() and "face_index" in warned[0].getMessage()
    centre = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    assert np.linalg.norm(centre(box) - centre(faces[0].face_box)) < 0.25 * (box[2] - box[0])  # the largest face
    second = fs.cis(couple, scorer, face_index=1, **FAST)
    assert second.face.face_box == faces[1].face_box != largest.face.face_box
    chosen = fs.cis(couple, scorer, None, CISOptions(face_index=1, **FAST))  # the choice is a field of the record
    np.testing.assert_array_equal(chosen.canonical, second.canonical)
    assert (
        run_steps(cis_steps(couple, scorer, None, CISOptions(face_index=1, **FAST))).face.face_box == faces[1].face_box
    )
    every = fs.cis(couple, scorer, faces="all", **FAST)
    assert [r.face.face_box for r in every] == [f.face_box for f in faces]
    with pytest.raises(ValueError, match="face_index=5 but 2 face"):
        fs.cis(couple, scorer, face_index=5)
    with pytest.raises(ValueError, match="faces must be 'all'"):
        fs.cis(couple, scorer, faces="some")


def test_scorer_satisfies_the_scorer_protocol(scorer):
    assert isinstance(scorer, ScorerLike)
    assert photos([PHOTO])[1] and not photos(PHOTO)[1]


def test_public_api_types_scorers_aligners_and_images_by_protocol():
    assert isinstance(default_aligner(), AlignerLike)
    entry_points = (fs.cis, fs.cms, fs.Audit.__init__, fs.CanonicalOcclusion.__init__, fs.CanonicalOcclusion.attribute)
    for function in entry_points:
        for name, parameter in inspect.signature(function).parameters.items():
            if name in ("image", "images", "inputs", "scorer", "model_or_scorer", "aligner", "target"):
                assert "Any" not in str(parameter.annotation), (function.__qualname__, name, parameter.annotation)


# ----------------------------------------------------------------------------- quiet by default


_MEDIAPIPE_LINE = re.compile(r"XNNPACK|absl|feedback|NORM_RECT|^[WIE]\d{4} ", re.MULTILINE)
_ALIGN_SCRIPT = f"""
import sys
from facesal_fast.align import Aligner
aligner = Aligner()
aligner({str(BUNDLED / "couple.jpg")!r}, all_faces=True)
aligner({str(PHOTO)!r})
print("stderr still works", file=sys.stderr)
"""


@pytest.mark.parametrize("shown", [False, True])
def test_mediapipe_native_logs_are_silenced_in_a_fresh_process(shown):
    env = dict(os.environ, FACESAL_MEDIAPIPE_LOGS="1" if shown else "0")
    done = subprocess.run([sys.executable, "-c", _ALIGN_SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = _MEDIAPIPE_LINE.findall(done.stderr)
    assert "stderr still works" in done.stderr  # fd 2 restored after MediaPipe started
    assert (len(lines) > 0) if shown else (lines == []), done.stderr


_USER_PATHS_SCRIPT = f"""
import sys
import facesal_fast as fs
photos = [{str(PHOTO)!r}, {str(BUNDLED / "img2.jpg")!r}]
fast = dict(mode="grid", grid_step=16, stride=16)
fs.cis(photos[0], fs.models.load("gender", backend="onnx"), **fast)
with fs.Audit(fs.models.load("expression-fer", backend="onnx"), sys.argv[1] + "/run", **fast) as audit:
    assert [item.status for item in audit.feed(photos, progress=False)] == ["done", "done"]
fs.cis(photos[1], fs.models.load("head-pose"), **fast)
"""


def test_no_mediapipe_line_from_cis_audit_feed_or_tasks(tmp_path):
    """MediaPipe opens its calculators on its own threads after the graph's constructor returns;
    their lines (feedback manager, NORM_RECT) must not reach stderr from the user's paths: fs.cis,
    Audit.feed and facesal tasks (head pose runs its own Face Mesh graph)."""
    env = dict(os.environ, FACESAL_MEDIAPIPE_LOGS="0")
    api = subprocess.run(
        [sys.executable, "-c", _USER_PATHS_SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=600
    )
    assert api.returncode == 0, api.stderr
    tasks = subprocess.run(
        [sys.executable, "-m", "facesal_fast", "tasks", str(BUNDLED), "--out", str(tmp_path / "tasks")]
        + ["--models", "gender,head-pose", "--max-images", "2", "--grid-step", "16", "--backend", "onnx"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert tasks.returncode == 0, tasks.stderr
    assert _MEDIAPIPE_LINE.findall(api.stderr + tasks.stderr) == [], api.stderr + tasks.stderr


# ----------------------------------------------------------------------------- defaults said out loud


def test_from_torch_crops_the_face_by_default(image, face):
    default = Scorer.from_torch(_tiny_net(), 32, backend="torch")
    assert default.crop == "auto" and Scorer.from_torch(_tiny_net(), None, backend="torch").crop == "none"
    for crop, box in (("face", face), ("none", None)):
        want = Scorer.from_torch(_tiny_net(), 32, backend="torch", crop=crop).prepare(image, box)
        got = default.prepare(image, box)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1])


def test_whole_photo_crop_warns_once_when_the_face_is_small(image, face):
    whole = Scorer.from_torch(_tiny_net(), 32, backend="torch", crop="none")
    wide = np.zeros((image.shape[0] * 3, image.shape[1] * 3, 3), np.uint8)
    wide[: image.shape[0], : image.shape[1]] = image  # the same face in a photo 3x larger
    with pytest.warns(UserWarning, match=r"crop='none': the face spans \d+%"):
        whole.prepare(wide, face)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole.prepare(wide, face)  # once per scorer
        Scorer.from_torch(_tiny_net(), 32, backend="torch", crop="none", mean=0.0, std=1.0).prepare(
            image[100:400, 50:350], (60, 60, 240, 240)
        )


def test_slow_occlusion_shows_progress_and_fast_does_not(capsys):
    def slow(batch):
        time.sleep(0.7)
        return np.zeros((len(batch), 2), np.float32)

    scorer = Scorer.from_callable(slow, 8, batch_size=1)
    scorer.score_occluded(np.zeros((8, 8, 3), np.uint8), np.full((4, 2), 4.0), 3, target=0)
    assert "occlusion" in capsys.readouterr().err  # 2.8 s: a bar after 2 s
    fast = Scorer.from_callable(lambda b: np.zeros((len(b), 2), np.float32), 8, batch_size=1)
    fast.score_occluded(np.zeros((8, 8, 3), np.uint8), np.full((4, 2), 4.0), 3, target=0)
    assert "occlusion" not in capsys.readouterr().err


def test_slow_model_load_says_so_with_the_backend_and_a_fast_one_is_silent(monkeypatch, capsys):
    from facesal_fast.models import registry
    from facesal_fast.scoring import progress

    fs.models.load("gender", backend="torch")  # well under 2 s
    assert capsys.readouterr().err == ""
    work = registry._load
    monkeypatch.setattr(registry, "_load", lambda *args: (time.sleep(0.6), work(*args))[1])
    monkeypatch.setattr(progress, "PROGRESS_DELAY", 0.2)
    fs.models.load("gender", backend="torch")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "facesal_fast: loading model 'gender' ..."
    assert re.fullmatch(r"facesal_fast: loading model 'gender': done in \d+\.\d s, backend torch-fp32", lines[1])


def test_windows_of_several_images_in_shared_batches_show_one_bar(monkeypatch, capsys):
    from facesal_fast.scoring import progress
    from facesal_fast.scoring.batching import Windows, score_windows

    scorer = Scorer.from_callable(lambda b: np.zeros((len(b), 2), np.float32), 8, batch_size=2)
    requests = [Windows(scorer, np.zeros((8, 8, 3), np.uint8), np.full((3, 2), 4.0), 3, target=0)] * 2
    monkeypatch.setattr(progress, "PROGRESS_DELAY", 0.0)
    score_windows(requests)
    assert len(re.findall(r"occlusion: +0%\|.*0/6 ", capsys.readouterr().err)) == 1  # one stream, one bar
    with progress.inside_outer_bar():
        score_windows(requests)
    assert "occlusion" not in capsys.readouterr().err


def test_aligning_many_photos_shows_a_bar(monkeypatch, capsys, image, scorer):
    from facesal_fast.scoring import progress

    monkeypatch.setattr(progress, "PROGRESS_DELAY", 0.0)
    fs.cis([image, image], scorer, **FAST)
    assert len(re.findall(r"align: +0%\|.*0/2 ", capsys.readouterr().err)) == 1


def test_backend_probe_logs_its_choice_and_time(caplog, tmp_path, monkeypatch):
    monkeypatch.setenv("FACESAL_CACHE_DIR", str(tmp_path))  # no probe stored yet
    with caplog.at_level(logging.INFO, logger="facesal_fast.scoring"):
        probing = ProbingBackend(_tiny_net(), torch.device("cpu"), cache_dir=tmp_path, probe_after=0.0)
        probing(torch.zeros(2, 3, 16, 16))  # eager, then the probe for this shape
    lines = [r.getMessage() for r in caplog.records]
    assert "torch eager, no stored probe" in lines[0]  # what runs, and why, before the probe
    lines = [line for line in lines if "backend probe" in line]
    assert len(lines) == 1 and f"chose {probing.chosen[(3, 16, 16)].name}" in lines[0] and "torch-fp32" in lines[0]
    assert re.search(r"in \d+\.\d s", lines[0])


# ----------------------------------------------------------------------------- types and reprs


def test_package_is_typed_and_result_reprs_are_short(image, face, scorer):
    import facesal_fast
    from facesal_fast.saliency.cms import CMSResult

    assert (Path(facesal_fast.__file__).parent / "py.typed").is_file()
    result = fs.cis(image, scorer, face=face, **FAST)
    text = repr(result)
    assert len(text) < 300 and "(256, 256)" in text and "array(" not in text
    cms = CMSResult(result.canonical, 2, groups={"a": (result.canonical, 2)})
    assert len(repr(cms)) < 200 and "array(" not in repr(cms)
    assert "array(" not in repr(fs.CanonicalOcclusion(scorer))


def test_incremental_occlusion_has_the_progress_bar_too(monkeypatch, capsys):
    from facesal_fast.scoring import progress
    from facesal_fast.speed import incremental

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    scorer = incremental.IncrementalScorer(Scorer.from_torch(net, 16, backend="torch"))
    centres = np.stack(np.meshgrid(np.arange(16.0), np.arange(16.0)), -1).reshape(-1, 2)
    scorer.score_occluded(np.zeros((16, 16, 3), np.uint8), centres, 3, target=0, batch_size=64)
    assert "occlusion" not in capsys.readouterr().err  # well under 2 s: no bar
    monkeypatch.setattr(progress, "PROGRESS_DELAY", 0.0)
    scorer.score_occluded(np.zeros((16, 16, 3), np.uint8), centres, 3, target=0, batch_size=64)
    assert "occlusion" in capsys.readouterr().err


# ----------------------------------------------------------------------------- CanonicalOcclusion


def test_canonical_occlusion_is_cis_warped_onto_each_photo(image, scorer):
    from facesal_fast.methods.occlusion import to_photo

    photo = _chw(image, torch.device("cpu")).float() / 255
    explainer = fs.CanonicalOcclusion(scorer)
    maps = explainer.attribute(torch.stack([photo, photo.flip(-1)]), target=[0, "b"], **FAST)
    assert maps.shape == (2, *photo.shape) and maps.dtype == torch.float32
    assert torch.equal(maps[:, 0], maps[:, 2])  # one map repeated over the channels, as captum's Occlusion
    for k, (picture, target) in enumerate(((image, 0), (np.ascontiguousarray(image[:, ::-1]), 1))):
        want = fs.cis(picture, scorer, target, **FAST)
        np.testing.assert_array_equal(maps[k, 0].numpy(), to_photo(want.occlusion, want.affine, image.shape[:2]))
        np.testing.assert_array_equal(explainer.canonical[k].numpy(), want.canonical)
        assert explainer.results[k].target == target
    single = explainer.attribute(photo, **FAST)  # 3 x H x W in, 3 x H x W out; target: the predicted class
    assert single.shape == photo.shape and explainer.results[0].target == scorer.predict(image, want.face).index
    outputs = explainer.forward(photo[None])
    assert outputs.shape == (1, 2) and torch.allclose(outputs.sum(1), torch.ones(1))  # softmax of both classes


def test_canonical_occlusion_refuses_what_it_cannot_use(scorer, image):
    photo = _chw(image, torch.device("cpu"))
    with pytest.raises(ValueError, match="input_size is required"):
        fs.CanonicalOcclusion(_tiny_net())
    with pytest.raises(ValueError, match="go with a torch module"):
        fs.CanonicalOcclusion(scorer, 32)
    with pytest.raises(ValueError, match="photo tensor"):
        fs.CanonicalOcclusion(scorer).attribute(image)
    with pytest.raises(ValueError, match="2 entries for 1 inputs"):
        fs.CanonicalOcclusion(scorer).attribute(photo[None], target=[0, 1])
    with pytest.raises(ValueError, match="no attribution yet"):
        _ = fs.CanonicalOcclusion(scorer).canonical
    assert fs.CanonicalOcclusion(_tiny_net(), 32, backend="torch").scorer.crop == "auto"


def test_cms_and_audit_take_photo_tensors(image, scorer):
    photo = _chw(image, torch.device("cpu"))
    want = fs.cis(image, scorer, **FAST).canonical
    model = fs.cms([photo, photo.float() / 255], scorer, groups=["a", "b"], progress=False, **FAST)
    assert model.count == 2 and set(model.groups) == {"a", "b"}
    np.testing.assert_allclose(model.cms, want, atol=1e-6)


def test_readme_python_block_shows_the_tensor_path_and_the_captum_style_class():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert "fs.cis(photos_tensor, scorer)" in block and "N x 3 x H x W tensor" in block
    assert "fs.CanonicalOcclusion(scorer).attribute(photos_tensor, target=" in block
    for name in re.findall(r"\bfs\.(\w+)\(", block):  # every call it shows exists
        assert callable(getattr(fs, name)), name


# ----------------------------------------------------------------------------- progress bars (issue 30, item 3)


def test_audit_bar_shows_its_total_and_draws_its_final_line_once(image, scorer, capsys):
    images = np.stack([image, image[:, ::-1].copy()])  # an N x H x W x 3 array: not a list, but its length is known
    list(fs.Audit(scorer, photos_per_round=1, **FAST).feed(images, progress=True))
    err = capsys.readouterr().err
    assert "0/2" in err and err.count("2/2") == 1, err  # the total, and one final line (1/2 shows only if slow)


def test_input_count_knows_every_sized_input_and_only_those(image):
    from torch.utils.data import DataLoader, IterableDataset, TensorDataset

    from facesal_fast.audit.inputs import input_count

    batch = torch.zeros(5, 3, 8, 8)

    class Stream(IterableDataset):
        def __iter__(self):
            yield from batch

    assert input_count(["a.jpg", "b.jpg"]) == 2 and input_count(np.stack([image] * 3)) == 3
    assert input_count(batch) == 5 and input_count(TensorDataset(batch)) == 5
    assert input_count(DataLoader(TensorDataset(batch), batch_size=2)) == 5
    assert input_count(DataLoader(TensorDataset(batch), batch_size=2, drop_last=True)) == 4
    assert input_count(iter(["a.jpg"])) is None and input_count(Stream()) is None
    assert input_count(DataLoader(Stream(), batch_size=2)) is None and input_count(image) is None


def test_dir_and_help_show_the_public_api_and_every_parameter():
    import pydoc

    assert dir(fs) == sorted(fs.__all__) and "importlib" not in dir(fs)  # completion lists the API
    params = inspect.signature(fs.cis).parameters
    assert params["options"].default is None and params["overrides"].kind is inspect.Parameter.VAR_KEYWORD
    documented = set(re.findall(r"^        (\w+)(?:, \w+)*:", fs.cis.__doc__, re.MULTILINE))
    assert documented == set(params), documented ^ set(params)  # the docstring and signature agree
    fields = {f.name for f in dataclasses.fields(CISOptions)}  # face_index and faces among them
    listed = set(re.findall(r"^            - ``(\w+)``:", fs.cis.__doc__, re.MULTILINE))
    assert listed == fields, listed ^ fields  # every option documented where help(fs.cis) shows it
    shown = pydoc.render_doc(fs.cis)
    assert "options: 'CISOptions | Mapping[str, Any] | None' = None" in shown and "``face_index``:" in shown
    assert "face_index" not in inspect.signature(fs.methods.explain).parameters  # it takes none


NUMPY_TARGETS = [np.int64(1), np.array(1), np.array([1]), torch.tensor([1]), np.str_("b")]


def test_numpy_targets_are_taken_everywhere_an_int_is(image, face, scorer, tmp_path):
    from facesal_fast.interop.captum import _targets

    for target in NUMPY_TARGETS:
        assert fs.cis(image, scorer, target, face=face, **FAST).target == 1, target
    assert [r.target for r in fs.cis([image, image], scorer, np.array([1]), **FAST)] == [1, 1]
    for target in (np.int64(1), np.array([1])):
        method = fs.methods.explain("occlusion", scorer, image, target, face, stride=8)
        assert method.image_map.shape == image.shape[:2], target
    audit = fs.Audit(scorer, tmp_path / "run", target=np.array([1]), **FAST)
    (item,) = audit.feed([image])
    assert item.status == "done" and audit.target == 1 and type(audit.target) is int
    audit.store.close()
    photo = _chw(image, torch.device("cpu")).float() / 255
    explainer = fs.CanonicalOcclusion(scorer)
    for target in (np.int64(0), np.array([0]), np.array([0, 1])):
        explainer.attribute(torch.stack([photo] * (target.size if target.ndim else 1)), target=target, **FAST)
        assert [r.target for r in explainer.results] == np.atleast_1d(target).tolist()
    assert _targets(np.array([0, 1]), 2) == [0, 1]
    with pytest.raises(ValueError, match="target must be one class index or name, got an array of 2 values"):
        fs.cis(image, scorer, np.array([0, 1]), face=face, **FAST)
    with pytest.raises(ValueError, match="one class index"):
        fs.Audit(scorer, target=np.array([0, 1]))


def test_from_torch_asks_for_its_normalisation_and_reprs_show_what_was_used(image, face, scorer):
    with pytest.warns(UserWarning, match=r"no mean/std given.*0\.\.1.*mean=0\.0, std=1\.0"):
        Scorer.from_torch(_tiny_net(), 32, backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stated = Scorer.from_torch(_tiny_net(), 32, backend="torch", mean=0.0, std=1.0)
        Scorer.from_torch(_tiny_net(), 32, backend="torch", spec=stated.spec, mean=0.5)  # a spec states the rest
    for given, missing in (({"mean": 0.5}, "std"), ({"std": 0.25}, "mean")):
        with pytest.raises(ValueError, match=f"given without {missing}=: give both"):
            Scorer.from_torch(_tiny_net(), 32, backend="torch", **given)
    shown = repr(Scorer.from_torch(_tiny_net(), 32, backend="torch", mean=(0.5, 0.4, 0.3), std=0.2))
    assert "mean=(0.5, 0.4, 0.3), std=0.2" in shown, shown
    unnamed = repr(fs.cis(image, stated, 0, face=face, **FAST))
    assert unnamed.startswith("CISResult(target=0, base_score="), unnamed  # no "(None)" without class names
    assert repr(fs.cis(image, scorer, 1, face=face, **FAST)).startswith("CISResult(target=1 (b), ")
