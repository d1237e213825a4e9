"""Average Drop, % Increase in Confidence and Win % (Chattopadhyay et al.; John et al.) of
every method, with example explanations.

Every method's map enters the explanation image ``E = (1 - H) (x) I`` through its positive
part at equal mass ``s`` (:func:`facesal_fast.metrics.equal_mass`), no method special-cased;
``E`` is scored without rounding to uint8.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from facesal_fast.evaluation.items import Item, score_images
from facesal_fast.evaluation.report import Section, Table
from facesal_fast.metrics import equal_mass, explanation_image, faithfulness_table, minmax
from facesal_fast.report.figures import image_grid_figure, png
from facesal_fast.saliency.overlay import heat_overlay
from facesal_fast.scoring.progress import outer_bar

if TYPE_CHECKING:
    from collections.abc import Sequence

    from facesal_fast.evaluation.config import EvalConfig

__all__ = ["PAPER_METHODS", "explained_scores", "faithfulness_section", "overlay", "rgb"]

#: The papers' comparison: Win % among these four only.
PAPER_METHODS = ("cms", "gradcam", "gradcam++", "scorecam")
_EXAMPLES = 4


def explained_scores(
    items: Sequence[Item], maps: dict[str, list[np.ndarray]], scorer: Any, mass: float
) -> dict[str, np.ndarray]:
    """``M(E_n)`` per method: ``(N,)`` float64 for the ``N`` items (``mass``: ``s`` in pixels);
    a bar ("faithfulness") after 2 s."""
    out = {}
    for name, per_image in outer_bar(maps.items(), desc="faithfulness", total=len(maps), unit="method"):
        es = [explanation_image(it.input_image, equal_mass(m, mass)) for it, m in zip(items, per_image)]
        out[name] = np.array([score_images(scorer, e[None], it.target)[0] for e, it in zip(es, items)])
    return out


def _rows(base: Sequence[float], explained: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    table = faithfulness_table(base, explained)
    keys = ("average_drop", "increase", "win")
    return [{"method": m, **{k: r[k] for k in keys}, "images": int(r["n"])} for m, r in table.rows.items()]


def rgb(image: np.ndarray) -> np.ndarray:
    """An ``h x w x C`` picture as ``h x w x 3`` (grey repeated)."""
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """``heat`` (min-max scaled) over ``image``: ``h x w x 3`` uint8."""
    return heat_overlay(image, minmax(heat).astype(np.float32) + 1e-6, 0.5, vmax=1.0)


def _examples(items: Sequence[Item], maps: dict[str, list[np.ndarray]], mass: float) -> bytes:
    methods = list(maps)
    rows = []
    for i, it in enumerate(items[:_EXAMPLES]):
        e = explanation_image(it.input_image, equal_mass(maps[methods[0]][i], mass))
        row = [rgb(it.input_image), *(overlay(it.input_image, maps[m][i]) for m in methods)]
        rows.append([*row, rgb(np.clip(e, 0, 255).astype(np.uint8))])
    return png(
        image_grid_figure(
            rows,
            [f"{it.key} ({it.label})" for it in items[:_EXAMPLES]],
            ["input", *methods, f"E ({methods[0]})"],
            "Maps in the model's input geometry",
        )
    )


def faithfulness_section(
    items: Sequence[Item], maps: dict[str, list[np.ndarray]], scorer: Any, mass: float, cfg: EvalConfig
) -> Section:
    """Average Drop / Increase / Win % of every method (and of the papers' four when all are
    run), ``M(E)`` per image, and example maps."""
    base = [it.base for it in items]
    explained = explained_scores(items, maps, scorer, mass)
    rows = _rows(base, explained)
    tables = [Table("faithfulness", rows, 1)]
    summary: dict[str, Any] = {"faithfulness": rows}
    if all(m in maps for m in PAPER_METHODS):
        paper = _rows(base, {m: explained[m] for m in PAPER_METHODS})
        tables.append(Table("faithfulness_paper4", paper, 1))
        summary["faithfulness_paper4"] = paper
    per_image = [
        {"image": it.key, "target": it.label, "M(I)": it.base, **{f"M(E) {m}": float(explained[m][i]) for m in maps}}
        for i, it in enumerate(items)
    ]
    tables.append(Table("faithfulness_per_image", per_image, 4, shown=False))
    return Section(
        f"Faithfulness: Average Drop / % Increase / Win (maps: positive part, equal mass; GB from {cfg.gb_output})",
        tables,
        {"examples.png": _examples(items, maps, mass)},
        summary,
    )
