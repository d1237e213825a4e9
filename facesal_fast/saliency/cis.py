"""Canonical Image Saliency (CIS): Algorithm 1 of John et al., with the native ops.

For one image I with dense correspondence ``M_I <-> M_F`` and target class c:

* ``S_n = phi(I, c) - phi(I with a patch at M_I[n], c)`` for every (strided) visible point,
  the patch drawn in the scorer's input geometry (points mapped by its crop/resize affine);
* ``P* = splat of S_n at M_F[n]`` with the canonical patch size, ``N = splat of 1``;
* ``CIS = P* / N`` (0 where N = 0).

Identical occlusion windows (points whose centre pixel coincides) are scored once. The
``grid`` mode scores centres on a grid of step g and reads each point's S by bilinear
interpolation; the ``exact`` mode scores every distinct window.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from facesal_fast import ops
from facesal_fast._validate import check_stride, check_window_sizes, positive_int
from facesal_fast.align import AlignedFace, canonical_face, find_face, region_shares, to_image
from facesal_fast.grid import bilinear, bounding_grid, unique_windows
from facesal_fast.inputs import AlignerLike, ImagesInput, ScorerLike, as_numpy, per_photo
from facesal_fast.saliency.overlay import heat_overlay
from facesal_fast.scoring.batching import Steps, Windows, run_steps
from facesal_fast.scoring.confidence import resolve_class
from facesal_fast.speed.adaptive import adaptive_steps
from facesal_fast.speed.auto import choose_incremental, grid_pays, resolve_quality

__all__ = ["CISResult", "cis", "cis_steps", "default_patch", "occlusion_drops", "occlusion_steps", "odd_patch"]

MODES = ("exact", "grid", "adaptive")
#: CISResult fields returned as tensors on the input's device when the image is a tensor.
TENSOR_FIELDS = ("canonical", "counts", "occlusion", "drops")


def odd_patch(paper_patch: float, input_side: int) -> int:
    """A patch of the papers' 224 px geometry scaled to ``input_side`` px, made odd.

    The nearest odd size to ``paper_patch * input_side / 224``: ``2 floor(v / 2) + 1``, an
    exact tie (``v`` an even integer) going to the larger odd size. An odd window is
    centred on its point's pixel (Algorithm 1 of John et al.); 15 px at 224 px is 5 px at
    64 px (4.29 -> 5), 9 -> 3, 5 -> 1, 25 -> 7.
    """
    v = float(paper_patch) * float(input_side) / 224.0
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"paper_patch and input_side must be > 0, got {paper_patch!r} and {input_side!r}")
    return 2 * int(np.floor(v / 2.0)) + 1


def default_patch(input_shape: tuple[int, int]) -> int:
    """The paper's 15 px patch at a 224 px input, scaled to the model input and made odd
    (:func:`odd_patch`: 5 px at 64 px, 15 at 224)."""
    return odd_patch(15, min(input_shape))


def resolve_patch(patch: int | None, input_shape: tuple[int, int]) -> int:
    """``patch``, checked, or :func:`default_patch` for ``None``."""
    return positive_int(default_patch(input_shape) if patch is None else patch, "patch")


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``N x 2`` points mapped by a ``2 x 3`` affine, float32."""
    return (points.astype(np.float64) @ affine[:, :2].T + affine[:, 2]).astype(np.float32)


def occlusion_drops(
    scorer: Any,
    input_image: np.ndarray,
    points: np.ndarray,
    target: int | None,
    base_score: float,
    *,
    patch: int,
    fill: Any = "black",
    mode: str = "exact",
    grid_step: int = 2,
    refine: float = 0.2,
) -> tuple[np.ndarray, int]:
    """Score drops ``S (N,)`` at ``points`` (input pixels) and the number of forward passes."""
    windows = Windows.template(scorer, input_image, patch, fill, target)
    return run_steps(occlusion_steps(windows, points, base_score, mode, grid_step, refine))


def occlusion_steps(
    windows: Windows,
    points: np.ndarray,
    base_score: float,
    mode: str = "exact",
    grid_step: int = 2,
    refine: float = 0.2,
) -> Steps:
    """:func:`occlusion_drops` as requests (:mod:`facesal_fast.scoring.batching`): ``windows``
    gives the scorer, image, patch, fill and target; returns ``(drops, forward passes)``."""
    if len(points) == 0:
        raise ValueError("no visible correspondence point to occlude (all self-occluded or removed by the stride)")
    if mode == "exact":
        centers, inverse = unique_windows(points)
        scores = yield replace(windows, centers=centers)
        return (base_score - np.asarray(scores, np.float64)).astype(np.float32)[inverse], len(centers)
    if mode == "grid":
        xs, ys, centers = bounding_grid(points, windows.image.shape[:2], positive_int(grid_step, "grid_step"))
        scores = yield replace(windows, centers=centers)
        drops = (base_score - np.asarray(scores, np.float64)).reshape(len(ys), len(xs))
        window_centres = np.floor(points + 0.5)  # where exact mode would occlude
        return bilinear(drops, xs, ys, window_centres), len(centers)
    if mode == "adaptive":
        result = yield from adaptive_steps(windows, points, base_score, grid_step, refine)
        return result.drops, result.forward_passes
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


@dataclass
class CISResult:
    """One image's canonical saliency.

    Attributes:
        canonical: ``H_F x W_F`` float32 CIS map P = P* / N (0 where no point splats).
        counts: ``H_F x W_F`` float32 density N.
        occlusion: ``H_in x W_in`` float32 image-space occlusion map S in the scorer's
            input geometry (S splatted with the input patch, density-normalised).
        drops: ``(M,)`` float32 score drop S of every used point.
        used: ``(N,)`` bool, the points used (visible and kept by the stride).
        face: the :class:`~facesal_fast.align.AlignedFace`.
        input_image: the model-geometry image that was occluded.
        affine: ``2 x 3`` image pixels -> input pixels.
        target, target_name, base_score: the class explained and phi(I, c).
        patch, canonical_patch: window sizes in input and canonical pixels.
        forward_passes: occluded images scored.
    """

    canonical: np.ndarray
    counts: np.ndarray
    occlusion: np.ndarray
    drops: np.ndarray
    used: np.ndarray
    face: AlignedFace
    input_image: np.ndarray
    affine: np.ndarray
    target: int | None
    target_name: str | None
    base_score: float
    patch: int
    canonical_patch: int
    forward_passes: int
    settings: dict = field(default_factory=dict)

    @property
    def region_shares(self) -> dict[str, float]:
        """Share of positive saliency mass per canonical face region."""
        return region_shares(as_numpy(self.canonical))

    def overlay(self, alpha: float = 0.5) -> np.ndarray:
        """``H_F x W_F x 3`` uint8: the CIS as a heat map over the canonical mean face."""
        canonical = as_numpy(self.canonical)
        return heat_overlay(canonical_face(canonical.shape), canonical, alpha)

    def reprojected(self, alpha: float = 0.5) -> np.ndarray:
        """``H x W x 3`` uint8: the CIS warped back onto the photo as a heat map."""
        return heat_overlay(self.face.image, to_image(as_numpy(self.canonical), self.face), alpha)

    def __repr__(self) -> str:
        """Shapes and key figures, not arrays."""
        where = f" tensor on {self.canonical.device}" if isinstance(self.canonical, torch.Tensor) else ""
        return (
            f"{type(self).__name__}(target={self.target!r} ({self.target_name}), base_score={self.base_score:.4g}, "
            f"canonical={tuple(self.canonical.shape)}{where}, points={len(self.drops)}, patch={self.patch}, "
            f"canonical_patch={self.canonical_patch}, forward_passes={self.forward_passes}, "
            f"source={getattr(self.face, 'source', None)!r})"
        )


def _binds_target(scorer: Any) -> bool:
    """True for scorers whose confidence carries its own target (identification, verification)."""
    return getattr(scorer, "bound_confidence", None) is not None


def _resolve_target(scorer: Any, input_image: np.ndarray, target: int | str | None) -> tuple[int | None, int | None]:
    """(class index explained, target to pass to the scorer); ``None`` for bound-target scorers."""
    if _binds_target(scorer):
        if target not in (None, "predicted"):
            raise ValueError("this scorer's confidence binds its own target; pass target=None")
        return None, None
    prediction = scorer.predict_input(input_image)
    if target in (None, "predicted"):
        return prediction.index, prediction.index
    index = resolve_class(target, scorer.classes, len(prediction.outputs))
    return index, index


def _class_name(scorer: Any, index: int | None) -> str | None:
    classes = getattr(scorer, "classes", None)
    return classes[index] if classes is not None and index is not None and index < len(classes) else None


def _check_finite_scores(base: float, drops: np.ndarray, scorer: Any, target: int | None) -> None:
    """NaN or infinite scores, named by the model output they came from (instead of failing
    later in a splat with no word of the model)."""
    bad = int(np.size(drops) - np.count_nonzero(np.isfinite(drops)))
    if np.isfinite(base) and bad == 0:
        return
    name = _class_name(scorer, target)
    output = "its bound confidence" if target is None else f"output {target}" + (f" (class {name!r})" if name else "")
    raise ValueError(
        f"the model's score for {output} is NaN or infinite: unoccluded score {base}, "
        f"{bad} of {np.size(drops)} occluded scores not finite"
    )


def cis_steps(
    image: Any,
    scorer: ScorerLike,
    target: int | str | None = None,
    *,
    patch: int | None = None,
    canonical_patch: int | None = None,
    stride: int = 1,
    fill: Any = "black",
    mode: str = "exact",
    grid_step: int = 2,
    refine: float = 0.2,
    quality: str | None = None,
    incremental: bool | str = "auto",
    aligner: AlignerLike | None = None,
    face: AlignedFace | None = None,
) -> Steps:
    """:func:`cis` of one photo (a path or an ``H x W x 3`` array) as requests
    (:mod:`facesal_fast.scoring.batching`): :func:`~facesal_fast.scoring.batching.run_together`
    scores several images' windows in shared batches; returns the :class:`CISResult`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    positive_int(stride, "stride")
    face = find_face(image, face, aligner)
    input_image, affine = scorer.prepare(face.image, face)
    patch = resolve_patch(patch, input_image.shape[:2])
    check_window_sizes(input_image.shape[:2], patch, None if mode == "exact" else grid_step)
    if quality is not None:
        if mode != "exact":
            raise ValueError(f"pass either quality ({quality!r}) or mode ({mode!r}), not both")
        mode, grid_step, refine = resolve_quality(quality, patch).values()
    choice = choose_incremental(scorer, input_image, patch, incremental)
    target_index, score_target = _resolve_target(scorer, input_image, target)
    base = float(scorer.base_score(input_image, score_target))
    used = np.asarray(face.visible, bool).copy()
    used[np.arange(len(used)) % stride != 0] = False
    check_stride(stride, int(used.sum()), int(np.count_nonzero(face.visible)))
    points_in = apply_affine(affine, np.asarray(face.verts_image, np.float32)[used, :2])
    if quality is not None and not grid_pays(points_in, input_image.shape[:2], grid_step):
        mode = "exact"  # a preset never scores more windows than exact mode
    windows = Windows.template(choice.scorer, input_image, patch, fill, score_target)
    drops, passes = yield from occlusion_steps(windows, points_in, base, mode, grid_step, refine)
    _check_finite_scores(base, drops, scorer, target_index)
    c_patch = face.canonical_patch(patch, affine) if canonical_patch is None else int(canonical_patch)
    canonical_points = np.asarray(face.verts_canonical, np.float32)[used, :2]
    canonical, counts = ops.splat_mean(drops, canonical_points, c_patch, face.canonical_shape)
    return CISResult(
        canonical=canonical,
        counts=counts,
        occlusion=ops.splat_mean(drops, points_in, patch, input_image.shape[:2])[0],
        drops=drops,
        used=used,
        face=face,
        input_image=input_image,
        affine=affine,
        target=target_index,
        target_name=_class_name(scorer, target_index),
        base_score=base,
        patch=int(patch),
        canonical_patch=c_patch,
        forward_passes=passes,
        settings=dict(
            patch=int(patch),
            canonical_patch=c_patch,
            stride=int(stride),
            fill=str(fill),
            mode=mode,
            grid_step=int(grid_step),
            refine=float(refine),
            quality=quality,
            incremental=choice.incremental,
            incremental_reason=choice.reason,
            forward_passes=passes,
        ),
    )


@per_photo("image", TENSOR_FIELDS, choose_face=True, steps=cis_steps)
def cis(
    image: ImagesInput,
    scorer: ScorerLike,
    target: int | str | None = None,
    *,
    patch: int | None = None,
    canonical_patch: int | None = None,
    stride: int = 1,
    fill: Any = "black",
    mode: str = "exact",
    grid_step: int = 2,
    refine: float = 0.2,
    quality: str | None = None,
    incremental: bool | str = "auto",
    aligner: AlignerLike | None = None,
    face: AlignedFace | None = None,
) -> CISResult:
    """Canonical Image Saliency of one image (Algorithm 1), or of each image of a batch.

    Args:
        image: a path (read with ``align.load_image``), an ``H x W x 3`` uint8 RGB array
            (other dtypes by :func:`~facesal_fast.align.as_rgb_uint8`'s value-range rule), a
            channels-first torch tensor ``3 x H x W`` (uint8 0..255 or float 0..1), or a
            batch: a list/tuple of those, an ``N x 3 x H x W`` tensor or ``N x H x W x 3``
            array. A tensor's results hold ``canonical``, ``counts``, ``occlusion`` and
            ``drops`` as tensors on its device.
        scorer: a :class:`~facesal_fast.scoring.Scorer`.
        target: class index or name; ``None`` or ``"predicted"`` explains the predicted class.
        patch: occlusion window in the scorer's input pixels (default: 15 px at 224 px,
            scaled to the input size, see :func:`default_patch`).
        canonical_patch: splat window on the canonical face (default: ``patch`` scaled by
            canonical face size / face size in the input).
        stride: keep every ``stride``-th correspondence point (the paper's vertex stride).
        fill: occlusion fill, as :func:`facesal_fast.ops.occlude_batch`.
        mode: ``"exact"`` (every distinct window) or ``"grid"`` (grid of step ``grid_step``,
            bilinear interpolation), or ``"adaptive"`` (that grid first, then the ``refine``
            fraction of windows with the largest coarse drops scored exactly; Krypton's drill-down).
        refine: fraction of windows refined exactly in ``"adaptive"`` mode.
        quality: a preset instead of ``mode``/``grid_step``/``refine``: ``"exact"``,
            ``"high"`` (a grid of a third of the patch, SSIM >= 0.95 against exact on the benchmark models) or
            ``"fast"`` (grid, SSIM >= 0.90); see :func:`facesal_fast.speed.auto.resolve_quality`.
        incremental: ``"auto"``: incremental inference where the model traces and its
            multiply-add count says it pays (same maps up to float error), else the scorer as
            it is; ``True`` to insist, ``False`` to opt out (see :mod:`facesal_fast.speed.auto`).
        aligner: aligner to use when ``face`` is not given (default aligner otherwise).
        face: a precomputed :class:`AlignedFace` (e.g. ``AlignedFace.from_arrays``).
        face_index: explain the ``face_index``-th largest face of the photo (default: the
            largest, logged at WARNING with its box when there are several).
        faces: ``"all"`` explains every face: a list of results per photo.

    Returns:
        :class:`CISResult`; a list of them for a batch (one per photo) or ``faces="all"``.
    """
    return run_steps(
        cis_steps(
            image,
            scorer,
            target,
            patch=patch,
            canonical_patch=canonical_patch,
            stride=stride,
            fill=fill,
            mode=mode,
            grid_step=grid_step,
            refine=refine,
            quality=quality,
            incremental=incremental,
            aligner=aligner,
            face=face,
        )
    )
