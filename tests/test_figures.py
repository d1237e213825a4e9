"""The pictures of ``facesal tasks`` and ``facesal evaluate``: every figure keeps its texts
apart and inside its edges (measured with matplotlib's text extents, :mod:`figure_text`);
the tasks figure puts models of different confidence units on one scale, each map over its
own positive mass, with its magnitude written under it; the evaluate page prints whole
numbers plainly, names regions as the report does and warns about a split-half value from
a handful of images."""

import html
import re

import numpy as np
import pytest
from browser import chromium_dom
from figure_text import assert_readable, recording_figures, text_clashes

from facesal_fast.align import canonical_mask, region_masks
from facesal_fast.audit.tasks import TASK_MODELS, TaskMaps, write_tasks_page
from facesal_fast.evaluation.report import write_evaluation
from facesal_fast.evaluation.stability import SPLIT_HALF_IMAGES, regions_section, stability_section
from facesal_fast.methods import METHOD_NAMES
from facesal_fast.report.figures import image_grid_figure, line_figure, map_figure, positive_density

SHAPE = (96, 96)


def _task_maps() -> TaskMaps:
    """Seven models whose drops differ a hundredfold (a cosine of 0.003, probabilities up to 0.3)."""
    rng = np.random.default_rng(0)
    task = {m: t for t, names in TASK_MODELS.items() for m in names}
    sizes = dict(zip(task, [0.003, 0.05, 0.004, 0.3, 0.002, 0.2, 0.1]))
    cms = {m: (size * rng.random(SHAPE) - 0.1 * size).astype(np.float32) for m, size in sizes.items()}
    regions = list(region_masks(SHAPE))
    intervals = {m: {r: (0.05, 0.03, 0.08) for r in regions} for m in cms}
    shares = {m: {r: 0.05 for r in regions} for m in cms}
    settings = {"mode": "grid", "grid_step": 8, "patch": None, "backend": "onnx"}
    return TaskMaps(cms, shares, task, ["a.jpg", "b.jpg"], intervals, [], settings)


def test_tasks_figure_puts_each_model_over_its_own_mass_on_one_scale(tmp_path):
    result = _task_maps()
    with recording_figures() as figures:
        path = write_tasks_page(result, tmp_path / "tasks")
    assert_readable(figures)
    page = path.read_text()
    chromium_dom(path, tmp_path / "profile")  # renders in headless Chromium, its figure decoded
    (fig,) = figures
    panels = [ax for ax in fig.axes if len(ax.images) == 2]  # the mean face and the map over it
    assert len(panels) == len(result.cms)
    assert len({ax.images[-1].get_clim() for ax in panels}) == 1  # one colour scale
    inside = canonical_mask(SHAPE)
    for ax, (name, heat) in zip(panels, result.cms.items()):
        shown = np.asarray(ax.images[-1].get_array().filled(np.nan))
        assert np.nanmean(shown) == pytest.approx(1.0, rel=1e-4), name  # its own positive mass: mean 1 on the face
        mean = np.clip(heat, 0, None)[inside].mean()
        assert f"mean positive drop {mean:.3g}" in ax.get_xlabel(), name  # its magnitude, in its unit
        unit = "cosine" if result.task[name] == "recognition" else "probability"
        assert f"({unit})" in ax.get_xlabel() and name in ax.get_title()
        assert ax.get_window_extent().width >= 200  # maps of at least 200 px, not ~115
    assert "grid mode, grid step 8 px, default patch" in page and '"grid_step"' not in page  # no JSON in the text
    cells = re.findall(r"<td>([\d.]+)% <small>\[([\d.]+), ([\d.]+)\]</small></td>", page)
    assert len(cells) == len(result.cms) * len(region_masks(SHAPE)) and cells[0] == ("5.0", "3.0", "8.0")


def test_positive_density_divides_by_the_positive_mass_on_the_face():
    heat = np.zeros(SHAPE, np.float32)
    inside = canonical_mask(SHAPE)
    heat[inside] = -1.0
    heat[48, 48] = 4.0  # one positive pixel (on the face) carries the whole positive mass
    density, mean = positive_density(heat)
    assert mean == pytest.approx(4.0 / inside.sum()) and density[48, 48] == pytest.approx(inside.sum())
    assert density.min() == 0.0
    assert positive_density(-np.ones(SHAPE))[1] == 0.0  # no positive drop: mean 0, nothing divided by 0


def test_evaluate_tables_print_whole_numbers_plainly_and_warn_about_few_images(tmp_path):
    rng = np.random.default_rng(1)
    few = [rng.random(SHAPE).astype(np.float32) for _ in range(2)]
    with recording_figures() as figures:
        sections = [regions_section(np.mean(few, 0), "gender", 2), stability_section(few, seed=0)]
    assert_readable(figures)
    folder = write_evaluation(tmp_path / "run", "evaluate", [], sections, {"failed": []})
    page = html.unescape((folder / "evaluate.html").read_text())
    assert "subject's left eye" in page and "left_eye" not in page  # the report's names on the page
    assert "left_eye" in (folder / "cms_regions.csv").read_text()  # the files keep the keys
    assert "<td>50</td>" in page and "<td>1</td>" in page and "50.000" not in page and "1.000" not in page
    assert "halves of only 1 image" in page and "class='warn'" in page  # 2 images: the value is shown, warned
    many = [rng.random(SHAPE).astype(np.float32) for _ in range(SPLIT_HALF_IMAGES)]
    assert stability_section(many, seed=0).warnings == []


LONG_KEY = "dataset/subject_0001/photo_0001_left_profile.jpg (woman)"


def test_evaluate_picture_grids_keep_their_labels_apart():
    """The grids with the labels the stages give them: every method beside long file names
    (faithfulness examples), layers randomised (sanity), ablation settings (one row)."""
    methods = list(METHOD_NAMES)
    pictures = np.zeros((48, 48, 3), np.uint8)
    examples = image_grid_figure(
        [[pictures] * (len(methods) + 2)] * 3,
        [LONG_KEY, "img12.jpg (man)", "img7.jpg (woman)"],
        ["input", *methods, f"E ({methods[0]})"],
        "Maps in the model's input geometry",
    )
    sanity = image_grid_figure(
        [[np.zeros((48, 48))] * 7] * len(methods),
        methods,
        [f"{step} layers" for step in (0, 1, 2, 3, 5, 8, 12)],
        f"Maps of {LONG_KEY} as layers are randomised",
    )
    ablation = image_grid_figure(
        [[pictures] * 4],
        ["stride"],
        ["exact, vertex stride 1", "exact, vertex stride 4", "exact, vertex stride 16", "grid step 8"],
        "Ablation: stride (model-level maps)",
    )
    curves = line_figure(
        {m: ([0, 1, 2, 3], [1.0, 0.6, 0.3, 0.1]) for m in methods},
        "layers randomised (from the output down)",
        "Spearman vs trained",
        "Cascading randomisation: rank correlation",
    )
    assert_readable([examples, sanity, ablation, curves])


def test_map_titles_and_labels_wrap_instead_of_being_cut():
    heat = np.random.default_rng(2).random(SHAPE)
    fig = map_figure([(f"{LONG_KEY}: woman (0.98)", heat)], label=f"difference (red: {LONG_KEY} higher)")
    assert text_clashes(fig) == []
    assert "\n" in fig.axes[0].get_title()  # wrapped, not cut
