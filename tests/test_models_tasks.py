"""``facesal tasks``: the five tasks' CMS side by side on the same photos (fast: 2 photos,
``mode="grid"`` with a coarse step, as the head-pose scorer runs MediaPipe per occluded copy)."""

import json
import re
import shutil

import numpy as np
import pytest
from photos import BUNDLED

from facesal_fast import cli, models
from facesal_fast.audit.tasks import TASK_MODELS, five_tasks


@pytest.fixture(scope="module")
def two_photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in ("img1.jpg", "img13.jpg"):
        shutil.copy(BUNDLED / name, folder / name)
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_every_bundled_task_model_is_in_the_figure():
    assert list(TASK_MODELS) == ["recognition", "gender", "age", "head pose", "expression"]
    assert {m for names in TASK_MODELS.values() for m in names} == set(models.CLASSIFIERS) | set(
        models.EMBEDDING_MODELS
    )


def test_tasks_command_writes_the_page(two_photos, tmp_path):
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "tasks",
                str(two_photos),
                "--out",
                str(out),
                "--grid-step",
                "24",
                "--models",
                "dlib-resnet,gender,age,head-pose,expression-fer",
            ]
        )
        == 0
    )
    summary = json.loads((out / "tasks.json").read_text())
    assert len(summary["photos"]) == 2 and not summary["failed"]
    assert list(summary["models"]) == ["dlib-resnet", "gender", "age", "head-pose", "expression-fer"]
    for name, entry in summary["models"].items():
        shares = entry["region_shares"]
        opening = shares["mouth"] - shares["upper_lip"] - shares["lower_lip"]  # regions are disjoint but for mouth
        assert sum(v for k, v in shares.items() if k != "mouth") + opening == pytest.approx(1.0, abs=1e-6), name
    page = (out / "tasks.html").read_text()
    assert "data:image/png;base64," in page and "head pose" in page and "recognition" in page
    printed = re.findall(r"<td>([\d.]+)% <small>\[([\d.]+), ([\d.]+)\]</small></td>", page)
    assert printed and all(float(low) <= float(share) <= float(high) for share, low, high in printed)
    assert (out / "tasks.png").read_bytes()[:4] == b"\x89PNG"


def test_five_tasks_averages_the_same_photos_and_leaves_failures_out(two_photos, tmp_path):
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    photos = [two_photos / "img1.jpg", blank]
    result = five_tasks(photos, models=["gender", "expression-fer"], grid_step=16)
    assert result.photos == [str(photos[0])] and result.failed[0][0] == str(blank)
    intervals = result.intervals["gender"]  # the printed share is the estimate its interval is around
    assert {r: s for r, s in result.shares["gender"].items() if r != "other"} == {
        r: m for r, (m, _, _) in intervals.items()
    }
    assert all(low <= mean <= high for mean, low, high in intervals.values())
    with pytest.raises(ValueError, match="models must be among"):
        five_tasks(photos, models=["height"])
    with pytest.raises(ValueError, match="photos is empty"):
        five_tasks([], models=["gender"])
    with pytest.raises(SystemExit) as refused:  # argparse's usage error, as for every option
        cli.main(["tasks", str(two_photos), "--out", str(tmp_path / "x"), "--max-images", "0"])
    assert refused.value.code == 2


def test_five_tasks_names_the_photo_in_alignment_messages(caplog):
    with caplog.at_level("WARNING", logger="facesal_fast"):
        five_tasks([BUNDLED / "couple.jpg"], models=["gender"], grid_step=16, progress=False)
    faces = [r.getMessage() for r in caplog.records if "faces found" in r.getMessage()]
    assert faces and all(m.startswith(str(BUNDLED / "couple.jpg")) for m in faces), faces


@pytest.mark.parametrize("model", ["age", "gender-dlib", "head-pose"])
def test_audit_takes_the_new_models(tmp_path, model):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(BUNDLED / "img2.jpg", folder / "img2.jpg")
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "audit",
                str(folder),
                "--out",
                str(out),
                "--model",
                model,
                "--mode",
                "grid",
                "--grid-step",
                "16",
                "--backend",
                "torch",
            ]
        )
        == 0
    )
    meta = json.loads((out / "run.json").read_text())
    assert model in json.dumps(meta)
