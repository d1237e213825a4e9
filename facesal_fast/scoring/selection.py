"""Backend construction by name, and ``backend="auto"``: a short timed probe at start-up.

The probe builds every candidate that can run here, checks that it agrees with torch
eager on a random batch, times it, and keeps the fastest correct one. A candidate that
cannot be probed for, fails to build or run, or disagrees (NaN included) is skipped, never
fatal: its reason is logged (logger ``facesal_fast.scoring``, WARNING) and kept in the
:class:`ProbeResult` rows (on the scorer as ``scorer.probe``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from facesal_fast.scoring.backends import Backend, OnnxBackend, TorchBackend, export_onnx
from facesal_fast.scoring.progress import step_bar
from facesal_fast.scoring.tensorrt_backend import TensorRTBackend, tensorrt_available

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["BACKENDS", "ProbeResult", "ProbingBackend", "torch_backend", "select_backend"]

log = logging.getLogger("facesal_fast.scoring")

BACKENDS = ("auto", "torch", "onnx", "tensorrt")


@dataclass(frozen=True)
class ProbeResult:
    """One probed candidate: name, ms per image (None if it failed), max |diff| vs torch eager, note."""

    name: str
    ms_per_image: float | None
    max_abs_diff: float | None
    note: str = ""


def _onnx_cuda_available() -> bool:
    import onnxruntime as ort  # about 0.5 s to import: only to probe ONNX on a GPU

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _time(backend: Backend, batch: torch.Tensor, min_seconds: float = 0.2, max_runs: int = 5) -> float:
    """Best seconds per call over a few runs (after one warm-up)."""
    sync = torch.cuda.synchronize if backend.device.type == "cuda" else (lambda: None)
    backend(batch)
    sync()
    best, spent, runs = float("inf"), 0.0, 0
    while runs < 2 or (spent < min_seconds and runs < max_runs):
        start = time.perf_counter()
        backend(batch)
        sync()
        elapsed = time.perf_counter() - start
        best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
    return best


def torch_backend(
    module: nn.Module,
    device: torch.device,
    precision: str,
    channels_last: bool | None,
    cuda_graphs: bool | None,
    compile: bool,
) -> TorchBackend:
    """TorchBackend with the defaults: channels_last and CUDA graphs on CUDA, plain NCHW on CPU."""
    on_cuda = device.type == "cuda"
    return TorchBackend(
        module,
        device,
        precision,
        channels_last=on_cuda if channels_last is None else channels_last,
        cuda_graphs=on_cuda if cuda_graphs is None else cuda_graphs,
        compile=compile,
    )


def _available(name: str, probe: Callable[[], bool]) -> bool:
    """``probe()``, or False (logged) when asking whether ``name`` can run raises."""
    try:
        return bool(probe())
    except Exception as err:
        log.warning("backend=auto: skipping %s: checking for it failed: %s: %s", name, type(err).__name__, err)
        return False


def _skipped(name: str, reason: str, diff: float | None = None) -> "ProbeResult":
    """A probe row for a skipped candidate, its reason logged."""
    log.warning("backend=auto: skipping %s: %s%s", name, reason, "" if diff is None else f" (max |diff| {diff:.3g})")
    return ProbeResult(name, None, diff, reason)


def _candidates(
    module, input_shape, device, precision, batch_size, cache_dir, compile
) -> list[tuple[str, Callable[[], Backend]]]:
    onnx_path = lambda: export_onnx(module, input_shape, cache_dir)  # noqa: E731
    found: list[tuple[str, Callable[[], Backend]]] = [
        ("torch", lambda: TorchBackend(module, device, precision, compile=compile)),
        ("torch-channels_last", lambda: TorchBackend(module, device, precision, channels_last=True, compile=compile)),
    ]
    if device.type == "cuda":
        found.append(
            (
                "torch-cuda_graphs",
                lambda: TorchBackend(module, device, precision, channels_last=True, cuda_graphs=True, compile=compile),
            )
        )
        if precision == "fp32" and _available("onnx-cuda", _onnx_cuda_available):
            found.append(("onnx-cuda", lambda: OnnxBackend(onnx_path(), device)))
        if _available("tensorrt", lambda: tensorrt_available()[0]):
            found.append(
                (
                    "tensorrt",
                    lambda: TensorRTBackend(onnx_path(), input_shape, batch_size, device, fp16=precision != "fp32"),
                )
            )
    elif precision == "fp32":
        found.append(("onnx-cpu", lambda: OnnxBackend(onnx_path(), "cpu")))
    return found


def select_backend(
    module: nn.Module,
    input_shape: tuple[int, int, int],
    device: torch.device,
    precision: str,
    batch_size: int,
    cache_dir: str | Path | None = None,
    compile: bool = False,
    layouts: tuple[str, ...] = ("nchw", "nhwc"),
) -> tuple[Backend, list[ProbeResult]]:
    """The fastest backend for ``module`` that agrees with torch eager, and the probe table.

    Agreement: max |diff| of outputs <= 1e-3 + 1e-3 * max |reference| (fp32), or 5e-2
    relative for fp16/bf16 runs. ``layouts``: the batch layouts a candidate may take.
    """
    started = time.perf_counter()
    probe_batch = min(batch_size, 32 if device.type == "cpu" else batch_size)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((probe_batch, *input_shape), generator=generator).to(device)
    reference = TorchBackend(module, device, "fp32")(x)
    tol = (1e-3 if precision == "fp32" else 5e-2) * (1.0 + float(reference.abs().max()))
    results: list[ProbeResult] = []
    best: tuple[float, Backend] | None = None
    candidates = _candidates(module, input_shape, device, precision, batch_size, cache_dir, compile)
    for name, build in step_bar(candidates, desc="backend probe", unit="backend"):
        try:
            backend = build()
            if backend.layout not in layouts:
                results.append(ProbeResult(backend.name, None, None, f"takes {backend.layout} batches"))
                continue
            batch = x.permute(0, 2, 3, 1).contiguous() if backend.layout == "nhwc" else x
            batch = batch.to(backend.input_dtype)
            diff = float((backend(batch) - reference).abs().max())
            if not diff <= tol:  # NaN disagrees too
                results.append(_skipped(backend.name, f"disagrees with torch eager (tol {tol:.2g})", diff))
                continue
            seconds = _time(backend, batch)
        except Exception as err:  # a candidate that cannot run here is skipped, with its reason
            results.append(_skipped(name, f"{type(err).__name__}: {err}"))
            continue
        results.append(ProbeResult(backend.name, 1e3 * seconds / probe_batch, diff))
        if best is None or seconds < best[0]:
            best = (seconds, backend)
    if best is None:
        raise ValueError(f"no backend could run this model: {results}")
    _log_choice(best[1].name, results, time.perf_counter() - started, input_shape)
    return best[1], results


def _log_choice(chosen: str, results: list[ProbeResult], seconds: float, input_shape: tuple[int, ...]) -> None:
    """One INFO line per probe: the backend chosen, the probe's duration, every candidate's time."""
    table = ", ".join(f"{r.name} {r.ms_per_image:.3g} ms" if r.ms_per_image else f"{r.name} skipped" for r in results)
    log.info("backend probe for input %s: chose %s in %.1f s (per image: %s)", input_shape, chosen, seconds, table)


class ProbingBackend(Backend):
    """``backend="auto"`` for a model without a fixed input size: torch eager, and for each
    input shape a probe (:func:`select_backend`, NCHW candidates) once the eager time spent
    on that shape reaches ``probe_after`` seconds, about what a probe costs (so the probe is
    skipped for tiny work, and never costs more than the work it could speed up); from then
    on that shape runs on the probe's choice. Probes are cached per shape.

    Args:
        module: ``N x C x H x W`` -> outputs.
        device, precision, compile, cache_dir: as :meth:`Scorer.from_torch`.
        probe_after: eager seconds on one shape before it is probed.

    Attributes:
        probes: input shape ``(C, H, W)`` -> the probe table.
    """

    layout, input_dtype = "nchw", torch.float32
    cpu_max_batch = TorchBackend.cpu_max_batch

    def __init__(
        self,
        module: nn.Module,
        device: torch.device,
        precision: str = "fp32",
        compile: bool = False,
        cache_dir: str | Path | None = None,
        probe_after: float = 5.0,
    ):
        self.eager = TorchBackend(module, device, precision, compile=compile)
        self.device, self.module = self.eager.device, module
        self.precision, self.compile, self.cache_dir, self.probe_after = precision, compile, cache_dir, probe_after
        self.chosen: dict[tuple[int, ...], Backend] = {}
        self.probes: dict[tuple[int, ...], list[ProbeResult]] = {}
        self._spent: dict[tuple[int, ...], float] = {}

    @property
    def name(self) -> str:
        probed = sorted({b.name for b in self.chosen.values()})
        return f"auto({self.eager.name}{''.join(', ' + n for n in probed)})"

    def speedup(self, shape: tuple[int, ...]) -> float:
        """Speed of the backend used for ``shape`` (C x H x W) over torch eager (1 until probed)."""
        if shape not in self.chosen:
            return 1.0
        times = {p.name: p.ms_per_image for p in self.probes[shape] if p.ms_per_image}
        return times.get("torch-fp32", 1.0) / times.get(self.chosen[shape].name, 1.0)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        shape = tuple(int(d) for d in batch.shape[1:])
        if shape in self.chosen:
            return self.chosen[shape](batch)
        start = time.perf_counter()
        out = self.eager(batch)
        self._spent[shape] = self._spent.get(shape, 0.0) + time.perf_counter() - start
        if self._spent[shape] >= self.probe_after:
            self._probe(shape, len(batch))
        return out

    def _probe(self, shape: tuple[int, ...], batch_size: int) -> None:
        self.chosen[shape], self.probes[shape] = select_backend(
            self.module, shape, self.device, self.precision, batch_size, self.cache_dir, self.compile, ("nchw",)
        )  # select_backend logs the choice and its time, once
