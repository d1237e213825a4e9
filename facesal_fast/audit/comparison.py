"""``facesal compare`` / ``facesal_fast.compare``: two finished audits (two models, a model
before and after retraining, or two datasets) compared region by region and pixel by pixel.

Photos are paired by content, never by name (:mod:`facesal_fast.audit.pairing`): when the
runs share photos of identical content (equal SHA-256, the same face), the comparison is
paired over those photos, each its own control, and the photos of either run without a
twin are listed and left out. When they share none, the runs are two independent samples
(unpaired test) over all their photos. Either way p-values are family-wise adjusted
(max-T, Westfall & Young 1993) over the regions, and over the pixels of the low-resolution
maps, exactly as for group differences (:mod:`facesal_fast.saliency.stats`).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from facesal_fast.audit.pairing import Pairing, pair_by_content
from facesal_fast.audit.store import RunStore, StoredImage, atomic_write_bytes
from facesal_fast.core.options import CORRECTION_TEXT, TEST_METHOD_TEXT, StatsOptions

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
        shares_a, shares_b: region -> mean over the photos compared of each photo's share of its
            positive saliency (the numbers the region tests compare).
        settings: each run's ``run.json`` content.
        pairing: the runs' photos paired by content (paired over ``pairing.pairs`` when
            there are any; the unmatched photos are left out of a paired comparison).
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
    pairing: Pairing = field(default_factory=Pairing)

    @property
    def paired(self) -> bool:
        return self.difference.paired

    @property
    def pairing_notes(self) -> list[str]:
        """What pairing by content left out, one sentence each (empty when nothing was)."""
        p, notes = self.pairing, []
        if self.paired and (p.unmatched_a or p.unmatched_b):
            left = p.unmatched_a + p.unmatched_b
            examples = ", ".join(repr(k) for k in left[:3]) + (", ..." if len(left) > 3 else "")
            notes.append(
                f"{len(p.unmatched_a)} photos of {self.a} and {len(p.unmatched_b)} of {self.b} have no photo of "
                f"identical content in the other run and are left out ({examples})"
            )
        for name, count in ((self.a, p.unhashed_a), (self.b, p.unhashed_b)):
            if count:
                notes.append(
                    f"{count} photos of {name} were audited before runs recorded content hashes and cannot be "
                    "paired: re-run that audit's command to record them"
                )
        return notes

    def shifts(self, points: float) -> list[str]:
        """Regions whose share moved by more than ``points`` percentage points, significantly."""
        return [
            r
            for r in self.difference.significant_regions
            if 100 * abs(self.difference.region_tests[r].difference) > points
        ]


@dataclass
class _RunData:
    """One run's per-image data: low-resolution maps and region shares by key, and the
    ``H_F x W_F`` shape of its canonical maps (full maps are streamed, never all held)."""

    path: Path
    meta: dict
    small: dict[str, np.ndarray]
    shares: dict[str, np.ndarray]
    shape: tuple[int, int]
    rows: dict[str, StoredImage]


def _open_run(path: str | Path) -> RunStore:
    path = Path(path)
    if not (path / "run.json").is_file():
        raise ValueError(
            f"{path} is not a facesal run (no run.json): give the --out folder of a finished facesal audit"
        )
    return RunStore(path)


def _canonical_maps(store: RunStore, shape: tuple[int, ...] | None) -> Iterator[tuple[str, np.ndarray]]:
    """(key, ``H_F x W_F`` float64 canonical map) of each finished image, one at a time; every
    map must have ``shape`` (default: the first map's), else ``ValueError`` naming the file."""
    for row, arrays in store.iter_done():
        canonical = np.asarray(arrays["canonical"], np.float64)
        shape = shape or canonical.shape
        if canonical.shape != shape:
            raise ValueError(
                f"{store.result_path(row.key)}: canonical map of {canonical.shape[0]} x {canonical.shape[1]} px, "
                f"but {shape[0]} x {shape[1]} px expected: both runs must use the same canonical face size"
            )
        yield row.key, canonical


def _load(path: str | Path, size: int, shape: tuple[int, ...] | None) -> _RunData:
    """Stream a run's stored maps: keep only a small copy and the region shares of each
    (``shape``: the canonical size the maps must have, default the first map's)."""
    # lazy: keeps torch and cv2 out of facesal --help
    from facesal_fast.align import region_masks
    from facesal_fast.saliency.cms import _shares, small_map

    store = _open_run(path)
    small, shares, masks = {}, {}, None
    try:
        for key, canonical in _canonical_maps(store, shape):
            masks = masks or region_masks(canonical.shape)
            small[key], shares[key] = small_map(canonical, size), _shares(masks, canonical)
            shape = canonical.shape
        meta, rows = store.meta, {row.key: row for row in store.rows("done")}
    finally:
        store.close()
    if not small:
        raise ValueError(f"{path} has no finished image to compare")
    return _RunData(Path(path), meta, small, shares, shape, rows)


def _mean(run: _RunData, keys: list[str]) -> np.ndarray:
    """The mean canonical map of ``keys``, read again from the run one map at a time."""
    wanted, total = set(keys), np.zeros(run.shape, np.float64)
    store = _open_run(run.path)
    try:
        for key, canonical in _canonical_maps(store, run.shape):
            if key in wanted:
                total += canonical
    finally:
        store.close()
    return (total / len(wanted)).astype(np.float32)


def compare(
    a: str | Path,
    b: str | Path,
    stats: StatsOptions | Mapping[str, Any] | None = None,
    *,
    labels: tuple[str, str] | None = None,
    bootstrap: int = 1000,
    bootstrap_size: int = 32,
    **overrides: Any,
) -> Comparison:
    """Compare the CMS of run ``a`` with run ``b``
    (folders written by ``facesal audit`` / :class:`~facesal_fast.Audit`).

    Paired over the photos of identical content in both runs (their content hashes, not
    their names; the others are listed in ``pairing`` and left out) when there are any,
    unpaired over all photos otherwise. ``stats``: how to test (a :class:`StatsOptions`, a
    mapping of its fields, or None: the defaults); ``**overrides``: its fields
    (``permutations``, ``level``, ``correction``, ``min_group``, ``method``, ``seed``;
    ``confidence``: the old name of ``level``, warns). Returns a :class:`Comparison`; its
    ``difference`` is ``a - b``. Raises ``ValueError`` naming the folder when one is not a
    run, has no finished image, or the canonical maps differ in size, and naming the
    statistics option out of range (before any run is read).
    """
    # lazy: keeps torch and cv2 out of facesal --help
    from facesal_fast.align import region_masks
    from facesal_fast.saliency.stats import build_stats, group_difference

    stats = build_stats(stats, overrides)
    run_a = _load(a, bootstrap_size, None)
    shape = run_a.shape
    run_b = _load(b, bootstrap_size, shape)
    names = labels or _labels(Path(a), Path(b))
    pairing = pair_by_content(
        run_a.rows.values(), run_b.rows.values(), tuple(r.meta["settings"].get("face_index") for r in (run_a, run_b))
    )
    paired = bool(pairing.pairs)
    keys_a, keys_b = (
        ([k for k, _ in pairing.pairs], [k for _, k in pairing.pairs])
        if paired
        else (sorted(run_a.small), sorted(run_b.small))
    )
    mean_a, mean_b = _mean(run_a, keys_a), _mean(run_b, keys_b)
    difference = group_difference(
        names[0],
        names[1],
        mean_a - mean_b,
        (np.stack([run_a.small[k] for k in keys_a]), np.stack([run_b.small[k] for k in keys_b])),
        (np.stack([run_a.shares[k] for k in keys_a]), np.stack([run_b.shares[k] for k in keys_b])),
        list(region_masks(shape)),
        stats,
        paired=paired,
        persons=_persons(run_a, keys_a, run_b, keys_b, paired),
        bootstrap=bootstrap,
        rng=np.random.default_rng(stats.seed),
    )
    regions = list(region_masks(shape))
    shares = [  # the mean per-photo shares the test compares (not the shares of the mean maps)
        dict(zip(regions, np.mean([run.shares[k] for k in keys], axis=0).tolist()))
        for run, keys in ((run_a, keys_a), (run_b, keys_b))
    ]
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
        pairing,
    )


def _persons(
    run_a: _RunData, keys_a: list[str], run_b: _RunData, keys_b: list[str], paired: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """Person labels of the photos compared (a photo without one is a person of its own),
    or None when no photo of either run has one; paired: the first run's, for both sides."""
    if not any(run.rows[k].person for run, keys in ((run_a, keys_a), (run_b, keys_b)) for k in keys):
        return None
    labels = [
        np.array([run.rows[k].person or f"photo {k}" for k in keys], dtype=object)
        for run, keys in ((run_a, keys_a), (run_b, keys_b))
    ]
    return (labels[0], labels[0]) if paired else (labels[0], labels[1])


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
    return (
        "<p>Each cell: the mean over the photos compared of each photo's share of its positive saliency; the "
        "difference table above is the difference of the two columns.</p>"
        f"<table class=shares>{head}{rows}</table>"
    )


def _unmatched_section(c: Comparison, most: int = 200) -> str:
    """The photos a paired comparison left out (no photo of identical content in the other
    run), per run, at most ``most`` named each; empty when none was left out."""
    if not c.paired:
        return ""
    parts = []
    for name, keys in ((c.a, c.pairing.unmatched_a), (c.b, c.pairing.unmatched_b)):
        if keys:
            more = f" and {len(keys) - most} more" if len(keys) > most else ""
            listed = ", ".join(f"<code>{html.escape(k)}</code>" for k in keys[:most])
            parts.append(f"<p>Only in {html.escape(name)} ({len(keys)}): {listed}{more}.</p>")
    return "<h2>Photos left out</h2>" + "".join(parts) if parts else ""


def _model(meta: dict) -> str:
    return str(meta.get("settings", {}).get("model", "model"))


def write_compare_report(c: Comparison, out: str | Path) -> Path:
    """Write ``out/compare.html`` (self-contained, in the report's style); returns its path."""
    # lazy: keeps torch and cv2 out of facesal --help
    from facesal_fast.report.figures import map_figure
    from facesal_fast.report.html import difference_section, findings, map_html, page

    d = c.difference
    how = (
        f"paired test over the {d.n_a} photos of identical content in both runs (paired by content hash, not name)"
        if c.paired
        else f"unpaired test: no photo of identical content in both runs ({d.n_a} / {d.n_b} photos)"
    )
    how = "; ".join([how, *c.pairing_notes])
    sections = [
        f"<h1>facesal compare: {html.escape(c.a)} vs {html.escape(c.b)}</h1>",
        findings([d], unit="run", shares={c.a: c.shares_a, c.b: c.shares_b}),
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
        _unmatched_section(c),
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


class _Level(argparse.Action):
    """``--level``, and its old name ``--confidence``, which still works and says so on stderr."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        if option == "--confidence":
            print(
                "facesal: --confidence is now --level (the same number); the old name goes in the next release",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)


def _meanings(texts: Mapping[str, str]) -> str:
    """``"a: what a is; b: what b is"``."""
    return "; ".join(f"{choice}: {text}" for choice, text in texts.items())


def add_statistics_arguments(parser: argparse.ArgumentParser, unit: str = "group") -> None:
    """The :class:`StatsOptions` fields as ``--permutations``, ``--min-group``, ``--level`` (old
    name ``--confidence``), ``--correction``, ``--method``, ``--seed`` (for ``compare`` and
    ``report``), with the record's choices and defaults."""
    default = StatsOptions()
    parser.add_argument("--permutations", type=_count, default=default.permutations, help="null draws per test")
    parser.add_argument(
        "--min-group", type=_count, default=default.min_group, help=f"fewest images per {unit} for any significance"
    )
    parser.add_argument(
        "--level",
        "--confidence",
        action=_Level,
        type=float,
        default=default.level,
        help="a region or pixel counts when its adjusted p < 1 - LEVEL; the level of every interval "
        "(--confidence: its old name)",
    )
    parser.add_argument(
        "--correction", default=default.correction, choices=CORRECTION_TEXT, help=_meanings(CORRECTION_TEXT)
    )
    parser.add_argument(
        "--method",
        default=default.method,
        choices=TEST_METHOD_TEXT,
        help=f"the test's null: {_meanings(TEST_METHOD_TEXT)}",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=default.seed,
        help=f"seed of every random draw (default: {default.seed}; results are reproducible)",
    )


def statistics_options(args: argparse.Namespace) -> StatsOptions:
    """The :class:`StatsOptions` of :func:`add_statistics_arguments`' arguments (``ValueError``
    naming the one out of range)."""
    return StatsOptions(
        permutations=args.permutations,
        level=args.level,
        correction=args.correction,
        min_group=args.min_group,
        method=args.method,
        seed=args.seed,
    )


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
    c = compare(args.run_a, args.run_b, statistics_options(args))
    path = write_compare_report(c, args.out)
    for message in c.difference.too_few:
        warnings.warn(f"{message}: no significance is claimed", stacklevel=2)
    for message in c.pairing_notes:
        warnings.warn(message, stacklevel=2)
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
