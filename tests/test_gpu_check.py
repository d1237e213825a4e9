"""benchmarks/gpu_check.py cannot rot: its dry run (the GPU plan on the CPU, device steps at
smoke size) runs here. The orchestration (a process per step, time limits, JSON and
Markdown) runs end to end for two steps; every step's own code runs in this process."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_dry_run_writes_the_report_and_never_fails_as_a_whole(tmp_path):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--only", "build", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {step["step"]: step["status"] for step in report["steps"]}
    assert report["dry_run"] and list(status) == ["build", "cuda_tests", "kernels", "scoring", "captum", "audit"]
    assert status["build"] == "dry-run", report
    assert {status[s] for s in ("cuda_tests", "kernels", "scoring", "captum", "audit")} == {"skipped"}
    build = report["steps"][0]
    assert build["build"] == "not repeated (--dry-run)" and build["versions"]["extension_built_with_cuda"] in (
        True,
        False,
    )
    section = (tmp_path / "gpu_check.md").read_text()
    assert "DRY RUN on the CPU" in section and "| build (build, nvidia-smi and versions) | dry-run |" in section
    assert "| kernels (native kernels against torch on the device) | skipped |" in section


def test_a_failing_or_hanging_step_is_recorded_and_the_plan_goes_on(tmp_path, monkeypatch):
    gpu_check = _module()
    monkeypatch.setattr(gpu_check, "STEPS", [gpu_check.Step("build", "build", 60)])
    result = gpu_check.run_step(gpu_check.Step("build", "build", 1), gpu_check.Context(tmp_path, True, False, 0.5))
    assert result["status"] == "timeout" and result["reason"] == "over its 0 s limit"
    ctx = gpu_check.Context(tmp_path, True, False, 30)
    monkeypatch.setitem(gpu_check.STEP_FUNCTIONS, "build", lambda ctx: 1 / 0)
    gpu_check.child("build", ctx)
    failed = json.loads((tmp_path / "build.json").read_text())
    assert failed["status"] == "failed" and failed["reason"] == "ZeroDivisionError: division by zero"


@pytest.mark.parametrize("step", ["cuda_tests", "kernels", "scoring", "captum", "audit"])
def test_each_device_step_runs_its_code_on_the_cpu(tmp_path, step):
    gpu_check = _module()
    gpu_check.child(step, gpu_check.Context(tmp_path, True, False, 120))
    result = json.loads((tmp_path / f"{step}.json").read_text())
    assert result["status"] == "dry-run", result
    if step == "scoring":
        row = result["rows"][0]
        assert row["model"] == "gender" and row["forward"] > 0 and row["end_to_end"] > 0
    if step == "captum":
        assert result["max_abs_diff"] < 1e-4 and result["windows"] > 0
    if step == "audit":
        assert result["photos"] == 1
    if step == "kernels":
        assert [row["kernel"].split()[0] for row in result["rows"]] == ["occlude_batch", "occlude_batch", "splat_add"]
    if step == "cuda_tests":
        assert result["counts"]["skipped"] > 0 and "failed" not in result["counts"]  # no GPU here: collected, skipped
