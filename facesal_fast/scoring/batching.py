"""Batch sizing and the produce/consume pipeline that overlaps occlusion with inference.

On the CPU a producer thread builds batch i+1 (``occlude_batch`` releases the GIL) while
the model runs batch i; on CUDA batch i+1 is written on a side stream while batch i runs
on torch's current stream. Scores stay on the device until the end (one copy).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

__all__ = ["auto_batch_size", "run_pipelined"]

_CPU_ELEMENTS, _CPU_MAX = 1 << 21, 256  # ~8 MiB of float32 input per CPU batch
_CUDA_ELEMENTS, _CUDA_MAX = 1 << 26, 1024  # ~256 MiB per GPU batch


def auto_batch_size(
    input_shape: tuple[int, int, int], device: torch.device, total: int | None = None, cpu_max: int = _CPU_MAX
) -> int:
    """Power-of-two batch size for ``C x H x W`` inputs on ``device``, capped by ``total``
    (and on the CPU by ``cpu_max``, see ``Backend.cpu_max_batch``)."""
    elements, cap = (_CUDA_ELEMENTS, _CUDA_MAX) if device.type == "cuda" else (_CPU_ELEMENTS, cpu_max)
    per_image = max(1, int(np.prod(input_shape)))
    size = 1 << max(0, int(np.floor(np.log2(max(1, elements // per_image)))))
    size = min(size, cap)
    return max(1, min(size, total)) if total else size


def run_pipelined(
    produce: Callable[[int, int], torch.Tensor],
    consume: Callable[[torch.Tensor], torch.Tensor],
    total: int,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """``concat(consume(produce(lo, hi)) for consecutive [lo, hi) of batch_size)`` as float32 numpy.

    Args:
        produce: builds the model-ready batch for items ``lo..hi-1``.
        consume: batch -> ``hi - lo`` scores (a torch tensor on ``device``).
        total: number of items; batch_size: items per batch (> 0).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    bounds = [(lo, min(lo + batch_size, total)) for lo in range(0, total, batch_size)]
    if not bounds:
        return np.zeros(0, dtype=np.float32)
    if device.type == "cuda":
        return _run_cuda(produce, consume, bounds, device)
    scores = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(produce, *bounds[0])
        for nxt in bounds[1:] + [None]:
            batch = pending.result()
            if nxt is not None:
                pending = pool.submit(produce, *nxt)
            scores.append(consume(batch).float().reshape(-1))
    return torch.cat(scores).cpu().numpy()


def _run_cuda(produce, consume, bounds, device) -> np.ndarray:
    main, side = torch.cuda.current_stream(device), torch.cuda.Stream(device)
    side.wait_stream(main)  # inputs written on the main stream must be ready for the producer

    def make(lo: int, hi: int) -> tuple[torch.Tensor, torch.cuda.Event]:
        with torch.cuda.stream(side):
            batch = produce(lo, hi)
            event = torch.cuda.Event()
            event.record(side)
        return batch, event

    scores = []
    batch, ready = make(*bounds[0])
    for nxt in bounds[1:] + [None]:
        main.wait_event(ready)
        batch.record_stream(main)  # allocated on the side stream, used on the main one
        current = batch
        if nxt is not None:
            batch, ready = make(*nxt)
        scores.append(consume(current).float().reshape(-1))
    return torch.cat(scores).cpu().numpy()
