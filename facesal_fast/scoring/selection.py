"""Backend construction by name, and ``backend="auto"``: a short timed probe, once per machine.

The probe builds every candidate that can run here, checks that it agrees with torch
eager on a random batch, times it, and keeps the fastest correct one. A candidate that
cannot be probed for, fails to build or run, or disagrees (NaN included) is skipped, never
fatal: its reason is logged (logger ``facesal_fast.scoring``, WARNING) and kept in the
:class:`ProbeResult` rows (``scorer.probe``, or ``scorer.backend.probes`` per shape).

A probe is stored on disk (:mod:`~facesal_fast.scoring.probe_cache`) and reused by later
loads of the same model on the same machine; with nothing stored, ``backend="auto"`` runs
torch eager and probes only once the work has cost as much as the probe would
(:class:`ProbingBackend`). Each decision is one INFO line (logger ``facesal_fast.scoring``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import astuple, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from facesal_fast.scoring.backends import Backend, OnnxBackend, TorchBackend, export_onnx
from facesal_fast.scoring.probe_cache import CachedProbe, load_probe, probe_key, store_probe
from facesal_fast.scoring.progress import step_bar
from facesal_fast.scoring.tensorrt_backend import TensorRTBackend, tensorrt_available

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "BACKENDS",
    "PROBE_BATCH",
    "ProbeResult",
    "ProbingBackend",
    "auto_backend",
    "named_backend",
    "onnx_file_backend",
    "select_backend",
    "torch_backend",
]

log = logging.getLogger("facesal_fast.scoring")

BACKENDS = ("auto", "torch", "onnx", "tensorrt")
#: Images per timed batch of a CPU probe (16 ranked the candidates as 32 did, in half the time).
PROBE_BATCH = 16


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
    """Best seconds per call over a few runs (the caller has run ``backend`` once: the warm-up)."""
    sync = torch.cuda.synchronize if backend.device.type == "cuda" else (lambda: None)
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
    elif precision == "fp32":  # before channels_last: the usual winner on CPUs, first when time is short
        found.insert(1, ("onnx-cpu", lambda: OnnxBackend(onnx_path(), "cpu")))
    return found


def _agreement(backend: Backend, x: torch.Tensor, reference: torch.Tensor) -> float:
    """max |outputs - reference| of ``backend`` on ``x`` (``K x C x H x W``, given in its layout)."""
    batch = x.permute(0, 2, 3, 1).contiguous() if backend.layout == "nhwc" else x
    return float((backend(batch.to(backend.input_dtype)) - reference).abs().max())


def _tolerance(reference: torch.Tensor, precision: str) -> float:
    return (1e-3 if precision == "fp32" else 5e-2) * (1.0 + float(reference.abs().max()))


def _random_batch(size: int, input_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.randn((size, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)


def select_backend(
    module: nn.Module,
    input_shape: tuple[int, int, int],
    device: torch.device,
    precision: str,
    batch_size: int,
    cache_dir: str | Path | None = None,
    compile: bool = False,
    budget: float | None = None,
) -> tuple[Backend, list[ProbeResult]]:
    """The fastest backend for ``module`` that agrees with torch eager, and the probe table.

    A probe of the same model, shape and machine stored on disk
    (:mod:`~facesal_fast.scoring.probe_cache`) is used instead of probing, once its choice is
    built and agrees with torch eager's stored outputs on two images; a complete probe is stored.
    Agreement: max |diff| of outputs <= 1e-3 + 1e-3 * max |reference| (fp32), or 5e-2
    relative for fp16/bf16 runs. ``budget``: seconds the probe may take (None: no limit);
    candidates left when it is spent are skipped, and such a partial probe is not stored.
    """
    key = probe_key(module, input_shape, device, precision, compile)
    found = _from_cache(key, module, input_shape, device, precision, batch_size, cache_dir, compile)
    if found is not None:
        return found
    started = time.perf_counter()
    probe_batch = min(batch_size, PROBE_BATCH if device.type == "cpu" else batch_size)
    x = _random_batch(probe_batch, input_shape, device)
    reference = TorchBackend(module, device, "fp32")(x)
    tol = _tolerance(reference, precision)
    results: list[ProbeResult] = []
    best: tuple[float, str, Backend] | None = None
    candidates = _candidates(module, input_shape, device, precision, batch_size, cache_dir, compile)
    for name, build in step_bar(candidates, desc="backend probe", unit="backend"):
        if best is not None and budget is not None and time.perf_counter() - started >= budget:
            results.append(ProbeResult(name, None, None, f"not probed: the probe's budget of {budget:.1f} s was spent"))
            continue
        try:
            backend = build()
            diff = _agreement(backend, x, reference)  # also the warm-up run of the timing
            if not diff <= tol:  # NaN disagrees too
                results.append(_skipped(backend.name, f"disagrees with torch eager (tol {tol:.2g})", diff))
                continue
            batch = x.permute(0, 2, 3, 1).contiguous() if backend.layout == "nhwc" else x
            seconds = _time(backend, batch.to(backend.input_dtype))
        except Exception as err:  # a candidate that cannot run here is skipped, with its reason
            results.append(_skipped(name, f"{type(err).__name__}: {err}"))
            continue
        results.append(ProbeResult(backend.name, 1e3 * seconds / probe_batch, diff))
        if best is None or seconds < best[0]:
            best = (seconds, name, backend)
    if best is None:
        raise ValueError(f"no backend could run this model: {results}")
    _log_choice(best[2].name, results, time.perf_counter() - started, input_shape)
    if not any(r.note.startswith("not probed") for r in results):
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        store_probe(key, CachedProbe(best[1], [astuple(r) for r in results], stamp, reference[:2].tolist()))
    return best[2], results


def _from_cache(
    key: str, module, input_shape, device, precision, batch_size, cache_dir, compile
) -> tuple[Backend, list[ProbeResult]] | None:
    """The stored probe's choice, built and checked against torch eager's stored outputs on
    the probe's first two images, with its table; None when nothing is stored or the choice
    no longer runs or agrees (logged)."""
    entry = load_probe(key)
    if entry is None:
        return None
    builds = dict(_candidates(module, input_shape, device, precision, batch_size, cache_dir, compile))
    try:
        backend = builds[entry.chosen]()
        x = _random_batch(2, input_shape, device)  # the probe's first two images (same seed)
        reference = torch.tensor(entry.reference, dtype=torch.float32, device=device)
        diff = _agreement(backend, x, reference)
        if not diff <= _tolerance(reference, precision):
            raise ValueError(f"disagrees with torch eager (max |diff| {diff:.3g})")
    except Exception as err:  # whatever went wrong, a fresh probe decides
        log.warning(
            "backend=auto: the stored probe's choice %s fails (%s: %s); probing again",
            entry.chosen,
            type(err).__name__,
            err,
        )
        return None
    rows = [ProbeResult(*row) for row in entry.rows]
    times = {r.name: r.ms_per_image for r in rows if r.ms_per_image}
    ratio = times.get("torch-fp32", 0.0) / times.get(backend.name, float("inf"))
    log.info(
        "backend for input %s: %s, the fastest in the probe stored on %s (%.1fx torch eager; no probe run; "
        "backend= overrides)",
        tuple(input_shape),
        backend.name,
        entry.probed_at,
        ratio,
    )
    return backend, rows


def _log_choice(chosen: str, results: list[ProbeResult], seconds: float, input_shape: tuple[int, ...]) -> None:
    """One INFO line per probe: the backend chosen, the probe's duration, every candidate's time."""
    table = ", ".join(f"{r.name} {r.ms_per_image:.3g} ms" if r.ms_per_image else f"{r.name} skipped" for r in results)
    log.info("backend probe for input %s: chose %s in %.1f s (per image: %s)", input_shape, chosen, seconds, table)


class _AsNchw(Backend):
    """A backend taking ``nhwc`` batches, fed ``nchw`` ones (one copy per batch): what a
    probe chose after the scorer had declared its layout."""

    layout, input_dtype = "nchw", torch.float32

    def __init__(self, backend: Backend):
        self.backend, self.device, self.name = backend, backend.device, backend.name
        self.cpu_max_batch = backend.cpu_max_batch

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.backend(batch.permute(0, 2, 3, 1).contiguous().to(self.backend.input_dtype))


def _nchw(backend: Backend) -> Backend:
    return _AsNchw(backend) if backend.layout != "nchw" or backend.input_dtype != torch.float32 else backend


#: Runs of each candidate in a probe (agreement check as warm-up, 2 or 3 timed runs), for
#: :class:`ProbingBackend`'s estimate of what a probe costs.
_PROBE_RUNS = 4


class ProbingBackend(Backend):
    """``backend="auto"`` before a probe. Per input shape: the probe stored on disk for this
    model and machine, at once; or else torch eager until the eager time spent on that shape
    reaches what a probe would cost (``probe_after``; default: estimated from the eager time
    per image as candidates x 4 timed batches of :data:`PROBE_BATCH` images, plus 1 s of
    building), then a probe (:func:`select_backend`) whose budget is the eager time already
    spent, so that probing never takes longer than the work before it; that shape then runs
    on the probe's choice. Tiny work is never probed.

    Args:
        module: ``N x C x H x W`` -> outputs.
        device, precision, compile, cache_dir: as :meth:`Scorer.from_torch`.
        probe_after: eager seconds on one shape before it is probed (None: estimated).

    Attributes:
        probes: input shape ``(C, H, W)`` -> the probe table.
        chosen: input shape -> the backend it runs on (absent: torch eager, not yet probed).
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
        probe_after: float | None = None,
    ):
        self.eager = TorchBackend(module, device, precision, compile=compile)
        self.device, self.module = self.eager.device, module
        self.precision, self.compile, self.cache_dir, self.probe_after = precision, compile, cache_dir, probe_after
        self.chosen: dict[tuple[int, ...], Backend] = {}
        self.probes: dict[tuple[int, ...], list[ProbeResult]] = {}
        self._spent: dict[tuple[int, ...], list[float]] = {}  # shape -> [eager seconds, images]

    @property
    def name(self) -> str:
        probed = sorted({b.name for b in self.chosen.values()})
        return f"auto({self.eager.name}{''.join(', ' + n for n in probed)})"

    def speedup(self, shape: tuple[int, ...]) -> float | None:
        """Speed of the backend chosen for ``shape`` (C x H x W) over torch eager; None while
        the shape runs on torch eager, not yet probed."""
        if shape not in self.chosen:
            return None
        times = {p.name: p.ms_per_image for p in self.probes[shape] if p.ms_per_image}
        return times.get("torch-fp32", 1.0) / times.get(self.chosen[shape].name, 1.0)

    def probe_cost(self, shape: tuple[int, ...]) -> float:
        """Seconds of eager work on ``shape`` after which it is probed (see the class doc)."""
        if self.probe_after is not None:
            return self.probe_after
        seconds, images = self._spent[shape]
        candidates = len(_candidates(self.module, shape, self.device, self.precision, 1, self.cache_dir, self.compile))
        return candidates * _PROBE_RUNS * PROBE_BATCH * seconds / max(images, 1) + 1.0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        shape = tuple(int(d) for d in batch.shape[1:])
        if shape not in self._spent and shape not in self.chosen:
            self._first_batch(shape, len(batch))
        if shape in self.chosen:
            return self.chosen[shape](batch)
        start = time.perf_counter()
        out = self.eager(batch)
        spent = self._spent[shape]
        spent[0], spent[1] = spent[0] + time.perf_counter() - start, spent[1] + len(batch)
        if spent[0] >= self.probe_cost(shape):
            self._probe(shape, len(batch), budget=spent[0])
        return out

    def _first_batch(self, shape: tuple[int, ...], batch_size: int) -> None:
        """A stored probe for ``shape``, or torch eager until the work pays for one (said once)."""
        key = probe_key(self.module, shape, self.device, self.precision, self.compile)
        found = _from_cache(
            key, self.module, shape, self.device, self.precision, batch_size, self.cache_dir, self.compile
        )
        if found is not None:
            self.chosen[shape], self.probes[shape] = _nchw(found[0]), found[1]
            return
        self._spent[shape] = [0.0, 0]
        log.info(
            "backend for input %s: torch eager, no stored probe; probed once the work on it has cost what a "
            "probe costs (backend= overrides)",
            shape,
        )

    def _probe(self, shape: tuple[int, ...], batch_size: int, budget: float) -> None:
        chosen, self.probes[shape] = select_backend(
            self.module, shape, self.device, self.precision, batch_size, self.cache_dir, self.compile, budget
        )  # select_backend logs the choice and its time, once
        self.chosen[shape] = _nchw(chosen)


def auto_backend(
    module: nn.Module,
    input_shape: tuple[int, int, int] | None,
    device: torch.device,
    precision: str,
    batch_size: int | None,
    cache_dir: str | Path | None = None,
    compile: bool = False,
) -> tuple[Backend, list[ProbeResult]]:
    """``backend="auto"``: for a fixed ``input_shape`` (``C x H x W``) with a probe stored on
    disk, its choice and table (no probe run); otherwise a :class:`ProbingBackend` and no table."""
    if input_shape is not None:
        key = probe_key(module, input_shape, device, precision, compile)
        found = _from_cache(key, module, input_shape, device, precision, batch_size or 1, cache_dir, compile)
        if found is not None:
            return found
    return ProbingBackend(module, device, precision, compile, cache_dir), []


def named_backend(
    name: str,
    module: nn.Module,
    input_shape: tuple[int, int, int] | None,
    device: torch.device,
    precision: str,
    batch_size: int | None,
    channels_last: bool | None = None,
    cuda_graphs: bool | None = None,
    compile: bool = False,
    cache_dir: str | Path | None = None,
) -> tuple[Backend, list[ProbeResult]]:
    """``Scorer.from_torch``'s backend ``name`` (:data:`BACKENDS`, checked by the caller) for
    ``module`` and the probe table of ``"auto"`` (:func:`auto_backend`; empty otherwise).
    ``"onnx"`` and ``"tensorrt"`` export ``module`` at ``input_shape`` (``C x H x W``) into
    ``cache_dir``; TensorRT builds its engine for ``batch_size``."""
    if name == "auto":
        return auto_backend(module, input_shape, device, precision, batch_size, cache_dir, compile)
    if name == "torch":
        return torch_backend(module, device, precision, channels_last, cuda_graphs, compile), []
    path = export_onnx(module, input_shape, cache_dir)
    if name == "onnx":
        return OnnxBackend(path, device), []
    return TensorRTBackend(path, input_shape, batch_size, device, fp16=precision != "fp32"), []


def onnx_file_backend(
    path: str | Path, name: str, layout: str, input_shape: tuple[int, int, int], batch_size: int, device: torch.device
) -> Backend:
    """``Scorer.from_onnx``'s backend ``name`` (``"onnx"`` or ``"tensorrt"``, NCHW only, an engine
    for ``batch_size`` inputs of ``input_shape`` ``C x H x W``) for the ONNX file ``path``."""
    if name == "onnx":
        return OnnxBackend(path, device, layout)
    if layout != "nchw":
        raise ValueError("the TensorRT backend takes NCHW models")
    return TensorRTBackend(path, input_shape, batch_size, device)
