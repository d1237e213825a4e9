"""The benchmark cases: a model, an image and its patch, the peers' reference code (the
published CSM loop), timing and similarity helpers, and the results table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from scipy.ndimage import uniform_filter

from facesal_fast import models, ops
from facesal_fast.align import default_aligner, load_image
from facesal_fast.saliency.cis import default_patch
from facesal_fast.saliency.identity import verification_scorer
from facesal_fast.scoring import Scorer

__all__ = [
    "FACES",
    "Case",
    "bundled_case",
    "csm_loop",
    "default_path_case",
    "dlib_case",
    "occlusion_map",
    "ssim",
    "table",
    "timed",
    "torchvision_case",
    "window_centres",
]

#: The bundled photos (package data, so the suite runs from an installed wheel).
FACES = Path(__file__).resolve().parents[1] / "data" / "demo_faces"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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
    return ops.splat_mean(drops, centres, patch, shape)[0]


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
    face = default_aligner()(load_image(photo), source=photo.name)
    base = models.load("dlib-resnet", backend="torch")
    scorer = verification_scorer(face, 1, 0.921, scorer=base)  # tau calibrated in docs/identity.md
    input_image, _ = scorer.prepare(face.image, face)
    return Case("dlib-resnet", scorer, base.backend.module, input_image, 10, None, confidence=scorer.bound_confidence)


def torchvision_case(name: str, photo: Path, size: int = 224) -> Case:
    """A torchvision classifier (``resnet50``, ``vgg16``; random weights: no download at run
    time) on ``photo``'s face crop, patch 15."""
    import torchvision  # about 1.5 s to import: only for the torchvision cases

    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None).eval()
    scorer = Scorer.from_torch(net, size, mean=IMAGENET_MEAN, std=IMAGENET_STD, backend="torch")
    image = load_image(photo)
    input_image, _ = scorer.prepare(image)
    target = scorer.predict(image).index
    return Case(name, scorer, net, input_image, 15, target)


def default_path_case(name: str, photo: Path) -> tuple[Case, Any, Any]:
    """(case, aligned face, the scorer a user gets by default) for the presets table.

    ``resnet18`` is the issue's bring-your-own case: torchvision ResNet-18 (random weights,
    nothing is downloaded) through ``Scorer.from_torch(net, input_size=None, crop="none")``
    on the photo cropped to CelebA's 218 x 178 and aligned there, patch 15; bundled models
    come from ``models.load(name)`` and dlib's ResNet as eq. 8 verification, all with
    ``backend="auto"``."""
    if name == "resnet18":
        import torchvision  # about 1.5 s to import: only for the torchvision case

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
        case = dlib_case(photo)
        face = default_aligner()(load_image(photo), source=photo.name)
        return case, face, verification_scorer(face, 1, 0.921, scorer=models.load("dlib-resnet"))
    case, face = bundled_case(name, photo)
    return case, face, models.load(name)


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
