"""Shared batches: several photos' CIS one at a time against together (``facesal bench --shared``).

The same aligned photos, the same scorer (``models.load(name)``, ``backend="auto"``): each
photo's ``cis`` alone, then every photo's ``cis_steps`` driven together
(:func:`~facesal_fast.scoring.batching.run_together`, what ``cis([...])`` and ``Audit`` do),
their windows in shared batches. Maps are asserted equal first; rounds are interleaved and
the best of each kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facesal_fast import models
from facesal_fast.align import default_aligner, load_image
from facesal_fast.benchmark.cases import FACES, table, timed
from facesal_fast.saliency.cis import cis, cis_steps
from facesal_fast.scoring.batching import run_together

if TYPE_CHECKING:
    import argparse

__all__ = ["bench_shared", "run_shared"]


def bench_shared(name: str, photos: list[Path], rounds: int = 2, **options: Any) -> list[dict]:
    """Rows for ``name``: its photos' CIS one at a time and together (``options`` go to ``cis``)."""
    scorer = models.load(name)
    aligner = default_aligner()
    faces = [aligner(load_image(photo), source=photo.name) for photo in photos]
    ways = {
        "one at a time": lambda: [cis(f.image, scorer, face=f, **options) for f in faces],
        "together (shared batches)": lambda: run_together(
            [cis_steps(f.image, scorer, face=f, **options) for f in faces]
        ),
    }
    ways["one at a time"]()  # warm-up: probe, trace, multiply-add count
    best: dict[str, float] = {}
    results: dict[str, list] = {}
    for _ in range(rounds):
        for label, way in ways.items():
            seconds, results[label] = timed(way)
            best[label] = min(best.get(label, float("inf")), seconds)
    for alone, together in zip(*results.values()):
        np.testing.assert_allclose(together.canonical, alone.canonical, atol=1e-5, err_msg=f"{name}: shared != alone")
    passes = sum(r.forward_passes for r in results["one at a time"])
    alone_seconds = best["one at a time"]
    return [
        dict(
            model=name,
            section=f"shared, {len(photos)} photos" + "".join(f", {k}={v}" for k, v in options.items()),
            method=f"{label} [{scorer.backend.name}]",
            seconds=seconds,
            passes=passes,
            full=alone_seconds,
        )
        for label, seconds in best.items()
    ]


def run_shared(args: argparse.Namespace, info: dict) -> int:
    """``--shared``: the table for each of ``--models`` on ``--audit-photos`` bundled photos
    (default 4), exact and ``quality="fast"``."""
    photos = sorted(FACES.glob("img*.jpg"))[: args.audit_photos or 4]
    rounds = 1 if args.quick else 2
    rows = [
        row
        for name in args.models.split(",")
        for options in ({}, dict(quality="fast"))
        for row in bench_shared(name, photos, rounds, **options)
    ]
    print("\n" + table(rows).replace("vs full re-inference", "vs one at a time"))
    print(f"\nload average {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=info, rows=rows), indent=1))
    return 0
