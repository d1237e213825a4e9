"""The default-path table: ``cis`` as a user calls it (exact by default, ``quality="high"``,
``"fast"``) per model, against the published CSM loop, with SSIM and Pearson against exact."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facesal_fast.benchmark.cases import Case, csm_loop, default_path_case, table, timed
from facesal_fast.metrics.similarity import ssim as gaussian_ssim
from facesal_fast.saliency import cis
from facesal_fast.saliency.cis import apply_affine

if TYPE_CHECKING:
    import argparse

__all__ = ["VERTICES", "bench_presets", "case_stride", "photo_presets", "run_presets", "ssim_summary"]

#: Vertices the preset tables occlude (about the paper's CelebA mesh after its stride).
VERTICES = 2194


def bench_presets(
    case: Case, face: Any, user: Any, vertices: int = VERTICES, csm_vertices: int | None = 200, rounds: int = 1
) -> None:
    """``cis`` as a user calls it (the default scorer, ``incremental="auto"``) at ~``vertices``
    vertices: exact by default, exact with ``incremental=False``, ``quality="high"`` and
    ``"fast"``, timed in interleaved rounds (best of ``rounds``), against the published CSM
    loop (classifiers; timed on ``csm_vertices`` and extrapolated, drops checked) and the
    forward passes; the approximate maps report SSIM (Gaussian window, data range of the
    exact map) and Pearson against exact, and the exact paths are asserted equal first."""
    run = dict(target=case.target, patch=case.patch, stride=case_stride(face, vertices), face=face)
    configs = {
        "exact (default)": {},
        "exact, incremental=False": dict(incremental=False),
        "quality=high": dict(quality="high"),
        "quality=fast": dict(quality="fast"),
    }
    cis(face.image, user, **run, **configs["quality=fast"])  # warm-up: probes, traces, multiply-add count
    best: dict[str, float] = {}
    results: dict[str, Any] = {}
    for _ in range(rounds):
        for label, options in configs.items():
            seconds, results[label] = timed(lambda: cis(face.image, user, **run, **options))
            best[label] = min(best.get(label, float("inf")), seconds)
    exact = results["exact (default)"]
    np.testing.assert_allclose(
        exact.canonical,
        results["exact, incremental=False"].canonical,
        atol=1e-5,
        err_msg=f"{case.name}: incremental exact != exact",
    )
    csm = None
    if case.confidence is None:
        n = int(exact.used.sum())
        csm, k = csm_seconds(case, face, exact, csm_vertices or n, case.name)
        case.add("presets", f"csm-loop (published, batch 1; timed on {k} vertices)", csm, n)
    span = float(np.ptp(exact.canonical)) or 1.0
    for label, result in results.items():
        s = result.settings
        how = (
            f"{label} [{s['mode']} step {s['grid_step']} refine {s['refine']}, {user.backend.name}, "
            f"incremental {'on' if s['incremental'] else 'off'}]"
        )
        extra = (
            {}
            if label.startswith("exact")
            else dict(
                ssim=gaussian_ssim(result.canonical, exact.canonical, data_range=span),
                pearson=float(np.corrcoef(result.canonical.ravel(), exact.canonical.ravel())[0, 1]),
            )
        )
        case.add("presets", how, best[label], result.forward_passes, csm=csm, **extra)


def photo_presets(case: Case, face: Any, user: Any, photo: str, csm_vertices: int = 100) -> list[dict]:
    """One photo of a classifier ``case`` (as :func:`bench_presets`, ~2,200 vertices): ``cis``
    exact by default, ``quality="high"`` and ``"fast"``, each timed once, and the published
    CSM loop timed on ``csm_vertices`` vertices (its drops asserted equal to exact's) and
    extrapolated. One row per setting: forward passes, seconds, speed over the CSM loop, SSIM
    against the exact map (Gaussian window, its data range) and the result's own
    ``estimated_ssim``."""
    run = dict(target=case.target, patch=case.patch, stride=case_stride(face), face=face)
    results, seconds = {}, {}
    for label, options in {"exact": {}, "high": dict(quality="high"), "fast": dict(quality="fast")}.items():
        seconds[label], results[label] = timed(lambda: cis(face.image, user, **run, **options))
    exact = results["exact"]
    used = exact.used
    csm, _ = csm_seconds(case, face, exact, csm_vertices, f"{case.name} {photo}")
    span = float(np.ptp(exact.canonical)) or 1.0
    rows = [dict(photo=photo, setting="csm-loop", passes=int(used.sum()), seconds=csm, vs_csm=1.0)]
    for label, result in results.items():
        rows.append(
            dict(
                photo=photo,
                setting=label,
                mode=result.settings["mode"],
                passes=result.forward_passes,
                exact_passes=exact.forward_passes,
                seconds=seconds[label],
                vs_csm=csm / seconds[label],
                ssim=gaussian_ssim(result.canonical, exact.canonical, data_range=span),
                estimated_ssim=result.settings["estimated_ssim"],
                backend=user.backend.name,
                incremental=result.settings["incremental"],
            )
        )
    return rows


def case_stride(face: Any, vertices: int = VERTICES) -> int:
    """The vertex stride that leaves about ``vertices`` of ``face``'s visible points."""
    return max(1, int(np.asarray(face.visible).sum()) // vertices)


def csm_seconds(case: Case, face: Any, exact: Any, vertices: int, name: str) -> tuple[float, int]:
    """(seconds the published CSM loop takes on all of ``exact``'s used vertices, vertices
    timed): timed on the first ``vertices``, its drops asserted equal to ``exact``'s
    (``name`` in the message), and extrapolated."""
    used = exact.used
    points_in = apply_affine(exact.affine, np.asarray(face.verts_image, np.float32)[used, :2])
    subset = used & (np.cumsum(used) <= vertices)
    k = int(subset.sum())
    seconds, (_, drops) = timed(lambda: csm_loop(case, face, subset, points_in[:k], exact.canonical_patch))
    np.testing.assert_allclose(drops, exact.drops[:k], atol=1e-4, err_msg=f"{name}: CIS != CSM loop")
    return seconds * int(used.sum()) / k, k


def run_presets(args: argparse.Namespace, info: dict, photo: Path) -> int:
    """``--presets``: the default-path table (exact / high / fast) for each of ``--models``."""
    rows: list[dict] = []
    for name in args.models.split(","):
        case, face, user = default_path_case(name, photo)
        bench_presets(case, face, user, csm_vertices=100 if args.quick else 300, rounds=1 if args.quick else 2)
        rows += case.rows
    print("\n" + table(rows))
    print(f"\nload average {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=info, rows=rows), indent=1))
    return 0


def ssim_summary(rows: list[dict]) -> tuple[int, float, float, float]:
    """Over ``rows`` (each with ``ssim``, ``passes``, ``exact_passes``): photos, min and mean
    SSIM against exact, and forward passes as a share of exact's."""
    values = np.array([r["ssim"] for r in rows])
    passes = sum(r["passes"] for r in rows) / sum(r["exact_passes"] for r in rows)
    return len(rows), float(values.min()), float(values.mean()), passes
