"""Run store, resumable audits, bad input, the CLI and the HTML report."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from browser import chromium_dom

from facesal_fast.audit.cms import cms
from facesal_fast.audit.runner import Audit, cms_from_store
from facesal_fast.audit.store import RunStore, SettingsMismatchError
from facesal_fast.cli import main
from facesal_fast.core.options import StatsOptions

FACES = Path(__file__).resolve().parents[1] / "facesal_fast" / "data" / "demo_faces"


@pytest.fixture(scope="module")
def gender():
    from facesal_fast import models

    return models.load("gender", backend="onnx")


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("img1.jpg", "img5.jpg", "img20.jpg", "img3.jpg"):
        shutil.copy(FACES / name, folder / name)
    return folder


def _bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy(FACES / "img1.jpg", folder / "good.jpg")
    (folder / "corrupt.jpg").write_bytes(os.urandom(2000))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    cv2.imwrite(str(folder / "blank.png"), np.full((200, 200, 3), 180, np.uint8))
    photo = cv2.imread(str(FACES / "img5.jpg"))
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "tiny.png"), cv2.resize(photo, (12, 12)))
    cv2.imwrite(str(folder / "deep16.png"), photo.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "huge.jpg"), cv2.resize(photo, None, fx=9, fy=9))  # 4608 px tall
    return folder


def test_bad_input_is_recorded_and_the_audit_goes_on(tmp_path, gender):
    audit = Audit(gender, tmp_path / "run")
    items = {item.key: item for item in audit.feed(_bad_folder(tmp_path), progress=False)}
    assert {k for k, v in items.items() if v.status == "done"} == {
        "good.jpg",
        "gray.png",
        "rgba.png",
        "deep16.png",
        "huge.jpg",
    }
    for name in ("corrupt.jpg", "empty.jpg", "notes.jpg", "blank.png", "tiny.png"):
        assert items[name].status == "failed" and name in items[name].error, items[name]
    assert "no face" in items["blank.png"].error.lower()
    assert len(audit.store.rows("failed")) == 5
    assert audit.summary == {"done": 5, "failed": 5, "skipped": 0, "changed": 0, "gone": 0}


def test_audit_takes_a_torch_dataloader(gender):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from facesal_fast.audit.inputs import content_key

    photos = [
        cv2.cvtColor(cv2.resize(cv2.imread(str(FACES / n)), (256, 256)), cv2.COLOR_BGR2RGB)
        for n in ("img1.jpg", "img20.jpg")
    ]
    tensors = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float() / 255  # B x 3 x H x W in [0, 1]
    loader = DataLoader(TensorDataset(tensors, torch.tensor([0, 1])), batch_size=2)
    items = list(Audit(gender).feed(loader, progress=False))
    assert [i.key for i in items] == [content_key(t) for t in tensors]  # by content: any batch size or order
    assert all(i.status == "done" and i.result.canonical.shape == (256, 256) for i in items)


def test_an_audit_shows_one_bar_not_one_per_image(tmp_path, gender, photos, monkeypatch, capsys):
    import re

    from facesal_fast.scoring import progress

    monkeypatch.setattr(progress, "PROGRESS_DELAY", 0.0)  # every inner bar would show at once
    Audit(gender, mode="grid", grid_step=8).run(photos)
    bars = set(re.findall(r"([a-z][a-z ]*): +\d+%\|", capsys.readouterr().err))
    assert bars == {"audit"}
    gender.score_occluded(np.zeros((64, 64, 1), np.uint8), np.full((3, 2), 30.0), 5, target=0)
    assert "occlusion" in capsys.readouterr().err  # outside an audit the per-image bar is back


def test_audit_chooses_the_face_of_group_photos(tmp_path, gender, caplog):
    import logging

    from facesal_fast.align import default_aligner

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("couple.jpg", "img1.jpg"):
        shutil.copy(FACES / name, folder / name)
    faces = default_aligner()(FACES / "couple.jpg", all_faces=True)
    fast = dict(mode="grid", grid_step=8)
    with Audit(gender, tmp_path / "run", faces="all", **fast) as audit:
        items = list(audit.feed(folder, progress=False))
    assert [i.key for i in items] == ["couple.jpg#face1", "couple.jpg#face2", "img1.jpg#face1"]
    assert [i.result.face.face_box for i in items[:2]] == [f.face_box for f in faces]
    assert all(i.source == str(folder / "couple.jpg") for i in items[:2])
    with Audit(gender, tmp_path / "run", faces="all", **fast) as again:  # resumes: every photo done
        assert again.run(folder, progress=False) == {"done": 0, "failed": 0, "skipped": 2, "changed": 0, "gone": 0}
    with pytest.raises(SettingsMismatchError):
        Audit(gender, tmp_path / "run", **fast)
    assert [i.face for i in items] == [1, 2, 1]
    per_group = cms(
        [folder / "couple.jpg", folder / "img1.jpg"], gender, groups=["a", "b"], faces="all", progress=False, **fast
    )
    assert per_group.count == 3 and per_group.groups["a"][1] == 2  # groups per photo, one map per face
    with caplog.at_level(logging.WARNING, logger="facesal_fast.align.aligner"):
        (largest,) = Audit(gender, **fast).feed([folder / "couple.jpg"], progress=False)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("couple.jpg: 2 faces found, explaining the largest, box (x0, y0, x1, y1) = (" in m for m in warned)
    (second,) = Audit(gender, face_index=1, **fast).feed([folder / "couple.jpg"], progress=False)
    assert second.result.face.face_box == faces[1].face_box
    centre = lambda box: np.array([box[0] + box[2], box[1] + box[3]]) / 2  # noqa: E731
    box = largest.result.face.face_box  # the same face, boxed by the full-range detector alone
    assert np.linalg.norm(centre(box) - centre(faces[0].face_box)) < 0.25 * (box[2] - box[0])
    for bad, match in (({"faces": "some"}, "faces must be 'all'"), ({"face_index": -1}, "face_index must be")):
        with pytest.raises(ValueError, match=match):
            Audit(gender, **bad)
    with pytest.raises(ValueError, match="not both"):
        Audit(gender, face_index=0, faces="all")


def test_audit_records_an_aligner_finding_no_face_with_faces_all(gender):
    def no_faces(image, **choice):  # an aligner of its own: an empty list, no exception
        return []

    audit = Audit(gender, faces="all", aligner=no_faces)
    (item,) = audit.feed([np.zeros((64, 64, 3), np.uint8)], progress=False)
    assert item.status == "failed" and "no face found" in item.error
    assert audit.summary == {"done": 0, "failed": 1, "skipped": 0, "changed": 0, "gone": 0}


def test_run_json_and_results_record_the_patches_used(tmp_path, gender):
    import json

    with Audit(gender, tmp_path / "run", mode="grid", grid_step=8) as audit:
        (item,) = audit.feed([FACES / "img1.jpg"], progress=False)
        stored = audit.store.load(item.key)
    resolved = json.loads((tmp_path / "run" / "run.json").read_text())["resolved"]
    assert resolved["patch"] == item.result.patch == 5 and resolved["backend"] == "onnx-cpu"
    assert (
        resolved["canonical_patch"].startswith("per image") and stored["canonical_patch"] == item.result.canonical_patch
    )


def test_the_audit_bar_counts_photos_finished(tmp_path, gender, photos, monkeypatch):
    from tqdm import tqdm

    from facesal_fast.audit import runner

    bars, counted_while_scoring = [], []

    class Recorded(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    def explain_together(self, aligned):
        counted_while_scoring.append(bars[0].n)
        return scored(self, aligned)

    scored = runner.Audit._explain_together
    monkeypatch.setattr(runner, "tqdm", Recorded)
    monkeypatch.setattr(runner.Audit, "_explain_together", explain_together)
    Audit(gender, mode="grid", grid_step=8, photos_per_round=2).run(photos)
    assert counted_while_scoring == [0, 2] and bars[0].n == 4  # not the round being scored


def test_nan_scores_fail_with_a_clear_message(tmp_path):
    from facesal_fast.scoring import Scorer

    scorer = Scorer.from_callable(lambda x: np.full((len(x), 2), np.nan, np.float32), 32, crop="face")
    (item,) = Audit(scorer).feed([FACES / "img1.jpg"], progress=False)
    assert item.status == "failed" and "img1.jpg" in item.error
    assert "the model's score for output 0 is NaN or infinite" in item.error, item.error


def test_resume_skips_done_images_and_refuses_other_settings(tmp_path, gender, photos):
    run = tmp_path / "run"

    def audit_run(inputs):
        with Audit(gender, run, settings={"model": "gender"}) as audit:  # leaving the block releases the lock
            return audit.run(inputs, progress=False)

    assert audit_run([photos / "img1.jpg"]) == {"done": 1, "failed": 0, "skipped": 0, "changed": 0, "gone": 0}
    assert audit_run(photos)["skipped"] == 0  # keys differ: a path list vs a folder's relative names
    assert audit_run(photos) == {"done": 0, "failed": 0, "skipped": 4, "changed": 0, "gone": 0}
    with pytest.raises(SettingsMismatchError, match="patch"):
        Audit(gender, run, settings={"model": "gender"}, patch=9)


def test_another_folder_with_a_photo_of_the_same_name_is_refused(tmp_path, gender):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, name in ((first, "img1.jpg"), (second, "img5.jpg")):
        folder.mkdir()
        shutil.copy(FACES / name, folder / "face.jpg")
    with Audit(gender, tmp_path / "run", stride=8) as audit:
        assert audit.run(first, progress=False)["done"] == 1
        assert audit.run(first, progress=False)["skipped"] == 1  # the same folder resumes
        with pytest.raises(ValueError, match="another photo folder"):
            audit.run(second, progress=False)


def test_store_writes_atomically(tmp_path):
    store = RunStore(tmp_path / "run", {"a": 1})
    store.save_done(
        "x",
        "x.jpg",
        {"canonical": np.ones((4, 4), np.float32)},
        group="g",
        target=0,
        target_name="t",
        base_score=0.5,
        seconds=0.1,
    )
    assert not list((tmp_path / "run" / "results").glob("*.tmp"))
    np.testing.assert_array_equal(store.load("x")["canonical"], 1.0)
    assert [r.key for r in store.rows("done")] == ["x"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "facesal_fast.cli", *args]


def test_result_files_are_plain_npz_with_exact_arrays(tmp_path):
    from facesal_fast.audit.store import npz_bytes

    rng = np.random.default_rng(0)
    arrays = dict(
        canonical=rng.standard_normal((33, 17)).astype(np.float32),
        drops=np.zeros(0, np.float32),
        affine=rng.standard_normal((2, 3)),
        counts=np.arange(12, dtype=np.float32).reshape(3, 4),
    )
    path = tmp_path / "x.npz"
    path.write_bytes(npz_bytes(arrays))
    with np.load(path) as loaded:
        assert sorted(loaded.files) == sorted(arrays)
        for name, array in arrays.items():
            assert loaded[name].dtype == array.dtype
            np.testing.assert_array_equal(loaded[name], array)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, photos):
    for name in ("img2.jpg", "img4.jpg"):  # more photos than one round (Audit.photos_per_round = 4)
        shutil.copy(FACES / name, photos / name)
    common = ["--model", "gender", "--backend", "onnx", "--groups", "predicted"]
    whole = tmp_path / "whole"
    subprocess.run(_cli("audit", str(photos), "--out", str(whole), *common), check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli("audit", str(photos), "--out", str(killed), *common), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        index = killed / "index.sqlite"
        if index.exists():
            with sqlite3.connect(index) as db:
                done = db.execute("SELECT COUNT(*) FROM images WHERE status = 'done'").fetchone()[0]
            if done >= 1:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(killed / "index.sqlite") as db:
        done_before = db.execute("SELECT COUNT(*) FROM images WHERE status = 'done'").fetchone()[0]
    assert 1 <= done_before < 6, "the run was not interrupted mid-way"
    resumed = subprocess.run(
        _cli("audit", str(photos), "--out", str(killed), *common), check=True, capture_output=True, text=True
    )
    assert f"{done_before} skipped" in resumed.stdout
    a, b = cms_from_store(RunStore(whole)), cms_from_store(RunStore(killed))
    np.testing.assert_array_equal(a.cms, b.cms)
    assert a.groups.keys() == b.groups.keys()


def test_cli_exit_codes_and_messages(tmp_path, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"xx")
    assert main(["audit", str(empty), "--out", str(tmp_path / "r1"), "--backend", "onnx"]) == 1
    assert "broken.jpg" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    assert main(["audit", str(empty), "--out", str(tmp_path / "r3"), "--model", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err and not (tmp_path / "r3").exists()


def test_report_renders_in_headless_chromium(tmp_path, photos):
    run = tmp_path / "run"
    assert main(["audit", str(photos), "--out", str(run), "--backend", "onnx", "--groups", "predicted"]) == 0
    assert main(["report", str(run)]) == 0
    page = run / "report.html"
    html = page.read_text()
    assert html.count("<img") >= 8 and "Region shares" in html and "Convergence" in html
    assert "evaluate.html" not in html
    (run / "evaluate").mkdir()
    (run / "evaluate" / "evaluate.html").write_text("<html></html>")
    assert main(["report", str(run)]) == 0 and 'href="evaluate/evaluate.html"' in page.read_text()
    dom = chromium_dom(page, tmp_path / "profile")
    assert 'id="findings"' in dom.stdout and dom.stdout.count("data-colorbar") == dom.stdout.count('class="map"') > 0
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr.upper().replace("CONSOLE_", "")


def test_unknown_cis_option_lists_each_known_option_once(gender, tmp_path):
    with pytest.raises(ValueError, match="unknown CIS option") as err:
        Audit(gender, tmp_path / "run", min_group=2)
    known = str(err.value).split("known: ")[1]
    assert known.count("'faces'") == 1 and known.count("'face_index'") == 1, known


def test_audit_takes_one_options_record_and_resumes_runs_started_with_keywords(tmp_path):
    """Audit(options=CISOptions | mapping, **overrides), checked once; keywords (or a mapping)
    are recorded as given, as before the record, so such runs resume; a record records its
    settings dict (audit.options.cis_settings)."""
    from types import SimpleNamespace

    from facesal_fast.core.options import CISOptions

    scorer = SimpleNamespace(input_size=(64, 64), classes=["woman", "man"])
    kept = dict(aligner=lambda *args, **kwargs: None)
    RunStore(tmp_path / "keywords", {"target": None, "stride": 2}).close()  # an Audit(stride=2) of the old code
    Audit(scorer, tmp_path / "keywords", stride=2, **kept).close()
    with pytest.raises(SettingsMismatchError, match="stride: 2 -> 3"):
        Audit(scorer, tmp_path / "keywords", stride=3, **kept)
    audit = Audit(scorer, options=CISOptions(mode="grid", grid_step=4), patch=9, **kept)
    assert audit.options == CISOptions(mode="grid", grid_step=4, patch=9)
    assert Audit(scorer, options={"mode": "adaptive"}, **kept).options.patch == 5  # resolved: 15 px at 224 -> 5
    assert Audit(scorer, face_index=np.int64(1), **kept).options.face_index == 1
    with pytest.raises(ValueError, match=r"unknown CIS option\(s\) \['batch_size'\]"):
        Audit(scorer, options=CISOptions(batch_size=8), **kept)
    with Audit(scorer, tmp_path / "record", options=CISOptions(mode="grid"), **kept) as audit:
        recorded = audit.store.settings
    assert recorded == {"target": None, "patch": None, "stride": 1, "fill": "black", "mode": "grid", "grid_step": 2}


def test_cms_and_audit_take_one_stats_record(tmp_path, gender, photos):
    """``fs.cms(..., stats=)`` and ``Audit(..., stats=)``: a record and a mapping test alike,
    in memory and from a run store, and the level reaches the result (the default is 0.95)."""
    files = sorted(photos.glob("*.jpg"))[:4]
    groups = ["a", "a", "b", "b"]
    fast = dict(stride=8, mode="grid", grid_step=4, progress=False)
    record = cms(files, gender, groups=groups, stats=StatsOptions(level=0.9, permutations=200), **fast)
    mapping = cms(files, gender, groups=groups, stats={"level": 0.9, "permutations": 200}, **fast)
    assert record.level == mapping.level == 0.9
    tests = [r.differences[0].region_tests["nose"] for r in (record, mapping)]
    assert tests[0].p_adjusted == tests[1].p_adjusted
    with Audit(gender, tmp_path / "run", stride=8, mode="grid", grid_step=4, stats={"level": 0.8}) as audit:
        list(audit.feed(files, groups=dict(zip([f.name for f in files], groups)), progress=False))
        assert audit.cms().level == 0.8 and audit.cms(level=0.99).level == 0.99
    with pytest.raises(ValueError, match="level"):
        Audit(gender, stats={"level": 95})
