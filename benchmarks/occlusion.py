"""Occlusion benchmark suite: facesal_fast against captum and the published CSM algorithm.

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
against bare forward throughput of the same backend at the same batch size.

    python benchmarks/occlusion.py --quick            # a few minutes on a quiet machine
    python benchmarks/occlusion.py --json out.json    # full sizes
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from facesal_fast import models, ops
from facesal_fast.scoring import Scorer
from facesal_fast.speed import IncrementalScorer
from facesal_fast.speed.adaptive import adaptive_drops
from facesal_fast.speed.auto import mac_ratio

FACES = Path(__file__).resolve().parents[1] / "facesal_fast" / "data" / "demo_faces"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------- helpers


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """(best wall seconds over ``repeat`` runs, last result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Mean structural similarity of two maps (uniform ``window``, constants from Wang et
    al. 2004 with the data range of ``b``)."""
    from scipy.ndimage import uniform_filter

    a, b = a.astype(np.float64), b.astype(np.float64)
    rng = float(b.max() - b.min()) or 1.0
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    mu_a, mu_b = uniform_filter(a, window), uniform_filter(b, window)
    var_a = uniform_filter(a * a, window) - mu_a**2
    var_b = uniform_filter(b * b, window) - mu_b**2
    cov = uniform_filter(a * b, window) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def window_centres(shape: tuple[int, int], patch: int, stride: int) -> np.ndarray:
    """K x 2 ``(x, y)`` centres of captum's windows: top-left corners ``0, s, .., ceil((H - p) / s) * s``
    (the last one clipped at the border, as captum does); the project's window rule puts
    the centre ``(p - 1) // 2`` after the top-left."""
    H, W = shape
    ys = np.arange(-(-(H - patch) // stride) + 1) * stride + (patch - 1) // 2
    xs = np.arange(-(-(W - patch) // stride) + 1) * stride + (patch - 1) // 2
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)


def occlusion_map(drops: np.ndarray, centres: np.ndarray, patch: int, shape: tuple[int, int]) -> np.ndarray:
    """``H x W`` mean drop of the windows covering each pixel (captum's normalisation)."""
    sums, counts = ops.splat_add(np.asarray(drops, np.float32)[None], centres, patch, shape)
    return ops.normalize_by_counts(sums, counts)[0]


@dataclass
class Case:
    """One model on one image: the scorer (torch eager), its module, the input image."""

    name: str
    scorer: Scorer
    module: torch.nn.Module
    input_image: np.ndarray  # h x w x C uint8, model geometry
    patch: int
    target: int = 0
    onnx: Scorer | None = None  # the same model on onnxruntime, when it exports
    confidence: Callable | None = None  # outputs -> (K,) scores; None: softmax of ``target``
    rows: list[dict] = field(default_factory=list)

    def normalised(self) -> torch.Tensor:
        """1 x C x H x W model input of the unoccluded image."""
        return torch.as_tensor(
            ops.unoccluded(self.input_image, self.scorer.mean, self.scorer.std, scale=self.scorer.scale)
        )

    def fill_value(self) -> torch.Tensor:
        """Normalised black, 1 x C x 1 x 1 (captum's baseline)."""
        mean = torch.as_tensor(
            np.broadcast_to(np.asarray(self.scorer.mean, np.float32), (self.scorer.channels,)).copy()
        )
        std = torch.as_tensor(np.broadcast_to(np.asarray(self.scorer.std, np.float32), (self.scorer.channels,)).copy())
        return (-mean / std).view(1, -1, 1, 1)

    def add(self, section: str, method: str, seconds: float, passes: int, **extra: Any) -> None:
        row = dict(model=self.name, section=section, method=method, seconds=seconds, passes=passes, **extra)
        self.rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)


def bundled_case(name: str, photo: Path) -> tuple[Case, Any]:
    """Case for a bundled model on ``photo`` (face crop, 64 x 64 grey) and the aligned face."""
    from facesal_fast.align import default_aligner, load_image
    from facesal_fast.saliency.cis import default_patch

    face = default_aligner()(load_image(photo), source=photo.name)
    scorer = models.load(name, backend="torch")
    input_image, _ = scorer.prepare(face.image, face.face_box)
    target = scorer.predict(face.image, face.face_box).index
    return Case(
        name,
        scorer,
        scorer.backend.module,
        input_image,
        default_patch(input_image.shape[:2]),
        target,
        models.load(name, backend="onnx"),
    ), face


def dlib_case(photo: Path) -> Case:
    """dlib's face ResNet (real weights, 150 px chip) on ``photo``: the confidence is eq. 8
    against the photo's own unoccluded descriptor (c = +1, the calibrated tau), so a
    window's drop says how far occluding it moves the identity descriptor."""
    from facesal_fast.align import default_aligner, load_image
    from facesal_fast.scoring.embedding import verification_scorer

    face = default_aligner()(load_image(photo), source=photo.name)
    base = models.load("dlib-resnet", backend="torch")
    scorer = verification_scorer(face, 1, 0.921, scorer=base)  # tau calibrated in docs/identity.md
    input_image, _ = scorer.prepare(face.image, face)
    return Case("dlib-resnet", scorer, base.backend.module, input_image, 10, None, confidence=scorer.bound_confidence)


def torchvision_case(name: str, photo: Path, size: int = 224) -> Case:
    """A torchvision classifier (``resnet50``, ``vgg16``; random weights: no download at run
    time) on ``photo``'s face crop, patch 15."""
    import torchvision

    from facesal_fast.align import load_image

    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None).eval()
    scorer = Scorer.from_torch(net, size, mean=IMAGENET_MEAN, std=IMAGENET_STD, backend="torch")
    image = load_image(photo)
    input_image, _ = scorer.prepare(image)
    target = scorer.predict(image).index
    return Case(name, scorer, net, input_image, 15, target)


# ---------------------------------------------------------------------------- image space


def captum_map(case: Case, stride: int, per_eval: int) -> np.ndarray:
    """captum Occlusion attribution (H x W) for the case's target, softmax confidence."""
    from captum.attr import Occlusion

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


def csm_loop(
    case: Case, face: Any, used: np.ndarray, points_in: np.ndarray, canonical_patch: int
) -> tuple[np.ndarray, np.ndarray]:
    """The published CSM algorithm: for every used vertex, occlude a copy of the image,
    run the model at batch 1, take the drop, and splat it into the canonical map; no
    de-duplication of identical windows. Returns the ``H_F x W_F`` map and the (N,) drops."""
    image = case.input_image.astype(np.float32)
    mean = np.broadcast_to(np.asarray(case.scorer.mean, np.float32), (image.shape[2],))
    std = np.broadcast_to(np.asarray(case.scorer.std, np.float32), (image.shape[2],))
    module = case.module

    def confidence(img: np.ndarray) -> float:
        x = torch.from_numpy(((img * case.scorer.scale - mean) / std).transpose(2, 0, 1)[None].copy())
        with torch.inference_mode():
            return float(torch.softmax(module(x), 1)[0, case.target])

    base = confidence(image)
    H, W = image.shape[:2]
    Hf, Wf = face.canonical_shape
    sums, counts = np.zeros((Hf, Wf)), np.zeros((Hf, Wf))
    canonical = np.asarray(face.verts_canonical, np.float32)[used, :2]
    drops = []
    for (x, y), (u, v) in zip(points_in, canonical):
        cx, cy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        occluded = image.copy()
        occluded[
            max(cy - (case.patch - 1) // 2, 0) : max(cy + case.patch // 2 + 1, 0),
            max(cx - (case.patch - 1) // 2, 0) : max(cx + case.patch // 2 + 1, 0),
        ] = 0.0
        drop = base - confidence(occluded)
        drops.append(drop)
        cu, cv = int(np.floor(u + 0.5)), int(np.floor(v + 0.5))
        r0, r1 = max(cv - (canonical_patch - 1) // 2, 0), min(cv + canonical_patch // 2 + 1, Hf)
        c0, c1 = max(cu - (canonical_patch - 1) // 2, 0), min(cu + canonical_patch // 2 + 1, Wf)
        if r0 < r1 and c0 < c1:
            sums[r0:r1, c0:c1] += drop
            counts[r0:r1, c0:c1] += 1
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).astype(np.float32), np.array(drops, np.float32)


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
    from facesal_fast.saliency import cis
    from facesal_fast.saliency.cis import apply_affine

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
        sums, counts = ops.splat_add(
            res.drops[None],
            np.ascontiguousarray(np.asarray(face.verts_canonical, np.float32)[used, :2]),
            exact.canonical_patch,
            face.canonical_shape,
        )
        return ops.normalize_by_counts(sums, counts)[0], res.forward_passes

    seconds, (ada, passes) = timed(adaptive_cis)
    add(f"cis-adaptive step 4 refine {refine} (onnxruntime)", seconds, passes, ssim=ssim(ada, exact.canonical))


# ---------------------------------------------------------------------------- presets (default path)


def default_path_case(name: str, photo: Path) -> tuple[Case, Any, Any]:
    """(case, aligned face, the scorer a user gets by default) for the presets table.

    ``resnet18`` is the issue's bring-your-own case: torchvision ResNet-18 (random weights,
    nothing is downloaded) through ``Scorer.from_torch(net, input_size=None, crop="none")``
    on the photo cropped to CelebA's 218 x 178 and aligned there, patch 15; bundled models
    come from ``models.load(name)`` and dlib's ResNet as eq. 8 verification, all with
    ``backend="auto"``."""
    from facesal_fast.align import default_aligner, load_image

    if name == "resnet18":
        import cv2
        import torchvision

        image = load_image(photo)
        h, w = image.shape[:2]
        side = min(h / 218, w / 178)
        top, left = (h - int(218 * side)) // 2, (w - int(178 * side)) // 2
        image = cv2.resize(
            image[top : top + int(218 * side), left : left + int(178 * side)], (178, 218), interpolation=cv2.INTER_AREA
        )
        face = default_aligner()(image, source=photo.name)
        torch.manual_seed(0)
        net = torchvision.models.resnet18(weights=None).eval()
        user = Scorer.from_torch(net, None, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop="none")
        eager = Scorer.from_torch(net, None, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop="none", backend="torch")
        input_image, _ = eager.prepare(face.image, face)
        return Case(name, eager, net, input_image, 15, eager.predict_input(input_image).index), face, user
    if name == "dlib-resnet":
        from facesal_fast.scoring.embedding import verification_scorer

        case = dlib_case(photo)
        face = default_aligner()(load_image(photo), source=photo.name)
        return case, face, verification_scorer(face, 1, 0.921, scorer=models.load("dlib-resnet"))
    case, face = bundled_case(name, photo)
    return case, face, models.load(name)


def bench_presets(
    case: Case, face: Any, user: Any, vertices: int = 2194, csm_vertices: int | None = 200, rounds: int = 1
) -> None:
    """``cis`` as a user calls it (the default scorer, ``incremental="auto"``) at ~``vertices``
    vertices: exact by default, exact with ``incremental=False``, ``quality="high"`` and
    ``"fast"``, timed in interleaved rounds (best of ``rounds``), against the published CSM
    loop (classifiers; timed on ``csm_vertices`` and extrapolated, drops checked) and the
    forward passes; the approximate maps report SSIM (Gaussian window, data range of the
    exact map) and Pearson against exact, and the exact paths are asserted equal first."""
    from facesal_fast.metrics.similarity import ssim as gaussian_ssim
    from facesal_fast.saliency import cis
    from facesal_fast.saliency.cis import apply_affine

    stride = max(1, int(np.asarray(face.visible).sum()) // vertices)
    run = dict(target=case.target, patch=case.patch, stride=stride, face=face)
    configs = {
        "exact (default)": {},
        "exact, incremental=False": dict(incremental=False),
        "quality=high": dict(quality="high"),
        "quality=fast": dict(quality="fast"),
    }
    cis(face.image, user, **run, **configs["quality=fast"])  # warm-up: probes, traces, multiply-add count
    best: dict[str, float] = {}
    results: dict[str, Any] = {}
    for _ in range(rounds):
        for label, options in configs.items():
            seconds, results[label] = timed(lambda: cis(face.image, user, **run, **options))
            best[label] = min(best.get(label, float("inf")), seconds)
    exact = results["exact (default)"]
    np.testing.assert_allclose(
        exact.canonical,
        results["exact, incremental=False"].canonical,
        atol=1e-5,
        err_msg=f"{case.name}: incremental exact != exact",
    )
    csm = None
    if case.confidence is None:
        used = exact.used
        points_in = apply_affine(exact.affine, np.asarray(face.verts_image, np.float32)[used, :2])
        n = int(used.sum())
        subset = used & (np.cumsum(used) <= (csm_vertices or n))
        k = int(subset.sum())
        seconds, (_, drops) = timed(lambda: csm_loop(case, face, subset, points_in[:k], exact.canonical_patch))
        np.testing.assert_allclose(drops, exact.drops[:k], atol=1e-4, err_msg=f"{case.name}: CIS != CSM loop")
        csm = seconds * n / k
        case.add("presets", f"csm-loop (published, batch 1; timed on {k} vertices)", csm, n)
    span = float(np.ptp(exact.canonical)) or 1.0
    for label, result in results.items():
        s = result.settings
        how = (
            f"{label} [{s['mode']} step {s['grid_step']} refine {s['refine']}, {user.backend.name}, "
            f"incremental {'on' if s['incremental'] else 'off'}]"
        )
        extra = (
            {}
            if label.startswith("exact")
            else dict(
                ssim=gaussian_ssim(result.canonical, exact.canonical, data_range=span),
                pearson=float(np.corrcoef(result.canonical.ravel(), exact.canonical.ravel())[0, 1]),
            )
        )
        case.add("presets", how, best[label], result.forward_passes, csm=csm, **extra)


# ---------------------------------------------------------------------------- end to end

_AUDIT_CODE = """
import json, resource, sys, time, torch
from pathlib import Path
from facesal_fast import models
from facesal_fast.audit.runner import Audit
from facesal_fast.scoring import Scorer, auto_batch_size
folder, out, model, backend, threads = sys.argv[1:6]
torch.set_num_threads(int(threads))
t0 = time.perf_counter()
scorer = models.load(model, backend=backend)
audit = Audit(scorer, out, settings={"model": model})
photos = sorted(Path(folder).iterdir())
audit.run(photos[:1], progress=False)  # start-up: imports, MediaPipe graph, first batch
startup = time.perf_counter() - t0
sizes = []; original = Scorer.score_occluded  # the occluded images of each call (instrumentation only)
def counted(self, image, centers, *a, **k):
    sizes.append(len(centers)); return original(self, image, centers, *a, **k)
Scorer.score_occluded = counted
bs = auto_batch_size((scorer.channels, *scorer.input_size), scorer.backend.device, None, scorer.backend.cpu_max_batch)
batch = torch.randn(bs, scorer.channels, *scorer.input_size)
def bare(sizes):  # seconds of the same images in the same batches through the model alone
    t = time.perf_counter()
    for size in sizes:
        for lo in range(0, size, bs):
            scorer.forward(batch[:min(bs, size - lo)])
    return time.perf_counter() - t
# Interleaved, photo by photo, so that the machine's drifting speed hits both alike.
seconds = bare_seconds = 0.0; done = 0; t = time.perf_counter()
for item in audit.feed(photos[1:], progress=False):
    seconds += time.perf_counter() - t
    done += item.status == "done"
    bare_seconds += bare(sizes[-1:] if item.status == "done" else [])
    t = time.perf_counter()
n = [sum(sizes)]
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")]  # ru_maxrss would report the parent's
rss = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT", json.dumps(dict(backend=scorer.backend.name, photos=len(photos) - 1, done=done, seconds=seconds,
      startup_seconds=startup, passes=n[0], batch_size=bs, bare=n[0] / bare_seconds, rss_kib=rss)))
"""


def bench_audit(model: str, photos: int, backend: str) -> dict:
    """``Audit`` (the engine of ``facesal audit``) over ``photos`` bundled photos in a fresh
    process, with a run store: steady-state photos/s and occluded images/s (alignment,
    occlusion, inference, splatting and result files included; start-up, i.e. imports and
    the first photo, reported apart), peak RSS, and the ratio to the backend's bare forward
    throughput at the same batch size: the same images in the same batches through the
    model alone, run after each photo (interleaved, so that drifts of the machine's speed
    hit both sides alike)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for path in sorted(FACES.glob("img*.jpg"))[: photos + 1]:
            shutil.copy(path, folder / path.name)
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                _AUDIT_CODE,
                str(folder),
                str(Path(tmp) / "run"),
                model,
                backend,
                str(torch.get_num_threads()),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    r = json.loads(out.split("RESULT", 1)[1])
    occluded = r["passes"] / r["seconds"]
    return dict(
        model=model,
        backend=r["backend"],
        photos=r["done"],
        seconds=r["seconds"],
        startup_seconds=r["startup_seconds"],
        images_per_s=r["done"] / r["seconds"],
        peak_rss_mib=r["rss_kib"] / 1024,
        batch_size=r["batch_size"],
        occluded_images_per_s=occluded,
        bare_forward_images_per_s=r["bare"],
        ratio=occluded / r["bare"],
    )


# ---------------------------------------------------------------------------- tiny case (tests)


def tiny_equality_case() -> None:
    """The suite's equality assertions on a tiny random conv net (seconds; used by tests)."""
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    scorer = Scorer.from_torch(net, 24, mean=0.5, std=0.25, backend="torch", batch_size=32)
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    case = Case("tiny", scorer, net, image, patch=5, target=1)
    bench_image_space(case, stride=2, per_eval=(16,), tau=0.6, refine=0.3, full_fraction=0.5)


# ---------------------------------------------------------------------------- report


def machine() -> dict:
    import captum
    import onnxruntime

    return dict(
        python=platform.python_version(),
        platform=platform.platform(),
        processor=platform.processor(),
        cpus=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        captum=captum.__version__,
        onnxruntime=onnxruntime.__version__,
        numpy=np.__version__,
        load_average=os.getloadavg(),
    )


def table(rows: list[dict]) -> str:
    """Markdown table of rows; each "vs" column is a peer's seconds over the row's, measured in
    the same run: captum's best ``perturbations_per_eval`` (image section: same windows; canonical
    section: stride 1, a window at every pixel as CIS needs), the published CSM loop, and full
    re-inference through facesal (torch eager, same windows)."""
    lines = [
        "| model | section | method | passes | seconds | ms/pass | vs captum | vs CSM loop | vs full re-inference "
        "| SSIM vs exact | Pearson vs exact | MACs full/inc |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratios = [f"{r[k] / r['seconds']:.1f}x" if r.get(k) else "" for k in ("captum", "csm", "full")]
        s = f"{r['ssim']:.3f}" if "ssim" in r else ""
        s += f" | {r['pearson']:.3f}" if "pearson" in r else " | "
        macs = f"{r['mac_ratio']:.2f}" if "mac_ratio" in r else ""
        lines.append(
            f"| {r['model']} | {r['section']} | {r['method']} | {r['passes']} | {r['seconds']:.2f} | "
            f"{1e3 * r['seconds'] / max(r['passes'], 1):.2f} | {' | '.join(ratios)} | {s} | {macs} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the suite (options: :func:`facesal_fast.bench.add_bench_arguments`)."""
    quick = args.quick
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    print("machine:", json.dumps(info))
    rows: list[dict] = []
    photo = FACES / args.photo
    if getattr(args, "presets", False):
        return run_presets(args, info, photo)
    for name in args.models.split(","):
        if name == "resnet50":
            case = torchvision_case(name, photo)
            bench_image_space(
                case,
                stride=14 if quick else 8,
                per_eval=(16,) if quick else (1, 16, 64),
                tau=args.tau,
                refine=args.refine,
                full_fraction=args.full_fraction,
                atol=1e-4,
            )
        elif name == "vgg16":  # Krypton's model for its best exact figure; exact modes only (random weights)
            case = torchvision_case(name, photo)
            bench_image_space(
                case,
                stride=14,
                per_eval=(16,),
                tau=args.tau,
                refine=args.refine,
                full_fraction=args.full_fraction,
                atol=1e-4,
                exact_only=True,
            )
        elif name == "dlib-resnet":
            case = dlib_case(photo)
            bench_image_space(
                case,
                stride=2,
                per_eval=(64,) if quick else (16, 64, 256),
                tau=args.tau,
                refine=0.02,
                full_fraction=args.full_fraction,
                atol=1e-4,
                coarse_step=12,
            )
        else:
            case, face = bundled_case(name, photo)
            bench_image_space(
                case,
                stride=2 if quick else 1,
                per_eval=(16, 64, 256) if quick else (1, 16, 64, 256),
                tau=args.tau,
                refine=args.refine,
                full_fraction=args.full_fraction,
            )
            bench_canonical(
                case,
                face,
                vertices=2194,
                refine=args.refine,
                full_fraction=args.full_fraction,
                csm_vertices=300 if quick else None,
            )
        rows += case.rows
        print(table(case.rows), flush=True)
    audit = bench_audit("gender", args.audit_photos or (12 if quick else 24), "auto")
    print("end to end:", json.dumps(audit))
    print("\n" + table(rows))
    print(
        f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
        f"load average {os.getloadavg()}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=info, rows=rows, audit=audit), indent=1))
    return 0


def run_presets(args: argparse.Namespace, info: dict, photo: Path) -> int:
    """``--presets``: the default-path table (exact / high / fast) for each of ``--models``."""
    rows: list[dict] = []
    for name in args.models.split(","):
        case, face, user = default_path_case(name, photo)
        bench_presets(case, face, user, csm_vertices=100 if args.quick else 300, rounds=1 if args.quick else 2)
        rows += case.rows
    print("\n" + table(rows))
    print(f"\nload average {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=info, rows=rows), indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    from facesal_fast.bench import add_bench_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_bench_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
