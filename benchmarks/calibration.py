"""Calibration of the group tests on real maps (issue 31), larger than the test suite's version.

CIS maps of the bundled single-face photos under a bundled model, reduced to region shares and
32 x 32 pixel rows. For each scenario of :mod:`facesal_fast.saliency.calibration` (unequal
spread and size, skewed paired differences, three groups, several photos per person with the
persons given) the family-wise error of the default test (``bootstrap``) and of the
exchangeable permutation test; the power for a 4 and an 8 point shift planted on the left
eye; the coverage of the intervals at 10 per group; the power at the reported detectable
shift. Prints markdown tables (``benchmarks/RESULTS.md`` keeps them).

    nice python benchmarks/calibration.py --draws 400 --pixel-draws 100 --resamples 500
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "facesal_fast" / "data" / "demo_faces"
TABLES = ["errors", "power", "coverage", "detectable"]


def real_maps(model: str, grid_step: int, stride: int) -> np.ndarray:
    """CIS maps of the bundled single-face photos (img*.jpg)."""
    import facesal_fast as fs
    from facesal_fast.align import load_image

    scorer = fs.models.load(model, backend="onnx")
    photos = sorted(FACES.glob("img*.jpg"))
    return np.stack(
        [fs.cis(load_image(p), scorer, mode="grid", grid_step=grid_step, stride=stride).canonical for p in photos]
    )


def cached_maps(cache: Path | None, model: str = "gender", grid_step: int = 4, stride: int = 8) -> np.ndarray:
    """:func:`real_maps`, read from the ``.npy`` file ``cache`` when it exists, else computed
    (and written there when ``cache`` is given)."""
    if cache and cache.exists():
        return np.load(cache)
    maps = real_maps(model, grid_step, stride)
    if cache:
        np.save(cache, maps)
    return maps


def scenarios():
    """Null scenarios: (scenario, also at pixel level)."""
    from facesal_fast.saliency.calibration import Scenario

    return [
        (Scenario("interchangeable, 20 vs 20"), True),
        (Scenario("interchangeable, 10 vs 10", (10, 10)), False),
        (Scenario("spread 1.5x, 10 vs 40", (10, 40), (1.5, 1)), False),
        (Scenario("spread 2x, 10 vs 40", (10, 40), (2, 1)), True),
        (Scenario("spread 3x, 10 vs 40", (10, 40), (3, 1)), True),
        (Scenario("spread 1.5x, 10 vs 10", (10, 10), (1.5, 1)), False),
        (Scenario("spread 2x, 10 vs 10", (10, 10), (2, 1)), True),
        (Scenario("spread 3x, 10 vs 10", (10, 10), (3, 1)), False),
        (Scenario("paired symmetric, 10", (10,), paired=True), False),
        (Scenario("paired skewed, 10", (10,), paired=True, skewed=True), True),
        (Scenario("paired skewed, 25", (25,), paired=True, skewed=True), False),
        (Scenario("paired skewed, 50", (50,), paired=True, skewed=True), False),
        (Scenario("3 groups of 10", (10, 10, 10), (1, 1, 1)), True),
        (Scenario("5 persons x 2 photos per group", (5, 5), photos=2), False),
        (Scenario("5 persons x 4 photos per group", (5, 5), photos=4), True),
        (Scenario("10 persons x 2 photos per group", (10, 10), photos=2), False),
        (Scenario("10 persons x 4 photos per group", (10, 10), photos=4), False),
    ]


def _cell(rate) -> str:
    return f"{rate.rate:.3f} ± {rate.error:.3f}"


def error_table(rows, pixels, draws: int, pixel_draws: int, resamples: int) -> None:
    from facesal_fast.saliency.calibration import error_rate

    print("\n| scenario | family | bootstrap (default) | permutation |\n|---|---|---:|---:|")
    for scenario, at_pixels in scenarios():
        for family, data, n in (("regions", rows, draws), ("pixels", pixels, pixel_draws)):
            if family == "pixels" and not at_pixels:
                continue
            cells = [
                error_rate(data, scenario, method=m, draws=n, resamples=resamples) for m in ("bootstrap", "permutation")
            ]
            print(f"| {scenario.name} | {family} | {_cell(cells[0])} | {_cell(cells[1])} |", flush=True)


def power_table(maps, draws: int, pixel_draws: int, resamples: int) -> None:
    from facesal_fast.saliency.calibration import Rows, Scenario, power

    print(
        "\n| planted on left eye | per group | family | bootstrap (default) | permutation | another region or pixel "
        "flagged (bootstrap) |\n|---|---:|---|---:|---:|---:|"
    )
    for points in (4.0, 8.0):
        for family, n in (("regions", draws), ("pixels", pixel_draws)):
            data = Rows.of(maps, family, points=points)
            for size in (20, 10):
                scenario = Scenario(f"{size} vs {size}", (size, size))
                cells = [
                    power(data, scenario, method=m, draws=n, resamples=resamples) for m in ("bootstrap", "permutation")
                ]
                rates = " | ".join(f"{c.rate:.2f}" for c in cells)
                line = f"| {data.shift_points:.1f} points | {size} | {family} | {rates} | {cells[0].other:.2f} |"
                print(line, flush=True)


def coverage_table(rows, draws: int, resamples: int) -> None:
    from facesal_fast.saliency.calibration import Scenario, coverage

    print("\n| interval (95%) | scenario | coverage | worst region |\n|---|---|---:|---:|")
    cases = [
        ("difference of mean shares", Scenario("10 vs 10", (10, 10)), False),
        ("difference of mean shares", Scenario("spread 2x, 10 vs 10", (10, 10), (2, 1)), False),
        ("paired mean difference", Scenario("10 pairs, skewed", (10,), paired=True, skewed=True), False),
        ("one group's mean share", Scenario("10 images", (10, 10)), True),
        ("one group's mean share", Scenario("20 images", (20, 20)), True),
    ]
    for what, scenario, estimate in cases:
        c = coverage(rows, scenario, estimate=estimate, draws=draws, resamples=resamples)
        print(f"| {what} | {scenario.name} | {c.rate:.3f} | {c.worst:.2f} |", flush=True)


def detectable_check(maps, draws: int, resamples: int) -> None:
    """Plant the shift the test reports as detectable (median over draws) and measure its power."""
    from facesal_fast.saliency.calibration import Rows, Scenario, draw, power
    from facesal_fast.saliency.stats import difference_test

    base = Rows.of(maps, "regions")
    rng, scenario = np.random.default_rng(11), Scenario("20 vs 20")
    column = int(np.flatnonzero(base.target)[0])
    shifts = [
        difference_test(*draw(base, scenario, rng)[0], permutations=resamples, seed=rng).detectable[column]
        for _ in range(20)
    ]
    points = 100 * float(np.median(shifts))
    planted = Rows.of(maps, "regions", points=points)
    found = power(planted, scenario, draws=draws, resamples=resamples)
    print(
        f"\nleft eye, 20 vs 20: reported detectable shift (median of 20 draws) {points:.1f} points; "
        f"power when that shift is planted: {found.rate:.2f} ± {found.error:.2f} (aim 0.80)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gender")
    parser.add_argument("--draws", type=int, default=400, help="null / planted draws per region-level row")
    parser.add_argument("--pixel-draws", type=int, default=100, help="draws per pixel-level row")
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples / permutations per test")
    parser.add_argument("--grid-step", type=int, default=4)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument(
        "--tables", nargs="+", default=TABLES, choices=TABLES, help="which measurements to run (default: all)"
    )
    parser.add_argument("--maps", type=Path, help="cache of the CIS maps (.npy): read if present, else written")
    args = parser.parse_args()
    from facesal_fast.saliency.calibration import Rows

    start = time.perf_counter()
    maps = cached_maps(args.maps, args.model, args.grid_step, args.stride)
    print(
        f"{len(maps)} real CIS maps ({args.model}, grid step {args.grid_step}, stride {args.stride}); "
        f"{args.draws} draws per region row, {args.pixel_draws} per pixel row, {args.resamples} resamples per test, "
        f"95% level; ± is the binomial standard error"
    )
    rows, pixels = Rows.of(maps, "regions"), Rows.of(maps, "pixels")
    if "errors" in args.tables:
        error_table(rows, pixels, args.draws, args.pixel_draws, args.resamples)
    if "power" in args.tables:
        power_table(maps, args.draws, args.pixel_draws, args.resamples)
    if "coverage" in args.tables:
        coverage_table(rows, args.draws, args.resamples)
    if "detectable" in args.tables:
        detectable_check(maps, args.draws, args.resamples)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
