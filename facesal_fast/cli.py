"""The ``facesal`` command: ``audit``, ``report``, ``demo`` and ``evaluate``."""
from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Sequence

__all__ = ["main"]

DEMO_DIR = "data/demo_faces"


def _model_hash(name: str) -> str:
    from facesal_fast.models import weights_path

    return hashlib.sha256(weights_path(name).read_bytes()).hexdigest()[:16]


def _read_groups(value: str | None) -> str | dict[str, str] | None:
    """``None``, ``"predicted"`` or {image: group} from a CSV with columns image, group."""
    if value in (None, "predicted"):
        return value
    path = Path(value)
    if not path.is_file():
        raise SystemExit(f"facesal: --groups {value}: no such file (expected a CSV with columns image,group, or 'predicted')")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"image", "group"} <= set(rows[0]):
        raise SystemExit(f"facesal: {value}: the groups CSV needs the columns image,group")
    return {row["image"]: row["group"] for row in rows}


def _target(value: str) -> int | str | None:
    if value == "predicted":
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def run_audit(photos: str | Path, out: str | Path, *, model: str = "gender", target: str = "predicted",
              groups: str | None = None, patch: int | None = None, stride: int = 1, mode: str = "exact",
              grid_step: int = 2, fill: str = "black", device: str = "cpu", backend: str = "auto",
              progress: bool = True) -> dict[str, int]:
    """Audit every photo in a folder with a bundled model; returns the summary counts."""
    from facesal_fast import models
    from facesal_fast.audit.runner import Audit

    if model not in models.MODELS:
        raise SystemExit(f"facesal: unknown model {model!r}; bundled models: {', '.join(models.MODELS)}")
    scorer = models.load(model, backend=backend, device=device)
    settings = {"model": model, "model_sha256": _model_hash(model), "backend": backend, "groups": groups}
    cis_options = {"patch": patch, "stride": stride, "mode": mode, "grid_step": grid_step, "fill": fill}
    audit = Audit(scorer, out, target=_target(target), settings=settings, **cis_options)
    start = time.perf_counter()
    summary = audit.run(photos, groups=_read_groups(groups), progress=progress)
    seconds = time.perf_counter() - start
    rate = summary["done"] / seconds if seconds > 0 else 0.0
    print(f"facesal audit: {summary['done']} done, {summary['failed']} failed, {summary['skipped']} skipped "
          f"(already done) in {seconds:.1f} s ({rate:.2f} images/s, backend {scorer.backend.name}); results in {out}")
    for row in audit.store.rows("failed"):
        print(f"  failed: {row.error}", file=sys.stderr)
    return summary


def _demo_photos() -> Path:
    return Path(str(resources.files("facesal_fast").joinpath(DEMO_DIR)))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facesal", description="Canonical saliency audits of face models.")
    sub = parser.add_subparsers(dest="command", required=True)
    audit = sub.add_parser("audit", help="explain every photo of a folder and store the results")
    audit.add_argument("photos", help="folder of face photos")
    audit.add_argument("--out", required=True, help="run directory (re-running resumes it)")
    audit.add_argument("--model", default="gender", help="bundled model: gender, expression-fer, expression-kdef")
    audit.add_argument("--target", default="predicted", help="class index or name, or 'predicted'")
    audit.add_argument("--groups", help="CSV with columns image,group, or 'predicted' to group by predicted class")
    audit.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="shard over Ray workers: a local Ray (no ADDRESS) or a cluster (auto, ray://head:10001)")
    _add_cis_options(audit)
    report = sub.add_parser("report", help="write the run's self-contained HTML report")
    report.add_argument("run", help="run directory")
    report.add_argument("--out", help="HTML path (default RUN/report.html)")
    demo = sub.add_parser("demo", help="audit the bundled photos with the bundled gender model, then report")
    demo.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    demo.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx", "tensorrt"])
    demo.add_argument("--device", default="cpu")
    evaluate = sub.add_parser("evaluate", help="faithfulness metrics, ablations, CMS stability and sanity check")
    evaluate.add_argument("photos", help="folder of face photos")
    evaluate.add_argument("--out", required=True, help="run directory; results go to OUT/evaluate/")
    evaluate.add_argument("--model", default="gender", help="bundled model: gender, expression-fer, expression-kdef")
    evaluate.add_argument("--methods", default="cms,cis,gradcam,gradcampp,scorecam,gb,lrp",
                          help="comma-separated: cms, cis, occlusion, gradcam, gradcampp, scorecam, gb, lrp")
    evaluate.add_argument("--patch", type=int, default=15, help="CIS patch in the papers' 224 px geometry (scaled to the input)")
    evaluate.add_argument("--mode", default="grid", choices=["exact", "grid"])
    evaluate.add_argument("--grid-step", type=int, default=2)
    evaluate.add_argument("--stride", type=int, default=1)
    evaluate.add_argument("--fill", default="black", help="black, mean or blur")
    evaluate.add_argument("--budget", type=float, default=0.2, help="equal heatmap mass s, as a fraction of the input pixels")
    evaluate.add_argument("--steps", type=int, default=16, help="deletion / insertion steps")
    evaluate.add_argument("--ablation-images", type=int, default=8, help="images used by the ablations (0: none)")
    evaluate.add_argument("--sanity-images", type=int, default=2, help="images used by the randomisation check (0: none)")
    evaluate.add_argument("--max-images", type=int, default=None)
    evaluate.add_argument("--backend", default="onnx", choices=["auto", "torch", "onnx", "tensorrt"])
    bench = sub.add_parser("bench", help="occlusion benchmark suite vs captum and the published CSM loop (source checkout)")
    from facesal_fast.bench import add_bench_arguments

    add_bench_arguments(bench)
    return parser


def _add_cis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patch", type=int, default=None, help="occlusion window in model-input pixels (default: 15 px at 224 px, scaled)")
    parser.add_argument("--stride", type=int, default=1, help="keep every STRIDE-th correspondence point")
    parser.add_argument("--mode", default="exact", choices=["exact", "grid", "adaptive"])
    parser.add_argument("--grid-step", type=int, default=2, help="grid step in pixels for --mode grid")
    parser.add_argument("--fill", default="black", help="black, mean or blur")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx", "tensorrt"])


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "evaluate":
        from facesal_fast.evaluate import run_cli

        return run_cli(args)
    if args.command == "bench":
        from facesal_fast.bench import run_bench

        try:
            return run_bench(args)
        except FileNotFoundError as err:
            print(f"facesal: {err}", file=sys.stderr)
            return 2
    from facesal_fast.audit.store import SettingsMismatchError
    from facesal_fast.report.html import write_report

    try:
        if args.command == "report":
            print(f"facesal report: {write_report(args.run, args.out)}")
            return 0
        if args.command == "demo":
            summary = run_audit(_demo_photos(), args.out, groups="predicted", backend=args.backend, device=args.device)
        else:
            audit = run_audit
            if args.ray is not None:
                from facesal_fast.distributed import run_audit_ray

                audit = functools.partial(run_audit_ray, address=None if args.ray == "local" else args.ray)
            summary = audit(args.photos, args.out, model=args.model, target=args.target, groups=args.groups,
                            patch=args.patch, stride=args.stride, mode=args.mode, grid_step=args.grid_step,
                            fill=args.fill, device=args.device, backend=args.backend)
    except (SettingsMismatchError, FileNotFoundError, ValueError) as err:
        print(f"facesal: {err}", file=sys.stderr)
        return 2
    if summary["done"] + summary["skipped"] == 0:
        print("facesal: no image succeeded", file=sys.stderr)
        return 1
    if args.command == "demo":
        print(f"facesal report: {write_report(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
