"""facesal evaluate: scoring in the model geometry, the randomisation check on a real model,
and the command end to end on two bundled photos (through the public facesal_fast.evaluation)."""

import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from figure_text import assert_readable, recording_figures

from facesal_fast import models
from facesal_fast.align import default_aligner
from facesal_fast.align.geometry import similarity_transform
from facesal_fast.evaluation import (
    EvalConfig,
    evaluate,
    normalised_zero,
    prepare_items,
    sanity_cis,
    score_images,
    to_input,
)
from facesal_fast.evaluation.ablations import keypoints_input
from facesal_fast.methods import registry
from facesal_fast.metrics import cascading_randomization
from facesal_fast.saliency.cis import odd_patch

DEMO = Path(str(resources.files("facesal_fast").joinpath("data/demo_faces")))


@pytest.fixture(scope="module")
def gender():
    return models.load("gender", backend="onnx"), models.load_module("gender").eval()


@pytest.fixture(scope="module")
def item(gender):
    items, failed = prepare_items([DEMO / "img1.jpg"], gender[0], default_aligner(), lambda msg: None)
    assert not failed
    return items[0]


def test_paper_patches_scaled_to_the_input():
    assert [odd_patch(p, 64) for p in (5, 9, 15, 25)] == [1, 3, 5, 7]  # odd: the nearest odd size
    assert odd_patch(15, 224) == 15


def test_score_images_matches_the_scorer(gender, item):
    scorer = gender[0]
    m = score_images(scorer, item.input_image[None].astype(np.float32), item.target)[0]
    assert m == pytest.approx(item.base, abs=1e-5)
    assert item.base > 0.5  # the predicted class
    # darkening the whole crop changes the confidence
    assert score_images(scorer, np.zeros_like(item.input_image, np.float32)[None], item.target)[0] != pytest.approx(m)


def test_to_input_carries_the_photo_map_through_the_crop(item):
    h, w = item.face.image.shape[:2]
    photo = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = (int(v) for v in item.face.face_box)
    photo[y0:y1, x0:x1] = 1.0
    m = to_input(photo, item.affine, item.input_image.shape[:2])
    assert m.shape == item.input_image.shape[:2]
    assert m[32, 32] == pytest.approx(1.0) and m[0, 0] == pytest.approx(0.0)  # box inside the 0.2-margin crop


def test_randomisation_decorrelates_on_the_real_gender_model(gender, item):
    scorer, module = gender

    def explainer(method):  # the model under randomisation scores its own inputs; GB from P(y)
        return lambda model, i: registry.compute(
            method, item.model_input(scorer, model, scored_by_scorer=False), item.target, output="probability"
        )

    explainers = {m: explainer(m) for m in ("guided-backprop", "gradcam")}
    rows, _ = cascading_randomization(module, explainers, 1, seed=0)
    last = max(r["step"] for r in rows)
    assert last == 15  # every weighted layer of mini-XCEPTION, output first
    for m in explainers:
        final = next(r for r in rows if r["method"] == m and r["step"] == last)
        assert final["spearman"] < 0.5 and final["ssim"] < 0.5, (m, final)
    gb = [r["spearman"] for r in rows if r["method"] == "guided-backprop"]
    assert gb[-1] < gb[1] < 1.0  # gets further from the trained map as more layers are randomised


def test_evaluate_command_end_to_end(tmp_path, monkeypatch, capsys):
    from facesal_fast.cli import main
    from facesal_fast.scoring import progress

    monkeypatch.setattr(progress, "PROGRESS_DELAY", 0.0)  # every bar would show at once

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("img1.jpg", "img2.jpg"):
        (photos / name).write_bytes((DEMO / name).read_bytes())
    (photos / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "run"
    with recording_figures() as figures:
        rc = main(
            [
                "evaluate",
                str(photos),
                "--model",
                "gender",
                "--methods",
                "cms,cis,gradcam,gb",
                "--out",
                str(out),
                "--steps",
                "4",
                "--ablation-images",
                "0",
                "--sanity-images",
                "0",
                "--patch",
                "3",
            ]
        )
    assert rc == 0
    assert_readable(figures)  # the page's figures: no overlapping text, none cut by the figure's edge
    ev = out / "evaluate"
    for name in (
        "faithfulness.csv",
        "faithfulness.md",
        "deletion_insertion.csv",
        "cms_convergence.csv",
        "cms_split_half.csv",
        "examples.png",
        "deletion.png",
        "evaluate.html",
        "summary.json",
    ):
        assert (ev / name).is_file(), name
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["images"] == 2 and [f["image"] for f in summary["failed"]] == ["broken.jpg"]
    wins = [r["win"] for r in summary["faithfulness"]]
    assert sum(wins) == pytest.approx(100.0) and len(wins) == 4
    page = (ev / "evaluate.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "Average Drop" in page
    cfg = summary["config"]  # the papers' conventions by default, and the page says so
    assert cfg["methods"] == ["cms", "cis", "gradcam", "guided-backprop"]  # the registry's canonical names
    # --patch in input pixels, as in audit (not scaled from 224 px); the backend used, not "auto"
    assert cfg["patch"] == summary["patch_input_px"] == 3 and summary["requested"] == {"patch": 3, "backend": "auto"}
    assert cfg["backend"] not in ("auto", None)
    assert (cfg["ties"], cfg["deletion_fill"], cfg["insertion_blur"], cfg["gb_output"]) == (
        "random",
        "grey",
        "rise",
        "probability",
    )
    assert "random tie order" in summary["conventions"] and "mean grey" in page and "GB from probability" in page
    assert not [p for p in out.iterdir() if p.name.startswith(".evaluate")]  # no temporary folder left
    err = capsys.readouterr().err  # each stage shows its bar; the per-face occlusion bars inside stay off
    for stage in ("faces", "CIS", "gradcam", "guided-backprop", "faithfulness", "deletion/insertion"):
        assert re.search(rf"(^|\r){re.escape(stage)}: +0%\|", err, re.M), stage
    assert "occlusion" not in err
    assert main(["evaluate", str(photos), "--out", str(out), "--methods", "nope"]) == 2


def test_five_point_similarity_alignment(item):
    rng = np.random.default_rng(0)
    src = rng.random((5, 2)) * 50
    th, k = 0.3, 1.7
    R = k * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    A = similarity_transform(src, src @ R.T + [3.0, -4.0])
    np.testing.assert_allclose(A, np.c_[R, [3.0, -4.0]], atol=1e-9)
    # a real (smiling) face: the 5 points land near their canonical places; a similarity cannot
    # follow the expression (wide mouth: ~16 canonical px off), which is what dense alignment adds
    src, dst = keypoints_input(item)
    A = similarity_transform(src, dst)
    err = np.linalg.norm(src @ A[:, :2].T + A[:, 2] - dst, axis=1)
    assert err.mean() < 0.05 * 256 and err.max() < 0.08 * 256


def test_ablation_section(tmp_path, monkeypatch, capsys):
    import csv

    from facesal_fast.scoring import progress

    monkeypatch.setattr(progress, "PROGRESS_DELAY", 0.0)
    photos = [DEMO / "img1.jpg", DEMO / "img2.jpg"]
    cfg = EvalConfig(methods=("cms", "cis"), steps=2, ablation_images=2, sanity_images=0)
    with recording_figures() as figures:
        summary = evaluate(photos, tmp_path, cfg, log=lambda msg: None)
    assert_readable(figures)
    ev = tmp_path / "evaluate"
    rows = list(csv.DictReader((ev / "ablations.csv").open()))
    families = {}
    for r in rows:
        families.setdefault(r["family"], []).append(r)
    assert {k: len(v) for k, v in families.items()} == {"patch": 4, "stride": 4, "fill": 3, "alignment": 3}
    for fam in families.values():
        assert sum(float(r["cms_win_in_family"]) for r in fam) == pytest.approx(100.0)
    default = [r for r in rows if "(default)" in r["setting"]]
    assert len(default) == 2 and all(float(r["delta_cms_avg_drop"]) == 0.0 for r in default)
    assert any("1 px" in r["setting"] for r in families["patch"])  # 5 px at 224 -> 1 px at 64
    for name in ("ablation_patch.png", "ablation_stride.png", "ablation_fill.png", "ablation_alignment.png"):
        assert (ev / name).is_file()
    assert not (ev / "sanity.csv").exists()  # --sanity-images 0 switches the check off
    assert summary["images"] == 2
    err = capsys.readouterr().err  # a bar over the settings, one over the faces occluded; none inside them
    assert re.search(r"(^|\r)ablations: +0%\|.*0/11 ", err, re.M) and "occlusion" not in err
    assert re.search(r"(^|\r)ablations: alignment: +0%\|.*0/2 ", err, re.M)
    assert summary["config"]["patch"] == 5  # default: 15 px at 224 px, scaled to the 64 px input and made odd


def test_every_method_enters_through_its_positive_part(gender, item, tmp_path):
    scorer, module = gender
    signed = registry.compute("lrp", item.model_input(scorer, module), item.target)
    assert signed.min() < 0 < signed.max()  # no LRP-only clipping: equal_mass takes every map's positive part
    np.testing.assert_allclose(normalised_zero(scorer), [127.5])  # (127.5 / 255 - 0.5) / 0.5 = 0: RISE's grey
    for bad in (
        {"ties": "first"},
        {"deletion_fill": "white"},
        {"insertion_blur": "box"},
        {"gb_output": "x"},
        {"tie_draws": 0},
        {"methods": ("saliency-difference",)},  # needs other=: not an evaluation method
        {"patch": 0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            evaluate([DEMO / "img1.jpg"], tmp_path / "bad", EvalConfig(**bad), scorer=scorer, module=module)
    for bad in ({"mode": "fine"}, {"grid_step": 0}, {"stride": 0}):  # refused before the photos are read
        with pytest.raises(ValueError, match=next(iter(bad))):
            evaluate([], tmp_path / "bad", EvalConfig(**bad), scorer=scorer, module=module)


def test_sanity_cis_sees_weights_randomised_in_place(gender, item):
    """The cascade randomises one module object in place: CIS must see the new weights
    (an incremental model's cached activations once kept it at Spearman 0.996 throughout)."""
    import copy

    import torch

    from facesal_fast.align import canonical_mask
    from facesal_fast.metrics import randomizable_layers, randomize_layer, spearman

    scorer, module = gender
    model = copy.deepcopy(module)
    opts = dict(patch=5, mode="grid", grid_step=4, stride=1, fill="black")
    trained = sanity_cis(model, item, scorer, opts)
    generator = torch.Generator().manual_seed(0)
    for _, modules in randomizable_layers(model)[:3]:
        randomize_layer(model, modules, generator)
    randomised = sanity_cis(model, item, scorer, opts)
    assert spearman(trained, randomised, mask=canonical_mask(item.face.canonical_shape)) < 0.9
