"""The paper's five face tasks side by side (its Figure 1): ``facesal tasks PHOTOS --out runs/NAME``.

On the same photos, the CMS (mean CIS over the photos) of every bundled model of each task:

- recognition: ``dlib-resnet`` with eq. 7 identification confidence against the photo's own
  unoccluded descriptor (the gallery is that one descriptor: ``cos(Q_occluded, Q)``);
- gender: ``gender`` (mini-XCEPTION) and ``gender-dlib`` (dlib/Cydral);
- age: ``age`` (ten-year bins, the predicted bin's probability);
- head pose: ``head-pose`` (MediaPipe Face Mesh, 9 yaw x pitch bins);
- expression: ``expression-fer`` and ``expression-kdef``.

Every classifier explains its predicted class. The confidences differ in unit (probability,
cosine) and the drops in size, so each map is drawn over the mean face divided by its own
positive mass, all on one colour scale, with its magnitude (mean positive drop) written
under it (:func:`facesal_fast.report.figures.task_maps_figure`); beside the figure, each
model's region shares in percent: the mean over the photos of each photo's share of its positive
saliency on the face (the maps are cut to the canonical face first), with its bootstrap
interval over photos.
Output: ``OUT/tasks.png``, ``OUT/tasks.html`` (self-contained) and ``OUT/tasks.json``.
"""

from __future__ import annotations

import base64
import html
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from facesal_fast.audit.store import atomic_write_bytes
from facesal_fast.core.options import CISOptions
from facesal_fast.core.renamed import RenamedAttribute

if TYPE_CHECKING:
    import argparse

__all__ = [
    "TASK_MODELS",
    "TASK_OPTIONS",
    "TaskMaps",
    "add_tasks_arguments",
    "five_tasks",
    "run_tasks_cli",
    "write_tasks_page",
]

#: The CIS options of ``five_tasks`` by default: a grid, as the head-pose scorer runs MediaPipe on
#: every occluded copy.
TASK_OPTIONS = CISOptions(mode="grid")
#: The CIS options ``tasks.json`` records, in this order.
_RECORDED = ("mode", "grid_step", "patch", "stride", "fill", "quality", "incremental")
#: Task -> the bundled models that perform it (columns of the figure, in this order).
TASK_MODELS: dict[str, tuple[str, ...]] = {
    "recognition": ("dlib-resnet",),
    "gender": ("gender", "gender-dlib"),
    "age": ("age",),
    "head pose": ("head-pose",),
    "expression": ("expression-fer", "expression-kdef"),
}


@dataclass
class TaskMaps:
    """CMS of each model over the same photos.

    Attributes:
        cms: model name -> ``H_F x W_F`` float32 mean CIS (per pixel over the photos covering it).
        shares: model name -> ``{region: mean per-photo share}`` (positive mass on the face; the
            estimates of ``intervals``), then ``"other"``: the rest of the face's mass.
        intervals: model name -> ``{region: (mean per-photo share, CI low, CI high)}``, the
            bootstrap interval over photos of :class:`~facesal_fast.saliency.CMSAccumulator`.
        level: the level of ``intervals`` (``confidence`` before 0.2).
        task: model name -> its task.
        photos: the photos used (every model succeeded on each); failed: ``(photo, message)``.
        settings: the CIS options used.
    """

    cms: dict[str, np.ndarray]
    shares: dict[str, dict[str, float]]
    task: dict[str, str]
    photos: list[str]
    intervals: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    level: float = 0.95

    confidence = RenamedAttribute("level")


def _scorers(names: Sequence[str], backend: str, device: str) -> dict[str, Any]:
    # lazy: keeps torch and cv2 out of facesal --help
    from facesal_fast import models

    return {name: models.load(name, backend=backend, device=device) for name in names}


def _bound(name: str, scorer: Any, image: np.ndarray, face: Any) -> Any:
    """The scorer explained for this photo: recognition binds eq. 7 to the photo's own descriptor."""
    if name != "dlib-resnet":
        return scorer
    # lazy: keeps torch and cv2 out of facesal --help
    from facesal_fast.saliency.identity import identification_scorer

    return identification_scorer(scorer.embed(image, face)[None], ["self"], "self", scorer=scorer)


def _photo_maps(
    image: np.ndarray, face: Any, scorers: dict[str, Any], options: CISOptions
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Model name -> (``H_F x W_F`` CIS map, its density ``counts``: the pixels the photo covers)."""
    # lazy: keeps torch and cv2 out of facesal --help
    from facesal_fast.saliency.cis import cis

    maps = {}
    for name, scorer in scorers.items():
        result = cis(image, _bound(name, scorer, image, face), None, face=face, options=options.per_face())
        maps[name] = (np.asarray(result.canonical, np.float64), np.asarray(result.counts))
    return maps


def _mean_shares(intervals: dict[str, tuple[float, float, float]]) -> dict[str, float]:
    """The estimates of ``intervals`` (mean per-photo shares), then ``"other"``: the rest of the
    face's mass (regions are disjoint but for ``mouth`` = lips + opening)."""
    shares = {region: mean for region, (mean, _, _) in intervals.items()}
    opening = shares["mouth"] - shares["upper_lip"] - shares["lower_lip"]
    return {**shares, "other": 1.0 - sum(v for k, v in shares.items() if k != "mouth") - opening}


def five_tasks(
    photos: Sequence[str | Path],
    *,
    models: Sequence[str] | None = None,
    backend: str = "auto",
    device: str = "cpu",
    aligner: Any = None,
    progress: bool = True,
    options: CISOptions | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> TaskMaps:
    """CMS of every model in ``models`` (default: all of :data:`TASK_MODELS`) over ``photos``.

    A photo on which alignment or any model fails is left out for all models (so every
    column averages the same photos) and listed in ``failed``.

    Args:
        photos: photo paths.
        models: bundled model names (each must be in :data:`TASK_MODELS`).
        backend: inference backend of the torch models (``"auto"``: a timed probe per model).
        device: where the models run (``"cpu"``, ``"cuda"``, ``"cuda:N"``).
        options, **overrides: the CIS options (a :class:`~facesal_fast.core.options.CISOptions`
            or its fields by name: ``mode``, ``grid_step``, ``patch``, ``stride``, ``fill``, ...;
            default :data:`TASK_OPTIONS`, a grid, because the head-pose scorer runs MediaPipe on
            every occluded copy). ``patch`` is in each model's input pixels (``None``: 15 px at
            a 224 px input, scaled to the model).
        progress: one bar over the photos (the per-photo occlusion bars stay off).

    Raises:
        ValueError: an unknown model, no photos, or a bad CIS option, before any model loads.
    """
    # lazy: keeps torch and cv2 out of facesal --help
    from facesal_fast.align import canonical_mask, default_aligner, load_image
    from facesal_fast.saliency.cms import CMSAccumulator
    from facesal_fast.scoring.progress import counted, inside_outer_bar

    task_of = {m: task for task, names in TASK_MODELS.items() for m in names}
    names = list(models) if models is not None else list(task_of)
    unknown = [m for m in names if m not in task_of]
    if unknown or not names:
        raise ValueError(f"models must be among {list(task_of)}, got {list(models or [])}")
    if not photos:
        raise ValueError("photos is empty: give at least one face photo")
    options = TASK_OPTIONS.replace(**overrides) if options is None else CISOptions.build(options, **overrides)
    scorers, aligner = _scorers(names, backend, device), aligner or default_aligner()
    accumulators: dict[str, CMSAccumulator] = {}
    used, failed = [], []
    for path in counted(photos, desc="tasks", unit="photo", disable=not progress, dynamic_ncols=True):
        try:
            image = load_image(path)
            with inside_outer_bar():
                maps = _photo_maps(image, aligner(image, source=str(path)), scorers, options)
        except ValueError as err:  # NoFaceError / ImageError are ValueErrors
            failed.append((str(path), str(err)))
            continue
        used.append(str(path))
        for name, (canonical, counts) in maps.items():  # the face only: shares of the face's mass
            accumulators.setdefault(name, CMSAccumulator(canonical.shape, min_group=2)).add(
                canonical * canonical_mask(canonical.shape), "all", counts
            )
    if not used:
        raise ValueError(f"no photo could be explained: {failed}")
    with warnings.catch_warnings():  # the split-half reliability (unused here) warns on a few photos or flat maps
        warnings.simplefilter("ignore", RuntimeWarning)
        results = {name: accumulators[name].result() for name in names}
    return TaskMaps(
        {n: r.cms for n, r in results.items()},
        {n: _mean_shares(r.share_intervals["all"]) for n, r in results.items()},
        {m: task_of[m] for m in names},
        used,
        {n: r.share_intervals["all"] for n, r in results.items()},
        failed,
        {**_recorded(options), "backend": backend},
        results[names[0]].level,
    )


def _recorded(options: CISOptions) -> dict[str, Any]:
    """The CIS options ``tasks.json`` records (those ``facesal tasks`` takes)."""
    return {name: getattr(options, name) for name in _RECORDED}


def _figure_png(result: TaskMaps) -> bytes:
    """The maps over the mean face, each over its own positive mass, on one colour scale, with
    each model's magnitude (mean positive drop, in its confidence's unit) under its map."""
    # lazy: keeps matplotlib, cv2 and torch out of facesal --help
    from facesal_fast.report.figures import png, task_maps_figure

    maps = [
        (f"{result.task[n]}\n{n}", result.cms[n], "cosine" if result.task[n] == "recognition" else "probability")
        for n in result.cms
    ]
    return png(task_maps_figure(maps))


def _settings_text(settings: dict[str, Any]) -> str:
    """The CIS options in words: ``grid mode, step 8 px, default patch, backend onnx``."""
    patch = settings.get("patch")
    return (
        f"{settings.get('mode')} mode, grid step {settings.get('grid_step')} px, "
        + (f"patch {patch} px" if patch else "default patch (15 px at a 224 px input, scaled to each model)")
        + (f", backend {settings['backend']}" if settings.get("backend") else "")
        + " (sizes in each model's input pixels)"
    )


def _shares_table(result: TaskMaps) -> str:
    names = list(result.cms)
    regions = list(next(iter(result.shares.values())))
    head = "".join(f"<th>{html.escape(result.task[n])}<br>{html.escape(n)}</th>" for n in names)
    rows = []
    for region in regions:
        cells = "".join(f"<td>{_share(result, n, region)}</td>" for n in names)
        rows.append(f"<tr><td>{html.escape(region.replace('_', ' '))}</td>{cells}</tr>")
    return f"<table><tr><th>region (subject's left/right)</th>{head}</tr>{''.join(rows)}</table>"


def _share(result: TaskMaps, name: str, region: str) -> str:
    """``13.9% [12.1, 15.8]``: the mean per-photo share in percent and, when there is one, its
    bootstrap interval (the report's and compare's unit)."""
    # lazy: keeps cv2 and torch out of facesal --help
    from facesal_fast.report.html import share_cell

    found = result.intervals.get(name, {}).get(region)
    share = result.shares[name][region]
    return share_cell(share, found[1], found[2]) if found else f"{100 * share:.1f}%"


def write_tasks_page(result: TaskMaps, out: str | Path) -> Path:
    """Write ``out/tasks.png``, ``out/tasks.json`` and the self-contained ``out/tasks.html``; returns the page."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figure = _figure_png(result)
    atomic_write_bytes(out / "tasks.png", figure)
    summary = {
        "photos": result.photos,
        "failed": result.failed,
        "settings": result.settings,
        "models": {
            n: {
                "task": result.task[n],
                "region_shares": result.shares[n],
                "per_photo_share_intervals": result.intervals.get(n, {}),
            }
            for n in result.cms
        },
    }
    atomic_write_bytes(out / "tasks.json", json.dumps(summary, indent=1).encode())
    failed = "".join(f"<li>{html.escape(p)}: {html.escape(m)}</li>" for p, m in result.failed)
    body = (
        "<h1>Five face tasks: canonical model saliency</h1>"
        f"<p>{len(result.photos)} photos; {html.escape(_settings_text(result.settings))}. The models' confidence "
        "drops differ in unit (the predicted class's probability, the identification cosine) and in size, so each "
        "map is divided by its own positive mass and all share one colour scale (1 = spread evenly over the face); "
        "under each map, its magnitude: the mean positive drop over the face and the largest drop.</p>"
        f'<img src="data:image/png;base64,{base64.b64encode(figure).decode()}" alt="CMS per task" '
        'style="max-width:100%">'
        "<h2>Region shares (mean over the photos of each photo's share of its positive saliency on the face; "
        f"under each, its {100 * result.level:g}% bootstrap interval over photos)</h2>{_shares_table(result)}"
        + (f"<h2>Left out</h2><ul>{failed}</ul>" if failed else "")
    )
    # lazy: keeps cv2 and torch out of facesal --help
    from facesal_fast.report.html import page

    atomic_write_bytes(out / "tasks.html", page("facesal tasks", [body]))  # the report's style
    return out / "tasks.html"


def add_tasks_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``facesal tasks`` of its own (the map options, shared by every command that
    computes maps, come from the CLI)."""
    parser.add_argument("photos", help="folder of face photos")
    parser.add_argument("--out", required=True, help="output folder (tasks.html, tasks.png, tasks.json)")
    parser.add_argument(
        "--models",
        default=",".join(m for names in TASK_MODELS.values() for m in names),
        help="comma-separated bundled models",
    )


def run_tasks_cli(args: argparse.Namespace, options: CISOptions) -> int:
    """``facesal tasks``: compute the maps with the CIS ``options`` the command line built from
    ``args`` and write the page; returns the exit code."""
    # lazy: keeps torch and cv2 out of facesal --help
    from facesal_fast.audit.runner import list_images

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file, not a folder")
    photos = list_images(args.photos, exclude=args.out)[: args.max_images]
    names = [m for m in args.models.split(",") if m]
    result = five_tasks(photos, models=names, backend=args.backend, device=args.device, options=options)
    page = write_tasks_page(result, args.out)
    print(f"facesal tasks: {len(result.photos)} photos, {len(result.failed)} left out; {page}")
    return 0
