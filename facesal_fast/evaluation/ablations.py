"""Ablations on the first images: CIS patch size, vertex stride / grid step, occlusion fill,
and the alignment (none, 5-point similarity, dense canonical), each scored by Average Drop and
% Increase of the per-image (CIS) and model-level (CMS) maps, with the CMS's Win % within
each family.

Patch sizes are stated in the model's input pixels: the papers' 5, 9, 15 and 25 px at 224 px,
scaled to the input and made odd (:func:`facesal_fast.saliency.cis.odd_patch`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from facesal_fast.align.geometry import similarity_transform
from facesal_fast.core.options import FILLS, CISOptions
from facesal_fast.evaluation.faithfulness import explained_scores, overlay
from facesal_fast.evaluation.items import Item, reproject
from facesal_fast.evaluation.maps import cis_results
from facesal_fast.evaluation.report import Section, Table
from facesal_fast.evaluation.stability import cms_overlay
from facesal_fast.methods import registry
from facesal_fast.metrics import faithfulness_table, win_percent
from facesal_fast.report.figures import image_grid_figure, png
from facesal_fast.saliency.cis import odd_patch
from facesal_fast.scoring.progress import outer_bar

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["KEYPOINTS", "PAPER_PATCHES", "ablation_section", "keypoints_input", "settings"]

PAPER_PATCHES = (5, 9, 15, 25)
#: MediaPipe Face Mesh vertices of the 5 keypoints: eye corners (averaged per eye), nose tip, mouth corners.
KEYPOINTS = ((33, 133), (362, 263), (1,), (61,), (291,))


def settings(cis_options: CISOptions, input_side: int) -> list[tuple[str, str, CISOptions]]:
    """(family, label, CIS options) of every patch, stride and fill setting."""
    found = []
    for p in PAPER_PATCHES:
        patch = odd_patch(p, input_side)
        found.append(("patch", f"{patch} px ({p} px at 224 px)", cis_options.replace(patch=patch)))
    for st in (1, 4, 16):
        found.append(("stride", f"exact, vertex stride {st}", cis_options.replace(mode="exact", stride=st)))
    step = cis_options.grid_step * 2
    found.append(("stride", f"grid step {step}", cis_options.replace(grid_step=step)))
    found += [("fill", fill, cis_options.replace(fill=fill)) for fill in FILLS]
    return found


def keypoints_input(item: Item) -> tuple[np.ndarray, np.ndarray]:
    """The 5 keypoints (``5 x 2`` float32) in input pixels and on the canonical face."""
    mesh = item.face.mesh
    image = np.stack([mesh.img_verts[list(ix)].mean(0) for ix in KEYPOINTS]).astype(np.float64)
    canonical = np.stack([mesh.canon_verts[list(ix)].mean(0) for ix in KEYPOINTS]).astype(np.float64)
    on_input = image @ item.affine[:, :2].T + item.affine[:, 2]
    return on_input.astype(np.float32), canonical.astype(np.float32)


def _scores(items: Sequence[Item], maps: dict[str, list[np.ndarray]], scorer: Any, mass: float) -> tuple[dict, dict]:
    """(faithfulness rows per map name, ``M(E)`` per map name)."""
    explained = explained_scores(items, maps, scorer, mass)
    return faithfulness_table([it.base for it in items], explained).rows, explained


def _cis_rows(
    items: Sequence[Item],
    scorer: Any,
    cis_options: CISOptions,
    default_results: Sequence[Any],
    mass: float,
    input_side: int,
) -> tuple[list[dict[str, Any]], dict[str, list[tuple[str, np.ndarray]]]]:
    """Rows and CMS pictures of the patch, stride and fill families; a bar ("ablations", one
    step per setting) after 2 s."""
    cache: dict[str, np.ndarray] = {}  # by the options' fields
    rows, pictures = [], {}
    for family, label, opts in outer_bar(settings(cis_options, input_side), desc="ablations", unit="setting"):
        default = opts == cis_options
        key = json.dumps(opts.as_dict(), sort_keys=True, default=str)
        if key not in cache:
            results = default_results if default else cis_results(items, scorer, opts)
            cache[key] = np.stack([r.canonical for r in results])
        canonical = cache[key]
        cms = canonical.mean(0)
        maps = {
            "cis": [reproject(c, it) for c, it in zip(canonical, items)],
            "cms": [reproject(cms, it) for it in items],
        }
        table, explained = _scores(items, maps, scorer, mass)
        rows.append(
            {
                "family": family,
                "setting": label + (" (default)" if default else ""),
                "cis_avg_drop": table["cis"]["average_drop"],
                "cis_increase": table["cis"]["increase"],
                "cms_avg_drop": table["cms"]["average_drop"],
                "cms_increase": table["cms"]["increase"],
                "default": default,
                "explained": explained["cms"],
            }
        )
        pictures.setdefault(family, []).append((label, cms_overlay(cms)))
    return rows, pictures


def _alignment_rows(
    items: Sequence[Item], scorer: Any, cis_options: CISOptions, default_cms: np.ndarray, mass: float
) -> tuple[list[dict[str, Any]], list[tuple[str, np.ndarray]]]:
    """Rows and pictures of the alignment family: the image-space occlusion map of the crop
    averaged as it is, through a 5-point similarity onto the canonical face, and the CMS; a
    bar ("ablations: alignment") after 2 s."""
    options = {"patch": cis_options.patch, "step": cis_options.grid_step, "fill": cis_options.fill}
    faces = outer_bar(items, desc="ablations: alignment", unit="face")
    occluded = [registry.compute("occlusion", it.model_input(scorer, None), it.target, **options) for it in faces]
    none_map = np.mean(np.stack(occluded), 0)
    h, w = items[0].input_image.shape[:2]
    side_h, side_w = default_cms.shape
    sims = [similarity_transform(*keypoints_input(it)) for it in items]
    on_canonical = [cv2.warpAffine(o, a, (side_w, side_h), flags=cv2.INTER_LINEAR) for o, a in zip(occluded, sims)]
    kp_map = np.mean(np.stack(on_canonical), 0)
    back = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    maps = {
        "none (image-space occlusion, box crop)": [none_map for _ in items],
        "keypoint (5-point similarity)": [cv2.warpAffine(kp_map, a, (w, h), flags=back) for a in sims],
        "dense canonical (CMS)": [reproject(default_cms, it) for it in items],
    }
    table, explained = _scores(items, maps, scorer, mass)
    nan = float("nan")
    rows = [
        {
            "family": "alignment",
            "setting": label,
            "cis_avg_drop": nan,
            "cis_increase": nan,
            "cms_avg_drop": r["average_drop"],
            "cms_increase": r["increase"],
            "default": label == "dense canonical (CMS)",
            "explained": explained[label],
        }
        for label, r in table.items()
    ]
    pictures = [
        ("none (input crop)", overlay(items[0].input_image, none_map)),
        ("keypoint (canonical frame)", cms_overlay(kp_map)),
        ("dense (CMS)", cms_overlay(default_cms)),
    ]
    return rows, pictures


def _family_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its CMS Average Drop against the default setting (the dense CMS for the
    alignment family) and its CMS Win % within the family."""
    reference = next(r for r in rows if r["default"] and r["family"] != "alignment")
    out = []
    for family in dict.fromkeys(r["family"] for r in rows):
        members = [r for r in rows if r["family"] == family]
        wins = win_percent({r["setting"]: r["explained"] for r in members})
        ref = reference if family != "alignment" else next(r for r in members if r["default"])
        for r in members:
            kept = {k: v for k, v in r.items() if k not in ("default", "explained")}
            out.append(
                {
                    **kept,
                    "delta_cms_avg_drop": r["cms_avg_drop"] - ref["cms_avg_drop"],
                    "cms_win_in_family": wins[r["setting"]],
                }
            )
    return out


def ablation_section(
    items: Sequence[Item], scorer: Any, cis_options: CISOptions, default_results: Sequence[Any], mass: float
) -> Section:
    """The ablation table (one row per setting) and one picture of CMS maps per family.

    Args:
        items: the faces ablated; default_results: their CIS under ``cis_options``.
        mass: the equal mass ``s`` in pixels.
    """
    input_side = min(items[0].input_image.shape[:2])
    rows, pictures = _cis_rows(items, scorer, cis_options, default_results, mass, input_side)
    default_cms = np.mean(np.stack([r.canonical for r in default_results]), 0)
    align_rows, pictures["alignment"] = _alignment_rows(items, scorer, cis_options, default_cms, mass)
    table = _family_rows(rows + align_rows)
    figures = {
        f"ablation_{family}.png": png(
            image_grid_figure(
                [[p for _, p in entries]],
                [family],
                [label for label, _ in entries],
                f"Ablation: {family} (model-level maps)",
            )
        )
        for family, entries in pictures.items()
    }
    return Section(
        f"Ablations ({len(items)} images): patch size, stride, fill, alignment",
        [Table("ablations", table, 1)],
        figures,
        {"ablations": table},
    )
