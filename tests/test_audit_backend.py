"""A resumed run records every backend it ran on and warns when a session switches (issue 27
item 12: backend='auto' could switch on resume, onnxruntime missing, while run.json named the first)."""

import json
import shutil
import warnings
from pathlib import Path

import pytest

from facesal_fast import models
from facesal_fast.audit.runner import Audit

FACES = Path(__file__).resolve().parents[1] / "facesal_fast" / "data" / "demo_faces"
FAST = dict(mode="grid", grid_step=8, stride=16)


def _audit(scorer, run, photos):
    with Audit(scorer, run, **FAST) as audit:
        return audit.run(photos, progress=False)


def test_a_resumed_run_on_another_backend_warns_and_run_json_records_both(tmp_path):
    for name in ("img1.jpg", "img5.jpg"):
        shutil.copy(FACES / name, tmp_path / name)
    photos, run = [tmp_path / "img1.jpg", tmp_path / "img5.jpg"], tmp_path / "run"
    onnx = models.load("gender", backend="onnx")
    assert _audit(onnx, run, photos[:1])["done"] == 1
    eager = models.load("gender", backend="torch")  # what backend='auto' picks where onnxruntime is missing
    with pytest.warns(UserWarning, match="was started on backend onnx-cpu; this session runs on torch-fp32"):
        summary = _audit(eager, run, photos)
    assert (summary["done"], summary["skipped"]) == (1, 1)
    resolved = json.loads((run / "run.json").read_text())["resolved"]
    assert resolved["backend"] == "onnx-cpu" and resolved["backends"] == ["onnx-cpu", "torch-fp32"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # back on a backend the run has used: nothing to say
        assert _audit(onnx, run, photos)["skipped"] == 2
    assert json.loads((run / "run.json").read_text())["resolved"]["backends"] == ["onnx-cpu", "torch-fp32"]


def test_a_probe_during_a_new_run_is_recorded_without_a_warning(tmp_path, monkeypatch):
    from facesal_fast.audit.store import RunStore

    shutil.copy(FACES / "img1.jpg", tmp_path / "img1.jpg")
    store = RunStore(tmp_path / "run", {"model": "x"}, resolved={"backend": "auto(torch-fp32)"})
    assert store.record_backend("auto(torch-fp32)") is None
    assert store.record_backend("auto(torch-fp32, onnx-cpu)").startswith(f"{store.path} was started on backend auto(")
    assert store.record_backend("onnx-cpu") is None  # already among those used: recorded, nothing new
    assert store.meta["resolved"]["backends"] == ["auto(torch-fp32)", "auto(torch-fp32, onnx-cpu)", "onnx-cpu"]
    store.close()
