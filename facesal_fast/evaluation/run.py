"""``facesal evaluate``'s driver: prepare the faces, compute every method's map, run the
stages (faithfulness, deletion / insertion, the CMS's regions and stability, ablations, the
sanity check) and hand their sections to the one writer."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facesal_fast import models
from facesal_fast.align import default_aligner
from facesal_fast.audit.runner import list_images
from facesal_fast.evaluation.ablations import ablation_section
from facesal_fast.evaluation.config import EvalConfig
from facesal_fast.evaluation.curves import curves_section
from facesal_fast.evaluation.faithfulness import faithfulness_section
from facesal_fast.evaluation.items import Item, prepare_items
from facesal_fast.evaluation.maps import cis_results, method_maps, method_options
from facesal_fast.evaluation.report import Section, check_evaluate_folder, write_evaluation
from facesal_fast.evaluation.sanity import sanity_section
from facesal_fast.evaluation.stability import regions_section, stability_section
from facesal_fast.report.safe_text import terminal_text
from facesal_fast.saliency.cis import CISResult, resolve_patch

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import torch

    from facesal_fast.core.options import CISOptions
    from facesal_fast.scoring.photos import AlignerLike

__all__ = ["evaluate", "run_cli"]


def _stderr(message: str) -> None:
    print(terminal_text(message), file=sys.stderr, flush=True)


def _photos(photos: str | Path | Sequence[str | Path], max_images: int | None) -> list[Path]:
    paths = list_images(photos) if isinstance(photos, (str, Path)) else [Path(p) for p in photos]
    paths = paths[:max_images] if max_images is not None else paths
    if not paths:
        raise ValueError(f"no image found in {photos}")
    return paths


def _scorer(cfg: EvalConfig) -> Any:
    if cfg.model not in models.KERAS_MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; bundled models: {sorted(models.KERAS_MODELS)}")
    return models.load(cfg.model, backend=cfg.backend)


def _timed(log: Callable[[str], None], what: str, stage: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``stage(*args, **kwargs)``, logging how long it took."""
    start = time.perf_counter()
    result = stage(*args, **kwargs)
    log(f"  {what} in {time.perf_counter() - start:.1f} s")
    return result


def _intro(cfg: EvalConfig, summary: dict[str, Any]) -> list[str]:
    """The page's opening paragraphs (HTML)."""
    resolved = summary["config"]
    return [
        f"{summary['images']} images ({len(summary['failed'])} failed), methods "
        f"{escape(', '.join(resolved['methods']))}; CIS patch {resolved['patch']} px at the {summary['input_size']} "
        f"input, mode {escape(cfg.mode)} (grid step {cfg.grid_step}), stride {cfg.stride}, fill {escape(cfg.fill)}; "
        f"backend {escape(resolved['backend'])}; equal mass s = {cfg.budget:g} x input pixels. M(.) = softmax "
        "probability of the class predicted on the unmodified crop; explanation images built in the model's input "
        "geometry.",
        f"Conventions: {escape(summary['conventions'])}.",
        f"Command: <code>{escape(summary['command'])}</code>",
    ]


def evaluate(
    photos: str | Path | Sequence[str | Path],
    out: str | Path,
    config: EvalConfig | None = None,
    *,
    log: Callable[[str], None] | None = None,
    scorer: Any = None,
    module: torch.nn.Module | None = None,
    aligner: AlignerLike | None = None,
) -> dict[str, Any]:
    """Run the whole evaluation and write ``out/evaluate/``; returns ``summary.json``'s content.

    Args:
        photos: folder of face photos or a list of paths.
        out: run directory (created); results go to ``out/evaluate``.
        config: :class:`EvalConfig` (defaults otherwise).
        log: where progress lines go (default: stderr).
        scorer, module, aligner: override the bundled model's scorer / torch module / the
            default aligner (tests).
    Returns:
        the summary: the settings as resolved (``config["patch"]`` in input pixels,
        ``config["backend"]`` the backend used), every table's rows, the failed photos.
    """
    cfg = config or EvalConfig()
    requested = cfg.check()
    check_evaluate_folder(Path(out))  # before any work: a folder the tool did not write is never replaced
    log = log or _stderr
    start = time.perf_counter()
    paths = _photos(photos, cfg.max_images)
    scorer = scorer if scorer is not None else _scorer(cfg)
    module = (module if module is not None else models.load_module(cfg.model)).eval()
    cis_options = requested.replace(patch=resolve_patch(cfg.patch, scorer.input_size))
    log(f"facesal evaluate: {len(paths)} photos, model {cfg.model}")
    items, failed = prepare_items(paths, scorer, aligner or default_aligner(), log)
    if not items:
        raise ValueError("no face could be aligned in the photos")
    results = _timed(log, f"CIS of {len(items)} images", cis_results, items, scorer, cis_options)
    sections = _sections(cfg, items, results, scorer, module, cis_options, log)
    summary = _summary(cfg, scorer, cis_options.patch, items, failed, sections, start)
    final = write_evaluation(Path(out), f"facesal evaluate: {cfg.model}", _intro(cfg, summary), sections, summary)
    log(f"facesal evaluate: wrote {final} in {summary['seconds']:.0f} s")
    return summary


def _summary(
    cfg: EvalConfig,
    scorer: Any,
    patch: int,
    items: list[Item],
    failed: list[dict[str, str]],
    sections: list[Section],
    start: float,
) -> dict[str, Any]:
    """``summary.json``: the settings as used (``config``) and as asked (``requested``), the
    photos, every section's summary and the time taken."""
    return {
        "config": {**asdict(cfg), "methods": list(cfg.method_names()), "patch": patch, "backend": scorer.backend.name},
        "requested": {"patch": cfg.patch, "backend": cfg.backend},
        "patch_input_px": patch,
        "input_size": "{1} x {0}".format(*items[0].input_image.shape[:2]),
        "conventions": cfg.conventions(),
        "command": " ".join(sys.argv),
        "images": len(items),
        "failed": failed,
        **{k: v for section in sections for k, v in section.summary.items()},
        "seconds": time.perf_counter() - start,
    }


def _sections(
    cfg: EvalConfig,
    items: list[Item],
    results: list[CISResult],
    scorer: Any,
    module: torch.nn.Module,
    cis_options: CISOptions,
    log: Callable[[str], None],
) -> list[Section]:
    """Every stage's section, in page order (``results``: the items' CIS)."""
    h, w = items[0].input_image.shape[:2]
    mass = cfg.budget * h * w
    options = method_options(cis_options, cfg.gb_output)
    canonical = [r.canonical for r in results]
    cms = np.mean(np.stack(canonical), axis=0).astype(np.float32)
    maps = _timed(log, "method maps", method_maps, cfg.method_names(), items, canonical, scorer, module, options)
    sections = [
        _timed(log, "faithfulness", faithfulness_section, items, maps, scorer, mass, cfg),
        _timed(log, "deletion/insertion", curves_section, items, maps, scorer, cfg),
        regions_section(cms, cfg.model, len(items)),
        stability_section(canonical, cfg.seed),
    ]
    n_ablation, n_sanity = min(cfg.ablation_images, len(items)), min(cfg.sanity_images, len(items))
    if n_ablation >= 2:
        ablated = (items[:n_ablation], scorer, cis_options, results[:n_ablation], mass)
        sections.append(_timed(log, "ablations", ablation_section, *ablated))
    if n_sanity >= 1:
        checked = (items[:n_sanity], scorer, module, cis_options, options, cfg.seed)
        sections.append(_timed(log, "sanity check", sanity_section, *checked))
    return sections


#: The :class:`EvalConfig` fields ``facesal evaluate`` takes as they are (``methods`` is a comma list).
_CLI_FIELDS = tuple(
    "model patch mode grid_step stride fill budget steps ablation_images sanity_images max_images backend "
    "gb_output ties tie_draws deletion_fill insertion_blur".split()
)


def run_cli(args: Any) -> int:
    """``facesal evaluate`` (argparse namespace from :mod:`facesal_fast.cli`); exit status 0.
    A bad setting raises ValueError, which the CLI turns into one line and exit status 2."""
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    given = {k: getattr(args, k) for k in _CLI_FIELDS if getattr(args, k, None) is not None}
    cfg = EvalConfig(methods=methods, **given)
    evaluate(args.photos, args.out, cfg)
    print(f"facesal evaluate: {Path(args.out) / 'evaluate' / 'evaluate.html'}")
    return 0
