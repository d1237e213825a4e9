"""Bad input, faults and misuse of the audit and its command line (issue 16).

A folder of hostile files (zero-byte, truncated, text, GIF, 16-bit, CMYK, RGBA, EXIF-rotated,
decompression bomb, non-UTF-8 name, broken symlink, HTML in the name) is audited once end
to end through ``facesal audit``, with the run folder inside the photo folder; the other
tests misuse that run (edited groups, another folder, a second audit at once, corrupt
files, a photo replaced afterwards, a full disk) and check each gives a one-line message
naming the file or option, exit code 2, and leaves the run as it was.
"""

import contextlib
import errno
import io
import json
import os
import shutil
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from photos import BUNDLED
from PIL import Image

from facesal_fast.audit.groups import assign, groups_digest, read_groups_csv
from facesal_fast.audit.runner import list_images
from facesal_fast.audit.store import RunLockedError, RunStore, SettingsMismatchError, storable
from facesal_fast.cli import main

FAST = ["--backend", "onnx", "--mode", "grid", "--grid-step", "8", "--stride", "16"]
NON_UTF8 = os.fsdecode(b"bad\xffname.jpg")
#: file -> expected status; every failure's message must name the file (and say why).
EXPECTED = {
    "gif.gif": "done",
    "deep16.png": "done",
    "cmyk.jpg": "done",
    "rgba.png": "done",
    "exif-rotated.jpg": "done",
    "<img src=x onerror=alert(1)>.jpg": "done",
    NON_UTF8: "done",
    "zero.jpg": "failed",
    "truncated.jpg": "failed",
    "text.jpg": "failed",
    "bomb.png": "failed",
    "broken-link.jpg": "failed",
}
WHY = {
    "zero.jpg": "cannot read",
    "truncated.jpg": "cannot read",
    "text.jpg": "cannot read",
    "bomb.png": "pixel",
    "broken-link.jpg": "broken symbolic link",
}


def _face(name: str = "img1.jpg", side: int = 320) -> Image.Image:
    im = Image.open(BUNDLED / name).convert("RGB")
    im.thumbnail((side, side))
    return im


def _bomb_png(path: Path, side: int = 40000) -> None:
    """A PNG whose header claims ``side x side`` pixels (1.6e9): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _build_bad_folder(folder: Path) -> None:
    face = _face()
    face.convert("P", palette=Image.ADAPTIVE).save(folder / "gif.gif")
    Image.fromarray((np.asarray(face.convert("L"), np.uint16) * 257)).save(folder / "deep16.png")
    _face("img5.jpg").convert("CMYK").save(folder / "cmyk.jpg")
    rgba = _face("img20.jpg").convert("RGBA")
    rgba.putalpha(Image.fromarray(np.pad(np.full((rgba.height - 40, rgba.width - 40), 255, np.uint8), 20)))
    rgba.save(folder / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    _face("img3.jpg").rotate(90, expand=True).save(folder / "exif-rotated.jpg", exif=exif)
    face.save(folder / "<img src=x onerror=alert(1)>.jpg")
    _face("img10.jpg").save(folder / NON_UTF8)
    (folder / "zero.jpg").write_bytes(b"")
    jpeg = (BUNDLED / "img1.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "text.jpg").write_text("this is not a photo\n")
    _bomb_png(folder / "bomb.png")
    (folder / "broken-link.jpg").symlink_to(folder / "deleted.jpg")
    grouped = [name for name in EXPECTED if name != NON_UTF8]  # a UTF-8 CSV cannot name it
    lines = [f"{name},{'a' if i % 2 else 'b'}" for i, name in enumerate(grouped)]
    (folder / "groups.csv").write_text("image,group\n" + "\n".join(lines) + "\n", encoding="utf-8")


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    """(photo folder, run folder inside it, CLI output) of one audit of the bad folder."""
    folder = tmp_path_factory.mktemp("bad")
    _build_bad_folder(folder)
    run = folder / "run"
    code, out, err = _cli("audit", folder, "--out", run, "--groups", folder / "groups.csv", *FAST)
    assert code == 0, err
    return folder, run, out + err


def _audit_again(folder: Path, run: Path, *extra: str) -> tuple[int, str, str]:
    return _cli("audit", folder, "--out", run, "--groups", folder / "groups.csv", *FAST, *extra)


def _one_line(err: str) -> str:
    lines = [
        line for line in err.splitlines() if line.startswith("facesal: ") and not line.startswith("facesal: warning:")
    ]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_every_bad_file_is_done_or_failed_with_a_message_naming_it(bad_run):
    folder, run, output = bad_run
    store = RunStore(run)
    rows = {row.key: row for row in store.rows()}
    assert set(rows) == {storable(name) for name in EXPECTED}, "the run's own files or a skipped file"
    for name, status in EXPECTED.items():
        row = rows[storable(name)]
        assert row.status == status, (name, row.error)
        if status == "failed":
            assert name in row.error and WHY[name] in row.error, row.error
            assert f"failed: {row.error}" in output
        else:
            assert np.isfinite(store.load(row.key)["canonical"]).all()
            assert row.group in (("a", "b") if name != NON_UTF8 else (None,)), (name, row.group)
    assert rows[storable(NON_UTF8)].key == "bad\\xffname.jpg"
    assert f"{len(EXPECTED) - 1} of {len(EXPECTED)} photos have a group" in output
    store.close()


def test_report_renders_the_bad_run_with_hostile_names_escaped(bad_run, tmp_path):
    """...and with a photo replaced by a tiny one after the audit (its face box is gone)."""
    folder, run, _ = bad_run
    page = tmp_path / "report.html"
    photo = folder / "gif.gif"
    original = photo.read_bytes()
    try:
        Image.new("RGB", (6, 6), "white").save(photo, format="GIF")
        code, _, err = _cli("report", run, "--out", page)
    finally:
        photo.write_bytes(original)
    assert code == 0, err
    html = page.read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in html and "<img src=x" not in html
    assert "bad\\xffname.jpg" in html and "broken symbolic link" in html


def test_run_json_records_identity_and_resolved_values(bad_run):
    folder, run, _ = bad_run
    meta = json.loads((run / "run.json").read_text())
    settings, resolved = meta["settings"], meta["resolved"]
    assert settings["photos"] == str(folder.resolve())
    assert settings["groups"] == f"csv sha256:{groups_digest(read_groups_csv(folder / 'groups.csv'))}"
    assert isinstance(resolved["patch"], int) and resolved["backend"] == "onnx-cpu"
    assert meta["versions"]["mediapipe"] not in ("", "not installed") and "onnxruntime" in meta["versions"]


def test_rerun_resumes_without_auditing_the_run_folder(bad_run):
    folder, run, _ = bad_run
    code, out, err = _audit_again(folder, run)
    done = sum(status == "done" for status in EXPECTED.values())
    assert code == 0 and f"0 done, {len(EXPECTED) - done} failed, {done} skipped" in out, out + err
    assert not [path for path in list_images(folder, exclude=run) if run in path.parents]


def test_edited_groups_or_another_folder_are_refused_naming_the_change(bad_run, tmp_path):
    folder, run, _ = bad_run
    before = (run / "run.json").read_bytes()
    edited = tmp_path / "groups.csv"
    edited.write_bytes((folder / "groups.csv").read_bytes().replace(b",a\n", b",c\n", 1))
    code, _, err = _cli("audit", folder, "--out", run, "--groups", edited, *FAST)
    line = _one_line(err)
    assert code == 2 and "groups: 'csv sha256:" in line and "another --out" in line
    other = tmp_path / "copy"
    shutil.copytree(folder, other, symlinks=True, ignore=shutil.ignore_patterns("run"))
    code, _, err = _audit_again(other, run)
    assert code == 2 and f"photos: '{folder.resolve()}' -> '{other.resolve()}'" in _one_line(err)
    assert (run / "run.json").read_bytes() == before


def test_second_audit_into_a_running_folder_is_refused(bad_run):
    folder, run, _ = bad_run
    holder = RunStore(run, json.loads((run / "run.json").read_text())["settings"])
    try:
        code, _, err = _audit_again(folder, run)
        assert code == 2 and "in use by another running audit" in _one_line(err)
        with pytest.raises(RunLockedError):
            RunStore(run, holder.settings)
    finally:
        holder.close()
    RunStore(run, holder.settings).close()  # free again once the holder closed


def test_corrupt_run_files_give_one_line_naming_the_file(bad_run, tmp_path):
    folder, run, _ = bad_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    store = RunStore(copy)
    result = store.result_path("gif.gif")
    store.close()
    result.write_bytes(b"PK\x03\x04 not a zip")
    code, _, err = _cli("report", copy)
    assert code == 2 and str(result) in _one_line(err) and "re-run" in err
    (copy / "index.sqlite").write_bytes(b"garbage" * 100)
    code, _, err = _cli("report", copy)
    assert code == 2 and "index.sqlite" in _one_line(err)
    (copy / "run.json").write_text("{not json")
    code, _, err = _cli("report", copy)
    assert code == 2 and "run.json" in _one_line(err)


def test_disk_full_stops_with_one_line_and_resumes(tmp_path, monkeypatch):
    from facesal_fast.audit import store as store_module

    photos = tmp_path / "photos"
    photos.mkdir()
    _face().save(photos / "a.jpg")
    run = tmp_path / "run"

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store_module, "atomic_write_bytes", full)
    code, _, err = _cli("audit", photos, "--out", run, *FAST)
    assert code == 2 and "No space left on device" in _one_line(err) and "re-run the same command" in err
    monkeypatch.undo()
    code, out, err = _cli("audit", photos, "--out", run, *FAST)
    assert code == 0 and "1 done" in out, err


def test_bad_arguments_are_refused_before_any_file_is_written(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _face().save(photos / "a.jpg")
    run = tmp_path / "run"
    cases = [
        (["--target", "nope"], "--target 'nope'"),
        (["--model", "nope"], "--model 'nope'"),
        (["--groups", tmp_path / "missing.csv"], "missing.csv"),
        (["--patch", "500"], "patch 500 is larger than the model input"),
    ]
    for extra, expected in cases:
        code, _, err = _cli("audit", photos, "--out", run, *FAST, *extra)
        assert code == 2 and expected in _one_line(err), err
        assert not run.exists(), extra
    file_out = tmp_path / "file"
    file_out.write_text("x")
    code, _, err = _cli("audit", photos, "--out", file_out, *FAST)
    assert code == 2 and "is a file, not a run folder" in _one_line(err)


def test_unwritable_run_folder_is_one_line(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _face().save(photos / "a.jpg")
    code, _, err = _cli("audit", photos, "--out", "/proc/self", *FAST)  # read-only even for root
    assert code == 2 and "/proc/self" in _one_line(err)


def test_device_cuda_without_a_gpu_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = _cli("audit", tmp_path, "--out", tmp_path / "run", "--device", "cuda")
    assert code == 2 and "--device cuda: no such CUDA GPU" in _one_line(err) and not (tmp_path / "run").exists()


def test_missing_run_is_not_created(tmp_path):
    missing = tmp_path / "runs" / "missing"
    with pytest.raises(FileNotFoundError, match="not a facesal run"):
        RunStore(missing)
    code, _, err = _cli("report", missing)
    assert code == 2 and "not a facesal run" in _one_line(err)
    assert not (tmp_path / "runs").exists()


def _save_ones(store: RunStore, key: str, source: str, group: str | None = None) -> None:
    """A done image whose canonical map is ``2 x 2`` ones."""
    store.save_done(
        key,
        source,
        {"canonical": np.ones((2, 2), np.float32)},
        group=group,
        target=0,
        target_name=None,
        base_score=0.5,
        seconds=0.1,
    )


def test_store_keeps_non_utf8_keys(tmp_path):
    store = RunStore(tmp_path / "run", {"a": 1})
    _save_ones(store, NON_UTF8, NON_UTF8, group=NON_UTF8)
    store.save_failed("x" + NON_UTF8, "x" + NON_UTF8, f"{NON_UTF8}: no face found")
    assert store.status(NON_UTF8) == "done" and store.status("x" + NON_UTF8) == "failed"
    assert store.rows("failed")[0].error == "bad\\xffname.jpg: no face found"
    np.testing.assert_array_equal(store.load(NON_UTF8)["canonical"], 1.0)
    store.close()


def test_settings_mismatch_names_old_and_new_values(tmp_path):
    RunStore(tmp_path / "run", {"patch": 4, "model": "gender"}).close()
    with pytest.raises(SettingsMismatchError, match=r"patch: 4 -> 9.*another --out folder"):
        RunStore(tmp_path / "run", {"patch": 9, "model": "gender"})


def test_a_done_image_whose_result_file_is_gone_is_redone(tmp_path):
    store = RunStore(tmp_path / "run", {"a": 1})
    _save_ones(store, "k", "k.jpg")
    store.result_path("k").unlink()
    assert store.status("k") is None
    store.close()


# ----------------------------------------------------------------------------- groups CSV


def _csv(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "groups.csv"
    path.write_bytes(data)
    return path


def test_groups_csv_with_a_byte_order_mark_is_read(tmp_path):
    path = _csv(tmp_path, "\ufeffimage,group\r\na.jpg,x\r\nb.jpg, y \r\n\r\n".encode())
    assert read_groups_csv(path) == {"a.jpg": "x", "b.jpg": "y"}


@pytest.mark.parametrize(
    "data, message",
    [
        ("image,group\na.jpg,x\nb.jpg,\n".encode(), "line 3: empty group for 'b.jpg'"),
        ("image,group\na.jpg,x\nb.jpg\n".encode(), "line 3: 1 column(s)"),
        ("image,group\n,x\n".encode(), "line 2: empty image name"),
        ("image,group\na.jpg,x\na.jpg,y\n".encode(), "line 3: 'a.jpg' is given group 'y' here and 'x' before"),
        ("image,group\n".encode(), "a header but no photo lines"),
        (b"", "empty file"),
        ("file,label\na.jpg,x\n".encode(), "line 1: the header must name the columns image,group, found file,label"),
        ("image,group\nJos\u00e9.jpg,x\n".encode("latin-1"), "not UTF-8 text"),
    ],
)
def test_bad_groups_csv_is_refused_naming_file_and_line(tmp_path, data, message):
    path = _csv(tmp_path, data)
    with pytest.raises(ValueError) as info:
        read_groups_csv(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_groups_that_match_no_photo_are_refused_and_partial_matches_counted():
    groups = {"a.jpg": "x", "sub/b.jpg": "y"}
    with pytest.raises(ValueError, match="none of its 2 image names"):
        assign(groups, ["c.jpg", "d.jpg"])
    assert assign(groups, ["a.jpg", "sub/b.jpg"]) == (groups, None)
    assert "1 of 2 photos have a group; the other 1 ('c.jpg')" in assign(groups, ["dir/a.jpg", "c.jpg"])[1]
    assert groups_digest(groups) == groups_digest(dict(reversed(list(groups.items()))))
    assert groups_digest(groups) != groups_digest({**groups, "a.jpg": "z"})


def test_cli_warns_once_when_some_photos_have_no_group(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        _face().save(photos / name)
    csv_path = _csv(tmp_path, b"image,group\na.jpg,x\n")
    code, _, err = _cli("audit", photos, "--out", tmp_path / "run", "--groups", csv_path, "--patch", "500", *FAST)
    assert code == 2 and err.count("1 of 2 photos have a group") == 1, err


def test_index_rows_survive_sqlite_reopen(tmp_path):
    """The index stays a plain SQLite file others can read (non-UTF-8 keys escaped as text)."""
    store = RunStore(tmp_path / "run", {"a": 1})
    store.save_failed(NON_UTF8, NON_UTF8, "x")
    store.close()
    with sqlite3.connect(tmp_path / "run" / "index.sqlite") as db:
        assert db.execute("SELECT key FROM images").fetchone()[0] == "bad\\xffname.jpg"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"patch": 500}, "patch 500 is larger than the model input 64 x 64"),
        ({"patch": 0}, "patch must be a positive integer"),
        ({"mode": "fast"}, "mode must be one of"),
        ({"stride": -1}, "stride must be a positive integer"),
        ({"fill": "grey"}, "fill must be 'black', 'mean', 'blur'"),
        ({"quality": "best"}, "quality must be 'exact', 'high'"),
        ({"pach": 4}, "unknown CIS option(s) ['pach']"),
    ],
)
def test_audit_refuses_bad_options_before_any_image_or_file(tmp_path, options, message):
    """Once, at construction (not per image after its alignment), and before run.json."""
    from types import SimpleNamespace

    from facesal_fast import Audit

    scorer = SimpleNamespace(input_size=(64, 64), classes=["woman", "man"])
    with pytest.raises(ValueError) as info:
        Audit(scorer, tmp_path / "run", **options)
    assert message in str(info.value) and not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="unknown class 'nope'"):
        Audit(scorer, tmp_path / "run", target="nope")
    assert not (tmp_path / "run").exists()


def test_leaving_a_with_block_releases_the_run_lock(tmp_path):
    from types import SimpleNamespace

    from facesal_fast import Audit

    scorer = SimpleNamespace(input_size=(64, 64), classes=["woman", "man"])
    with Audit(scorer, tmp_path / "run", aligner=object()) as audit:
        with pytest.raises(RunLockedError, match="in use by another running audit"):
            RunStore(tmp_path / "run", audit.store.settings)
    with RunStore(tmp_path / "run", audit.store.settings) as again:
        assert again.settings == audit.store.settings
