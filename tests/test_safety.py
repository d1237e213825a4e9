"""Safe outputs, the user's files left alone, and run folders read as untrusted input (issue 27).

Outputs: CSV cells that a spreadsheet would run as formulas are neutralised, Markdown cells
escaped, file names with terminal control sequences escaped before they reach the terminal.
The user's files: an ``evaluate/`` folder or an ``--out`` folder facesal did not write is
never replaced, renamed or written into. Untrusted runs: a crafted run folder (index naming
files elsewhere, a recursive view, a zip bomb, a deeply nested ``run.json``, a result without
its map or with a complex one, a huge ``.npy`` header, a NULL base score, a hot journal, a
full disk) gives one line naming the file and exit 2, or is read correctly, never a traceback
or a stall.
"""

import csv
import io
import math
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from photos import BUNDLED
from test_bad_inputs import FAST, _cli, _face, _one_line

from facesal_fast.audit import store as store_module
from facesal_fast.audit.comparison import compare
from facesal_fast.audit.store import RunStore
from facesal_fast.evaluation.report import Section, Table, markdown, write_evaluation
from facesal_fast.report.safe_text import csv_cell, markdown_cell, terminal_text

HOSTILE_CELLS = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
ESCAPE_NAME = "\x1b]0;pwned\x07\x1b[2Jname.jpg"


def _section(images: list[str]) -> Section:
    rows = [{"image": name, "score": 0.5} for name in images]
    return Section("per image", [Table("faithfulness_per_image", rows)])


def _evaluate_into(run: Path, images: list[str] = ("a.jpg",)) -> Path:
    return write_evaluation(run, "t", [], [_section(list(images))], {"failed": []})


# item 1: never the user's evaluate/ folder; the folder is not made 0700


def test_evaluate_never_replaces_an_evaluate_folder_it_did_not_write(tmp_path):
    run = tmp_path / "run"
    (run / "evaluate").mkdir(parents=True)
    (run / "evaluate" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not written by facesal evaluate"):
        _evaluate_into(run)
    assert sorted(os.listdir(run)) == ["evaluate"] and (run / "evaluate" / "notes.txt").read_text() == "mine"
    photos = tmp_path / "photos"
    photos.mkdir()
    _face().save(photos / "a.jpg")
    code, _, err = _cli("evaluate", photos, "--out", run, *FAST)
    assert code == 2 and "left as it is" in _one_line(err) and (run / "evaluate" / "notes.txt").is_file()


def test_evaluate_replaces_only_its_own_folder_and_keeps_the_umask(tmp_path):
    run = tmp_path / "run"
    old = os.umask(0o022)
    try:
        final = _evaluate_into(run)
    finally:
        os.umask(old)
    assert stat.S_IMODE(final.stat().st_mode) == 0o755
    assert _evaluate_into(run, ["b.jpg"]) == final and "b.jpg" in (final / "faithfulness_per_image.csv").read_text()
    (final / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"did not write \(notes.txt\)"):
        _evaluate_into(run)
    assert (final / "notes.txt").read_text() == "mine"


# item 13: CSV formula injection and Markdown tables


def test_csv_cells_that_start_a_formula_are_neutralised_and_markdown_cells_escaped(tmp_path):
    names = [*HOSTILE_CELLS, "a|b*<img src=x>.jpg", "plain.jpg"]
    final = _evaluate_into(tmp_path / "run", names)
    with open(final / "faithfulness_per_image.csv", newline="") as f:
        cells = [row[0] for row in csv.reader(f)][1:]
    assert cells == [f"'{terminal_text(name)}" for name in HOSTILE_CELLS] + ["a|b*<img src=x>.jpg", "plain.jpg"]
    assert cells[-4:-2] == ["'\\x09x", "'\\x0dx"]
    lines = (final / "faithfulness_per_image.md").read_text().splitlines()
    assert len(lines) == 2 + len(names), "a cell broke the table onto another line"
    for line in lines:  # every | that is not escaped separates the table's two columns
        assert line.replace("\\|", "").count("|") == 3, line
    assert "\\<img src=x\\>" in lines[-2] and markdown_cell("a\nb") == "a\\\\x0ab"
    assert csv_cell(-2.5) == -2.5 and csv_cell("a=b") == "a=b" and csv_cell("a\t=1") == "a\\x09=1"
    assert csv_cell("\x1b[2J-x") == "\\x1b[2J-x" and csv_cell("-\x1b") == "'-\\x1b"
    assert markdown(Table("t", [{"x": "`code`"}])).splitlines()[-1] == "| \\`code\\` |"


# item 14: file names with terminal escapes


def test_terminal_escapes_in_names_are_shown_escaped(tmp_path):
    assert terminal_text(ESCAPE_NAME) == "\\x1b]0;pwned\\x07\\x1b[2Jname.jpg"
    assert terminal_text("a\u202eb\nc") == "a\\u202eb\\x0ac" and terminal_text("Zoë.jpg") == "Zoë.jpg"
    code, _, err = _cli("report", tmp_path / ESCAPE_NAME)
    assert code == 2 and "\x1b" not in err and "\x07" not in err and "\\x1b]0;pwned" in _one_line(err)


def test_failed_photo_with_escapes_in_its_name_is_listed_escaped(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _face().save(photos / "a.jpg")
    (photos / ESCAPE_NAME).write_text("not an image")
    shutil.copy(BUNDLED / "couple.jpg", photos / "\x1b[2Jcouple.jpg")  # two faces: a logged warning names it
    code, out, err = _cli("audit", photos, "--out", tmp_path / "run", *FAST)
    assert code == 0 and "1 failed" in out, err
    assert "\x1b" not in out + err and "\x07" not in out + err and "\\x1b]0;pwned\\x07" in err
    assert "\\x1b[2Jcouple.jpg: 2 faces found" in err


# item 15: an existing folder that is not a run


def _user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with sqlite3.connect(folder / "index.sqlite") as db:
        db.execute("CREATE TABLE people (name TEXT)")
    return folder


def _tables(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as db:
        return [row[0] for row in db.execute("SELECT name FROM sqlite_master")]


def test_an_existing_folder_that_is_not_a_run_is_refused_before_anything_is_written(tmp_path):
    folder = _user_folder(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    _face().save(photos / "a.jpg")
    code, _, err = _cli("audit", photos, "--out", folder, *FAST)
    assert code == 2 and "not a facesal run (it holds index.sqlite, notes.txt)" in _one_line(err)
    with pytest.raises(ValueError, match="nothing was written into it"):
        RunStore(folder, {"model": "m"})
    assert sorted(os.listdir(folder)) == ["index.sqlite", "notes.txt"] and _tables(folder / "index.sqlite") == [
        "people"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    RunStore(empty, {"model": "m"}).close()  # an empty folder may become a run
    assert (empty / "run.json").is_file()


# item 19: --out is the photo folder, or above it


def test_out_that_is_the_photo_folder_or_above_it_is_refused(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _face().save(photos / "a.jpg")
    for out, why in ((photos, "is the photo folder itself"), (Path("/"), "holds the photo folder")):
        for command in ("audit", "evaluate"):
            code, _, err = _cli(command, photos, "--out", out, *FAST)
            assert code == 2 and f"--out {out} {why}" in _one_line(err), (command, err)
    assert os.listdir(photos) == ["a.jpg"]


def test_no_face_in_a_shrunk_panorama_says_it_was_shrunk():
    from facesal_fast.align import NoFaceError, default_aligner

    panorama = np.full((200, 30000, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match=r"the 30000x200 px photo was shrunk to 2048x14 px for detection"):
        default_aligner()(panorama, source="pano.jpg")


def test_the_groups_warning_is_printed_once_over_a_whole_audit(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        _face().save(photos / name)
    groups = tmp_path / "groups.csv"
    groups.write_text("image,group\na.jpg,x\n")
    code, out, err = _cli("audit", photos, "--out", tmp_path / "run", "--groups", groups, *FAST)
    assert code == 0 and "2 done" in out and err.count("1 of 2 photos have a group") == 1, err


# items 16, 17, 19: a run folder read as untrusted input


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """(photo folder, run folder) of a finished audit of two photos."""
    root = tmp_path_factory.mktemp("small")
    photos = root / "photos"
    photos.mkdir()
    for name in ("img1.jpg", "img5.jpg"):
        _face(name).save(photos / name)
    code, _, err = _cli("audit", photos, "--out", root / "run", *FAST)
    assert code == 0, err
    return photos, root / "run"


def _copy(small_run, tmp_path: Path) -> tuple[Path, list[Path]]:
    """A copy of the small run and its result files."""
    copy = tmp_path / "run"
    shutil.copytree(small_run[1], copy)
    return copy, sorted((copy / "results").glob("*.npz"))


def _write_npz(path: Path, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def _report_fails_naming(run: Path, named: Path | str, why: str) -> None:
    code, _, err = _cli("report", run)
    line = _one_line(err)
    assert code == 2 and str(named) in line and why in line, err


def test_report_embeds_no_photo_from_outside_the_run_s_photo_folder(small_run, tmp_path):
    run, _ = _copy(small_run, tmp_path)
    code, _, err = _cli("report", run)
    assert code == 0 and run.joinpath("report.html").read_text().count('class="photo"') == 2, err
    secret = tmp_path / "secret.png"
    _face("img5.jpg").save(secret)
    with sqlite3.connect(run / "index.sqlite") as db:
        db.execute("UPDATE images SET source = ?", (str(secret),))
    code, _, err = _cli("report", run)
    assert code == 0 and 'class="photo"' not in run.joinpath("report.html").read_text(), err


def test_a_crafted_result_file_is_one_line_naming_it(small_run, tmp_path):
    run, (result, *_) = _copy(small_run, tmp_path)
    original = dict(np.load(result))
    cases = [
        ({k: v for k, v in original.items() if k != "canonical"}, "no 'canonical' map"),
        ({**original, "canonical": original["canonical"].astype(np.complex64)}, "not a real H x W map"),
        ({**original, "canonical": np.full_like(original["canonical"], np.nan)}, "contains NaN or Inf"),
        ({**original, "face_box": np.zeros(3, np.float32)}, "not four finite numbers"),
    ]
    for arrays, why in cases:
        _write_npz(result, arrays)
        _report_fails_naming(run, result, why)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def test_a_zip_bomb_or_a_huge_npy_header_is_refused_without_expanding_it(small_run, tmp_path):
    run, (result, *_) = _copy(small_run, tmp_path)
    with zipfile.ZipFile(result, "w") as archive:  # claims 10^14 float64 values, holds 8 bytes
        archive.writestr("canonical.npy", _npy_header((10**7, 10**7)) + bytes(8))
    _report_fails_naming(run, result, "its header claims")
    chunk, count = bytes(1 << 24), 80  # 1.3 GB of zeros in 1.3 MB: more than a result file may hold
    with zipfile.ZipFile(result, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("canonical.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((len(chunk) * count // 8,)))
            for _ in range(count):
                member.write(chunk)
    tracemalloc.start()
    _report_fails_naming(run, result, "more than the")
    assert tracemalloc.get_traced_memory()[1] < 200 << 20
    tracemalloc.stop()


def test_a_crafted_run_json_or_index_is_one_line(small_run, tmp_path):
    run, _ = _copy(small_run, tmp_path)
    with sqlite3.connect(run / "index.sqlite") as db:
        db.execute("UPDATE images SET base_score = NULL WHERE rowid = (SELECT MIN(rowid) FROM images)")
    _report_fails_naming(run, run / "index.sqlite", "base score is None")
    (run / "run.json").write_text("[" * 100_000 + "]" * 100_000)
    _report_fails_naming(run, run / "run.json", "nested too deeply")


def test_a_recursive_view_in_the_index_is_refused_at_once(small_run, tmp_path):
    run, _ = _copy(small_run, tmp_path)
    with sqlite3.connect(run / "index.sqlite") as db:
        db.execute("ALTER TABLE images RENAME TO old")
        db.execute(
            "CREATE VIEW images AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
            "SELECT o.* FROM old o, n"
        )
    command = [sys.executable, "-m", "facesal_fast", "report", str(run)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)  # the old code never ended
    assert done.returncode == 2 and "'images' is a view" in _one_line(done.stderr), done.stderr


def test_a_hot_journal_left_by_a_killed_audit_is_read_rolled_back(small_run, tmp_path):
    run, _ = _copy(small_run, tmp_path)
    writer = (
        "import sqlite3, sys, time\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('PRAGMA cache_size = 1'); db.execute('BEGIN')\n"
        "db.execute('DELETE FROM images')\n"
        "for i in range(3000):\n"
        "    db.execute('INSERT INTO images (key, status) VALUES (?, ?)', ('x' * 200 + str(i), 'done'))\n"
        "print('ready', flush=True); time.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", writer, str(run / "index.sqlite")], stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"ready\n"
    process.kill()
    process.wait()
    journal = run / "index.sqlite-journal"
    assert journal.stat().st_size > 0, "no hot journal was left"
    before = (run / "index.sqlite").read_bytes()
    code, _, err = _cli("report", run)
    assert code == 0 and "2 images explained" in (run / "report.html").read_text(), err
    assert (run / "index.sqlite").read_bytes() == before and journal.is_file(), "the report changed the run"


def test_a_full_disk_under_the_index_is_one_line_and_the_run_resumes(tmp_path, monkeypatch):
    """SQLite's own full-disk error (SQLITE_FULL, as on a full tmpfs): the index may not grow
    beyond its first pages, and the unreadable photos' rows (long names) soon fill them."""
    photos = tmp_path / "photos"
    photos.mkdir()
    _face().save(photos / "a.jpg")
    for i in range(30):
        (photos / f"{'x' * 200}{i:02d}.jpg").write_text("not an image")
    connect = store_module._connect

    def full(db_path, readonly):
        db = connect(db_path, readonly)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    monkeypatch.setattr(store_module, "_connect", full)
    run = tmp_path / "run"
    code, _, err = _cli("audit", photos, "--out", run, *FAST)
    line = _one_line(err)
    assert code == 2 and f"{run / 'index.sqlite'}: No space left on device" in line and "re-run" in line, err
    monkeypatch.undo()
    code, out, err = _cli("audit", photos, "--out", run, *FAST)
    assert code == 0 and " 30 failed" in out and len(RunStore(run).rows()) == 31, err


# item 18: compare


def _maps_run(path: Path, shape: tuple[int, int], count: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with RunStore(path, {"model": "m"}) as store:
        for i in range(count):
            canonical = rng.random(shape, dtype=np.float32)
            store.save_done(
                f"p{i:03d}.jpg", f"p{i:03d}.jpg", {"canonical": canonical},
                group=None, target=0, target_name=None, base_score=0.5, seconds=0.1,
            )  # fmt: skip
    return path


def test_compare_of_runs_with_other_canonical_sizes_is_one_line(tmp_path):
    a, b = _maps_run(tmp_path / "a", (64, 64), 3), _maps_run(tmp_path / "b", (48, 48), 3)
    with pytest.raises(ValueError, match="48 x 48 px, but 64 x 64 px expected"):
        compare(a, b, permutations=50, bootstrap=10)
    code, _, err = _cli("compare", a, b, "--out", tmp_path / "c")
    assert code == 2 and "same canonical face size" in _one_line(err)


def test_compare_streams_the_maps_instead_of_holding_them(tmp_path):
    """Reading a run for compare keeps a small copy per photo and sums the full maps one at a
    time: its peak memory is a few full maps, not all of them (the old code held every map)."""
    from facesal_fast.audit.comparison import _load, _mean

    count, shape = 80, (256, 256)
    run = _maps_run(tmp_path / "a", shape, count)
    tracemalloc.start()
    data = _load(run, 32, None)
    mean = _mean(data, sorted(data.small))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    every_map = count * math.prod(shape) * 4
    assert peak < every_map / 3, f"peak {peak / 1e6:.1f} MB; every map of the run: {every_map / 1e6:.1f} MB"
    assert mean.shape == shape and abs(float(mean.mean()) - 0.5) < 0.01
    assert (
        compare(run, _maps_run(tmp_path / "b", shape, 12, seed=1), permutations=50, bootstrap=10).cms_a.shape == shape
    )
