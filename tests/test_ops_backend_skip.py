"""backend="auto" skips a backend that cannot be probed for, fails to build, fails to run,
disagrees with torch eager or returns NaN, with a logged reason, and never fails because
of one (issue 21)."""

import logging

import pytest
import torch
from torch import nn

from facesal_fast.scoring import selection
from facesal_fast.scoring.backends import Backend, TorchBackend


class _Shifted(Backend):
    """Wraps a working backend and adds ``shift`` to its outputs (a backend that disagrees)."""

    def __init__(self, inner: Backend, shift: float, name: str):
        self.inner, self.shift, self.name = inner, shift, name
        self.layout, self.input_dtype, self.device = inner.layout, inner.input_dtype, inner.device

    def __call__(self, batch):
        return self.inner(batch) + self.shift


def _fails_to_build():
    raise RuntimeError("TensorRT engine build failed: out of workspace")


def _raises_when_asked():
    raise OSError("libcudart.so.13: cannot open shared object file")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


@pytest.fixture
def fake_candidates(monkeypatch):
    """Torch eager plus five broken GPU-like candidates; an availability probe that raises."""

    def candidates(module, input_shape, device, precision, batch_size, cache_dir, compile):
        eager = lambda: TorchBackend(module, device)  # noqa: E731
        found = [
            ("torch", eager),
            ("tensorrt", _fails_to_build),
            ("onnx-cuda", lambda: _Shifted(eager(), 1.0, "onnx-cuda")),
            ("torch-fp16", lambda: _Shifted(eager(), float("nan"), "torch-fp16")),
            ("torch-cuda_graphs", lambda: _Shifted(eager(), torch.zeros(3), "torch-cuda_graphs")),
        ]
        if selection._available("tensorrt-rtx", _raises_when_asked):
            found.append(("tensorrt-rtx", eager))
        return found

    monkeypatch.setattr(selection, "_candidates", candidates)


def test_broken_backends_are_skipped_with_logged_reasons(fake_candidates, caplog):
    with caplog.at_level(logging.WARNING, logger="facesal_fast.scoring"):
        chosen, probe = selection.select_backend(_net(), (3, 8, 8), torch.device("cpu"), "fp32", 4)
    assert chosen.name == "torch-fp32"
    rows = {row.name: row for row in probe}
    assert rows["torch-fp32"].ms_per_image is not None and rows["torch-fp32"].max_abs_diff == 0
    assert rows["tensorrt"].note == "RuntimeError: TensorRT engine build failed: out of workspace"
    assert rows["onnx-cuda"].note.startswith("disagrees with torch eager") and rows[
        "onnx-cuda"
    ].max_abs_diff == pytest.approx(1.0)
    assert rows["torch-fp16"].note.startswith("disagrees with torch eager")  # NaN outputs are not agreement
    assert rows["torch-cuda_graphs"].note.startswith("RuntimeError")  # outputs of the wrong shape
    assert all(row.ms_per_image is None for name, row in rows.items() if name != "torch-fp32")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for expected in (
        "skipping tensorrt: RuntimeError: TensorRT engine build failed",
        "skipping onnx-cuda: disagrees with torch eager",
        "skipping torch-fp16: disagrees",
        "skipping torch-cuda_graphs: RuntimeError",
        "skipping tensorrt-rtx: checking for it failed: OSError: libcudart.so.13",
    ):
        assert expected in logged, logged


def test_a_failing_availability_check_of_a_real_candidate_is_not_fatal(monkeypatch, caplog):
    """The real candidate list on a CUDA device, with both availability checks raising."""
    monkeypatch.setattr(selection, "_onnx_cuda_available", _raises_when_asked)
    monkeypatch.setattr(selection, "tensorrt_available", _raises_when_asked)
    with caplog.at_level(logging.WARNING, logger="facesal_fast.scoring"):
        names = [
            name for name, _ in selection._candidates(_net(), (3, 8, 8), torch.device("cuda"), "fp32", 4, None, False)
        ]
    assert names == ["torch", "torch-channels_last", "torch-cuda_graphs"]
    assert "skipping onnx-cuda: checking for it failed: OSError" in caplog.text
    assert "skipping tensorrt: checking for it failed: OSError" in caplog.text
