"""Power of ``facesal compare`` when one run lacks a photo (issue 31 item 5), on real maps.

Two runs of the same photos, the second with a shift planted in the left eye's share and
per-photo noise; the second run lacks one photo. Pairing by content compares the remaining
photos paired; pairing by name (the old rule: the runs' keys must be equal) fell back to an
unpaired test. Both are run through :func:`facesal_fast.compare` on run folders, the
by-name fallback by giving the second run other content hashes (what ``compare`` then sees
is two sets of different photos). Prints the share of draws in which the left eye is found.

    python benchmarks/pairing_power.py [--draws 30] [--points 2] [--maps maps.npy]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration import real_maps  # noqa: E402 - the benchmark next to this one

from facesal_fast.audit.comparison import compare  # noqa: E402
from facesal_fast.audit.store import RunStore  # noqa: E402
from facesal_fast.saliency.calibration import plant, shift_fraction  # noqa: E402

REGION = "left_eye"


def write_run(path: Path, maps: np.ndarray, contents: list[str]) -> Path:
    """A run folder of ``maps`` (``n x H_F x W_F``), photo ``i`` with content hash ``contents[i]``."""
    with RunStore(path, {"model": "benchmark"}) as store:
        for i, (m, content) in enumerate(zip(maps, contents)):
            arrays = {"canonical": m.astype(np.float32), "face_box": np.zeros(4, np.float32)}
            store.save_done(
                f"p{i:03d}.jpg", "", arrays, group=None, target=0, target_name="x", base_score=0.9, seconds=0.0,
                sha256=content,
            )  # fmt: skip
    return path


def noisy(maps: np.ndarray, rng: np.random.Generator, scale: float = 0.25) -> np.ndarray:
    """Each map plus ``scale`` times the difference of two other maps / sqrt 2 (a retrained
    model's photo-to-photo change, mean 0)."""
    n = len(maps)
    j, k = rng.integers(0, n, n), rng.integers(0, n, n)
    return maps + scale * (maps[j] - maps[k]) / np.sqrt(2)


def one_draw(maps: np.ndarray, fraction: float, rng: np.random.Generator, folder: Path, resamples: int) -> tuple:
    """(found by content pairing, found by the by-name fallback) for one draw."""
    before, after = noisy(maps, rng), plant(noisy(maps, rng), REGION, fraction)
    missing = int(rng.integers(len(maps)))
    keep = [i for i in range(len(maps)) if i != missing]
    same = [f"photo-{i}" for i in range(len(maps))]
    a = write_run(folder / "a", before, same)
    by_content = write_run(folder / "b", after[keep], [same[i] for i in keep])
    by_name = write_run(folder / "c", after[keep], [f"other-{i}" for i in keep])
    options = {"permutations": resamples, "bootstrap": resamples, "min_group": 5}
    found = []
    for b in (by_content, by_name):
        result = compare(b, a, **options)
        found.append(REGION in result.difference.significant_regions)
    return tuple(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--points", type=float, default=2.0, help="planted shift of the left eye's share")
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--maps", type=Path, help="cache of the CIS maps (.npy): read if present, else written")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.maps and args.maps.exists():
        maps = np.load(args.maps)
    else:
        maps = real_maps("gender", 4, 8)
        if args.maps:
            np.save(args.maps, maps)
    fraction = shift_fraction(maps, REGION, args.points)
    rng = np.random.default_rng(0)
    counts = np.zeros(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(args.draws):
            with tempfile.TemporaryDirectory() as folder:
                counts += one_draw(maps, fraction, rng, Path(folder), args.resamples)
    rate = counts / args.draws
    error = np.sqrt(rate * (1 - rate) / args.draws)
    print(
        f"{len(maps)} real maps (gender), one photo missing from the second run, {args.points:g}-point {REGION} "
        f"shift, {args.draws} draws, {args.resamples} resamples"
    )
    print(f"paired by content ({len(maps) - 1} pairs):  found in {rate[0]:.2f} ± {error[0]:.2f} of draws")
    print(f"unpaired (by-name fallback):       found in {rate[1]:.2f} ± {error[1]:.2f} of draws")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
