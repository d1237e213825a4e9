"""End-to-end audit throughput: ``Audit`` (the engine of ``facesal audit``) over bundled photos.

:func:`bench_audit` runs :func:`main` in a fresh process (``python -m
facesal_fast.benchmark.audit_throughput``), so that start-up and peak memory are the
audit's own: steady-state photos/s and occluded images/s (alignment, occlusion, inference,
splatting and result files included; start-up, i.e. imports and the first photo, reported
apart), peak RSS, and the ratio to the backend's bare forward throughput at the same batch
size: as many images through the model alone, each request's windows in batches of that
size, run after each round of photos (interleaved, so that drifts of the machine's speed hit
both sides alike).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from facesal_fast import models
from facesal_fast.audit.runner import Audit
from facesal_fast.benchmark.cases import FACES
from facesal_fast.scoring import batching

__all__ = ["bench_audit", "main"]


def _counting_occlusions(sizes: list[int]) -> Callable[[], None]:
    """Record the window count of every request the audit scores into ``sizes``
    (instrumentation only: ``Audit`` scores its rounds through ``batching.score_windows``,
    which is wrapped, not replaced, so shared batches stay on); returns the function that
    undoes it."""
    original = batching.score_windows

    def counted(requests: Any) -> Any:
        sizes.extend(len(r.centers) for r in requests)
        return original(requests)

    batching.score_windows = counted
    return lambda: setattr(batching, "score_windows", original)


def _bare_forward(scorer: Any) -> tuple[int, Callable[[list[int]], float]]:
    """(the audit's batch size, seconds of a list of window counts through the model alone
    in batches of that size)."""
    shape = (scorer.channels, *scorer.input_size)
    size = scorer.batch_size_for(shape)
    batch = torch.randn(size, *shape)

    def seconds(counts: list[int]) -> float:
        start = time.perf_counter()
        for count in counts:
            for lo in range(0, count, size):
                scorer.forward(batch[: min(size, count - lo)])
        return time.perf_counter() - start

    return size, seconds


def _peak_rss_kib() -> int:
    """This process's peak resident memory (``VmHWM``; ``ru_maxrss`` would report the parent's)."""
    with open("/proc/self/status") as status:
        peak = [line for line in status if line.startswith("VmHWM")]
    return int(peak[0].split()[1]) if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(folder: Path, out: Path, model: str, backend: str) -> dict:
    """The measurement of :func:`bench_audit`, in this process."""
    start = time.perf_counter()
    scorer = models.load(model, backend=backend)
    audit = Audit(scorer, out, settings={"model": model})
    photos = sorted(folder.iterdir())
    audit.run(photos[:1], progress=False)  # start-up: imports, MediaPipe graph, first batch
    startup = time.perf_counter() - start
    sizes: list[int] = []
    undo = _counting_occlusions(sizes)
    batch_size, bare = _bare_forward(scorer)
    seconds = bare_seconds = 0.0
    done, timed, start = 0, 0, time.perf_counter()
    for item in audit.feed(photos[1:], progress=False):  # interleaved with the bare runs, round by round
        seconds += time.perf_counter() - start
        done += item.status == "done"
        bare_seconds += bare(sizes[timed:])  # the windows scored since the last item (a round's, once)
        timed = len(sizes)
        start = time.perf_counter()
    undo()
    audit.close()
    passes = sum(sizes)
    return dict(
        backend=scorer.backend.name,
        photos=done,
        seconds=seconds,
        startup_seconds=startup,
        images_per_s=done / seconds,
        peak_rss_mib=_peak_rss_kib() / 1024,
        batch_size=batch_size,
        occluded_images_per_s=passes / seconds,
        bare_forward_images_per_s=passes / bare_seconds,
        ratio=bare_seconds / seconds,
    )


def bench_audit(model: str, photos: int, backend: str) -> dict:
    """Audit throughput of ``model`` over ``photos`` bundled photos (plus one for start-up)
    in a fresh process at this process's torch thread count (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for path in sorted(FACES.glob("img*.jpg"))[: photos + 1]:
            shutil.copy(path, folder / path.name)
        command = [sys.executable, "-m", __name__, str(folder), str(Path(tmp) / "run"), model, backend]
        out = subprocess.run(
            [*command, "--threads", str(torch.get_num_threads())], capture_output=True, text=True, check=True
        ).stdout
    return dict(model=model, **json.loads(out.split("RESULT", 1)[1]))


def main(argv: list[str] | None = None) -> int:
    """``python -m facesal_fast.benchmark.audit_throughput FOLDER OUT MODEL BACKEND``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="photos (the first one is the start-up photo)")
    parser.add_argument("out", type=Path, help="run folder (created)")
    parser.add_argument("model", help="bundled model name")
    parser.add_argument("backend", help="backend name, e.g. auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print("RESULT", json.dumps(measure(args.folder, args.out, args.model, args.backend)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
