"""Every method's map of every face, in the scorer's input geometry.

CIS runs once per face (:func:`facesal_fast.cis`); ``cis`` is each face's own canonical map
and ``cms`` their mean, both reprojected onto the crop; every other method is run through
the one method registry (:func:`facesal_fast.methods.registry.compute`) on the crop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from facesal_fast.evaluation.items import Item, reproject
from facesal_fast.methods import registry
from facesal_fast.saliency.cis import CISResult, cis
from facesal_fast.scoring.progress import outer_bar

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from facesal_fast.core.options import CISOptions

__all__ = ["cis_results", "method_options", "method_maps"]


def cis_results(items: Sequence[Item], scorer: Any, options: CISOptions) -> list[CISResult]:
    """CIS of each face for its predicted class with the CIS ``options``; one bar ("CIS") after
    2 s, the per-face occlusion bars off."""
    faces = outer_bar(items, desc="CIS", unit="face")
    return [cis(it.face.image, scorer, it.target, face=it.face, options=options.per_face()) for it in faces]


def method_options(cis_options: CISOptions, gb_output: str) -> dict[str, Any]:
    """The registry options of an evaluation: Guided Backprop from ``gb_output``; occlusion
    with the CIS window, grid step and fill; LRP with its conservation check on."""
    return {"output": gb_output, "step": cis_options.grid_step, "patch": cis_options.patch, "fill": cis_options.fill}


def method_maps(
    methods: Sequence[str],
    items: Sequence[Item],
    canonical: Sequence[np.ndarray],
    scorer: Any,
    module: torch.nn.Module,
    options: dict[str, Any],
) -> dict[str, list[np.ndarray]]:
    """``{method: [h x w float32 map per face]}`` (``canonical``: each face's CIS map); a bar
    per method (its name) after 2 s."""
    cms = np.mean(np.stack(canonical), axis=0).astype(np.float32)
    maps: dict[str, list[np.ndarray]] = {}
    for m in methods:
        if m == "cms":
            maps[m] = [reproject(cms, it) for it in items]
        elif m == "cis":
            maps[m] = [reproject(c, it) for c, it in zip(canonical, items)]
        else:
            faces = outer_bar(items, desc=m, unit="face")
            maps[m] = [registry.compute(m, it.model_input(scorer, module), it.target, **options) for it in faces]
    return maps
