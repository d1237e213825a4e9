"""The sanity check (Adebayo et al.): cascading layer randomisation, from the output down, of
CIS and the gradient methods on the first images; Spearman and SSIM against the trained map."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from facesal_fast.align import canonical_mask
from facesal_fast.core.options import CISOptions
from facesal_fast.evaluation.report import Section, Table
from facesal_fast.methods import registry
from facesal_fast.metrics import cascading_randomization, minmax, randomizable_layers
from facesal_fast.report.figures import image_grid_figure, line_figure, png
from facesal_fast.saliency.cis import cis
from facesal_fast.scoring.progress import inside_outer_bar, step_bar
from facesal_fast.scoring.scorer import Scorer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import torch

    from facesal_fast.evaluation.items import Item

__all__ = ["GRADIENT_METHODS", "sanity_cis", "sanity_section"]

#: Always checked, whatever the evaluation's methods.
GRADIENT_METHODS = ("gradcam", "guided-backprop", "lrp-epsilon")
_SHOWN_STEPS = (0, 1, 2, 3, 5, 8)


def sanity_cis(
    model: torch.nn.Module, item: Item, scorer: Any, cis_options: CISOptions | Mapping[str, Any]
) -> np.ndarray:
    """The canonical CIS of ``item`` under ``model`` (grid step >= 4), for the cascade.

    ``incremental=False``: the cascade randomises one module object in place, and an
    incremental model's cached activations of the input would outlive its weights."""
    sc = Scorer.from_torch(model, spec=scorer.spec, classes=scorer.classes, backend="torch", batch_size=256)
    options = CISOptions.build(cis_options)
    options = options.replace(mode="grid", grid_step=max(4, options.grid_step), incremental=False)
    return cis(item.face.image, sc, item.target, face=item.face, options=options.per_face()).canonical


def _explainers(
    items: Sequence[Item], scorer: Any, cis_options: CISOptions, options: dict[str, Any]
) -> dict[str, Callable[[torch.nn.Module, int], np.ndarray]]:
    """``method -> fn(model, i)``: CIS and the gradient methods of the ``i``-th item under ``model``."""
    explainers: dict[str, Callable[[torch.nn.Module, int], np.ndarray]] = {
        "cis": lambda model, i: sanity_cis(model, items[i], scorer, cis_options)
    }
    for m in GRADIENT_METHODS:
        explainers[m] = lambda model, i, m=m: registry.compute(
            m, items[i].model_input(scorer, model, scored_by_scorer=False), items[i].target, **options
        )
    return explainers


def _counted(
    explainers: dict[str, Callable[[torch.nn.Module, int], np.ndarray]], bar: Any
) -> dict[str, Callable[[torch.nn.Module, int], np.ndarray]]:
    """The explainers, each call run with inner bars off and counted on ``bar``."""

    def counted(fn: Callable[[torch.nn.Module, int], np.ndarray]) -> Callable[[torch.nn.Module, int], np.ndarray]:
        def run(model: torch.nn.Module, i: int) -> np.ndarray:
            with inside_outer_bar():
                found = fn(model, i)
            bar.update(1)
            return found

        return run

    return {m: counted(fn) for m, fn in explainers.items()}


def _mean_rows(rows: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Spearman and SSIM averaged over the images, per method and step."""
    out = []
    for m in methods:
        for st in sorted({r["step"] for r in rows}):
            sel = [r for r in rows if r["method"] == m and r["step"] == st]
            rho = [r["spearman"] for r in sel]
            out.append(
                {
                    "method": m,
                    "step": st,
                    "layer": sel[0]["layer"].replace("blocks.", ""),
                    "spearman": float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan"),
                    "ssim": float(np.mean([r["ssim"] for r in sel])),
                }
            )
    return out


def _jet(heat: np.ndarray) -> np.ndarray:
    """A map in the jet colours, ``h x w x 3`` uint8 RGB."""
    return cv2.applyColorMap((np.clip(minmax(heat), 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]


def _figures(agg: list[dict[str, Any]], maps: dict[str, list], methods: Sequence[str], key: str) -> dict[str, bytes]:
    steps = sorted({a["step"] for a in agg})
    x = "layers randomised (from the output down)"
    curves = {
        f"sanity_{metric}.png": line_figure(
            {m: (steps, [a[metric] for a in agg if a["method"] == m]) for m in methods},
            x,
            f"{label} vs trained",
            f"Cascading randomisation: {title}",
        )
        for metric, label, title in (("spearman", "Spearman", "rank correlation"), ("ssim", "SSIM", "SSIM"))
    }
    shown = [st for st in steps if st in (*_SHOWN_STEPS, len(steps) - 1)]
    grid = image_grid_figure(
        [[_jet(maps[m][st][0]) for st in shown] for m in methods],
        list(methods),
        [f"{st} layers" for st in shown],
        f"Maps of {key} as layers are randomised",
    )
    return {**{name: png(fig) for name, fig in curves.items()}, "sanity_maps.png": png(grid)}


def sanity_section(
    items: Sequence[Item],
    scorer: Any,
    module: torch.nn.Module,
    cis_options: CISOptions,
    options: dict[str, Any],
    seed: int,
) -> Section:
    """Cascading randomisation of ``module`` on ``items``: CIS (on the face) and
    :data:`GRADIENT_METHODS` (``options``: the registry options, e.g. GB's ``output``); a bar
    ("sanity check", one step per map) after 2 s."""
    explainers = _explainers(items, scorer, cis_options, options)
    face_mask = canonical_mask(items[0].face.canonical_shape)
    total = (len(randomizable_layers(module)) + 1) * len(items) * len(explainers)
    with step_bar(total=total, desc="sanity check", unit="map") as bar:
        counted = _counted(explainers, bar)
        rows, maps = cascading_randomization(module, counted, len(items), seed=seed, masks={"cis": face_mask})
    agg = _mean_rows(rows, list(explainers))
    return Section(
        f"Sanity check: cascading layer randomisation ({len(items)} images)",
        [Table("sanity", agg, 3)],
        _figures(agg, maps, list(explainers), items[0].key),
        {"sanity": agg},
    )
