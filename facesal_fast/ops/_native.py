"""The native boundary: calls into ``facesal_fast._C`` by the op's name.

One name per op through every layer: :func:`facesal_fast.ops.splat_add` -> its registered
:class:`~facesal_fast.ops._dispatch.NativeOp` -> :func:`call_cpu` / :func:`call_cuda` here with
``"splat_add"`` -> ``_C.splat_add_cpu`` / ``_C.splat_add_cuda`` (bound in ``csrc/splat.cpp``)
-> ``facesal::splat_add_cpu`` / ``facesal::splat_add_cuda``. Arrays cross as raw addresses
(``data_ptr()``) and every parameter by keyword: the op's module builds its ``_C.<Name>Params``
record (``_C.SplatParams``) with keywords named after the fields of the C++ struct
(``csrc/splat.h``). Nothing here names an op.
"""

from __future__ import annotations

from typing import Any

import torch

from facesal_fast import _C

__all__ = ["call_cpu", "call_cuda", "has_cuda"]


def has_cuda() -> bool:
    """True when the extension was built with CUDA kernels and a CUDA device is usable."""
    return bool(_C.built_with_cuda()) and _C.cuda_device_count() > 0 and torch.cuda.is_available()


def call_cpu(op: str, params: Any, **options: int) -> None:
    """``_C.<op>_cpu(params=params, **options)``: the OpenMP kernel writing into CPU outputs."""
    getattr(_C, f"{op}_cpu")(params=params, **options)


def call_cuda(op: str, params: Any, device: torch.device, **options: int) -> None:
    """``_C.<op>_cuda(params=params, stream=..., **options)``: the CUDA kernel on ``device``
    and torch's current stream there."""
    if not _C.built_with_cuda():
        raise RuntimeError("facesal_fast was built without CUDA kernels (no nvcc at install time)")
    with torch.cuda.device(device):
        getattr(_C, f"{op}_cuda")(params=params, stream=torch.cuda.current_stream(device).cuda_stream, **options)
