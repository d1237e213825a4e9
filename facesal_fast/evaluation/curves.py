"""Deletion and insertion curves and their AUCs (Petsiuk et al., RISE conventions by default:
random tie order averaged over seeded draws, deleted pixels set to the value that normalises to
0, insertion from the 11 x 11 sigma 5 blur)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from facesal_fast.evaluation.items import Item, normalised_zero, score_images
from facesal_fast.evaluation.report import Section, Table
from facesal_fast.metrics import deletion_curve, insertion_curve
from facesal_fast.report.figures import line_figure, png
from facesal_fast.scoring.progress import outer_bar

if TYPE_CHECKING:
    from collections.abc import Sequence

    from facesal_fast.evaluation.config import EvalConfig

__all__ = ["curves_section"]


def _curves(item: Item, heat: np.ndarray, scorer: Any, cfg: EvalConfig) -> tuple[np.ndarray, tuple, tuple]:
    """(fractions, (deletion curve, AUC), (insertion curve, AUC)) of one map."""
    grey = normalised_zero(scorer)
    options = dict(steps=cfg.steps, ties=cfg.ties, draws=cfg.tie_draws, seed=cfg.seed)
    score = lambda batch: score_images(scorer, batch, item.target)  # noqa: E731
    deleted = grey if cfg.deletion_fill == "grey" else 0.0
    fractions, d, d_auc = deletion_curve(score, item.input_image, heat, baseline=deleted, **options)
    _, i, i_auc = insertion_curve(score, item.input_image, heat, blur=cfg.insertion_blur, baseline=grey, **options)
    return fractions, (d, d_auc), (i, i_auc)


def curves_section(items: Sequence[Item], maps: dict[str, list[np.ndarray]], scorer: Any, cfg: EvalConfig) -> Section:
    """Mean deletion / insertion AUC (and SD) per method, and the mean curves; a bar
    ("deletion/insertion", one step per map) after 2 s."""
    pairs = [(m, it, heat) for m, per_image in maps.items() for it, heat in zip(items, per_image)]
    curves: dict[str, list] = {m: [] for m in maps}
    for m, it, heat in outer_bar(pairs, desc="deletion/insertion", unit="map"):
        curves[m].append(_curves(it, heat, scorer, cfg))
    rows, deletion, insertion = [], {}, {}
    for m, runs in curves.items():
        fractions = runs[0][0]
        d_auc, i_auc = [r[1][1] for r in runs], [r[2][1] for r in runs]
        deletion[m] = (fractions, np.mean([r[1][0] for r in runs], 0))
        insertion[m] = (fractions, np.mean([r[2][0] for r in runs], 0))
        rows.append(
            {
                "method": m,
                "deletion_auc": float(np.mean(d_auc)),
                "deletion_auc_sd": float(np.std(d_auc)),
                "insertion_auc": float(np.mean(i_auc)),
                "insertion_auc_sd": float(np.std(i_auc)),
            }
        )
    figures = {
        "deletion.png": line_figure(
            deletion, "fraction of pixels deleted (most salient first)", "M", "Deletion (lower is better)"
        ),
        "insertion.png": line_figure(
            insertion, "fraction of pixels inserted into the blurred crop", "M", "Insertion (higher is better)"
        ),
    }
    return Section(
        f"Deletion and insertion (AUC; {cfg.curve_conventions()})",
        [Table("deletion_insertion", rows, 3)],
        {name: png(fig) for name, fig in figures.items()},
        {"deletion_insertion": rows},
    )
