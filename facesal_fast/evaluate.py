"""``facesal evaluate``: faithfulness, ablations, CMS stability and the sanity check, as one run.

Geometry choice (documented in docs/results.md): every metric is computed in the scorer's
input geometry (the 64 x 64 grey face crop of the bundled models). A canonical map (CIS or
CMS) is reprojected onto the photo with :func:`facesal_fast.align.to_image` and then
mapped through the scorer's crop affine (``cv2.warpAffine``) into the input; the classic
methods (GradCAM, GradCAM++, ScoreCAM, GB, LRP) are computed there directly. The explanation
image ``E = (1 - H) (x) I`` is built from the input crop ``I`` and scored without rounding
to uint8. ``M(.)`` is the softmax probability of the class predicted on ``I``.

Conventions (the papers' and their reference code's; all in ``summary.json``): every
method's map enters the explanation image through its positive part
(:func:`facesal_fast.metrics.equal_mass`), no method special-cased; Guided Backprop starts
from ``P(y)`` (``gb_output``, Algorithm 1 of Sun et al.); deletion / insertion follow RISE
(random tie order averaged over ``tie_draws`` seeded draws, deleted pixels set to the value
that normalises to 0, the 11 x 11 sigma 5 insertion blur); the old choices are options
(``ties="row-major"``, ``deletion_fill="black"``, ``insertion_blur="wide"``).

Patch sizes are given in the papers' 224 px geometry and scaled to the input by
:func:`facesal_fast.saliency.cis.odd_patch` (the nearest odd size, so every window is
centred): 5 -> 1, 9 -> 3, 15 -> 5, 25 -> 7 px at 64 px. CIS runs in ``grid`` mode (step 2)
by default to stay fast on a CPU.

Outputs go to ``RUN/evaluate/`` (CSV, Markdown, PNG, ``evaluate.html`` with the figures as
data URIs, ``summary.json``), written into a temporary folder and moved into place at the
end, so a run directory never holds a half-written evaluation.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

from facesal_fast.methods.guided_backprop import OUTPUTS
from facesal_fast.metrics import (
    BLURS,
    TIES,
    cascading_randomization,
    convergence_curve,
    deletion_curve,
    equal_mass,
    explanation_image,
    faithfulness_table,
    insertion_curve,
    split_half,
    win_percent,
)
from facesal_fast.saliency.cis import odd_patch

__all__ = [
    "EvalConfig",
    "METHOD_NAMES",
    "evaluate",
    "run_cli",
    "scaled_patch",
    "score_images",
    "similarity_transform",
    "to_input",
]

METHOD_NAMES = {
    "cms": "CMS (model map reprojected)",
    "cis": "CIS (own map reprojected)",
    "occlusion": "image-space occlusion",
    "gradcam": "GradCAM",
    "gradcampp": "GradCAM++",
    "scorecam": "ScoreCAM",
    "gb": "Guided Backprop",
    "lrp": "LRP-epsilon",
}
ALIASES = {"gradcam++": "gradcampp", "guided-backprop": "gb", "lrp-epsilon": "lrp"}
PAPER_PATCHES = (5, 9, 15, 25)
DELETION_FILLS = ("grey", "black")
# MediaPipe Face Mesh vertices of the 5 keypoints: eye corners (averaged per eye), nose tip, mouth corners
KEYPOINTS = ((33, 133), (362, 263), (1,), (61,), (291,))


@dataclass
class EvalConfig:
    """Settings of one evaluation run (all written to ``summary.json``).

    Attributes:
        model: bundled model name; methods: method keys (see :data:`METHOD_NAMES`).
        patch: CIS occlusion window in the paper's 224 px geometry (scaled to the input).
        mode, grid_step, stride, fill: CIS settings (see :func:`facesal_fast.cis`).
        budget: the equal mass ``s`` as a fraction of the input pixels.
        steps: chunks of the deletion / insertion curves.
        ablation_images, sanity_images: how many images (the first ones) the ablations and
            the randomisation check use; 0 switches them off.
        max_images: use at most this many images (None: all).
        backend: scorer backend for M(.) and occlusion.
        gb_output: Guided Backprop from ``"probability"`` (Sun et al.) or ``"logit"``.
        ties, tie_draws: deletion / insertion tie order (``"random"``: mean over
            ``tie_draws`` seeded orders; ``"row-major"``: pixel order, one draw).
        deletion_fill: ``"grey"`` (the value that normalises to 0, RISE) or ``"black"``.
        insertion_blur: ``"rise"`` (11 x 11, sigma 5) or ``"wide"`` (sigma side / 8).
    """

    model: str = "gender"
    methods: tuple[str, ...] = ("cms", "cis", "gradcam", "gradcampp", "scorecam", "gb", "lrp")
    patch: int = 15
    mode: str = "grid"
    grid_step: int = 2
    stride: int = 1
    fill: str = "black"
    budget: float = 0.2
    steps: int = 16
    ablation_images: int = 8
    sanity_images: int = 2
    max_images: int | None = None
    backend: str = "onnx"
    seed: int = 0
    gb_output: str = "probability"
    ties: str = "random"
    tie_draws: int = 3
    deletion_fill: str = "grey"
    insertion_blur: str = "rise"

    def check(self) -> None:
        """ValueError naming the setting when a convention option is unknown."""
        for name, value, allowed in (
            ("gb_output", self.gb_output, OUTPUTS),
            ("ties", self.ties, TIES),
            ("deletion_fill", self.deletion_fill, DELETION_FILLS),
            ("insertion_blur", self.insertion_blur, BLURS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if not isinstance(self.tie_draws, int) or self.tie_draws < 1:
            raise ValueError(f"tie_draws must be an integer >= 1, got {self.tie_draws!r}")

    def curve_conventions(self) -> str:
        """The deletion / insertion choices in words."""
        ties = (
            f"random tie order (mean of {self.tie_draws} seeded draws)" if self.ties == "random" else "row-major ties"
        )
        fill = "mean grey (normalised 0)" if self.deletion_fill == "grey" else "black"
        blur = "11 x 11 sigma 5 blur (RISE)" if self.insertion_blur == "rise" else "Gaussian blur sigma side/8"
        return f"{ties}, deleted pixels {fill}, insertion from {blur}"

    def conventions(self) -> str:
        """One line naming the conventions the tables use."""
        return (
            f"maps: positive part, equal mass; GB from {self.gb_output}; deletion/insertion: {self.curve_conventions()}"
        )


def scaled_patch(paper_patch: int, input_side: int) -> int:
    """A patch of the papers' 224 px geometry in ``input_side`` px, odd (:func:`odd_patch`)."""
    return odd_patch(paper_patch, input_side)


def normalised_zero(scorer: Any) -> np.ndarray:
    """``(C,)`` pixel value that the scorer's normalisation maps to 0 (``mean / scale``):
    RISE's deleted pixel and blur padding (mean grey)."""
    mean = np.asarray(scorer.mean, np.float32).reshape(-1)
    return np.broadcast_to(mean / np.float32(scorer.scale), (scorer.channels,)).astype(np.float32)


def to_input(photo_map: np.ndarray, affine: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A photo-space map carried into the scorer's input geometry (``affine`` image -> input)."""
    h, w = shape
    return cv2.warpAffine(
        np.asarray(photo_map, np.float32),
        np.asarray(affine, np.float64),
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )


def score_images(scorer: Any, images: np.ndarray, target: int) -> np.ndarray:
    """``M(.)`` of float images in input geometry (``K x h x w x C``, pixel units): the
    scorer's normalisation ``(v * scale - mean) / std`` in its layout, then its confidence."""
    x = np.asarray(images, np.float32)
    if x.ndim == 3:
        x = x[..., None]
    mean = np.asarray(scorer.mean, np.float32).reshape(-1)
    std = np.asarray(scorer.std, np.float32).reshape(-1)
    x = (x * np.float32(scorer.scale) - mean) / std
    if scorer.backend.layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    out = [scorer.score(np.ascontiguousarray(x[lo : lo + 256]), target) for lo in range(0, len(x), 256)]
    return np.concatenate(out).astype(np.float64)


# ---------------------------------------------------------------------------------- data


@dataclass
class _Item:
    key: str
    face: Any
    input_image: np.ndarray  # h x w x C uint8
    affine: np.ndarray
    target: int
    label: str
    base: float


def _prepare(
    photos: Sequence[Path], scorer: Any, aligner: Any, log: Callable[[str], None]
) -> tuple[list[_Item], list[tuple[str, str]]]:
    from facesal_fast.align import load_image

    items, failed = [], []
    for path in photos:
        try:
            face = aligner(load_image(path))
        except Exception as err:  # unreadable file or no face: recorded, not fatal
            failed.append((path.name, f"{type(err).__name__}: {err}"))
            continue
        input_image, affine = scorer.prepare(face.image, face.face_box)
        pred = scorer.predict_input(input_image)
        base = float(scorer.base_score(input_image, pred.index))
        items.append(_Item(path.name, face, input_image, affine, pred.index, pred.label or str(pred.index), base))
    log(f"  {len(items)} faces aligned, {len(failed)} failed")
    return items, failed


def _tensor(item: _Item, scorer: Any) -> torch.Tensor:
    x = item.input_image.astype(np.float32) * np.float32(scorer.scale)
    x = (x - np.asarray(scorer.mean, np.float32).reshape(-1)) / np.asarray(scorer.std, np.float32).reshape(-1)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))


def _classic_map(
    name: str, module: torch.nn.Module, x: torch.Tensor, target: int, scorer: Any, gb_output: str = "probability"
) -> np.ndarray:
    from facesal_fast.methods import cams
    from facesal_fast.methods.guided_backprop import guided_backprop
    from facesal_fast.methods.lrp import lrp

    if name == "gradcam":
        return cams.gradcam(module, x, target)
    if name == "gradcampp":
        return cams.gradcam_plus_plus(module, x, target)
    if name == "scorecam":
        if scorer is None:
            return cams.scorecam(module, x, target)
        return cams.scorecam(module, x, target, score_batch=lambda b: torch.from_numpy(scorer.score(b, target)))
    if name == "gb":
        return guided_backprop(module, x, target, gb_output)
    if name == "lrp":  # signed; equal_mass takes the positive part, as for every method
        # conservation checked (1%): a model that leaks relevance stops the run, naming the layer
        return lrp(module, x, target, "epsilon")
    raise ValueError(f"unknown method {name!r}")


def _cis_maps(items: list[_Item], scorer: Any, *, patch: int, mode: str, grid_step: int, stride: int, fill: str):
    from facesal_fast.saliency.cis import cis

    out = []
    for it in items:
        r = cis(
            it.face.image,
            scorer,
            it.target,
            face=it.face,
            patch=patch,
            mode=mode,
            grid_step=grid_step,
            stride=stride,
            fill=fill,
        )
        out.append(r)
    return out


def _reproject(canonical: np.ndarray, item: _Item) -> np.ndarray:
    from facesal_fast.align import to_image

    return to_input(to_image(canonical, item.face), item.affine, item.input_image.shape[:2])


def _explained(items: list[_Item], maps: dict[str, list[np.ndarray]], scorer: Any, s: float) -> dict[str, np.ndarray]:
    """``M(E_n)`` per method."""
    out = {}
    for name, per_image in maps.items():
        es = np.stack([explanation_image(it.input_image, equal_mass(m, s)) for it, m in zip(items, per_image)])
        out[name] = np.array([score_images(scorer, es[i : i + 1], it.target)[0] for i, it in enumerate(items)])
    return out


# ---------------------------------------------------------------------------------- alignment ablation


def _keypoints_input(item: _Item) -> tuple[np.ndarray, np.ndarray]:
    """5 keypoints in input pixels and on the canonical face."""
    m = item.face.mesh
    img = np.stack([m.img_verts[list(ix)].mean(0) for ix in KEYPOINTS]).astype(np.float64)
    can = np.stack([m.canon_verts[list(ix)].mean(0) for ix in KEYPOINTS]).astype(np.float64)
    img_in = img @ item.affine[:, :2].T + item.affine[:, 2]
    return img_in.astype(np.float32), can.astype(np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking
    ``src`` (N x 2) onto ``dst`` (Umeyama 1991, as used for 5-point face alignment); 2 x 3."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    cov = b.T @ a / len(src)
    U, S, Vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        d[-1] = -1
    R = U @ np.diag(d) @ Vt
    scale = float((S * d).sum() / a.var(0).sum())
    A = np.zeros((2, 3))
    A[:, :2] = scale * R
    A[:, 2] = md - scale * R @ ms
    return A


def _image_occlusion(items: list[_Item], scorer: Any, patch: int, step: int, fill: str) -> list[np.ndarray]:
    """Plain image-space occlusion over the whole input crop (no face alignment)."""
    from facesal_fast.methods.occlusion import drops_to_map, grid_centers

    out = []
    for it in items:
        centers = grid_centers(it.input_image.shape[:2], step)
        drops = it.base - np.asarray(scorer.score_occluded(it.input_image, centers, patch, fill, it.target), np.float64)
        out.append(drops_to_map(drops, centers, patch, it.input_image.shape[:2]))
    return out


# ---------------------------------------------------------------------------------- pictures


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    from facesal_fast.metrics import minmax
    from facesal_fast.saliency.overlay import heat_overlay

    return heat_overlay(image, minmax(heat).astype(np.float32) + 1e-6, 0.5, vmax=1.0)


def _grid_figure(rows: list[list[np.ndarray]], row_titles: list[str], col_titles: list[str], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(1.6 * nc + 0.6, 1.7 * nr + 0.4), squeeze=False)
    for i, r in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(r):
                ax.imshow(r[j], cmap=None if r[j].ndim == 3 else "jet")
            if i == 0 and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=7)
        axes[i][0].text(
            -0.08, 0.5, row_titles[i], transform=axes[i][0].transAxes, rotation=90, va="center", ha="right", fontsize=7
        )
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def _line_figure(
    series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str, title: str, logx: bool = False
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


# ---------------------------------------------------------------------------------- tables


def _write_table(folder: Path, name: str, rows: list[dict], digits: int = 3) -> str:
    """``name.csv`` and ``name.md``; returns the Markdown."""
    if not rows:
        return ""
    cols = list(rows[0])
    with (folder / f"{name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)

    def fmt(v):
        if isinstance(v, float):
            return "nan" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v)

    md = "| " + " | ".join(cols) + " |\n|" + "|".join("---" for _ in cols) + "|\n"
    md += "\n".join("| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows) + "\n"
    (folder / f"{name}.md").write_text(md)
    return md


def _md_to_html(md: str) -> str:
    lines = [line for line in md.strip().splitlines() if line.strip()]
    if len(lines) < 2:
        return ""
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------------------------- main


def evaluate(
    photos: str | Path | Sequence[str | Path],
    out: str | Path,
    config: EvalConfig | None = None,
    *,
    log: Callable[[str], None] | None = None,
    scorer: Any = None,
    module: torch.nn.Module | None = None,
    aligner: Any = None,
) -> dict:
    """Run the whole evaluation and write ``out/evaluate/``; returns ``summary.json``'s content.

    Args:
        photos: folder of face photos or a list of paths.
        out: run directory (created); results go to ``out/evaluate``.
        config: :class:`EvalConfig` (defaults otherwise).
        scorer, module, aligner: override the bundled model's scorer / torch module / the
            default aligner (tests).
    """
    from facesal_fast import models
    from facesal_fast.align import default_aligner
    from facesal_fast.audit.runner import list_images

    cfg = config or EvalConfig()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    methods = tuple(ALIASES.get(m, m) for m in cfg.methods)
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHOD_NAMES)}")
    if not 0 < cfg.budget < 1:
        raise ValueError(f"budget must be in (0, 1), got {cfg.budget}")
    cfg.check()
    t_start = time.perf_counter()
    paths = list_images(photos) if isinstance(photos, (str, Path)) else [Path(p) for p in photos]
    if cfg.max_images is not None:
        paths = paths[: cfg.max_images]
    if not paths:
        raise ValueError(f"no image found in {photos}")
    if scorer is None:
        if cfg.model not in models.MODELS:
            raise ValueError(f"unknown model {cfg.model!r}; bundled models: {sorted(models.MODELS)}")
        scorer = models.load(cfg.model, backend=cfg.backend)
    module = module if module is not None else models.load_module(cfg.model)
    module.eval()
    aligner = aligner or default_aligner()
    side = min(scorer.input_size)
    patch = scaled_patch(cfg.patch, side)
    cis_opts = dict(patch=patch, mode=cfg.mode, grid_step=cfg.grid_step, stride=cfg.stride, fill=cfg.fill)

    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".evaluate-", dir=run))
    figures: dict[str, bytes] = {}
    sections: list[tuple[str, str, list[str]]] = []  # (title, markdown table(s), figure names)
    summary: dict = {
        "config": asdict(cfg),
        "patch_input_px": patch,
        "conventions": cfg.conventions(),
        "command": " ".join(sys.argv),
    }
    try:
        log(f"facesal evaluate: {len(paths)} photos, model {cfg.model}")
        items, failed = _prepare(paths, scorer, aligner, log)
        if not items:
            raise ValueError("no face could be aligned in the photos")
        summary.update(images=len(items), failed=[{"image": k, "error": e} for k, e in failed])
        shape = items[0].input_image.shape[:2]
        s = cfg.budget * shape[0] * shape[1]

        # ---- CIS / CMS, main setting
        t0 = time.perf_counter()
        cis_results = _cis_maps(items, scorer, **cis_opts)
        canon = [r.canonical for r in cis_results]
        cms = np.mean(np.stack(canon), axis=0).astype(np.float32)
        log(f"  CIS of {len(items)} images in {time.perf_counter() - t0:.1f} s")

        # ---- method maps in input geometry
        t0 = time.perf_counter()
        maps: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        for it, r in zip(items, cis_results):
            x = _tensor(it, scorer)
            for m in methods:
                if m == "cms":
                    maps[m].append(_reproject(cms, it))
                elif m == "cis":
                    maps[m].append(_reproject(r.canonical, it))
                elif m == "occlusion":
                    maps[m].append(r.occlusion)
                else:
                    maps[m].append(np.asarray(_classic_map(m, module, x, it.target, scorer, cfg.gb_output), np.float32))
        log(f"  method maps in {time.perf_counter() - t0:.1f} s")

        # ---- Average Drop / Increase / Win
        explained = _explained(items, maps, scorer, s)
        table = faithfulness_table([it.base for it in items], explained)
        faith_rows = [
            {
                "method": m,
                "average_drop": r["average_drop"],
                "increase": r["increase"],
                "win": r["win"],
                "images": int(r["n"]),
            }
            for m, r in table.rows.items()
        ]
        md_faith = _write_table(tmp, "faithfulness", faith_rows, 1)
        paper4 = [m for m in ("cms", "gradcam", "gradcampp", "scorecam") if m in methods]
        if len(paper4) == 4:  # the papers' comparison: Win % among these four only
            t4 = faithfulness_table([it.base for it in items], {m: explained[m] for m in paper4})
            rows4 = [
                {
                    "method": m,
                    "average_drop": r["average_drop"],
                    "increase": r["increase"],
                    "win": r["win"],
                    "images": int(r["n"]),
                }
                for m, r in t4.rows.items()
            ]
            md_faith += "\n" + _write_table(tmp, "faithfulness_paper4", rows4, 1)
            summary["faithfulness_paper4"] = rows4
        per_image = [
            {
                "image": it.key,
                "target": it.label,
                "M(I)": it.base,
                **{f"M(E) {m}": float(explained[m][i]) for m in methods},
            }
            for i, it in enumerate(items)
        ]
        _write_table(tmp, "faithfulness_per_image", per_image, 4)

        # ---- deletion / insertion
        t0 = time.perf_counter()
        curves: dict[str, dict[str, list]] = {m: {"del": [], "ins": [], "del_auc": [], "ins_auc": []} for m in methods}
        fractions = None
        grey = normalised_zero(scorer)
        curve_opts = dict(steps=cfg.steps, ties=cfg.ties, draws=cfg.tie_draws, seed=cfg.seed)
        deleted = grey if cfg.deletion_fill == "grey" else 0.0
        for i, it in enumerate(items):
            fn = lambda batch, t=it.target: score_images(scorer, batch, t)
            for m in methods:
                fractions, d, da = deletion_curve(fn, it.input_image, maps[m][i], baseline=deleted, **curve_opts)
                _, ins, ia = insertion_curve(
                    fn, it.input_image, maps[m][i], blur=cfg.insertion_blur, baseline=grey, **curve_opts
                )
                c = curves[m]
                c["del"].append(d), c["ins"].append(ins), c["del_auc"].append(da), c["ins_auc"].append(ia)
        di_rows = [
            {
                "method": m,
                "deletion_auc": float(np.mean(c["del_auc"])),
                "deletion_auc_sd": float(np.std(c["del_auc"])),
                "insertion_auc": float(np.mean(c["ins_auc"])),
                "insertion_auc_sd": float(np.std(c["ins_auc"])),
            }
            for m, c in curves.items()
        ]
        md_di = _write_table(tmp, "deletion_insertion", di_rows, 3)
        figures["deletion.png"] = _line_figure(
            {m: (fractions, np.mean(c["del"], 0)) for m, c in curves.items()},
            "fraction of pixels deleted (most salient first)",
            "M",
            "Deletion (lower is better)",
        )
        figures["insertion.png"] = _line_figure(
            {m: (fractions, np.mean(c["ins"], 0)) for m, c in curves.items()},
            "fraction of pixels inserted into the blurred crop",
            "M",
            "Insertion (higher is better)",
        )
        log(f"  deletion/insertion in {time.perf_counter() - t0:.1f} s")

        # example explanations
        n_ex = min(4, len(items))
        ex_rows = []
        for i in range(n_ex):
            it = items[i]
            row = [np.repeat(it.input_image, 3, axis=2) if it.input_image.shape[2] == 1 else it.input_image]
            row += [_overlay(it.input_image, maps[m][i]) for m in methods]
            e = np.clip(explanation_image(it.input_image, equal_mass(maps[methods[0]][i], s)), 0, 255).astype(np.uint8)
            row.append(np.repeat(e, 3, axis=2) if e.shape[2] == 1 else e)
            ex_rows.append(row)
        figures["examples.png"] = _grid_figure(
            ex_rows,
            [f"{items[i].key} ({items[i].label})" for i in range(n_ex)],
            ["input"] + list(methods) + [f"E ({methods[0]})"],
            "Maps in the model's input geometry",
        )
        from facesal_fast.align import canonical_face
        from facesal_fast.saliency.overlay import heat_overlay

        face_img = canonical_face(cms.shape)
        figures["cms.png"] = _grid_figure(
            [[heat_overlay(face_img, cms, 0.6)]], [cfg.model], ["CMS"], f"CMS, {len(items)} images"
        )
        np.save(tmp / "cms.npy", cms)
        share_rows = _region_rows(cms)
        md_regions = _write_table(tmp, "cms_regions", share_rows, 3)
        sections.append(
            (
                f"Faithfulness: Average Drop / % Increase / Win (maps: positive part, equal mass; GB from "
                f"{cfg.gb_output})",
                md_faith,
                ["examples.png"],
            )
        )
        sections.append(
            (f"Deletion and insertion (AUC; {cfg.curve_conventions()})", md_di, ["deletion.png", "insertion.png"])
        )
        sections.append(
            ("CMS and its regions (share of positive mass, share of area, density = ratio)", md_regions, ["cms.png"])
        )
        summary.update(faithfulness=faith_rows, deletion_insertion=di_rows, cms_regions=share_rows)

        # ---- CMS stability
        orders = np.random.default_rng(cfg.seed)
        conv = [convergence_curve(canon)]
        for _ in range(19):
            perm = orders.permutation(len(canon))
            conv.append(convergence_curve([canon[j] for j in perm]))
        ns = [n for n, _ in conv[0]]
        conv_mean = np.mean([[d for _, d in c] for c in conv], axis=0)
        stab_rows = [{"images": int(n), "relative_L2_to_final": float(d)} for n, d in zip(ns, conv_mean)]
        sh = split_half(canon, seed=cfg.seed) if len(canon) >= 2 else {}
        md_stab = _write_table(tmp, "cms_convergence", stab_rows, 3)
        if sh:
            md_stab += "\n" + _write_table(tmp, "cms_split_half", [{k: float(v) for k, v in sh.items()}], 3)
        figures["convergence.png"] = _line_figure(
            {"CMS": (ns, conv_mean)},
            "images",
            "||CMS_n - CMS|| / ||CMS||",
            "CMS convergence (mean of 20 image orders)",
            logx=True,
        )
        sections.append(("CMS stability: convergence and split-half correlation", md_stab, ["convergence.png"]))
        summary.update(cms_convergence=stab_rows, cms_split_half=sh)

        # ---- ablations
        n_ab = min(cfg.ablation_images, len(items))
        if n_ab >= 2:
            t0 = time.perf_counter()
            ab_rows, ab_fig = _ablations(items[:n_ab], scorer, cfg, cis_opts, cis_results[:n_ab], s, side)
            md_ab = _write_table(tmp, "ablations", ab_rows, 1)
            figures.update(ab_fig)
            sections.append((f"Ablations ({n_ab} images): patch size, stride, fill, alignment", md_ab, list(ab_fig)))
            summary["ablations"] = ab_rows
            log(f"  ablations in {time.perf_counter() - t0:.1f} s")

        # ---- sanity check
        n_sa = min(cfg.sanity_images, len(items))
        if n_sa >= 1:
            t0 = time.perf_counter()
            sa_rows, sa_fig = _sanity(items[:n_sa], scorer, module, cfg, cis_opts, methods)
            md_sa = _write_table(tmp, "sanity", sa_rows, 3)
            figures.update(sa_fig)
            sections.append((f"Sanity check: cascading layer randomisation ({n_sa} images)", md_sa, list(sa_fig)))
            summary["sanity"] = sa_rows
            log(f"  sanity check in {time.perf_counter() - t0:.1f} s")

        summary["seconds"] = time.perf_counter() - t_start
        for name, data in figures.items():
            (tmp / name).write_bytes(data)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
        (tmp / "evaluate.html").write_text(_html(cfg, summary, sections, figures, failed))
        final = run / "evaluate"
        old = None
        if final.exists():
            old = run / f".evaluate-old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        log(f"facesal evaluate: wrote {final} in {summary['seconds']:.0f} s")
        return summary
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _region_rows(cms: np.ndarray) -> list[dict]:
    """Per face region: share of the positive CMS mass, share of the face area, and their
    ratio (density; 1 = no more salient than an average face pixel), densest first."""
    from facesal_fast.align import region_masks, region_shares

    shares = region_shares(cms)
    masks = {k: v for k, v in region_masks(cms.shape).items() if k in shares}
    total = float(sum(m.sum() for m in masks.values())) or 1.0
    rows = []
    for k, share in shares.items():
        area = float(masks[k].sum()) / total if k in masks else 0.0
        rows.append(
            {
                "region": k,
                "share": float(share),
                "area": area,
                "density": float(share / area) if area > 0 else float("nan"),
            }
        )
    return sorted(rows, key=lambda r: -(r["density"] if np.isfinite(r["density"]) else -1))


def _ablations(items, scorer, cfg, cis_opts, default_results, s, side):
    """Patch size, stride, fill and alignment: CMS maps and metric deltas against the default."""
    from facesal_fast.align import canonical_face
    from facesal_fast.saliency.overlay import heat_overlay

    configs: list[tuple[str, str, dict]] = []
    for p in PAPER_PATCHES:
        configs.append(
            ("patch", f"{p} px@224 -> {scaled_patch(p, side)} px", {**cis_opts, "patch": scaled_patch(p, side)})
        )
    for st in (1, 4, 16):
        configs.append(("stride", f"exact, vertex stride {st}", {**cis_opts, "mode": "exact", "stride": st}))
    configs.append(
        ("stride", f"grid step {cis_opts['grid_step'] * 2}", {**cis_opts, "grid_step": cis_opts["grid_step"] * 2})
    )
    for fill in ("black", "mean", "blur"):
        configs.append(("fill", fill, {**cis_opts, "fill": fill}))
    default_key = dict(cis_opts)
    face_img = canonical_face(default_results[0].canonical.shape)
    cache: dict[str, tuple[list, np.ndarray]] = {}
    rows, fams_maps = [], {}
    ref = None
    for family, label, opts in configs:
        key = json.dumps(opts, sort_keys=True, default=str)
        if key not in cache:
            res = default_results if opts == default_key else _cis_maps(items, scorer, **opts)
            canon = [r.canonical for r in res]
            cache[key] = (canon, np.mean(np.stack(canon), 0))
        canon, cms = cache[key]
        maps = {"cis": [_reproject(c, it) for c, it in zip(canon, items)], "cms": [_reproject(cms, it) for it in items]}
        ex = _explained(items, maps, scorer, s)
        base = [it.base for it in items]
        row = {"family": family, "setting": label + (" (default)" if opts == default_key else "")}
        t = faithfulness_table(base, ex)
        row.update(
            {
                "cis_avg_drop": t.rows["cis"]["average_drop"],
                "cis_increase": t.rows["cis"]["increase"],
                "cms_avg_drop": t.rows["cms"]["average_drop"],
                "cms_increase": t.rows["cms"]["increase"],
            }
        )
        row["_ex_cms"] = ex["cms"]
        rows.append(row)
        fams_maps.setdefault(family, []).append((label, heat_overlay(face_img, cms, 0.6)))
        if opts == default_key and ref is None:
            ref = row
    # alignment: none / keypoint / dense canonical
    occ = _image_occlusion(items, scorer, cis_opts["patch"], max(1, cis_opts["grid_step"]), cis_opts["fill"])
    none_map = np.mean(np.stack(occ), 0)
    h, w = items[0].input_image.shape[:2]
    can_shape = default_results[0].canonical.shape
    sims = [similarity_transform(*_keypoints_input(it)) for it in items]
    kp_canon = [
        cv2.warpAffine(o.astype(np.float32), A, (can_shape[1], can_shape[0]), flags=cv2.INTER_LINEAR)
        for o, A in zip(occ, sims)
    ]
    kp_map = np.mean(np.stack(kp_canon), 0)
    dense = cache[json.dumps(default_key, sort_keys=True, default=str)][1]
    align_maps = {
        "none (image-space occlusion, box crop)": [none_map for _ in items],
        "keypoint (5-point similarity)": [
            cv2.warpAffine(kp_map, A, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) for A in sims
        ],
        "dense canonical (CMS)": [_reproject(dense, it) for it in items],
    }
    ex = _explained(items, align_maps, scorer, s)
    t = faithfulness_table([it.base for it in items], ex)
    for label, r in t.rows.items():
        rows.append(
            {
                "family": "alignment",
                "setting": label,
                "cis_avg_drop": float("nan"),
                "cis_increase": float("nan"),
                "cms_avg_drop": r["average_drop"],
                "cms_increase": r["increase"],
                "_ex_cms": ex[label],
            }
        )
    fams_maps["alignment"] = [
        ("none (input crop)", _overlay(items[0].input_image, none_map)),
        ("keypoint (canonical frame)", heat_overlay(face_img, kp_map, 0.6)),
        ("dense (CMS)", heat_overlay(face_img, dense, 0.6)),
    ]
    # deltas and within-family Win % of the model-level map
    out = []
    for family in dict.fromkeys(r["family"] for r in rows):
        fam = [r for r in rows if r["family"] == family]
        wins = win_percent({r["setting"]: r["_ex_cms"] for r in fam})
        fam_ref = ref if family != "alignment" else fam[-1]
        for r in fam:
            out.append(
                {
                    "family": family,
                    "setting": r["setting"],
                    "cis_avg_drop": r["cis_avg_drop"],
                    "cis_increase": r["cis_increase"],
                    "cms_avg_drop": r["cms_avg_drop"],
                    "cms_increase": r["cms_increase"],
                    "delta_cms_avg_drop": r["cms_avg_drop"] - fam_ref["cms_avg_drop"],
                    "cms_win_in_family": wins[r["setting"]],
                }
            )
    figs = {}
    for family, entries in fams_maps.items():
        figs[f"ablation_{family}.png"] = _grid_figure(
            [[e[1] for e in entries]], [family], [e[0] for e in entries], f"Ablation: {family} (model-level maps)"
        )
    return out, figs


def sanity_cis(model: torch.nn.Module, item: _Item, scorer: Any, cis_opts: dict) -> np.ndarray:
    """The canonical CIS of ``item`` under ``model`` (grid step >= 4), for the cascade.

    ``incremental=False``: the cascade randomises one module object in place, and an
    incremental model's cached activations of the input would outlive its weights."""
    from facesal_fast.saliency.cis import cis
    from facesal_fast.scoring.scorer import Scorer

    sc = Scorer.from_torch(
        model,
        scorer.input_size,
        mean=scorer.mean,
        std=scorer.std,
        scale=scorer.scale,
        grayscale=scorer.channels == 1,
        crop=scorer.crop,
        crop_margin=scorer.crop_margin,
        classes=scorer.classes,
        backend="torch",
        batch_size=256,
    )
    opts = {**cis_opts, "mode": "grid", "grid_step": max(4, cis_opts["grid_step"])}
    return cis(item.face.image, sc, item.target, face=item.face, incremental=False, **opts).canonical


def _sanity(items, scorer, module, cfg, cis_opts, methods):
    """Cascading randomisation on the first images: CIS plus the gradient methods."""
    xs = [_tensor(it, scorer) for it in items]
    explainers: dict[str, Callable] = {}
    explainers["cis"] = lambda model, i: sanity_cis(model, items[i], scorer, cis_opts)
    for m in ("gradcam", "gb", "lrp"):  # always checked, whatever --methods says
        explainers[m] = lambda model, i, m=m: _classic_map(m, model, xs[i], items[i].target, None, cfg.gb_output)
    from facesal_fast.align import canonical_mask

    face_mask = canonical_mask(items[0].face.canonical_shape)
    rows, maps = cascading_randomization(module, explainers, len(items), seed=cfg.seed, masks={"cis": face_mask})
    agg = []
    steps = sorted({r["step"] for r in rows})
    for m in explainers:
        for st in steps:
            sel = [r for r in rows if r["method"] == m and r["step"] == st]
            agg.append(
                {
                    "method": m,
                    "step": st,
                    "layer": sel[0]["layer"].replace("blocks.", ""),
                    "spearman": float(np.nanmean([r["spearman"] for r in sel]))
                    if any(np.isfinite(r["spearman"]) for r in sel)
                    else float("nan"),
                    "ssim": float(np.mean([r["ssim"] for r in sel])),
                }
            )
    figs = {}
    figs["sanity_spearman.png"] = _line_figure(
        {m: (steps, [a["spearman"] for a in agg if a["method"] == m]) for m in explainers},
        "layers randomised (from the output down)",
        "Spearman vs trained",
        "Cascading randomisation: rank correlation",
    )
    figs["sanity_ssim.png"] = _line_figure(
        {m: (steps, [a["ssim"] for a in agg if a["method"] == m]) for m in explainers},
        "layers randomised (from the output down)",
        "SSIM vs trained",
        "Cascading randomisation: SSIM",
    )
    show = [st for st in steps if st in (0, 1, 2, 3, 5, 8, len(steps) - 1)]
    grid_rows = []
    for m in explainers:
        grid_rows.append(
            [
                cv2.applyColorMap((np.clip(_mm(maps[m][st][0]), 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[
                    ..., ::-1
                ]
                for st in show
            ]
        )
    figs["sanity_maps.png"] = _grid_figure(
        grid_rows, list(explainers), [f"{st} layers" for st in show], f"Maps of {items[0].key} as layers are randomised"
    )
    return agg, figs


def _mm(a):
    from facesal_fast.metrics import minmax

    return minmax(a)


def _html(cfg: EvalConfig, summary: dict, sections, figures: dict[str, bytes], failed) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>facesal evaluate</title><style>",
        "body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "th{background:#eee}img{max-width:100%;margin:.3em}code{background:#f4f4f4}",
        "</style></head><body>",
        f"<h1>facesal evaluate: {html.escape(cfg.model)}</h1>",
        f"<p>{summary.get('images', 0)} images ({len(failed)} failed), methods {html.escape(', '.join(cfg.methods))}; "
        f"CIS patch {cfg.patch} px at 224 px = {summary['patch_input_px']} px at the input, mode "
        f"{html.escape(cfg.mode)}"
        f" (grid step {cfg.grid_step}), stride {cfg.stride}, fill {html.escape(cfg.fill)}; equal mass s = "
        f"{cfg.budget:g} x input pixels. "
        "M(.) = softmax probability of the class predicted on the unmodified crop; explanation images built "
        "in the model's input geometry.</p>",
        f"<p>Conventions: {html.escape(summary.get('conventions', ''))}.</p>",
        f"<p>Command: <code>{html.escape(summary.get('command', ''))}</code></p>",
    ]
    for title, md, figs in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for block in md.split("\n\n"):
            parts.append(_md_to_html(block))
        for name in figs:
            if name in figures:
                data = base64.b64encode(figures[name]).decode()
                parts.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
    if failed:
        parts.append(
            "<h2>Images that failed</h2><ul>"
            + "".join(f"<li>{html.escape(k)}: {html.escape(e)}</li>" for k, e in failed)
            + "</ul>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def run_cli(args: Any) -> int:
    """``facesal evaluate`` (argparse namespace from :mod:`facesal_fast.cli`); exit status."""
    cfg = EvalConfig(
        model=args.model,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        patch=args.patch,
        mode=args.mode,
        grid_step=args.grid_step,
        stride=args.stride,
        fill=args.fill,
        budget=args.budget,
        steps=args.steps,
        ablation_images=args.ablation_images,
        sanity_images=args.sanity_images,
        max_images=args.max_images,
        backend=args.backend,
        **{
            k: getattr(args, k)
            for k in ("gb_output", "ties", "tie_draws", "deletion_fill", "insertion_blur")
            if getattr(args, k, None) is not None
        },
    )
    try:
        evaluate(args.photos, args.out, cfg)
    except (FileNotFoundError, ValueError) as err:
        print(f"facesal: {err}", file=sys.stderr)
        return 2
    print(f"facesal evaluate: {Path(args.out) / 'evaluate' / 'evaluate.html'}")
    return 0
