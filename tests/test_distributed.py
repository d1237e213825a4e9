"""Audits on Ray (a local 2-CPU Ray, real photos): a killed worker, equality with one process, resume, the CLI."""

import json
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from facesal_fast.audit.distributed import PartialSums, _check_reduction, cms_ray  # noqa: E402
from facesal_fast.audit.options import model_hash  # noqa: E402
from facesal_fast.audit.runner import Audit, cms_from_store  # noqa: E402
from facesal_fast.audit.store import RunStore  # noqa: E402
from facesal_fast.cli import main  # noqa: E402

FACES = Path(__file__).resolve().parents[1] / "facesal_fast" / "data" / "demo_faces"
NAMES = ("img1.jpg", "img5.jpg", "img20.jpg", "img3.jpg")
# what `facesal audit --model gender --backend onnx --groups predicted` records
SETTINGS = {"model": "gender", "model_sha256": model_hash("gender"), "backend": "onnx", "groups": "predicted"}
CIS_OPTIONS = {"patch": None, "stride": 1, "mode": "exact", "grid_step": 2, "fill": "black"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray") / "photos"
    folder.mkdir()
    for name in NAMES:
        shutil.copy(FACES / name, folder / name)
    return folder


#: Ray on a busy machine: more time for health checks, worker registration and GCS reconnects,
#: and a small object store (its start timed out at a load average of 4 on 2 cores).
RAY_OPTIONS = {
    "num_cpus": 2,
    "include_dashboard": False,
    "log_to_driver": False,
    "object_store_memory": 256 * 2**20,
    "_system_config": {
        "health_check_timeout_ms": 60_000,
        "health_check_failure_threshold": 10,
        "worker_register_timeout_seconds": 180,
        "gcs_rpc_server_reconnect_timeout_s": 180,
    },
}
RAY_START_ATTEMPTS = 3


def start_ray(init=None, shutdown=None, attempts: int = RAY_START_ATTEMPTS, pause: float = 10.0) -> int:
    """Start a local 2-CPU Ray (:data:`RAY_OPTIONS`); returns the attempts it took. A start can
    time out on a busy machine (Ray waits a fixed 30 s for its raylet: "The current node timed
    out during startup ... or the GCS has become overloaded"): the half-started Ray is shut
    down and started again, up to ``attempts`` times, ``pause`` seconds apart."""
    init, shutdown = init or ray.init, shutdown or ray.shutdown
    for attempt in range(1, attempts):
        try:
            init(**RAY_OPTIONS)
            return attempt
        except Exception:  # whatever the start raised: tried again
            shutdown()
            time.sleep(pause)
    init(**RAY_OPTIONS)  # the last attempt: its error is the test's
    return attempts


@pytest.fixture(scope="module")
def local_ray():
    start_ray()
    yield
    ray.shutdown()


def test_a_ray_start_that_times_out_is_retried():
    calls: list[str] = []

    def init(**options):
        calls.append("init")
        assert options == RAY_OPTIONS
        if calls.count("init") < 3:
            raise Exception("The current node timed out during startup. ... or the GCS has become overloaded.")

    assert start_ray(init, lambda: calls.append("shutdown"), pause=0) == 3
    assert calls == ["init", "shutdown", "init", "shutdown", "init"]
    calls.clear()
    with pytest.raises(Exception, match="GCS has become overloaded"):
        start_ray(init, lambda: calls.append("shutdown"), attempts=2, pause=0)
    assert calls == ["init", "shutdown", "init"]


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory):
    """The single-process run (same settings as the CLI) and its CMS."""
    from facesal_fast import models

    run = tmp_path_factory.mktemp("ray") / "single"
    SETTINGS["photos"] = str(photos.resolve())  # the CLI records the resolved photo folder
    audit = Audit(models.load("gender", backend="onnx"), run, settings=SETTINGS, **CIS_OPTIONS)
    assert audit.run(photos, groups="predicted", progress=False)["done"] == len(NAMES)
    cms = audit.cms()
    audit.store.close()
    return run, cms


def _mtimes(run: Path) -> dict[str, int]:
    store = RunStore(run)
    times = {row.key: store.result_path(row.key).stat().st_mtime_ns for row in store.rows("done")}
    store.close()
    return times


def _assert_same_run(run: Path, reference_run: Path, expected) -> None:
    a, b = RunStore(run), RunStore(reference_run)
    got = cms_from_store(a)
    np.testing.assert_array_equal(got.cms, expected.cms)
    assert got.groups.keys() == expected.groups.keys() and got.count == expected.count == len(NAMES)
    for group, (cmap, n) in expected.groups.items():
        np.testing.assert_array_equal(got.groups[group][0], cmap)
        assert got.groups[group][1] == n
    key_fields = lambda rows: [(r.key, r.source, r.status, r.group, r.target, r.base_score) for r in rows]  # noqa: E731
    assert key_fields(a.rows()) == key_fields(b.rows())
    for row in b.rows("done"):
        for name, array in b.load(row.key).items():
            np.testing.assert_array_equal(a.load(row.key)[name], array, err_msg=f"{row.key} {name}")


def test_killed_worker_is_retried_and_finished_images_are_not_recomputed(tmp_path, photos, local_ray, reference):
    run = tmp_path / "killed"
    seen: list[tuple[str, int]] = []
    killed: list[int] = []
    finished_before_kill: dict[str, int] = {}

    def kill_the_first_worker_that_finishes(row, pid):
        seen.append((row.key, pid))
        if not killed and row.status == "done":
            store = RunStore(run)
            finished_before_kill[row.key] = store.result_path(row.key).stat().st_mtime_ns
            store.close()
            os.kill(pid, signal.SIGKILL)  # it is computing its second image now
            killed.append(pid)

    result = cms_ray(
        photos,
        run,
        "gender",
        backend="onnx",
        target=None,
        groups="predicted",
        settings=SETTINGS,
        in_flight=2,
        on_item=kill_the_first_worker_that_finishes,
        progress=False,
        **CIS_OPTIONS,
    )
    assert result.workers == 2 and result.summary == {"done": 4, "failed": 0, "skipped": 0, "changed": 0, "gone": 0}
    keys = [key for key, _ in seen]
    assert sorted(keys) == sorted(NAMES), "every image committed exactly once"
    assert len({pid for _, pid in seen}) == 3, "the killed worker's image was finished by a restarted process"
    # the killed actor's partial sums died with it: its finished image is re-read from the store
    (first,) = finished_before_kill
    assert first in result.recovered and result.reduced.count == 4
    assert _mtimes(run)[first] == finished_before_kill[first], "a finished image was recomputed"
    np.testing.assert_array_equal(result.cms.cms, reference[1].cms)
    _assert_same_run(run, reference[0], reference[1])
    # run.json records what the settings resolved to (backend chosen, patch in input pixels), as one process does
    resolved = [json.loads((r / "run.json").read_text())["resolved"] for r in (run, reference[0])]
    assert resolved[0] == resolved[1] and resolved[0]["backend"] == "onnx-cpu" and resolved[0]["patch"] == 5


def test_cli_ray_resumes_a_single_process_run(tmp_path, photos, local_ray, reference, capsys):
    run = tmp_path / "resume"
    shutil.copytree(reference[0], run)
    with sqlite3.connect(run / "index.sqlite") as db:
        db.execute("DELETE FROM images WHERE key = ?", ("img5.jpg",))
    before = _mtimes(run)
    assert (
        main(
            [
                "audit",
                str(photos),
                "--out",
                str(run),
                "--model",
                "gender",
                "--backend",
                "onnx",
                "--groups",
                "predicted",
                "--ray",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "1 done, 0 failed, 3 skipped" in out and "2 Ray workers" in out
    assert {k: t for k, t in _mtimes(run).items() if k != "img5.jpg"} == before, "a finished image was recomputed"
    _assert_same_run(run, reference[0], reference[1])


def test_paths_only(tmp_path, local_ray):
    with pytest.raises(TypeError, match="folder or image paths"):
        cms_ray([np.zeros((8, 8, 3), np.uint8)], tmp_path / "run", "gender", backend="onnx", progress=False)


def test_the_reduction_check_catches_a_lost_partial(reference):
    store = RunStore(reference[0])
    rows = store.rows("done")
    every, all_but_one = PartialSums(), PartialSums()
    for i, row in enumerate(rows):
        arrays = store.load(row.key)
        every.add(row.key, arrays["canonical"], row.group, arrays["counts"])
        if i:
            all_but_one.add(row.key, arrays["canonical"], row.group, arrays["counts"])
    store.close()
    _check_reduction(every, reference[1])
    with pytest.raises(RuntimeError, match="3 maps reduced, 4 in the store"):
        _check_reduction(all_but_one, reference[1])
