"""Argument checks shared by the ops (each raises ``ValueError`` naming the argument).

Arrays arrive as numpy arrays, torch tensors (CPU or CUDA) or nested sequences and leave as
torch tensors (:func:`to_tensor`, :func:`float32`); :func:`restore` turns a result back into
the kind the caller passed. Sizes are bounded by :data:`MAX_SIZE` so that every index the
kernels compute fits their 32-bit ints.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence, Union

import numpy as np
import torch

from facesal_fast.core.validate import positive_int

Array = Union[np.ndarray, torch.Tensor]

#: Largest patch, image or canvas side, and number of centres, points or maps (2^29): every
#: index the kernels compute then fits their 32-bit ints.
MAX_SIZE = 2**29
#: Most CPU threads an op accepts: 4 x the machine's cores (more only oversubscribes, and a
#: huge OpenMP team overflows the stack of the thread that starts it).
MAX_THREADS = 4 * (os.cpu_count() or 1)
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT16_MAX = float(np.finfo(np.float16).max)

__all__ = [
    "Array",
    "MAX_SIZE",
    "MAX_THREADS",
    "FLOAT32_MAX",
    "FLOAT16_MAX",
    "to_tensor",
    "restore",
    "check_finite",
    "float32",
    "alloc",
    "per_channel",
    "check_no_overlap",
    "check_threads",
    "check_size",
    "check_patch",
    "positive_float",
]


def to_tensor(x: Array | Sequence[float], name: str) -> torch.Tensor:
    """``x`` as a dense CPU or CUDA tensor (numpy arrays shared, sequences as float64)."""
    if isinstance(x, torch.Tensor):
        if x.layout != torch.strided or x.device.type not in ("cpu", "cuda"):
            raise ValueError(f"{name}: expected a dense CPU or CUDA tensor, got {x.layout} on {x.device}")
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ValueError(f"{name}: expected a numeric array, got dtype {x.dtype}")
        try:
            return torch.from_numpy(np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("=")))
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name}: unsupported array dtype {x.dtype}") from err
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected an array, got {type(x).__name__}") from err


def restore(t: torch.Tensor, as_numpy: bool) -> Array:
    """``t`` as numpy when the caller passed numpy, else the tensor itself."""
    return t.numpy() if as_numpy else t


def check_finite(t: torch.Tensor, name: str) -> None:
    """``ValueError`` when a floating ``t`` holds NaN or Inf."""
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def float32(t: Array | Sequence[float], name: str, device: torch.device, shape_hint: str) -> torch.Tensor:
    """A contiguous finite float32 tensor on ``device`` (ints and float64 are converted)."""
    t = to_tensor(t, name)
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name}: expected real numbers {shape_hint}, got dtype {t.dtype}")
    check_finite(t, name)
    try:
        t = t.detach().to(device=device, dtype=torch.float32).contiguous()
    except (TypeError, RuntimeError) as err:
        raise ValueError(f"{name}: cannot convert dtype {t.dtype} to float32") from err
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has values beyond float32's range (|x| > {FLOAT32_MAX:.4g})")
    return t


def alloc(
    make: Callable[..., torch.Tensor], shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, what: str
) -> torch.Tensor:
    """``make(shape, dtype=dtype, device=device)`` (torch.empty / torch.zeros); an allocation
    that fails raises ``MemoryError`` naming ``what`` and its size."""
    try:
        return make(shape, dtype=dtype, device=device)
    except RuntimeError as err:
        nbytes = float(np.prod([float(s) for s in shape])) * torch.empty((), dtype=dtype).element_size()
        raise MemoryError(f"cannot allocate {what} of shape {shape} ({nbytes / 2**30:.3g} GiB) on {device}") from err


def per_channel(v: float | Sequence[float] | Array, C: int, name: str) -> list[float]:
    """A scalar or ``C`` finite values as 3 floats (one per channel, padded with 0)."""
    try:
        arr = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name}: expected a number or {C} numbers (one per channel), got {v!r}") from err
    if arr.size == 1:
        arr = np.repeat(arr, C)
    if arr.size != C:
        raise ValueError(f"{name}: expected a scalar or {C} values (one per channel), got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    return [float(a) for a in arr] + [0.0] * (3 - C)


def _byte_span(t: torch.Tensor) -> tuple[int, int]:
    """``[first byte, one past the last byte]`` of the memory ``t`` reads."""
    extent = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride())) + 1
    return t.data_ptr(), t.data_ptr() + extent * t.element_size()


def check_no_overlap(output: torch.Tensor, output_name: str, inputs: dict[str, torch.Tensor | None]) -> None:
    """``ValueError`` when ``output`` (written in place) shares memory with one of ``inputs``
    (name -> tensor or None): the kernel would read values it has already overwritten."""
    if not output.numel():
        return
    out_start, out_end = _byte_span(output)
    for name, t in inputs.items():
        if t is None or not t.numel() or t.device != output.device:
            continue
        start, end = _byte_span(t)
        if start < out_end and out_start < end:
            raise ValueError(f"{output_name} shares memory with {name}: pass separate buffers (it is written in place)")


def check_threads(threads: int | None) -> int:
    """``threads`` as the kernels take it (0 = OpenMP's default), at most :data:`MAX_THREADS`."""
    if threads is None:
        return 0
    threads = positive_int(threads, "threads", " or None")
    if threads > MAX_THREADS:
        raise ValueError(f"threads must be at most {MAX_THREADS} (4 x the {os.cpu_count()} CPU cores), got {threads}")
    return threads


def check_size(value: int, name: str) -> int:
    """A size the kernels can index (<= :data:`MAX_SIZE`), else ``ValueError`` naming it."""
    if value > MAX_SIZE:
        raise ValueError(f"{name} must be at most {MAX_SIZE} (2**29), got {value}")
    return int(value)


def check_patch(patch: int) -> int:
    """A window side: a positive integer of at most :data:`MAX_SIZE`."""
    return check_size(positive_int(patch, "patch"), "patch")


def positive_float(value: float, name: str) -> float:
    """``value`` as a float if it is a finite positive number, else ``ValueError`` naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        number = float("nan")
    if isinstance(value, (bool, str)) or not (np.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return number
