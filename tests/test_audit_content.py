"""A run always reflects its photos: content hashes (a replaced photo is explained again, a
photo gone from the folder is left out, arrays keyed by content), groups matched by path
before name, persons per photo, and ``compare`` pairing photos by content, never by name."""

import re
import shutil
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from photos import BUNDLED
from torch import nn

from facesal_fast import Audit, cms
from facesal_fast.align import load_image
from facesal_fast.audit.comparison import compare, write_compare_report
from facesal_fast.audit.groups import assign, groups_digest, read_groups_table
from facesal_fast.audit.options import print_summary, read_groups
from facesal_fast.audit.runner import cms_from_store
from facesal_fast.audit.store import RunStore, file_sha256
from facesal_fast.scoring import Scorer

FAST = {"stride": 16}
CLI_FAST = ["--backend", "onnx", "--mode", "grid", "--grid-step", "8", "--stride", "16"]


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    return Scorer.from_torch(net, 32, backend="torch", crop="face")


def _folder(path: Path, names: dict[str, str]) -> Path:
    """A photo folder: file name -> bundled photo copied under it."""
    path.mkdir(parents=True, exist_ok=True)
    for name, photo in names.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BUNDLED / photo, path / name)
    return path


def _run(scorer, out: Path, inputs, **options) -> dict[str, int]:
    with Audit(scorer, out, **FAST, **options) as audit:
        return audit.run(inputs, progress=False)


# ----------------------------------------------------------------------------- issue 27.2


def test_a_replaced_photo_is_explained_again_and_a_gone_photo_left_out(scorer, tmp_path, capsys):
    photos = _folder(tmp_path / "photos", {"a.jpg": "img1.jpg", "b.jpg": "img5.jpg", "c.jpg": "img20.jpg"})
    assert _run(scorer, tmp_path / "run", photos)["done"] == 3
    with RunStore(tmp_path / "run") as store:
        old_b = store.load("b.jpg")["canonical"]
    shutil.copy(BUNDLED / "img3.jpg", photos / "b.jpg")  # same name, another photo
    (photos / "c.jpg").unlink()
    summary = _run(scorer, tmp_path / "run", photos)
    assert summary == {"done": 1, "failed": 0, "skipped": 1, "changed": 1, "gone": 1}
    with RunStore(tmp_path / "run") as store:
        assert [r.key for r in store.rows("done")] == ["a.jpg", "b.jpg"]
        assert [r.key for r in store.rows("gone")] == ["c.jpg"]
        assert store.row("b.jpg").sha256 == file_sha256(photos / "b.jpg")
        assert not np.array_equal(store.load("b.jpg")["canonical"], old_b)  # the new photo's map
        assert cms_from_store(store).count == 2
    print_summary(summary, 1.0, "test", RunStore(tmp_path / "run"))
    assert "1 done, 0 failed, 1 skipped (already done), 1 changed (re-explained), 1 gone (left out)" in (
        capsys.readouterr().out
    )
    again = _run(scorer, tmp_path / "run", photos)  # nothing changed since: everything skipped, nothing recounted
    assert again == {"done": 0, "failed": 0, "skipped": 2, "changed": 0, "gone": 0}


def test_the_report_shows_no_crop_of_a_photo_replaced_since_the_audit(scorer, tmp_path):
    from facesal_fast.audit.run_report import write_report

    photos = _folder(tmp_path / "photos", {"a.jpg": "img1.jpg", "b.jpg": "img5.jpg"})
    with Audit(scorer, tmp_path / "run", settings={"photos": str(photos.resolve())}, **FAST) as audit:
        audit.run(photos, progress=False)
    shutil.copy(BUNDLED / "img3.jpg", photos / "b.jpg")  # replaced, not yet audited again
    page = write_report(tmp_path / "run", tmp_path / "report.html", permutations=20).read_text()
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", page)
    assert [c.split(":")[0] for c in captions if "changed since the audit" in c] == ["b.jpg"]
    assert page.count('class="photo"') == 1  # a.jpg's crop only


def test_a_run_written_before_content_hashes_resumes_and_records_them(scorer, tmp_path):
    photos = _folder(tmp_path / "photos", {"a.jpg": "img1.jpg"})
    _run(scorer, tmp_path / "run", photos)
    with sqlite3.connect(tmp_path / "run" / "index.sqlite") as db:  # the index as older versions wrote it
        db.execute("ALTER TABLE images DROP COLUMN sha256")
        db.execute("ALTER TABLE images DROP COLUMN person")
    with RunStore(tmp_path / "run") as store:  # read-only (the report, compare): hashes unknown
        assert store.row("a.jpg").sha256 is None and len(store.rows("done")) == 1
    with pytest.warns(UserWarning, match="1 photos were done before runs recorded content hashes; they are assumed"):
        assert _run(scorer, tmp_path / "run", photos)["skipped"] == 1
    with RunStore(tmp_path / "run") as store:
        assert store.row("a.jpg").sha256 == file_sha256(photos / "a.jpg")


def test_every_face_of_a_replaced_group_photo_is_replaced(scorer, tmp_path):
    photos = _folder(tmp_path / "photos", {"group.jpg": "couple.jpg"})
    _run(scorer, tmp_path / "run", photos, faces="all")
    shutil.copy(BUNDLED / "img1.jpg", photos / "group.jpg")  # now one face
    assert _run(scorer, tmp_path / "run", photos, faces="all")["changed"] == 1
    with RunStore(tmp_path / "run") as store:
        assert [r.key for r in store.rows("done")] == ["group.jpg#face1"]
        assert [r.key for r in store.rows("gone")] == ["group.jpg#face2"]


@dataclass(eq=False)
class _Ref:
    """A task's reference (hashable by identity), its result inside."""

    value: Any


class _InProcessRay:
    """Just enough of ``ray`` for the Ray driver (:func:`facesal_fast.audit.distributed._run`) to run
    its actors in this process: a task runs when submitted, its reference holds the result."""

    class _Method:
        def __init__(self, method):
            self.method = method

        def remote(self, *args):
            return _Ref(self.method(*args))

    class _Actor:
        def __init__(self, cls):
            self.cls = cls

        def options(self, **_):
            return self

        def remote(self, *args):
            instance = self.cls(*args)
            return SimpleNamespace(
                **{n: _InProcessRay._Method(getattr(instance, n)) for n in ("explain", "resolved", "partials")}
            )

    remote = _Actor

    @staticmethod
    def cluster_resources():
        return {"CPU": 1}

    @staticmethod
    def wait(refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    @staticmethod
    def get(ref):
        return [r.value for r in ref] if isinstance(ref, list) else ref.value

    @staticmethod
    def kill(_):
        pass


def test_a_ray_audit_resumes_by_content_and_stores_persons(scorer, tmp_path):
    from facesal_fast.audit.distributed import _run

    photos = _folder(tmp_path / "photos", {"a.jpg": "img1.jpg", "b.jpg": "img5.jpg", "c.jpg": "img20.jpg"})
    persons = {"a.jpg": "ann", "b.jpg": "bob", "c.jpg": "cy"}

    def ray_audit():
        options = (None, None, 1, 1, 0, None, False, {}, FAST)  # groups .. cis_options
        return _run(
            _InProcessRay, photos, tmp_path / "run", lambda: scorer, "torch", "cpu", None, *options, persons=persons
        )

    assert ray_audit().summary["done"] == 3
    shutil.copy(BUNDLED / "img3.jpg", photos / "b.jpg")
    (photos / "c.jpg").unlink()
    assert ray_audit().summary == {"done": 1, "failed": 0, "skipped": 1, "changed": 1, "gone": 1}
    with RunStore(tmp_path / "run") as store:
        rows = store.rows("done")
        assert [(r.key, r.person) for r in rows] == [("a.jpg", "ann"), ("b.jpg", "bob")]
        assert all(r.sha256 == file_sha256(photos / r.key) for r in rows)


# ----------------------------------------------------------------------------- issue 27.4


def test_arrays_are_keyed_by_content_not_position(scorer, tmp_path):
    a, b, c = (load_image(BUNDLED / name) for name in ("img1.jpg", "img5.jpg", "img20.jpg"))
    _run(scorer, tmp_path / "run", [a, b])
    with Audit(scorer, tmp_path / "run", **FAST) as audit:
        items = list(audit.feed([c, a, b], progress=False))
        assert [i.status for i in items] == ["done", "skipped", "skipped"]
        assert len({i.key for i in items}) == 3 and len(audit.store.rows("done")) == 3
    with RunStore(tmp_path / "old", {"target": None, **FAST}) as store:  # arrays keyed by position, as before
        store.save_failed("array-000000", "array #0", "array #0: no face found")
    with Audit(scorer, tmp_path / "old", **FAST) as audit:
        with pytest.raises(ValueError, match="holds 1 arrays keyed by their position \\('array-000000', ...\\)"):
            audit.run([c], progress=False)


# ----------------------------------------------------------------------------- issue 27.3


def test_groups_match_relative_paths_first_and_a_shared_bare_name_is_an_error(tmp_path):
    keys = ["m/IMG_0001.jpg", "w/IMG_0001.jpg"]
    with pytest.raises(ValueError, match="'IMG_0001.jpg' names two photos, 'm/IMG_0001.jpg' and 'w/IMG_0001.jpg'"):
        assign({"IMG_0001.jpg": "x"}, keys)
    found, message = assign({"m/IMG_0001.jpg": "men", "IMG_0001.jpg": "women"}, keys)
    assert found == {"m/IMG_0001.jpg": "men", "w/IMG_0001.jpg": "women"} and message is None
    assert assign({"sub/a.jpg": "x"}, ["dir/sub/a.jpg", "a.jpg"])[0] == {"dir/sub/a.jpg": "x"}
    csv_path = tmp_path / "groups.csv"
    csv_path.write_text("image,group\nIMG_0001.jpg,x\n")
    with pytest.raises(ValueError, match=f"--groups {csv_path}: the line 'IMG_0001.jpg' names two photos"):
        read_groups(str(csv_path), keys)


def test_an_ambiguous_groups_mapping_is_refused_before_any_photo_is_explained(scorer, tmp_path):
    photos = _folder(tmp_path / "photos", {"m/IMG_0001.jpg": "img1.jpg", "w/IMG_0001.jpg": "img5.jpg"})
    with Audit(scorer, tmp_path / "run", **FAST) as audit:
        with pytest.raises(ValueError, match="names two photos, 'm/IMG_0001.jpg' and 'w/IMG_0001.jpg'"):
            audit.run(photos, groups={"IMG_0001.jpg": "x"}, progress=False)
        assert audit.store.rows() == []


# ----------------------------------------------------------------------------- issue 27.11


def test_cms_refuses_groups_that_name_no_photo_and_warns_on_a_partial_match(scorer, tmp_path):
    paths = [BUNDLED / "img1.jpg", BUNDLED / "img5.jpg", BUNDLED / "img20.jpg"]
    with pytest.raises(ValueError, match="none of its 1 image names \\('nope.jpg', ...\\) is one of the 3 photos"):
        cms(paths, scorer, groups={"nope.jpg": "x"}, progress=False, **FAST)
    with pytest.warns(UserWarning, match=r"groups: 1 of 3 photos have a group; the other 2 \('.*img5.jpg', '.*img20"):
        result = cms(paths, scorer, groups={"img1.jpg": "x"}, progress=False, **FAST)
    assert {g: n for g, (_, n) in result.groups.items()} == {"x": 1}
    with pytest.raises(ValueError, match="none of its 1 image names"):  # a stream: checked once it has passed
        cms(iter(paths[:1]), scorer, groups={"nope.jpg": "x"}, progress=False, **FAST)


# ----------------------------------------------------------------------------- issue 31.3


def test_groups_csv_person_column_is_read_checked_and_part_of_the_run_identity(tmp_path):
    path = tmp_path / "groups.csv"
    path.write_text("image,group,person\na.jpg,x,ann\nb.jpg,x,ann\nc.jpg,y,bob\n")
    groups, persons = read_groups_table(path)
    assert persons == {"a.jpg": "ann", "b.jpg": "ann", "c.jpg": "bob"}
    assert groups_digest(groups) != groups_digest(groups, persons)
    matched, by_key, setting = read_groups(str(path), ["x/a.jpg", "b.jpg", "c.jpg"])  # what facesal audit takes
    assert by_key == {"x/a.jpg": "ann", "b.jpg": "ann", "c.jpg": "bob"} and matched["x/a.jpg"] == "x"
    assert setting == f"csv sha256:{groups_digest(groups, persons)}"
    path.write_text("image,group\na.jpg,x\n")
    assert read_groups_table(path)[1] == {}  # no person column: the digest older runs recorded
    path.write_text("image,group,person\na.jpg,x,\n")
    with pytest.raises(ValueError, match="line 2: empty person for 'a.jpg'"):
        read_groups_table(path)


def test_persons_are_stored_per_photo_and_counted_toward_min_group(scorer, tmp_path):
    photos = _folder(tmp_path / "photos", {f"p{i}.jpg": n for i, n in enumerate(("img1.jpg", "img5.jpg", "img20.jpg"))})
    groups = {"p0.jpg": "x", "p1.jpg": "x", "p2.jpg": "y"}
    with Audit(scorer, tmp_path / "run", **FAST) as audit:
        audit.run(photos, groups=groups, persons={"p0.jpg": "ann", "p1.jpg": "ann", "p2.jpg": "bob"}, progress=False)
    with RunStore(tmp_path / "run") as store:
        assert [r.person for r in store.rows("done")] == ["ann", "ann", "bob"]
        result = cms_from_store(store, min_group=2, permutations=50, bootstrap=20)
    assert result.persons == {"x": 1, "y": 1}
    assert "too few persons in group x (n=1 < 2)" in result.small_groups
    paths = [photos / f"p{i}.jpg" for i in range(3)]  # fs.cms without a run folder: one name per image
    in_memory = cms(paths, scorer, groups=["x", "x", "y"], persons=["ann", "ann", "bob"], progress=False, **FAST)
    assert in_memory.persons == {"x": 1, "y": 1}
    with pytest.raises(ValueError, match="persons has 2 names but images has 3 items: give one person per image"):
        cms(paths, scorer, persons=["ann", "bob"], progress=False, **FAST)


def test_facesal_audit_stores_the_csv_persons_and_says_what_changed(tmp_path, capsys):
    from facesal_fast.cli import main

    photos = _folder(tmp_path / "photos", {"m/IMG_0001.jpg": "img1.jpg", "w/IMG_0001.jpg": "img5.jpg"})
    csv_path = tmp_path / "groups.csv"
    csv_path.write_text("image,group,person\nm/IMG_0001.jpg,men,ann\nw/IMG_0001.jpg,women,bob\n")
    command = ["audit", str(photos), "--out", str(tmp_path / "run"), "--groups", str(csv_path), *CLI_FAST]
    assert main(command) == 0
    with RunStore(tmp_path / "run") as store:
        assert [(r.key, r.group, r.person) for r in store.rows("done")] == [
            ("m/IMG_0001.jpg", "men", "ann"),
            ("w/IMG_0001.jpg", "women", "bob"),
        ]
    shutil.copy(BUNDLED / "img20.jpg", photos / "w" / "IMG_0001.jpg")
    capsys.readouterr()
    assert main(command) == 0
    assert "1 done, 0 failed, 1 skipped (already done), 1 changed (re-explained) in" in capsys.readouterr().out


# ----------------------------------------------------------------------------- issue 31.5


def _synthetic_run(path: Path, photos: dict[str, str], seed: int) -> Path:
    """A run of 64 x 64 random maps: key -> content (its photo's hash)."""
    rng = np.random.default_rng(seed)
    with RunStore(path, {"model": "synthetic"}) as store:
        for key, content in photos.items():
            arrays = {"canonical": rng.gamma(2.0, 1.0, (64, 64)).astype(np.float32), "face_box": np.zeros(4)}
            store.save_done(
                key, key, arrays, group=None, target=0, target_name="x", base_score=0.9, seconds=0.0, sha256=content
            )
    return path


def test_compare_pairs_photos_by_content_not_by_name(tmp_path):
    names = [f"p{i:02d}.jpg" for i in range(12)]
    a = _synthetic_run(tmp_path / "a", {n: f"photo-{n}" for n in names}, 0)
    options = {"permutations": 100, "bootstrap": 50}
    other_photos = _synthetic_run(tmp_path / "other", {n: f"another-{n}" for n in names}, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unpaired = compare(a, other_photos, **options)
        assert not unpaired.paired and unpaired.pairing.pairs == []  # same names, different photos
        one_missing = _synthetic_run(tmp_path / "b", {n: f"photo-{n}" for n in names if n != "p05.jpg"}, 2)
        paired = compare(a, one_missing, **options)
        renamed = compare(a, _synthetic_run(tmp_path / "c", {f"x{n}": f"photo-{n}" for n in names}, 3), **options)
    assert paired.paired and paired.difference.n_a == 11 and paired.pairing.unmatched_a == ["p05.jpg"]
    assert "1 photos of a and 0 of b have no photo of identical content" in paired.pairing_notes[0]
    assert renamed.paired and renamed.difference.n_a == 12 and renamed.pairing.pairs[0] == ("p00.jpg", "xp00.jpg")
    page = write_compare_report(paired, tmp_path / "cmp").read_text()
    assert "paired test over the 11 photos of identical content" in page
    assert "Only in a (1): <code>p05.jpg</code>" in page
    page = write_compare_report(unpaired, tmp_path / "cmp").read_text()
    assert "unpaired test: no photo of identical content in both runs" in page and "Only in" not in page
