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
from typing import Any, Mapping

import numpy as np
import torch

from facesal_fast import ops
from facesal_fast.align import AlignedFace, canonical_face, default_aligner, find_face, region_shares, to_image
from facesal_fast.core.grid import bilinear, bounding_grid, unique_windows
from facesal_fast.core.options import CISOptions
from facesal_fast.core.validate import check_stride, check_window_sizes, one_target, positive_int
from facesal_fast.saliency.overlay import heat_overlay
from facesal_fast.scoring.batching import Steps, Windows, run_steps
from facesal_fast.scoring.confidence import resolve_class
from facesal_fast.scoring.photos import AlignerLike, ImagesInput, ScorerLike, as_numpy, per_photo
from facesal_fast.speed.adaptive import adaptive_steps
from facesal_fast.speed.auto import choose_incremental
from facesal_fast.speed.certified import CanonicalSplat, Certificate, certificate_steps, certified_steps

__all__ = [
    "CISResult",
    "FacePoints",
    "cis",
    "cis_steps",
    "default_patch",
    "occlusion_drops",
    "occlusion_steps",
    "odd_patch",
]

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
    options: CISOptions | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> tuple[np.ndarray, int]:
    """Score drops ``S (N,)`` at ``points`` (``N x 2``, input pixels) and the number of forward
    passes, by the ``patch`` (``None``: :func:`default_patch` of ``input_image``), ``fill``,
    ``mode``, ``grid_step`` and ``refine`` of ``options`` (a :class:`CISOptions`, a mapping of
    its fields or ``None``) with the keyword ``overrides`` (``patch=5``, ``mode="grid"``)."""
    options = CISOptions.build(options, **overrides)
    patch = resolve_patch(options.patch, input_image.shape[:2])
    windows = Windows.template(scorer, input_image, patch, options.fill, target)
    return run_steps(occlusion_steps(windows, points, base_score, options))


def occlusion_steps(
    windows: Windows, points: np.ndarray, base_score: float, options: CISOptions | None = None, **overrides: Any
) -> Steps:
    """:func:`occlusion_drops` as requests (:mod:`facesal_fast.scoring.batching`): ``windows``
    gives the scorer, image, patch, fill and target, ``options`` (and ``overrides``) the
    ``mode``, ``grid_step`` and ``refine``; returns ``(drops, forward passes)``."""
    options = CISOptions.build(options, **overrides)
    drops, passes, _ = yield from _mode_steps(windows, points, base_score, options)
    return drops, passes


def _mode_steps(windows: Windows, points: np.ndarray, base_score: float, options: CISOptions) -> Steps:
    """:func:`occlusion_steps` by ``options.mode``, also returning which points' windows were
    scored exactly (``(drops (N,), forward passes, exact (N,) bool)``)."""
    if len(points) == 0:
        raise ValueError("no visible correspondence point to occlude (all self-occluded or removed by the stride)")
    if options.mode == "exact":
        centers, inverse = unique_windows(points)
        scores = yield replace(windows, centers=centers)
        drops = (base_score - np.asarray(scores, np.float64)).astype(np.float32)[inverse]
        return drops, len(centers), np.ones(len(points), bool)
    if options.mode == "grid":
        xs, ys, centers = bounding_grid(points, windows.image.shape[:2], options.grid_step)
        scores = yield replace(windows, centers=centers)
        drops = (base_score - np.asarray(scores, np.float64)).reshape(len(ys), len(xs))
        window_centres = np.floor(points + 0.5)  # where exact mode would occlude
        on_grid = np.isin(window_centres[:, 0], xs) & np.isin(window_centres[:, 1], ys)
        return bilinear(drops, xs, ys, window_centres), len(centers), on_grid
    result = yield from adaptive_steps(windows, points, base_score, options.grid_step, options.refine)
    return result.drops, result.forward_passes, result.exact


@dataclass(frozen=True)
class _Scored:
    """The drops (``(N,)``) of one photo, how they were found and their certificate (None
    when not asked for)."""

    drops: np.ndarray
    forward_passes: int
    certificate: Certificate | None
    mode: str
    grid_step: int


def _scored_steps(
    windows: Windows, points: np.ndarray, base_score: float, splat: CanonicalSplat, options: CISOptions
) -> Steps:
    """Drops at ``points`` (``N x 2`` input pixels) by the preset promising
    ``options.target_ssim``, or by ``options.mode`` (with its ``grid_step`` and ``refine``),
    certified when ``options.certify``; returns :class:`_Scored`."""
    if options.target_ssim is not None:
        found = yield from certified_steps(windows, points, base_score, options.target_ssim, splat)
        return _Scored(found.drops, found.forward_passes, found.certificate, found.mode, found.grid_step)
    mode = options.mode
    drops, passes, exact = yield from _mode_steps(windows, points, base_score, options)
    if mode == "exact" or not options.certify:
        return _Scored(drops, passes, Certificate.exact() if mode == "exact" else None, mode, options.grid_step)
    centers, inverse = unique_windows(points)
    first = np.zeros(len(centers), np.int64)
    first[inverse] = np.arange(len(points))
    certificate, _ = yield from certificate_steps(
        windows, base_score, drops[first].astype(np.float64), ~exact[first], centers, inverse, splat
    )
    return _Scored(drops, passes + certificate.sampled, certificate, mode, options.grid_step)


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
            f"{type(self).__name__}(target={self.target!r}{f' ({self.target_name})' if self.target_name else ''}, "
            f"base_score={self.base_score:.4g}, "
            f"canonical={tuple(self.canonical.shape)}{where}, points={len(self.drops)}, patch={self.patch}, "
            f"canonical_patch={self.canonical_patch}, forward_passes={self.forward_passes}, "
            f"source={getattr(self.face, 'source', None)!r})"
        )


def _certificate_settings(certificate: Certificate | None) -> dict[str, Any]:
    """``estimated_ssim``, ``estimated_share_error`` (points) and ``certificate_passes`` of a
    result's settings; ``None`` when no certificate was asked for."""
    if certificate is None:
        return dict(estimated_ssim=None, estimated_share_error=None, certificate_passes=0)
    return dict(
        estimated_ssim=round(certificate.ssim, 4),
        estimated_share_error=round(certificate.share_error, 3),
        certificate_passes=certificate.sampled,
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


@dataclass(frozen=True)
class FacePoints:
    """The correspondence points Algorithm 1 occludes on one face: the visible ones kept by
    the stride (every ``stride``-th point).

    Attributes:
        used: ``(V,)`` bool over the face's ``V`` correspondence points.
        input: ``N x 2`` float32 ``(x, y)`` of the used points in the scorer's input pixels.
        canonical: ``N x 2`` float32 their positions on the canonical face.
    """

    used: np.ndarray
    input: np.ndarray
    canonical: np.ndarray

    @classmethod
    def of(cls, face: AlignedFace, affine: np.ndarray, stride: int, visible: np.ndarray | None = None) -> FacePoints:
        """The points of ``face`` (``affine``: ``2 x 3`` image -> input pixels) that are
        ``visible`` (``(V,)`` bool; default ``face.visible``) and kept by ``stride``."""
        used = np.asarray(face.visible if visible is None else visible, bool).copy()
        used[np.arange(len(used)) % stride != 0] = False
        return cls(
            used,
            apply_affine(affine, np.asarray(face.verts_image, np.float32)[used, :2]),
            np.asarray(face.verts_canonical, np.float32)[used, :2],
        )

    def splat(
        self,
        drops: np.ndarray,
        patch: int,
        canonical_patch: int,
        canonical_shape: tuple[int, int],
        input_shape: tuple[int, int],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Algorithm 1's maps of the points' ``drops`` (``(N,)``): the canonical map P = P* / N
        and its counts N (``canonical_shape``, windows of ``canonical_patch``) and the
        occlusion map in the input (``input_shape``, windows of ``patch``), float32."""
        canonical, counts = ops.splat_mean(drops, self.canonical, canonical_patch, canonical_shape)
        return canonical, counts, ops.splat_mean(drops, self.input, patch, input_shape)[0]


def _face_of(image: Any, face: AlignedFace | None, aligner: AlignerLike | None, options: CISOptions) -> AlignedFace:
    """``face``, or the face of ``image`` that ``options.face_index`` chooses (the default
    face without one); ``ValueError`` when ``face`` and a face choice are both given."""
    if face is not None and (options.face_index is not None or options.faces is not None):
        raise ValueError("face= already chooses the face: drop face_index= / faces=")
    if options.faces == "all":
        raise ValueError("faces='all' gives a list of results per photo: call cis, not cis_steps")
    if face is None and options.face_index is not None:
        return (aligner or default_aligner())(image, face_index=options.face_index)
    return find_face(image, face, aligner)


def cis_steps(
    image: Any,
    scorer: ScorerLike,
    target: int | str | None = None,
    options: CISOptions | Mapping[str, Any] | None = None,
    *,
    aligner: AlignerLike | None = None,
    face: AlignedFace | None = None,
    **overrides: Any,
) -> Steps:
    """:func:`cis` of one photo (a path or an ``H x W x 3`` array) as requests
    (:mod:`facesal_fast.scoring.batching`): :func:`~facesal_fast.scoring.batching.run_together`
    scores several images' windows in shared batches; returns the :class:`CISResult`.
    Arguments as :func:`cis` (``faces="all"`` is :func:`cis`'s alone)."""
    return (yield from _photo_steps(image, scorer, target, CISOptions.build(options, **overrides), aligner, face))


def _photo_steps(
    image: Any, scorer: ScorerLike, target: Any, options: CISOptions, aligner: AlignerLike | None, face: Any
) -> Steps:
    """:func:`cis_steps` with its options built (Algorithm 1 on one face)."""
    face = _face_of(image, face, aligner, options)
    input_image, affine = scorer.prepare(face.image, face)
    patch = resolve_patch(options.patch, input_image.shape[:2])
    check_window_sizes(input_image.shape[:2], patch, None if options.mode == "exact" else options.grid_step)
    target_index, score_target = _resolve_target(scorer, input_image, one_target(target))
    base = float(scorer.base_score(input_image, score_target))
    points = FacePoints.of(face, affine, options.stride)
    check_stride(options.stride, int(points.used.sum()), int(np.count_nonzero(face.visible)))
    windows = len(unique_windows(points.input)[0])
    choice = choose_incremental(scorer, input_image, patch, options.incremental, windows)
    c_patch = face.canonical_patch(patch, affine) if options.canonical_patch is None else int(options.canonical_patch)
    splat = CanonicalSplat(points.canonical, c_patch, face.canonical_shape)
    requests = Windows.template(choice.scorer, input_image, patch, options.fill, score_target)
    scored = yield from _scored_steps(requests, points.input, base, splat, options)
    _check_finite_scores(base, scored.drops, scorer, target_index)
    canonical, counts, occlusion = points.splat(
        scored.drops, patch, c_patch, face.canonical_shape, input_image.shape[:2]
    )
    return CISResult(
        canonical=canonical,
        counts=counts,
        occlusion=occlusion,
        drops=scored.drops,
        used=points.used,
        face=face,
        input_image=input_image,
        affine=affine,
        target=target_index,
        target_name=_class_name(scorer, target_index),
        base_score=base,
        patch=int(patch),
        canonical_patch=c_patch,
        forward_passes=scored.forward_passes,
        settings=_settings(options, patch, c_patch, scored, choice),
    )


def _settings(options: CISOptions, patch: int, c_patch: int, scored: _Scored, choice: Any) -> dict[str, Any]:
    """A result's ``settings``: the options it was computed with and how it was scored."""
    return dict(
        patch=int(patch),
        canonical_patch=c_patch,
        stride=int(options.stride),
        fill=str(options.fill),
        mode=scored.mode,
        grid_step=int(scored.grid_step),
        refine=float(options.refine) if options.quality is None else 0.0,
        quality=options.quality,
        target_ssim=options.target_ssim,
        incremental=choice.incremental,
        incremental_reason=choice.reason,
        forward_passes=scored.forward_passes,
        **_certificate_settings(scored.certificate),
    )


@per_photo("image", TENSOR_FIELDS, choose_face=True, steps=cis_steps)
def cis(
    image: ImagesInput,
    scorer: ScorerLike,
    target: int | str | None = None,
    options: CISOptions | Mapping[str, Any] | None = None,
    *,
    aligner: AlignerLike | None = None,
    face: AlignedFace | None = None,
    **overrides: Any,
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
        options: how the map is computed: a :class:`~facesal_fast.core.options.CISOptions`
            (checked when built), a mapping of its fields or ``None`` (the defaults). Its fields:

            - ``patch``: occlusion window in the scorer's input pixels (default: 15 px at
              224 px, scaled to the input size, see :func:`default_patch`).
            - ``canonical_patch``: splat window on the canonical face (default: ``patch``
              scaled by canonical face size / face size in the input).
            - ``stride``: keep every ``stride``-th correspondence point (the paper's vertex stride).
            - ``fill``: occlusion fill, as :func:`facesal_fast.ops.occlude_batch`.
            - ``mode``: ``"exact"`` (every distinct window) or ``"grid"`` (grid of step
              ``grid_step``, bilinear interpolation), or ``"adaptive"`` (that grid first, then
              the ``refine`` fraction of windows with the largest coarse drops scored exactly;
              Krypton's drill-down).
            - ``grid_step``: step of that grid, in the scorer's input pixels.
            - ``refine``: fraction of windows refined exactly in ``"adaptive"`` mode.
            - ``quality``: a promise instead of ``mode``/``grid_step``/``refine``: ``"exact"``,
              ``"high"`` (estimated SSIM against exact >= 0.95 on this photo), ``"fast"``
              (>= 0.90) or a target SSIM in (0, 1]: a coarse grid refined where its sampled
              error is largest until the estimate meets the target, or exact when refining
              would cost more (:mod:`facesal_fast.speed.certified`); ``settings["mode"]``
              says which (``"certified"`` or ``"exact"``).
            - ``certify``: approximate modes score a random sample of the windows they skipped
              and record ``settings["estimated_ssim"]`` (against exact) and
              ``settings["estimated_share_error"]`` (largest region-share error, points);
              exact results record 1 and 0. ``False`` skips the sample (both ``None``).
            - ``incremental``: ``"auto"``: incremental inference where the model traces and
              its multiply-add count says it pays (same maps up to float error), else the
              scorer as it is; ``True`` to insist, ``False`` to opt out
              (see :mod:`facesal_fast.speed.auto`).
            - ``face_index``: explain the ``face_index``-th largest face of the photo (default:
              the largest, logged at WARNING with its box when there are several).
            - ``faces``: ``"all"`` explains every face: a list of results per photo.
            - ``batch_size``: not used by ``cis`` (its windows go in the scorer's batches).
        aligner: aligner to use when ``face`` is not given (default aligner otherwise).
        face: a precomputed :class:`AlignedFace` (e.g. ``AlignedFace.from_arrays``).
        overrides: fields of ``options`` by keyword, applied over it
            (``cis(photo, scorer, mode="grid", grid_step=4)``, ``face_index=1``); an unknown
            name is a ``TypeError``, a bad value a ``ValueError`` naming the field.

    Returns:
        :class:`CISResult`; a list of them for a batch (one per photo) or ``faces="all"``.
    """
    return run_steps(cis_steps(image, scorer, target, options, aligner=aligner, face=face, **overrides))
