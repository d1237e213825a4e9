"""Report figures (matplotlib, no display): maps that share one colour scale per panel, each
with its colour bar, on the mean face; region shares with confidence intervals; the
convergence and split-half reliability curves; the maps of ``facesal tasks`` (models of
different confidence units, each over its own positive mass, on one scale); and the plain
picture grids and line charts of ``facesal evaluate``. Titles and labels too long for their
place are wrapped (:func:`wrapped`), and the grids and the tasks figure are laid out by
matplotlib's constrained layout, so no text overlaps another or leaves the figure.

Saliency maps use a sequential colour map whose range starts below 0 when any map of the
panel is negative (negative saliency: occlusion raised the score), so negative pixels are
coloured, not left as holes. Difference maps use a diverging map centred at 0 on a faint
mean face, with the pixels that pass the family-wise test outlined. The canonical face is
frontal, so the subject's left is on the right of every map; the figures say so.
"""

from __future__ import annotations

import io
import textwrap
from typing import TYPE_CHECKING

import cv2
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from facesal_fast.align import canonical_face, canonical_mask
from facesal_fast.core.renamed import renamed_keywords

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from facesal_fast.saliency.stats import Reliability

__all__ = [
    "DIFFERENCE_CMAP",
    "SALIENCY_CMAP",
    "convergence_figure",
    "image_grid_figure",
    "line_figure",
    "map_figure",
    "panel_limits",
    "png",
    "positive_density",
    "region_share_figure",
    "reliability_figure",
    "task_maps_figure",
    "wrapped",
]

SALIENCY_CMAP = "inferno"
DIFFERENCE_CMAP = "RdBu_r"


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=100)


def png(fig) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _sides(ax, fontsize: float = 7) -> None:
    """Write which side is the subject's left under a canonical (frontal) map."""
    ax.set_xticks([0.0, 1.0], ["subject's right", "subject's left"], fontsize=fontsize)
    ax.tick_params(axis="x", length=0)
    ax.set_yticks([])


def plain(text: str) -> str:
    """``text`` shown literally by matplotlib (a ``$`` in a file or group name would start mathtext)."""
    return str(text).replace("$", r"\$")


def wrapped(text: str, width: float, fontsize: float) -> str:
    """``text`` shown literally, broken into lines no wider than ``width`` inches at ``fontsize``
    points (long file and group names would be cut by the figure's edge or run into a neighbour)."""
    per_line = max(6, int(width * 72 / (0.62 * fontsize)))
    lines = [
        wrapped_line
        for line in str(text).split("\n")
        for wrapped_line in textwrap.wrap(line, per_line, break_long_words=True, break_on_hyphens=False) or [""]
    ]
    return plain("\n".join(lines))


def _face_gray(shape: tuple[int, int]) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(canonical_face(shape)), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def panel_limits(maps: Sequence[np.ndarray], kind: str) -> tuple[float, float]:
    """One ``(vmin, vmax)`` for every map of a panel: saliency from ``min(0, lowest)`` to the
    largest value, differences symmetric about 0."""
    top = max(float(np.max(np.abs(m))) for m in maps) or 1.0
    if kind == "difference":
        return -top, top
    low = min(0.0, min(float(np.min(m)) for m in maps))
    return low, max(max(float(np.max(m)) for m in maps), 1e-12)


def map_figure(
    maps: Sequence[tuple[str, np.ndarray]],
    *,
    kind: str = "saliency",
    significant: Sequence[np.ndarray | None] | None = None,
    label: str = "saliency (confidence drop)",
    limits: tuple[float, float] | None = None,
):
    """One row of ``H_F x W_F`` maps on one colour scale, each with a colour bar.

    Args:
        maps: (title, map) pairs; every map of one call shares ``vmin``/``vmax``; a title too
            wide for its map is wrapped (``""``: none, as in the report's gallery).
        kind: ``"saliency"`` (sequential, mean face dimmed under the map) or ``"difference"``
            (diverging, centred at 0, mean face faintly visible).
        significant: per map, an ``h x w`` bool mask (any resolution) outlined in black, or None.
        label: colour-bar label.
        limits: ``(vmin, vmax)`` shared with maps drawn elsewhere (default: :func:`panel_limits`).
    Returns:
        a matplotlib ``Figure`` (``2 x len(maps)`` axes: each map and its colour bar).
    """
    if kind not in ("saliency", "difference"):
        raise ValueError(f"kind must be 'saliency' or 'difference', got {kind!r}")
    vmin, vmax = limits or panel_limits([m for _, m in maps], kind)
    fig = _figure(3.4 * len(maps), 3.3 if any(title for title, _ in maps) else 3.0)
    for i, (title, heat) in enumerate(maps):
        ax = fig.add_subplot(1, len(maps), i + 1)
        shape = heat.shape
        face = _face_gray(shape)
        inside = canonical_mask(shape)
        ax.imshow(face, cmap="gray", vmin=0, vmax=1, extent=(0, 1, 1, 0))
        shown = np.where(inside, heat, np.nan)
        image = ax.imshow(
            shown,
            cmap=SALIENCY_CMAP if kind == "saliency" else DIFFERENCE_CMAP,
            vmin=vmin,
            vmax=vmax,
            alpha=0.85 if kind == "saliency" else 0.7,
            extent=(0, 1, 1, 0),
            interpolation="bilinear",
        )
        mask = None if significant is None else significant[i]
        if mask is not None and np.any(mask):
            up = cv2.resize(np.asarray(mask, np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST)
            ax.contour(
                np.linspace(0, 1, shape[1]), np.linspace(0, 1, shape[0]), up, levels=[0.5], colors="k", linewidths=0.8
            )
        ax.set_title(wrapped(title, 3.0, 9), fontsize=9)
        _sides(ax)
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
        bar.set_label(wrapped(label, 2.2, 7), fontsize=7)
        bar.ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def positive_density(heat: np.ndarray) -> tuple[np.ndarray, float]:
    """A map divided by its own positive mass on the canonical face.

    Args:
        heat: ``H_F x W_F`` map (any confidence unit).
    Returns:
        ``(density, mean)``: ``H_F x W_F`` density of the positive part (0 off the face; 1 =
        the mass spread evenly over the face), and ``mean``, the positive part's mean over
        the face's pixels in ``heat``'s unit (``heat``'s positive part = ``density * mean``).
    """
    inside = canonical_mask(heat.shape)
    positive = np.where(inside, np.clip(heat, 0, None), 0.0)
    mean = float(positive.sum() / max(int(inside.sum()), 1))
    return (positive / mean if mean > 0 else positive).astype(np.float32), mean


def task_maps_figure(maps: Sequence[tuple[str, np.ndarray, str]], columns: int = 4) -> Figure:
    """Maps of models whose confidences differ in unit and size, on one colour scale: each
    map divided by its own positive mass (:func:`positive_density`), with its magnitude (the
    mean positive drop, in its unit, and the largest drop) written under it.

    Args:
        maps: ``(title, H_F x W_F map, unit)`` per model, e.g. ``("gender", cms, "probability")``.
        columns: maps per row.
    Returns:
        a ``Figure``: the maps on ``ceil(n / columns)`` rows and one colour bar.
    """
    columns = min(columns, len(maps))
    n_rows = -(-len(maps) // columns)
    fig = Figure(figsize=(3.0 * columns + 1.0, 3.5 * n_rows), dpi=100, layout="constrained")
    axes = fig.subplots(n_rows, columns, squeeze=False).ravel()
    densities = [positive_density(heat) for _, heat, _ in maps]
    top = max(max(float(d.max()) for d, _ in densities), 1.0)
    image = None
    for ax, (title, heat, unit), (density, mean) in zip(axes, maps, densities):
        ax.imshow(_face_gray(heat.shape), cmap="gray", vmin=0, vmax=1, extent=(0, 1, 1, 0))
        shown = np.where(canonical_mask(heat.shape), density, np.nan)
        image = ax.imshow(shown, cmap=SALIENCY_CMAP, vmin=0, vmax=top, alpha=0.85, extent=(0, 1, 1, 0))
        ax.set_title(wrapped(title, 2.8, 11), fontsize=11)  # the page shows the figure at ~80%: larger text
        _sides(ax, 8)
        magnitude = (
            f"mean positive drop {mean:.3g}\nlargest drop {float(np.max(heat)):.3g} ({unit})"
            if mean > 0
            else f"no positive drop ({unit})"
        )
        ax.set_xlabel(plain(magnitude), fontsize=10)
    for ax in axes[len(maps) :]:
        ax.set_visible(False)
    bar = fig.colorbar(image, ax=list(axes[: len(maps)]), fraction=0.03, pad=0.02)
    scale = "saliency density: each map over its own positive mass (1 = spread evenly over the face)"
    bar.set_label(wrapped(scale, 3.5 * n_rows - 0.6, 10), fontsize=10)
    bar.ax.tick_params(labelsize=9)
    return fig


def _chart(draw: Callable, width: float = 7.0, height: float = 3.4):
    fig = _figure(width, height)
    ax = fig.add_subplot(1, 1, 1)
    draw(ax)
    fig.tight_layout()
    return fig


def _log_counts(ax) -> None:
    """A log x axis labelled with plain image counts at 1, 2, 5, 10, 20, 50, ... (a run of
    a few images gets more than the one label at 1)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


@renamed_keywords(confidence="level")
def region_share_figure(bars: Sequence[tuple[str, dict[str, tuple[float, float, float]]]], level: float = 0.95):
    """Bars: per region, each column's mean per-image share with its CI at ``level`` as error bars.

    ``bars``: ``(label, region -> (mean share, CI low, CI high))`` per column (all images first,
    then each group: the numbers of the region table, so bars and table never disagree).
    """
    regions = list(bars[0][1])

    def draw(ax):
        height = 0.8 / len(bars)
        y = np.arange(len(regions))
        for i, (label, shares) in enumerate(bars):
            mean = np.array([100 * shares[r][0] for r in regions])
            err = np.array(
                [[100 * (shares[r][0] - shares[r][1]), 100 * (shares[r][2] - shares[r][0])] for r in regions]
            ).T
            ax.barh(
                y + i * height,
                mean,
                height,
                xerr=np.maximum(err, 0),
                capsize=2,
                color="0.6" if i == 0 else None,
                label=wrapped(f"{label}, mean per image, {100 * level:g}% CI", 2.2, 7),
            )
        ax.set_yticks(y + height * (len(bars) - 1) / 2, [r.replace("_", " ") for r in regions], fontsize=8)
        ax.invert_yaxis()  # the first region on top, as in the table
        ax.set_ylabel("region (subject's left / right)")
        ax.set_xlabel("share of positive saliency (%)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))

    return _chart(draw, 8.0, 1.0 + 0.09 * len(regions) * (1 + len(bars)))


def convergence_figure(convergence: Sequence[tuple[int, float]]):
    """Relative L2 distance of the running CMS to the final CMS at every checkpoint."""

    def draw(ax):
        n, d = zip(*convergence)
        ax.plot(n, d, marker="o")
        _log_counts(ax)
        ax.set_xlabel("images in the running CMS")
        ax.set_ylabel("relative L2 distance to final CMS")

    return _chart(draw)


def reliability_figure(reliability: dict[str, Reliability]):
    """Split-half reliability (Spearman-Brown corrected) of each group's CMS against the
    number of images, with the Spearman-Brown prophecy beyond the images at hand."""

    def draw(ax):
        for group, rel in reliability.items():
            if not rel.curve:
                continue
            m, r = zip(*rel.curve)
            line = ax.plot(m, r, marker="o", label=plain(f"{group} (n={rel.n})"))[0]
            if rel.images_needed and rel.images_needed > rel.n:
                ax.plot([rel.n, rel.images_needed], [r[-1], rel.target], ls="--", color=line.get_color())
        if any(rel.curve for rel in reliability.values()):
            target = next(iter(reliability.values())).target
            ax.axhline(target, color="0.5", lw=0.8, ls=":")
            ax.legend(fontsize=7)
        _log_counts(ax)
        ax.set_xlabel("images in the group")
        ax.set_ylabel("split-half reliability")

    return _chart(draw)


def image_grid_figure(
    rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str], col_titles: Sequence[str], title: str
) -> Figure:
    """A grid of pictures: ``h x w x 3`` uint8 images as they are, ``h x w`` maps in ``jet``;
    a title over each column of the first row, a label left of each row (horizontal, wrapped
    to the margin) and the figure's title above; the layout keeps every text clear of the others."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    cell, margin = 1.6, 1.3  # inches: one picture; the row labels
    fig = Figure(figsize=(cell * n_cols + margin, (cell + 0.1) * n_rows + 0.7), dpi=100, layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
            if j < len(row):
                ax.imshow(row[j], cmap=None if row[j].ndim == 3 else "jet")
            if i == 0 and j < len(col_titles):
                ax.set_title(wrapped(col_titles[j], cell - 0.15, 7), fontsize=7)
        axes[i][0].set_ylabel(wrapped(row_titles[i], margin - 0.2, 7), rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(wrapped(title, cell * n_cols + margin - 0.2, 9), fontsize=9)
    return fig


def line_figure(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    *,
    log_counts: bool = False,
) -> Figure:
    """One line with markers per ``name -> (x, y)`` series, with a legend; ``log_counts``: a
    log x axis labelled with plain counts."""

    def draw(ax) -> None:
        for name, (x, y) in series.items():
            ax.plot(x, y, marker="o", ms=3, label=plain(name))
        if log_counts:
            _log_counts(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(plain(title), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)

    return _chart(draw, 5.2, 3.4)
