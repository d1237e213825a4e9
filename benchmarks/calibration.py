"""Calibration of the group tests on real maps, larger than the test suite's version.

CIS maps of the bundled photos under a bundled model; two groups drawn at random from them
(no true difference) many times: false positive rate of "any region significant" and of
"any pixel significant"; then an effect planted in one region: power. Prints one table.

    python benchmarks/calibration.py --draws 1000 --permutations 1000 --sizes 10 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "facesal_fast" / "data" / "demo_faces"


def real_maps(model: str, grid_step: int, stride: int) -> np.ndarray:
    """CIS maps of the bundled single-face photos (img*.jpg)."""
    import facesal_fast as fs
    from facesal_fast.align import load_image

    scorer = fs.models.load(model, backend="onnx")
    photos = sorted(FACES.glob("img*.jpg"))
    return np.stack(
        [fs.cis(load_image(p), scorer, mode="grid", grid_step=grid_step, stride=stride).canonical for p in photos]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gender")
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20], help="images per group")
    parser.add_argument("--grid-step", type=int, default=4)
    parser.add_argument("--stride", type=int, default=8)
    args = parser.parse_args()
    from facesal_fast.saliency.calibration import calibrate

    start = time.perf_counter()
    maps = real_maps(args.model, args.grid_step, args.stride)
    print(
        f"{len(maps)} real CIS maps ({args.model}, grid step {args.grid_step}, stride {args.stride}) in "
        f"{time.perf_counter() - start:.0f} s; {args.draws} draws, {args.permutations} permutations, 95% level"
    )
    print("| level | per group | planted | shift (points) | false positive rate | power |")
    print("|---|---:|---|---:|---:|---:|")
    cases = [
        ("regions", "left_eye", 0.04),
        ("regions", "left_eye", 0.06),
        ("regions", "nose", 0.10),
        ("pixels", "nose", 0.30),
    ]
    for size in args.sizes:
        for level, region, fraction in cases:
            c = calibrate(
                maps,
                region=region,
                fraction=fraction,
                level=level,
                draws=args.draws,
                size=size,
                permutations=args.permutations,
                side=32,
            )
            se = (c.false_positive_rate * (1 - c.false_positive_rate) / c.draws) ** 0.5
            print(
                f"| {level} | {size} | {region} +{100 * fraction:.0f}% of mass | {c.shift_points:.1f} | "
                f"{c.false_positive_rate:.3f} ± {se:.3f} | {c.power:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
