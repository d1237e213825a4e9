"""Faithfulness of the same maps under the old and the papers' conventions (issue 23).

Each method's map is computed once per photo (GB from the logit and from ``P(y)``, CIS /
CMS with the old 4 px and the new odd 5 px default patch at 64 px); then Average Drop /
Win % are scored with the old explanation images (plain min-max, LRP clipped) and the new
ones (positive part for every map), and deletion / insertion AUCs with the old choices
(row-major ties, black, sigma side/8) and the RISE ones (random ties averaged over 3
draws, mean grey, 11 x 11 sigma 5). Prints Markdown tables (docs/results.md)::

    python scripts/compare_conventions.py PHOTOS_DIR --model gender --images 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facesal_fast import models
from facesal_fast.align import default_aligner
from facesal_fast.audit.runner import list_images
from facesal_fast.evaluation import normalised_zero, prepare_items, reproject, score_images
from facesal_fast.evaluation.maps import cis_results
from facesal_fast.methods import registry
from facesal_fast.metrics import deletion_curve, equal_mass, explanation_image, faithfulness_table, insertion_curve
from facesal_fast.saliency.cis import odd_patch

CLASSIC = ("gradcam", "gradcampp", "scorecam", "lrp")  # the method registry's aliases, as in the old tables


def _maps(items, scorer, module, patch: int, gb_output: str) -> dict[str, list[np.ndarray]]:
    """Every method's map in input geometry (CIS / CMS at ``patch``, GB from ``gb_output``)."""
    results = cis_results(items, scorer, patch=patch, mode="grid", grid_step=2, stride=1, fill="black")
    cms = np.mean(np.stack([r.canonical for r in results]), 0)
    maps = {
        "cms": [reproject(cms, it) for it in items],
        "cis": [reproject(r.canonical, it) for r, it in zip(results, items)],
    }
    for m in (*CLASSIC, "gb"):
        maps[m] = [registry.compute(m, it.model_input(scorer, module), it.target, output=gb_output) for it in items]
    return maps


def _faithfulness(items, maps, scorer, positive: bool) -> dict[str, dict[str, float]]:
    s = 0.2 * items[0].input_image.shape[0] * items[0].input_image.shape[1]
    explained = {}
    for name, per_image in maps.items():
        # the old rule clipped LRP alone before the plain min-max
        prep = [np.maximum(h, 0) if (name == "lrp" and not positive) else h for h in per_image]
        explained[name] = [
            score_images(
                scorer, explanation_image(it.input_image, equal_mass(h, s, positive=positive))[None], it.target
            )[0]
            for h, it in zip(prep, items)
        ]
    return faithfulness_table([it.base for it in items], explained).rows


def _auc(items, maps, scorer, rise: bool) -> dict[str, tuple[float, float]]:
    grey = normalised_zero(scorer)
    opts = dict(steps=16, ties="random" if rise else "row-major", draws=3)
    out = {}
    for name, per_image in maps.items():
        d, i = [], []
        for h, it in zip(per_image, items):
            fn = lambda b, t=it.target: score_images(scorer, b, t)
            h = np.maximum(h, 0) if (name == "lrp" and not rise) else h  # the old run clipped LRP
            d.append(deletion_curve(fn, it.input_image, h, baseline=grey if rise else 0.0, **opts)[2])
            i.append(insertion_curve(fn, it.input_image, h, blur="rise" if rise else "wide", baseline=grey, **opts)[2])
        out[name] = (float(np.mean(d)), float(np.mean(i)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos")
    ap.add_argument("--model", default="gender")
    ap.add_argument("--images", type=int, default=8)
    args = ap.parse_args()
    scorer = models.load(args.model, backend="onnx")
    module = models.load_module(args.model).eval()
    items, _ = prepare_items(list_images(Path(args.photos))[: args.images], scorer, default_aligner(), print)
    old = _maps(items, scorer, module, 4, "logit")
    new = _maps(items, scorer, module, odd_patch(15, 64), "probability")
    f_old, f_new = _faithfulness(items, old, scorer, False), _faithfulness(items, new, scorer, True)
    a_old, a_new = _auc(items, old, scorer, False), _auc(items, new, scorer, True)
    print(
        f"\n**{args.model}, first {len(items)} photos** (old: 4 px patch, GB logit, min-max, LRP clipped, row-major "
        "ties, black deletion, sigma side/8; new: 5 px, GB P(y), positive part, RISE)\n"
    )
    print(
        "| method | Avg Drop old | Avg Drop new | Win % old | Win % new | deletion AUC old | new | insertion "
        "AUC old | new |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in old:
        print(
            f"| {m} | {f_old[m]['average_drop']:.1f} | {f_new[m]['average_drop']:.1f} | {f_old[m]['win']:.1f} | "
            f"{f_new[m]['win']:.1f} | {a_old[m][0]:.3f} | {a_new[m][0]:.3f} | {a_old[m][1]:.3f} | {a_new[m][1]:.3f} |"
        )


if __name__ == "__main__":
    main()
