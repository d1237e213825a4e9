"""Device dispatch behind the ops: the table of native ops, each run on the best kernel.

Each op's module (``occlude.py``, ``splat.py``) registers a :class:`NativeOp` under the op's
name with :func:`register`: its OpenMP kernel and its CUDA kernel (both calling ``_C`` by that
name through :mod:`facesal_fast.ops._native`), a plain torch implementation that runs on any
device, and its self-check case. All three implementations take the same checked call record
and output buffers, ``(call, *outputs, **options)``; calling the :class:`NativeOp` runs the one
for the device of the first output: the OpenMP kernel on the CPU, the CUDA kernel once it passed
its self-check, else the torch implementation. Adding an op adds its module; nothing here changes.

Guard at run time: the first time a process uses a CUDA kernel on a device it runs the op's
small deterministic self-check (odd sizes, windows on the borders and off the image, float16
and float64 outputs, per-map weights) against the CPU kernel. A mismatch, or a kernel that
cannot launch (e.g. a GPU architecture the extension was not compiled for), disables that
CUDA kernel for the rest of the process with one ``RuntimeWarning`` naming the op and the
device; the op then runs the torch implementation on that device (so CUDA tensors work,
with that warning, even where the extension was built without nvcc). ``FACESAL_NO_SELFCHECK=1``
skips the check (benchmarks), trusting the CUDA kernels.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["GUARDED", "OPS", "SELFCHECK_ENV", "NativeOp", "max_diff", "native_ok", "register"]

#: Environment variable that turns the CUDA self-check off ("1").
SELFCHECK_ENV = "FACESAL_NO_SELFCHECK"

Kernel = Callable[..., None]


@dataclass(frozen=True)
class NativeOp:
    """One op's implementations, each ``(call, *outputs, **options) -> None`` writing into the
    output buffers, and its self-check.

    Attributes:
        name: the op's name in every layer (``"splat_add"``: ``_C.splat_add_cpu``, ...).
        cpu: the OpenMP kernel (CPU outputs).
        cuda: the CUDA kernel (outputs on one CUDA device, torch's current stream).
        torch_impl: the torch implementation (any device, the same arithmetic).
        selfcheck: ``(kernel, device) -> float``: the largest difference between ``kernel`` on
            ``device`` and :attr:`cpu` over a small deterministic case, in units of the
            tolerance (:func:`max_diff`; above 1 is a mismatch).
    """

    name: str
    cpu: Kernel
    cuda: Kernel
    torch_impl: Kernel
    selfcheck: Callable[[Kernel, torch.device], float]

    def __call__(self, call: Any, *outputs: torch.Tensor, **options: Any) -> None:
        """Write the op's result for the checked record ``call`` into ``outputs`` with the best
        implementation for the device of ``outputs[0]`` (``options`` by keyword)."""
        device = outputs[0].device
        native = GUARDED.get(device.type, {}).get(self.name)
        if native is None:
            run = self.cpu if device.type == "cpu" else self.torch_impl
        else:
            run = native if native_ok(self.name, device) else self.torch_impl
        run(call, *outputs, **options)


#: The registered ops, by name.
OPS: dict[str, NativeOp] = {}
#: Native kernels guarded by the self-check, per device type and op.
GUARDED: dict[str, dict[str, Kernel]] = {"cuda": {}}
_verdicts: dict[tuple[str, str], bool] = {}
_lock = threading.Lock()


def register(op: NativeOp) -> NativeOp:
    """Enter ``op`` in :data:`OPS` and its CUDA kernel in :data:`GUARDED`; returns ``op``."""
    OPS[op.name] = op
    GUARDED["cuda"][op.name] = op.cuda
    return op


def max_diff(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> float:
    """Max |got - want| in units of the tolerance (> 1: mismatch; float16: ~1 ulp allowed;
    inf when the shapes differ)."""
    if got.shape != want.shape:
        return float("inf")
    got, want = got.detach().cpu().double(), want.double()
    tol = 1e-3 * (1 + want.abs()) if dtype == torch.float16 else 1e-5 * (1 + want.abs())
    return float(((got - want).abs() / tol).max()) if want.numel() else 0.0


def _device_key(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def _selfcheck(op: str, device: torch.device) -> bool:
    """Run ``op``'s self-check on ``device``; warn once and return False on a mismatch."""
    try:
        worst = OPS[op].selfcheck(GUARDED[device.type][op], device)
        problem = None if worst <= 1.0 else f"it disagrees with the CPU kernel ({worst:.3g} x the tolerance)"
    except Exception as err:  # a kernel that cannot run here (e.g. no image for this GPU)
        problem = f"it failed: {type(err).__name__}: {err}"
    if problem:
        warnings.warn(
            f"facesal_fast: the native {device.type.upper()} {op} kernel is disabled on {_device_key(device)} for this "
            f"process: {problem}; {op} runs the torch implementation on that device instead",
            RuntimeWarning,
            stacklevel=5,
        )
    return problem is None


def native_ok(op: str, device: torch.device) -> bool:
    """Whether ``op``'s native kernel for ``device`` passed its self-check (run once per process
    and device; always True with ``FACESAL_NO_SELFCHECK=1``)."""
    if os.environ.get(SELFCHECK_ENV, "") == "1":
        return True
    key = (op, _device_key(device))
    with _lock:
        if key not in _verdicts:
            _verdicts[key] = _selfcheck(op, device)
        return _verdicts[key]
