"""The quality presets on the bring-your-own ResNet-18 case, photo by photo, against the
published CSM loop (issue 29's targets: ``high`` >= 0.95 and ``fast`` >= 0.90 SSIM on every
photo, ``high`` >= 15x and ``fast`` >= 30x the published code, exact >= 3x).

    python benchmarks/resnet18_presets.py --photos img3.jpg,img4.jpg,img5.jpg,img6.jpg,img7.jpg

The case (``benchmark.cases.default_path_case("resnet18", photo)``): torchvision ResNet-18
with random weights (seed 0), the photo cropped to CelebA's 218 x 178 and aligned by Face
Mesh (CelebA photos with PRNet meshes are not in the repository), patch 15, ~2,200 vertices,
the scorer a user gets by default (``backend="auto"``, ``incremental="auto"``). Per photo
exact, ``high`` and ``fast`` are timed once each, side by side with the CSM loop (timed on
``--csm-vertices`` vertices, its drops asserted equal to exact's, extrapolated); the first
photo is explained once with ``fast`` beforehand (probe, trace, multiply-add count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from facesal_fast.benchmark.cases import FACES, default_path_case
from facesal_fast.benchmark.presets import photo_presets, ssim_summary
from facesal_fast.saliency import cis


def _row(r: dict) -> str:
    ssim = f"{r['ssim']:.3f}" if "ssim" in r else ""
    est = r.get("estimated_ssim")
    est = "" if est is None else f"{est:.3f}"
    err = f"{r['estimated_ssim'] - r['ssim']:+.3f}" if r.get("mode") == "certified" else ""
    return (
        f"| {r['photo']} | {r['setting']} | {r.get('mode', '')} | {r['passes']} | {r['seconds']:.1f} | "
        f"{r['vs_csm']:.1f}x | {ssim} | {est} | {err} |"
    )


def summary(rows: list[dict]) -> str:
    lines = [
        "| setting | photos | SSIM min | SSIM mean | certified | estimate - SSIM (certified) | passes / exact | "
        "vs CSM loop min / median / max |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for setting in ("exact", "high", "fast"):
        group = [r for r in rows if r["setting"] == setting]
        photos, low, mean, passes = ssim_summary(group)
        errors = [r["estimated_ssim"] - r["ssim"] for r in group if r["mode"] == "certified"]
        error = f"{min(errors):+.3f} to {max(errors):+.3f}" if errors else ""
        speed = np.array([r["vs_csm"] for r in group])
        lines.append(
            f"| {setting} | {photos} | {low:.3f} | {mean:.3f} | {len(errors)} | {error} | "
            f"{passes:.2f} | {speed.min():.1f}x / {np.median(speed):.1f}x / {speed.max():.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default="img3.jpg,img4.jpg,img5.jpg,img6.jpg,img7.jpg")
    parser.add_argument("--csm-vertices", type=int, default=100)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import torch

    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load average {os.getloadavg()}"
    )
    print("| photo | setting | mode used | passes | seconds | vs CSM loop | SSIM vs exact | estimated | error |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    rows: list[dict] = []
    for i, photo in enumerate(args.photos.split(",")):
        case, face, user = default_path_case("resnet18", FACES / photo)
        if i == 0:
            start = time.perf_counter()
            cis(face.image, user, target=case.target, patch=case.patch, face=face, quality="fast")
            print(f"(warm-up on {photo}: {time.perf_counter() - start:.1f} s)", flush=True)
        for row in photo_presets(case, face, user, photo, args.csm_vertices):
            rows.append(row)
            print(_row(row), flush=True)
    print(f"\nbackend {rows[-1]['backend']}, incremental {rows[-1]['incremental']}, load average {os.getloadavg()}")
    print("\n" + summary(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
