"""What ``backend="auto"`` spends on probing (issue 29 item 3), before and after probes were
stored on disk and deferred until the work pays for them.

    python benchmarks/probe_cost.py              # all three parts
    python benchmarks/probe_cost.py --part load  # one of: load, cis, tasks

* ``load``: per bundled model, the probe of the code before (``select_backend`` of commit
  51fa7eb, batch 32, run at every load) against the new one (cold: a full probe, stored; warm:
  the stored probe read back, its choice built and checked).
* ``cis``: ``fs.cis`` of one demo photo with a freshly loaded ``gender`` model and no stored
  probe, at the default settings and at a coarse grid: seconds probing against seconds
  scoring (the target: probing never longer than scoring).
* ``tasks``: ``facesal tasks`` on 3 demo photos twice with one new cache folder, each run in
  its own process: seconds probing per run (the target: < 5 s in the second).

Probing = time inside ``select_backend`` and the stored-probe check (``_from_cache``),
measured by wrapping them. Each part runs in a fresh cache folder (``FACESAL_CACHE_DIR``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "facesal_fast" / "data" / "demo_faces"
OLD_COMMIT = "51fa7eb"  # the last commit before probes were stored
MODELS = ("gender", "expression-fer", "gender-dlib", "dlib-resnet")


def _probe_timer() -> list[float]:
    """Wrap the probe entry points of ``facesal_fast.scoring.selection``; returns the list the
    seconds spent in them are appended to."""
    from facesal_fast.scoring import selection

    spent: list[float] = []
    depth = [0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            depth[0] += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:  # select_backend calls _from_cache: count the outer call only
                    spent.append(time.perf_counter() - start)

        return wrapper

    selection.select_backend = timed(selection.select_backend)
    selection._from_cache = timed(selection._from_cache)
    return spent


def _old_select_backend():
    """``select_backend`` as it was at :data:`OLD_COMMIT` (imports the current package's backends)."""
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:facesal_fast/scoring/selection.py"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_selection.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_selection", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_selection"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.select_backend


def part_load() -> None:
    import torch

    from facesal_fast import models
    from facesal_fast.scoring.selection import select_backend

    old = _old_select_backend()
    print(f"{'model':16s} {'old probe s':>12s} {'new cold s':>11s} {'new warm s':>11s}  chosen (old / new)")
    for name in MODELS:
        scorer = models.load(name, backend="torch")
        module, shape = scorer.module, (scorer.spec.channels, *scorer.spec.input_size)
        cpu = torch.device("cpu")
        start = time.perf_counter()
        before, _ = old(module, shape, cpu, "fp32", 64)
        t_old = time.perf_counter() - start
        start = time.perf_counter()
        cold, _ = select_backend(module, shape, cpu, "fp32", 64)
        t_cold = time.perf_counter() - start
        start = time.perf_counter()
        warm, _ = select_backend(module, shape, cpu, "fp32", 64)
        t_warm = time.perf_counter() - start
        print(f"{name:16s} {t_old:12.1f} {t_cold:11.1f} {t_warm:11.2f}  {before.name} / {cold.name}, {warm.name}")


def part_cis() -> None:
    import facesal_fast as fs
    from facesal_fast import models
    from facesal_fast.align.aligner import find_face
    from facesal_fast.align.image_io import load_image

    image = load_image(str(DEMO / "img1.jpg"))
    face = find_face(image)  # aligned once, outside the timings
    spent = _probe_timer()
    coarse = {"mode": "grid", "grid_step": 8, "stride": 16}
    for label, options in (("default (exact)", {}), ("grid step 8, stride 16", coarse)):
        os.environ["FACESAL_CACHE_DIR"] = tempfile.mkdtemp(prefix="facesal_cache_")  # nothing stored
        spent.clear()
        start = time.perf_counter()
        scorer = models.load("gender")
        result = fs.cis(image, scorer, face=face, **options)
        total = time.perf_counter() - start
        probing = sum(spent)
        print(
            f"fs.cis, one photo, {label}: load + cis {total:.1f} s, of which probing {probing:.1f} s, the rest "
            f"{total - probing:.1f} s; backend {scorer.backend.name}, {result.forward_passes} forward passes"
        )


def part_tasks() -> None:
    photos = Path(tempfile.mkdtemp()) / "photos"
    photos.mkdir()
    for name in ("img1.jpg", "img2.jpg", "img3.jpg"):
        (photos / name).write_bytes((DEMO / name).read_bytes())
    for run in (1, 2):
        out = photos.parent / f"tasks{run}"
        code = (
            "import json, sys, time; sys.path.insert(0, %r); from probe_cost import _probe_timer; "
            "spent = _probe_timer(); from facesal_fast.cli import main; start = time.perf_counter(); "
            "rc = main(['tasks', %r, '--out', %r]); "
            "print(json.dumps({'rc': rc, 'total': time.perf_counter() - start, 'probing': sum(spent)}))"
        ) % (str(Path(__file__).parent), str(photos), str(out))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
        if done.returncode != 0:
            raise RuntimeError(f"facesal tasks run {run} failed:\n{done.stderr[-3000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"facesal tasks, 3 photos, run {run}: {figures['total']:.0f} s, probing {figures['probing']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["load", "cis", "tasks"], action="append")
    parts = parser.parse_args().part or ["load", "cis", "tasks"]
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    for part in parts:
        os.environ["FACESAL_CACHE_DIR"] = tempfile.mkdtemp(prefix="facesal_cache_")
        {"load": part_load, "cis": part_cis, "tasks": part_tasks}[part]()


if __name__ == "__main__":
    main()
