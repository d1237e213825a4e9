"""The quality presets against exact, photo by photo: SSIM of the map, the certificate's
estimate beside the truth, forward passes and seconds (exact and presets timed in one run).

    python benchmarks/certified_presets.py --models gender --photos img3.jpg,img7.jpg
    python benchmarks/certified_presets.py --models gender,expression-fer,expression-kdef --all-photos

Every model runs on onnxruntime named explicitly (``backend="onnx"``: no probe in the
timings) with ``incremental=False``; the photos are the package's demo faces (img1 and
img2 are the photos the former presets were tuned on; the certificate's shrinkage was
fitted on img3-img6). Prints one row per photo and preset, then the minimum and mean SSIM
per model and preset and the largest certificate error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from facesal_fast import models
from facesal_fast.align import default_aligner, load_image, region_shares
from facesal_fast.benchmark.cases import FACES
from facesal_fast.benchmark.presets import ssim_summary
from facesal_fast.metrics.similarity import ssim
from facesal_fast.saliency import cis

PRESETS = ("high", "fast")


def share_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest region-share difference of two canonical maps, percentage points."""
    sa, sb = region_shares(a), region_shares(b)
    return 100.0 * max(abs(sa[k] - sb[k]) for k in sa)


def photo_rows(name: str, scorer, photo: str) -> list[dict]:
    """Exact, then each preset, on one photo: one row per preset."""
    face = default_aligner()(load_image(FACES / photo), source=photo)
    start = time.perf_counter()
    exact = cis(face.image, scorer, face=face, incremental=False)
    exact_seconds = time.perf_counter() - start
    span = float(np.ptp(exact.canonical)) or 1.0
    rows = []
    for preset in PRESETS:
        start = time.perf_counter()
        result = cis(face.image, scorer, face=face, incremental=False, quality=preset)
        seconds = time.perf_counter() - start
        s = result.settings
        rows.append(
            dict(
                model=name,
                photo=photo,
                preset=preset,
                mode=s["mode"],
                passes=result.forward_passes,
                exact_passes=exact.forward_passes,
                seconds=seconds,
                exact_seconds=exact_seconds,
                ssim=ssim(result.canonical, exact.canonical, data_range=span),
                estimated_ssim=s["estimated_ssim"],
                share_error=share_gap(result.canonical, exact.canonical),
                estimated_share_error=s["estimated_share_error"],
            )
        )
        r = rows[-1]
        print(
            f"| {name} | {photo} | {preset} | {r['mode']} | {r['passes']} / {r['exact_passes']} | "
            f"{r['exact_seconds'] / r['seconds']:.1f}x | {r['ssim']:.3f} | {r['estimated_ssim']:.3f} | "
            f"{r['share_error']:.1f} | {r['estimated_share_error']:.1f} |",
            flush=True,
        )
    return rows


def summary(rows: list[dict]) -> str:
    """Per model and preset: photos, min / mean SSIM, largest |estimate - truth|, passes saved."""
    lines = ["| model | preset | photos | SSIM min | SSIM mean | max abs(estimate - SSIM) | passes / exact |"]
    lines.append("|---|---|---:|---:|---:|---:|---:|")
    for key in sorted({(r["model"], r["preset"]) for r in rows}):
        group = [r for r in rows if (r["model"], r["preset"]) == key]
        photos, low, mean, passes = ssim_summary(group)
        error = max(abs(r["estimated_ssim"] - r["ssim"]) for r in group)
        lines.append(f"| {key[0]} | {key[1]} | {photos} | {low:.3f} | {mean:.3f} | {error:.3f} | {passes:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gender")
    parser.add_argument("--photos", default="img3.jpg,img7.jpg")
    parser.add_argument("--all-photos", action="store_true", help="every bundled photo with one face")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    photos = sorted(p.name for p in FACES.glob("img*.jpg")) if args.all_photos else args.photos.split(",")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    print(
        "| model | photo | preset | mode used | passes / exact | speed vs exact | SSIM | estimated | "
        "share error (points) | estimated |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    rows: list[dict] = []
    for name in args.models.split(","):
        scorer = models.load(name, backend="onnx")
        for photo in photos:
            rows += photo_rows(name, scorer, photo)
    print("\n" + summary(rows))
    print(f"\nload average {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
