"""``facesal compare`` / ``facesal_fast.compare``: two finished audits (two models, a model
before and after retraining, or two datasets) compared region by region and pixel by pixel.

When both runs explained the same photos (the same image keys), each photo is its own
control: the test flips the sign of each photo's difference (paired permutation test) and
the bootstrap resamples photos jointly. Otherwise the runs are two independent samples and
the run labels are permuted (unpaired test). Either way p-values are family-wise adjusted
(max-T, Westfall & Young 1993) over the regions, and over the pixels of the low-resolution
maps, exactly as for group differences (:mod:`facesal_fast.saliency.stats`).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facesal_fast.audit.store import RunStore, atomic_write_bytes

if TYPE_CHECKING:  # the statistics import the saliency package (heavy); the CLI parser must not
    from facesal_fast.saliency.stats import GroupDifference

__all__ = [
    "Comparison",
    "add_compare_arguments",
    "add_statistics_arguments",
    "compare",
    "run_cli",
    "statistics_options",
    "write_compare_report",
]


@dataclass
class Comparison:
    """Two runs compared.

    Attributes:
        a, b: labels of the runs (their folder names unless given).
        runs: the two run folders.
        cms_a, cms_b: ``H_F x W_F`` float32 CMS of each run (over the images compared).
        difference: :class:`GroupDifference` of a minus b (``paired`` says which test).
        shares_a, shares_b: region -> share of the positive mass of each CMS.
        settings: each run's ``run.json`` content.
    """

    a: str
    b: str
    runs: tuple[Path, Path]
    cms_a: np.ndarray
    cms_b: np.ndarray
    difference: GroupDifference
    shares_a: dict[str, float]
    shares_b: dict[str, float]
    settings: tuple[dict, dict]

    @property
    def paired(self) -> bool:
        return self.difference.paired

    def shifts(self, points: float) -> list[str]:
        """Regions whose share moved by more than ``points`` percentage points, significantly."""
        return [
            r
            for r in self.difference.significant_regions
            if 100 * abs(self.difference.region_tests[r].difference) > points
        ]


@dataclass
class _RunData:
    """One run's per-image data: low-resolution maps and region shares by key, and the map sum."""

    path: Path
    meta: dict
    small: dict[str, np.ndarray]
    shares: dict[str, np.ndarray]
    total: dict[str, np.ndarray]


def _open_run(path: str | Path) -> RunStore:
    path = Path(path)
    if not (path / "run.json").is_file():
        raise ValueError(
            f"{path} is not a facesal run (no run.json): give the --out folder of a finished facesal audit"
        )
    return RunStore(path)


def _load(path: str | Path, size: int, masks: dict | None) -> _RunData:
    """Stream a run's stored maps: keep only a small copy and the region shares of each."""
    # lazy: keeps torch and cv2 out of facesal --help
    from facesal_fast.align import region_masks
    from facesal_fast.saliency.cms import _shares, small_map

    store = _open_run(path)
    small, shares, total = {}, {}, {}
    try:
        for row, arrays in store.iter_done():
            canonical = np.asarray(arrays["canonical"], np.float64)
            masks = masks or region_masks(canonical.shape)
            small[row.key], shares[row.key] = small_map(canonical, size), _shares(masks, canonical)
            total[row.key] = canonical.astype(np.float32)
        meta = store.meta
    finally:
        store.close()
    if not small:
        raise ValueError(f"{path} has no finished image to compare")
    return _RunData(Path(path), meta, small, shares, total)


def _mean(run: _RunData, keys: list[str]) -> np.ndarray:
    return np.mean([run.total[k] for k in keys], axis=0).astype(np.float32)


def compare(
    a: str | Path,
    b: str | Path,
    *,
    labels: tuple[str, str] | None = None,
    permutations: int = 2000,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    min_group: int = 10,
    correction: str = "fwer",
    seed: int = 0,
    bootstrap_size: int = 32,
) -> Comparison:
    """Compare the CMS of run ``a`` with run ``b``
    (folders written by ``facesal audit`` / :class:`~facesal_fast.Audit`).

    Paired (sign flips per photo) when both runs finished exactly the same image keys,
    unpaired (label permutations) otherwise. Returns a :class:`Comparison`; its
    ``difference`` is ``a - b``. Raises ``ValueError`` naming the folder when one is not a
    run, has no finished image, or the canonical maps differ in size.
    """
    # lazy: keeps torch and cv2 out of facesal --help
    from facesal_fast.align import region_masks
    from facesal_fast.saliency.cms import _shares
    from facesal_fast.saliency.stats import check_test_options, group_difference

    check_test_options(permutations, confidence, min_group, correction)
    run_a = _load(a, bootstrap_size, None)
    shape = next(iter(run_a.total.values())).shape
    run_b = _load(b, bootstrap_size, region_masks(shape))
    if next(iter(run_b.total.values())).shape != shape:
        raise ValueError(f"{b} has canonical maps of another size than {a}: runs must use the same canonical face size")
    names = labels or _labels(Path(a), Path(b))
    keys_a, keys_b = sorted(run_a.small), sorted(run_b.small)
    paired = keys_a == keys_b
    mean_a, mean_b = _mean(run_a, keys_a), _mean(run_b, keys_b)
    difference = group_difference(
        names[0],
        names[1],
        mean_a - mean_b,
        (np.stack([run_a.small[k] for k in keys_a]), np.stack([run_b.small[k] for k in keys_b])),
        (np.stack([run_a.shares[k] for k in keys_a]), np.stack([run_b.shares[k] for k in keys_b])),
        list(region_masks(shape)),
        paired=paired,
        permutations=permutations,
        bootstrap=bootstrap,
        confidence=confidence,
        min_group=min_group,
        correction=correction,
        rng=np.random.default_rng(seed),
    )
    masks = region_masks(shape)
    shares = [dict(zip(masks, _shares(masks, m).tolist())) for m in (mean_a, mean_b)]
    return Comparison(
        names[0],
        names[1],
        (Path(a), Path(b)),
        mean_a,
        mean_b,
        difference,
        shares[0],
        shares[1],
        (run_a.meta, run_b.meta),
    )


def _labels(a: Path, b: Path) -> tuple[str, str]:
    """Folder names, or the parent/name paths when the names are equal."""
    if a.resolve().name != b.resolve().name:
        return a.resolve().name, b.resolve().name
    return f"{a.resolve().parent.name}/{a.resolve().name}", f"{b.resolve().parent.name}/{b.resolve().name}"


def _shares_table(c: Comparison) -> str:
    # lazy: keeps torch and cv2 out of facesal --help
    from facesal_fast.report.html import region_label

    head = f"<tr><th>region</th><th>{html.escape(c.a)}</th><th>{html.escape(c.b)}</th></tr>"
    rows = "".join(
        f"<tr><td>{html.escape(region_label(r))}</td><td>{100 * c.shares_a[r]:.1f}%</td>"
        f"<td>{100 * c.shares_b[r]:.1f}%</td></tr>"
        for r in c.shares_a
    )
    return f"<p>Share of the positive mass of each CMS.</p><table>{head}{rows}</table>"


def _model(meta: dict) -> str:
    return str(meta.get("settings", {}).get("model", "model"))


def write_compare_report(c: Comparison, out: str | Path) -> Path:
    """Write ``out/compare.html`` (self-contained, in the report's style); returns its path."""
    # lazy: keeps torch and cv2 out of facesal --help
    from facesal_fast.report.figures import map_figure
    from facesal_fast.report.html import difference_section, findings, map_html, page

    d = c.difference
    how = (
        f"paired test: the same {d.n_a} photos in both runs, sign flips of each photo's difference"
        if c.paired
        else f"unpaired test: different photos ({d.n_a} / {d.n_b}), run labels permuted"
    )
    sections = [
        f"<h1>facesal compare: {html.escape(c.a)} vs {html.escape(c.b)}</h1>",
        findings([d], unit="run"),
        f"<p>Run {html.escape(c.a)} ({html.escape(_model(c.settings[0]))}, {html.escape(str(c.runs[0]))}) against run "
        f"{html.escape(c.b)} ({html.escape(_model(c.settings[1]))}, {html.escape(str(c.runs[1]))}); "
        f"{html.escape(how)}; "
        "maps are frontal: the subject's left is on the right.</p>",
        "<h2>Canonical Model Saliency of both runs</h2>",
        map_html(
            map_figure([(f"CMS {c.a} (n={d.n_a})", c.cms_a), (f"CMS {c.b} (n={d.n_b})", c.cms_b)]),
            "both runs on one colour scale",
        ),
        "<h2>Difference</h2>",
        difference_section(d, unit="run"),
        "<h2>Region shares</h2>",
        _shares_table(c),
        "<h2>Settings</h2>",
        f"<pre>{html.escape(json.dumps({c.a: c.settings[0], c.b: c.settings[1]}, indent=2, sort_keys=True))}</pre>",
    ]
    path = Path(out) / "compare.html"
    atomic_write_bytes(path, page("facesal compare", sections))
    return path


def _count(text: str) -> int:
    """argparse type: a positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def add_statistics_arguments(parser: argparse.ArgumentParser, unit: str = "group") -> None:
    """``--permutations``, ``--min-group``, ``--confidence``, ``--correction`` (for ``compare`` and ``report``)."""
    parser.add_argument("--permutations", type=_count, default=2000, help="permutations / sign flips per test")
    parser.add_argument("--min-group", type=_count, default=10, help=f"fewest images per {unit} for any significance")
    parser.add_argument(
        "--confidence", type=float, default=0.95, help="a region or pixel counts when its adjusted p < 1 - CONFIDENCE"
    )
    parser.add_argument(
        "--correction", default="fwer", choices=["fwer", "fdr"], help="fwer: max-T family-wise; fdr: Benjamini-Hochberg"
    )


def statistics_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`compare` / ``write_report`` from :func:`add_statistics_arguments`."""
    return {
        "permutations": args.permutations,
        "min_group": args.min_group,
        "confidence": args.confidence,
        "correction": args.correction,
    }


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", help="first run folder (a facesal audit --out)")
    parser.add_argument("run_b", help="second run folder")
    parser.add_argument("--out", required=True, help="folder for compare.html (created)")
    parser.add_argument(
        "--fail-on-shift",
        type=float,
        default=None,
        metavar="POINTS",
        help="exit 1 when any region's share moves by more than POINTS percentage points, significantly",
    )
    add_statistics_arguments(parser, "run")


def run_cli(args: argparse.Namespace) -> int:
    """``facesal compare``: 0 when written, 1 when ``--fail-on-shift`` trips; a user's mistake
    raises ``ValueError`` (the CLI prints it as one line, exit 2)."""
    if args.fail_on_shift is not None and not args.fail_on_shift >= 0:
        raise ValueError(f"--fail-on-shift must be a number of percentage points >= 0, got {args.fail_on_shift}")
    c = compare(args.run_a, args.run_b, **statistics_options(args))
    path = write_compare_report(c, args.out)
    for message in c.difference.too_few:
        warnings.warn(f"{message}: no significance is claimed", stacklevel=2)
    print(f"facesal compare: {path}")
    shifted = [] if args.fail_on_shift is None else c.shifts(args.fail_on_shift)
    for region in shifted:
        t = c.difference.region_tests[region]
        print(
            f"facesal compare: {region} moved {100 * t.difference:+.1f} points ({c.a} - {c.b}, adjusted p = "
            f"{t.p_adjusted:.4f}), more than --fail-on-shift {args.fail_on_shift:g}",
            file=sys.stderr,
        )
    return 1 if shifted else 0
