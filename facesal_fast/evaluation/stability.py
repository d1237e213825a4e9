"""The model-level map (CMS): its face regions, its convergence as images are added and its
split-half correlation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from facesal_fast.align import canonical_face, region_masks, region_shares
from facesal_fast.evaluation.report import Section, Table
from facesal_fast.metrics import convergence_curve, split_half
from facesal_fast.report.figures import image_grid_figure, line_figure, png
from facesal_fast.saliency.overlay import heat_overlay

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ORDERS", "cms_overlay", "region_rows", "regions_section", "stability_section"]

#: Image orders averaged in the convergence curve (the given one and seeded permutations).
ORDERS = 20
#: Fewest images whose split-half correlation the page shows without a warning (halves of 5).
SPLIT_HALF_IMAGES = 10


def cms_overlay(cms: np.ndarray) -> np.ndarray:
    """The ``H_F x W_F`` map over the canonical face: ``H_F x W_F x 3`` uint8."""
    return heat_overlay(canonical_face(cms.shape), cms, 0.6)


def region_rows(cms: np.ndarray) -> list[dict[str, Any]]:
    """Per face region: share of the positive CMS mass, share of the face area, and their
    ratio (density; 1 = no more salient than an average face pixel), densest first."""
    shares = region_shares(cms)
    masks = {k: v for k, v in region_masks(cms.shape).items() if k in shares}
    total = float(sum(m.sum() for m in masks.values())) or 1.0
    rows = []
    for k, share in shares.items():
        area = float(masks[k].sum()) / total if k in masks else 0.0
        density = float(share / area) if area > 0 else float("nan")
        rows.append({"region": k, "share": float(share), "area": area, "density": density})
    return sorted(rows, key=lambda r: -(r["density"] if np.isfinite(r["density"]) else -1))


def regions_section(cms: np.ndarray, model: str, images: int) -> Section:
    """The CMS of ``images`` faces over the canonical face (figure and ``cms.npy``) and its
    region table."""
    rows = region_rows(cms)
    figure = image_grid_figure([[cms_overlay(cms)]], [model], ["CMS"], f"CMS, {images} images")
    return Section(
        "CMS and its regions (share of positive mass, share of area, density = ratio)",
        [Table("cms_regions", rows, 3)],
        {"cms.png": png(figure)},
        {"cms_regions": rows},
        {"cms": cms},
    )


def stability_section(canonical: Sequence[np.ndarray], seed: int) -> Section:
    """Relative L2 distance of the running CMS to the final one (mean over :data:`ORDERS`
    image orders) and the split-half correlation (two images or more)."""
    orders = np.random.default_rng(seed)
    curves = [convergence_curve(canonical)]
    for _ in range(ORDERS - 1):
        perm = orders.permutation(len(canonical))
        curves.append(convergence_curve([canonical[j] for j in perm]))
    counts = [n for n, _ in curves[0]]
    mean = np.mean([[d for _, d in c] for c in curves], axis=0)
    rows = [{"images": int(n), "relative_L2_to_final": float(d)} for n, d in zip(counts, mean)]
    halves = {k: float(v) for k, v in split_half(canonical, seed=seed).items()} if len(canonical) >= 2 else {}
    figure = line_figure(
        {"CMS": (counts, mean)},
        "images",
        "||CMS_n - CMS|| / ||CMS||",
        f"CMS convergence (mean of {ORDERS} image orders)",
        log_counts=True,
    )
    return Section(
        "CMS stability: convergence and split-half correlation",
        [Table("cms_convergence", rows, 3), Table("cms_split_half", [halves] if halves else [], 3)],
        {"convergence.png": png(figure)},
        {"cms_convergence": rows, "cms_split_half": halves},
        warnings=_split_half_warning(halves),
    )


def _split_half_warning(halves: dict[str, float]) -> list[str]:
    """A warning when the split-half correlation comes from fewer than :data:`SPLIT_HALF_IMAGES` images."""
    if not halves or 2 * halves["halves_of"] >= SPLIT_HALF_IMAGES:
        return []
    return [
        f"The split-half correlation compares halves of only {halves['halves_of']:.0f} image"
        f"{'s' if halves['halves_of'] > 1 else ''}: it swings from split to split (5th to 95th percentile "
        f"{halves['r_p05']:.2f} to {halves['r_p95']:.2f}) and says little about the CMS's reliability; use at "
        f"least {SPLIT_HALF_IMAGES} images before reading it."
    ]
