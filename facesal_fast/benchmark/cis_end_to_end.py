"""End-to-end CIS and occlusion benchmark suite: facesal_fast against captum and the published CSM algorithm.

Same model, same image, same patch and stride in one run; every exact method's map is
checked equal (float tolerance) to its peer's before anything is timed.

Image-space occlusion (patch p, stride s, black fill, softmax of the predicted class):
  * ``captum``      captum.attr.Occlusion, best ``perturbations_per_eval`` of a sweep
  * ``full``        facesal_fast ``Scorer.score_occluded`` + ``splat_add`` (exact)
  * ``incremental`` the same through ``IncrementalScorer`` (exact, Krypton-style)
  * ``inc-tau``     incremental with projective-field threshold tau (approximate)
  * ``adaptive``    coarse grid (step 2s) + refine the top fraction (approximate)
  * ``adaptive+inc-tau`` both approximations
Canonical saliency on a real photo (bundled models only; ~2200 mesh vertices, the
paper's PRNet vertex count, via the vertex stride):
  * ``csm-loop``  the published CSM algorithm: per vertex one occluded copy, one forward
    pass at batch 1, no de-duplication, then the splat loop (numpy)
  * ``cis-exact`` (torch eager, onnxruntime, incremental), ``cis-grid``, ``cis-adaptive``
End to end: ``facesal audit`` on bundled photos in a subprocess (images/s, peak RSS),
against bare forward throughput of the same backend at the same batch size
(:mod:`facesal_fast.benchmark.audit_throughput`). The default-path table (exact, quality
presets) is :mod:`facesal_fast.benchmark.presets`.

    facesal bench --quick            # a few minutes on a quiet machine
    facesal bench --json out.json    # full sizes
    facesal bench --tiny             # the equality checks on a tiny random net (seconds)

captum is imported when first needed (``pip install "facesal_fast[methods]"``).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import resource
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from facesal_fast import ops
from facesal_fast.benchmark.audit_throughput import bench_audit
from facesal_fast.benchmark.cases import (
    FACES,
    Case,
    bundled_case,
    csm_loop,
    dlib_case,
    occlusion_map,
    ssim,
    table,
    timed,
    torchvision_case,
    window_centres,
)
from facesal_fast.benchmark.presets import run_presets
from facesal_fast.benchmark.shared_batches import run_shared
from facesal_fast.saliency import cis
from facesal_fast.saliency.cis import apply_affine
from facesal_fast.scoring import Scorer
from facesal_fast.scoring.probe_cache import installed_version
from facesal_fast.speed import IncrementalScorer
from facesal_fast.speed.adaptive import adaptive_drops
from facesal_fast.speed.auto import mac_ratio

if TYPE_CHECKING:
    import argparse

__all__ = ["bench_canonical", "bench_image_space", "bench_model", "machine", "run", "tiny_equality_case"]


# ---------------------------------------------------------------------------- image space


def captum_map(case: Case, stride: int, per_eval: int) -> np.ndarray:
    """captum Occlusion attribution (H x W) for the case's target, softmax confidence."""
    from captum.attr import Occlusion  # optional extra: captum

    module = case.module

    def forward(x: torch.Tensor) -> torch.Tensor:
        return case.confidence(module(x)) if case.confidence else torch.softmax(module(x), dim=1)

    x = case.normalised()
    c = x.shape[1]
    with torch.inference_mode():
        attr = Occlusion(forward).attribute(
            x,
            sliding_window_shapes=(c, case.patch, case.patch),
            strides=(c, stride, stride),
            baselines=case.fill_value().expand_as(x).contiguous(),
            target=case.target,
            perturbations_per_eval=per_eval,
        )
    return torch.nan_to_num(attr[0, 0]).numpy()


def scored_map(scorer: Any, case: Case, centres: np.ndarray) -> np.ndarray:
    base = scorer.base_score(case.input_image, case.target)
    drops = base - np.asarray(
        scorer.score_occluded(case.input_image, centres, case.patch, target=case.target), np.float64
    )
    return occlusion_map(drops, centres, case.patch, case.input_image.shape[:2])


def adaptive_map(scorer: Any, case: Case, centres: np.ndarray, step: int, refine: float) -> tuple[np.ndarray, int]:
    """Occlusion map from a coarse grid of ``step`` px, the ``refine`` fraction of windows
    re-scored exactly (Krypton's drill-down; ``refine=0`` is grid + interpolation)."""
    base = scorer.base_score(case.input_image, case.target)
    result = adaptive_drops(
        scorer, case.input_image, centres, case.target, base, patch=case.patch, coarse_step=step, refine=refine
    )
    return occlusion_map(result.drops, centres, case.patch, case.input_image.shape[:2]), result.forward_passes


def bench_image_space(
    case: Case,
    stride: int,
    per_eval: tuple[int, ...],
    tau: float,
    refine: float,
    full_fraction: float,
    atol: float = 1e-5,
    coarse_step: int | None = None,
    exact_only: bool = False,
) -> None:
    """Time every image-space method; assert the exact ones equal captum's map. Speed-ups
    are given against captum's best and against full re-inference (facesal, torch eager)."""
    centres = window_centres(case.input_image.shape[:2], case.patch, stride)
    k, step = len(centres), coarse_step or 2 * stride
    best = None
    for n in per_eval:
        seconds, ref = timed(lambda: captum_map(case, stride, n))
        case.add("image", f"captum (ppe={n})", seconds, k)
        best = seconds if best is None else min(best, seconds)
    incremental = IncrementalScorer(case.scorer, full_fraction=full_fraction)
    approximate = IncrementalScorer(case.scorer, tau=tau, full_fraction=full_fraction)
    full_seconds, full = timed(lambda: scored_map(case.scorer, case, centres))
    np.testing.assert_allclose(full, ref, atol=atol, err_msg=f"{case.name}: facesal occlusion != captum")
    add = functools.partial(case.add, "image", captum=best, full=full_seconds)
    add("full re-inference (facesal exact, torch eager)", full_seconds, k)
    if case.onnx is not None:
        seconds, fast = timed(lambda: scored_map(case.onnx, case, centres))
        np.testing.assert_allclose(fast, ref, atol=atol, err_msg=f"{case.name}: onnxruntime occlusion != captum")
        add("full re-inference (facesal exact, onnxruntime)", seconds, k)
    seconds, inc = timed(lambda: scored_map(incremental, case, centres))
    np.testing.assert_allclose(inc, ref, atol=atol, err_msg=f"{case.name}: incremental != captum")
    x = case.normalised()
    add("incremental (exact)", seconds, k, mac_ratio=mac_ratio(incremental.model, x, case.patch, centres))
    if exact_only:
        return
    seconds, approx = timed(lambda: scored_map(approximate, case, centres))
    add(
        f"inc-tau={tau}",
        seconds,
        k,
        ssim=ssim(approx, full),
        mac_ratio=mac_ratio(approximate.model, x, case.patch, centres),
    )
    for label, scorer, fraction in [
        (f"grid step {step} + incremental", incremental, 0.0),
        (f"adaptive step {step} refine {refine} + incremental", incremental, refine),
        (f"adaptive step {step} refine {refine} + inc-tau={tau}", approximate, refine),
    ]:
        seconds, (approx, passes) = timed(lambda: adaptive_map(scorer, case, centres, step, fraction))
        add(label, seconds, passes, ssim=ssim(approx, full))


# ---------------------------------------------------------------------------- canonical saliency


def captum_stride_one(case: Case, per_eval: int = 64) -> float:
    """Seconds of captum Occlusion at stride 1 (the only captum setting that scores a window
    centred on every pixel, as CIS needs); its map is checked against facesal's before."""
    centres = window_centres(case.input_image.shape[:2], case.patch, 1)
    seconds, ref = timed(lambda: captum_map(case, 1, per_eval))
    np.testing.assert_allclose(
        scored_map(case.onnx or case.scorer, case, centres),
        ref,
        atol=1e-5,
        err_msg=f"{case.name}: facesal stride-1 occlusion != captum",
    )
    case.add("canonical", f"captum Occlusion stride 1 (ppe={per_eval})", seconds, len(centres))
    return seconds


def bench_canonical(
    case: Case, face: Any, vertices: int, refine: float, full_fraction: float, csm_vertices: int | None = None
) -> None:
    """CIS methods on one aligned photo; asserts CSM loop == CIS exact (all backends).

    ``csm_vertices``: run the (slow) CSM loop on the first that many vertices only, check
    their drops, and extrapolate its time to all vertices (None: the whole loop, maps checked).
    """
    visible = int(np.asarray(face.visible).sum())
    stride = max(1, visible // vertices)
    run = dict(target=case.target, patch=case.patch, stride=stride, face=face)
    seconds, exact = timed(lambda: cis(face.image, case.scorer, **run))
    used = exact.used
    points_in = apply_affine(exact.affine, np.asarray(face.verts_image, np.float32)[used, :2])
    n = int(used.sum())
    if csm_vertices is None or csm_vertices >= n:
        loop_seconds, (loop, _) = timed(lambda: csm_loop(case, face, used, points_in, exact.canonical_patch))
        np.testing.assert_allclose(exact.canonical, loop, atol=1e-5, err_msg=f"{case.name}: CIS exact != CSM loop")
        case.add("canonical", "csm-loop (published, batch 1)", loop_seconds, n)
    else:
        subset = used & (np.cumsum(used) <= csm_vertices)
        seconds_subset, (_, drops) = timed(
            lambda: csm_loop(case, face, subset, points_in[:csm_vertices], exact.canonical_patch)
        )
        np.testing.assert_allclose(
            drops, exact.drops[:csm_vertices], atol=1e-5, err_msg=f"{case.name}: CIS != CSM loop"
        )
        loop_seconds = seconds_subset * n / csm_vertices
        case.add("canonical", f"csm-loop (published, batch 1; timed on {csm_vertices}, extrapolated)", loop_seconds, n)
    captum_seconds = captum_stride_one(case)
    add = functools.partial(case.add, "canonical", csm=loop_seconds, captum=captum_seconds)
    add("cis-exact (torch)", seconds, exact.forward_passes)
    onnx = case.onnx
    seconds, result = timed(lambda: cis(face.image, onnx, **run))
    np.testing.assert_allclose(result.canonical, exact.canonical, atol=1e-5)
    add("cis-exact (onnxruntime)", seconds, result.forward_passes)
    incremental = IncrementalScorer(case.scorer, full_fraction=full_fraction)
    seconds, result = timed(lambda: cis(face.image, incremental, **run))
    np.testing.assert_allclose(result.canonical, exact.canonical, atol=1e-5)
    add("cis-exact (incremental)", seconds, result.forward_passes)
    seconds, result = timed(lambda: cis(face.image, onnx, mode="grid", grid_step=2, **run))
    add("cis-grid step 2 (onnxruntime)", seconds, result.forward_passes, ssim=ssim(result.canonical, exact.canonical))

    def adaptive_cis() -> tuple[np.ndarray, int]:
        base = onnx.base_score(exact.input_image, case.target)
        res = adaptive_drops(
            onnx, exact.input_image, points_in, case.target, base, patch=case.patch, coarse_step=4, refine=refine
        )
        canonical_points = np.asarray(face.verts_canonical, np.float32)[used, :2]
        ada, _ = ops.splat_mean(res.drops, canonical_points, exact.canonical_patch, face.canonical_shape)
        return ada, res.forward_passes

    seconds, (ada, passes) = timed(adaptive_cis)
    add(f"cis-adaptive step 4 refine {refine} (onnxruntime)", seconds, passes, ssim=ssim(ada, exact.canonical))


# ---------------------------------------------------------------------------- tiny case (tests)


def tiny_net(seed: int = 0, classes: int = 3, pool: int = 1) -> nn.Sequential:
    """A tiny random conv net in eval mode (conv, batch norm with random statistics, ReLU,
    max pool, conv, ReLU, adaptive average pool to ``pool x pool``, linear to ``classes``):
    ``N x 3 x h x w`` -> ``N x classes``; the tests' model too."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(pool),
        nn.Flatten(),
        nn.Linear(8 * pool * pool, classes),
    ).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net


def tiny_equality_case() -> list[dict]:
    """The suite's equality assertions on a tiny random conv net (seconds; ``facesal bench
    --tiny`` and the tests); its rows."""
    net = tiny_net()
    scorer = Scorer.from_torch(net, 24, mean=0.5, std=0.25, backend="torch", batch_size=32)
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    case = Case("tiny", scorer, net, image, patch=5, target=1)
    bench_image_space(case, stride=2, per_eval=(16,), tau=0.6, refine=0.3, full_fraction=0.5)
    return case.rows


# ---------------------------------------------------------------------------- report


def machine() -> dict:
    """Where the suite ran: Python, platform, CPUs, threads, package versions, load."""
    return dict(
        python=platform.python_version(),
        platform=platform.platform(),
        processor=platform.processor(),
        cpus=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        captum=installed_version("captum"),
        onnxruntime=installed_version("onnxruntime"),
        numpy=np.__version__,
        load_average=os.getloadavg(),
    )


def bench_model(name: str, photo: Path, args: argparse.Namespace) -> list[dict]:
    """The image-space (and for the 64 px bundled models, canonical) rows of one model."""
    quick, common = args.quick, dict(tau=args.tau, full_fraction=args.full_fraction)
    if name in ("resnet50", "vgg16"):  # vgg16: Krypton's model for its best exact figure; exact modes only
        case = torchvision_case(name, photo)
        sweep = (16,) if quick or name == "vgg16" else (1, 16, 64)
        stride = 8 if name == "resnet50" and not quick else 14
        bench_image_space(case, stride, sweep, refine=args.refine, atol=1e-4, exact_only=name == "vgg16", **common)
    elif name == "dlib-resnet":
        case = dlib_case(photo)
        sweep = (64,) if quick else (16, 64, 256)
        bench_image_space(case, 2, sweep, refine=0.02, atol=1e-4, coarse_step=12, **common)
    else:
        case, face = bundled_case(name, photo)
        sweep = (16, 64, 256) if quick else (1, 16, 64, 256)
        bench_image_space(case, 2 if quick else 1, sweep, refine=args.refine, **common)
        csm_vertices = 300 if quick else None
        bench_canonical(case, face, 2194, args.refine, args.full_fraction, csm_vertices=csm_vertices)
    print(table(case.rows), flush=True)
    return case.rows


def run(args: argparse.Namespace) -> int:
    """Run the suite (options: :func:`facesal_fast.benchmark.command.add_bench_arguments`)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    print("machine:", json.dumps(info))
    if args.tiny:
        rows = tiny_equality_case()
        print("\n" + table(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(dict(machine=info, rows=rows), indent=1))
        return 0
    photo = FACES / args.photo
    if args.presets:
        return run_presets(args, info, photo)
    if args.shared:
        return run_shared(args, info)
    import captum  # noqa: F401 - the peer of every image-space row: missing, it is said before any work

    rows = [row for name in args.models.split(",") for row in bench_model(name, photo, args)]
    audit = bench_audit("gender", args.audit_photos or (12 if args.quick else 24), "auto")
    print("end to end:", json.dumps(audit))
    print("\n" + table(rows))
    print(
        f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
        f"load average {os.getloadavg()}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=info, rows=rows, audit=audit), indent=1))
    return 0
