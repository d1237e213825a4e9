"""Replays of the quality presets on stored exact drops: does each preset keep its promise,
and how far is its certificate from the truth, over many photos and seeds?

    python benchmarks/preset_replays.py --models gender,expression-fer --seeds 0,1,2,3,4
    python benchmarks/preset_replays.py --models resnet18 --photos img3.jpg,img5.jpg,img6.jpg

Per model and photo the exact drop of *every* window in the points' box is scored once
(64 px models: seconds; the ResNet-18 case of ``benchmark.cases.default_path_case``: about
2.5 min a photo) and stored under ``--cache`` (default ``<tempdir>/facesal_fast_replays``). A replay then runs
``speed.certified.certified_steps`` with its requests answered from that store, so one
photo's ``high`` and ``fast`` cost milliseconds and every seed of the certificate's sample
can be tried. Prints per model and preset: passes / exact, the smallest true SSIM, the
promises broken, certified maps, and the estimate minus the truth (range, and how many
are more than 0.03 off).
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from facesal_fast.benchmark.cases import FACES
from facesal_fast.core.grid import unique_windows
from facesal_fast.metrics.similarity import ssim
from facesal_fast.scoring.batching import Windows, run_steps
from facesal_fast.speed import certified
from facesal_fast.speed.certified import CanonicalSplat

cis_module = importlib.import_module("facesal_fast.saliency.cis")


def store_drops(model: str, photo: str, path: Path) -> None:
    """Score every window of the photo's points' box once and store it with the splat."""
    seen: dict[str, Any] = {}
    steps = cis_module.certified_steps

    def spy(windows, points, base_score, target, splat):
        seen.update(windows=windows, points=points, base=base_score, splat=splat)
        return (yield from steps(windows, points, base_score, target, splat))

    cis_module.certified_steps = spy
    try:
        image, scorer, run = _case(model, photo)
        cis_module.cis(image, scorer, quality="fast", **run)
    finally:
        cis_module.certified_steps = steps
    w, points = seen["windows"], seen["points"]
    H, W = w.image.shape[:2]
    lo = np.clip(np.floor(points.min(0) + 0.5), 0, [W - 1, H - 1]).astype(int)
    hi = np.clip(np.floor(points.max(0) + 0.5), 0, [W - 1, H - 1]).astype(int)
    gx, gy = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
    centers = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    parts = np.array_split(centers, 64)
    scores = np.concatenate([w.scorer.score_occluded(w.image, c, w.patch, fill=w.fill, target=w.target) for c in parts])
    splat = seen["splat"]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path, dense=(seen["base"] - scores.astype(np.float64)).reshape(gx.shape), lo=lo, points=points,
        base=seen["base"], splat_points=splat.points, splat_patch=splat.patch, splat_shape=np.array(splat.shape),
        patch=w.patch, shape=np.array([H, W]),
    )  # fmt: skip


def _case(model: str, photo: str) -> tuple[np.ndarray, Any, dict]:
    if model == "resnet18":
        from facesal_fast.benchmark.cases import default_path_case
        from facesal_fast.benchmark.presets import case_stride

        case, face, user = default_path_case("resnet18", FACES / photo)
        return face.image, user, dict(target=case.target, patch=case.patch, stride=case_stride(face), face=face)
    from facesal_fast import models
    from facesal_fast.align import default_aligner, load_image

    face = default_aligner()(load_image(FACES / photo), source=photo)
    return face.image, models.load(model, backend="onnx"), dict(face=face)


class Replay:
    """A photo's stored drops, answering a preset's requests."""

    def __init__(self, path: Path):
        z = np.load(path)
        self.dense, self.lo, self.points, self.base = z["dense"], z["lo"], z["points"], float(z["base"])
        self.splat = CanonicalSplat(z["splat_points"], int(z["splat_patch"]), tuple(int(v) for v in z["splat_shape"]))
        self.patch, self.shape = int(z["patch"]), tuple(int(v) for v in z["shape"])
        centers, self.inverse = unique_windows(self.points)
        self.windows = len(centers)
        self.exact_map = self.splat.maps(self.drops(centers)[self.inverse].astype(np.float32))

    def drops(self, centers: np.ndarray) -> np.ndarray:
        p = np.floor(np.asarray(centers, np.float64) + 0.5).astype(int)
        return self.dense[p[:, 1] - self.lo[1], p[:, 0] - self.lo[0]]

    def score_occluded(self, image: np.ndarray, centers: np.ndarray, patch: int, **_: Any) -> np.ndarray:
        """The stored scores of the windows at ``centers`` (a scorer, for ``Windows``)."""
        return self.base - self.drops(centers)

    def preset(self, target: float) -> tuple[Any, float]:
        """(:class:`~facesal_fast.speed.certified.CertifiedDrops`, true SSIM of its map)."""
        windows = Windows.template(self, np.zeros(self.shape + (3,), np.uint8), self.patch)
        found = run_steps(certified.certified_steps(windows, self.points, self.base, target, self.splat))
        approx = self.splat.maps(found.drops)
        return found, ssim(approx, self.exact_map, data_range=float(np.ptp(self.exact_map)) or 1.0)


def summary(model: str, preset: str, target: float, rows: list[tuple]) -> str:
    passes, truth, error = (np.array([r[i] for r in rows], float) for i in range(3))
    errors = error[~np.isnan(error)]
    spread = f"{errors.min():+.3f} to {errors.max():+.3f}" if len(errors) else ""
    return (
        f"| {model} | {preset} | {len(rows)} | {passes.mean():.2f} | {truth.min():.3f} | "
        f"{int((truth < target).sum())} | {len(errors)} | {spread} | {int((np.abs(errors) > 0.03).sum())} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gender,expression-fer")
    parser.add_argument("--photos", default=None, help="default: every bundled img*.jpg (one face each)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--cache", default=Path(tempfile.gettempdir()) / "facesal_fast_replays", type=Path)
    args = parser.parse_args()
    photos = args.photos.split(",") if args.photos else sorted(p.name for p in FACES.glob("img*.jpg"))
    print("| model | preset | maps (photos x seeds) | passes / exact | SSIM min | promises broken | certified | "
          "estimate - SSIM (certified) | beyond 0.03 |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---|---:|")
    for model in args.models.split(","):
        replays = []
        for photo in photos:
            path = args.cache / f"{model}_{photo}.npz"
            if not path.exists():
                store_drops(model, photo, path)
            replays.append(Replay(path))
        for preset, target in certified.QUALITY_TARGETS.items():
            rows = []
            for seed in (int(s) for s in args.seeds.split(",")):
                certified.SEED = seed
                for replay in replays:
                    found, truth = replay.preset(target)
                    error = found.certificate.ssim - truth if found.mode == "certified" else np.nan
                    rows.append((found.forward_passes / replay.windows, truth, error))
            print(summary(model, preset, target, rows), flush=True)


if __name__ == "__main__":
    main()
