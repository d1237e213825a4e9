"""Timing and the printed table shared by the per-op kernel benchmarks
(``benchmarks/occlude_batch.py``, ``benchmarks/splat_add.py``)."""

from __future__ import annotations

import time
from typing import Callable

import torch

#: One row: (case, plain torch seconds, facesal_fast seconds).
Row = tuple[str, float, float]


def best_of(fn: Callable[[], object], repeats: int = 5) -> float:
    """Fastest of ``repeats`` timed calls of ``fn`` (seconds), after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def print_rows(rows: list[Row]) -> None:
    """The table the benchmark scripts print: both times in ms and the speed-up."""
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'kernel':40s} {'torch ms':>10s} {'facesal ms':>11s} {'speed-up':>9s}")
    for name, t_torch, t_native in rows:
        print(f"{name:40s} {t_torch * 1e3:10.2f} {t_native * 1e3:11.2f} {t_torch / t_native:8.1f}x")
