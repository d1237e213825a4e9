"""Identity saliency end to end (docs/identity.md): eqs. 7 and 8 of the CSM paper bound to an
embedding model and explained with CIS.

:func:`identification_scorer` / :func:`verification_scorer` bind eq. 7 / eq. 8 (the
confidences of :mod:`facesal_fast.scoring.embedding`) to an embedding
:class:`~facesal_fast.scoring.Scorer` (by default ``facesal_fast.models.load("dlib-resnet")``)
for ``facesal_fast.cis``; :func:`verification_cis` occludes the same facial region in both
images of a pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable, Mapping, Sequence

import numpy as np

from facesal_fast.align import find_face
from facesal_fast.align.face import window_side
from facesal_fast.core.options import CISOptions
from facesal_fast.models import load
from facesal_fast.ops import FAR_CENTER, splat_mean
from facesal_fast.saliency.cis import CISResult, FacePoints, occlusion_steps, resolve_patch
from facesal_fast.scoring.batching import Windows, run_steps
from facesal_fast.scoring.embedding import (
    embed_faces,
    identification_confidence,
    verification_confidence,
    verification_pair_scores,
)

if TYPE_CHECKING:
    from facesal_fast.scoring.scorer import Scorer

__all__ = ["VerificationCISResult", "identification_scorer", "verification_cis", "verification_scorer"]


def _default_scorer(scorer: Scorer | None) -> Scorer:
    if scorer is not None:
        return scorer
    return load("dlib-resnet", backend="torch")


def identification_scorer(
    gallery: Any,
    labels: Sequence[Hashable] | np.ndarray,
    identity: Hashable,
    scorer: Scorer | None = None,
    query: Any = None,
) -> Scorer:
    """An embedding scorer whose confidence is eq. 7 for ``identity``, for ``facesal_fast.cis``.

    Args:
        gallery: ``(G, D)`` gallery embeddings, or G photos (arrays, paths, ``AlignedFace``)
            embedded with ``scorer``. Leave the query photo out.
        labels: ``(G,)`` identity of each gallery entry.
        identity: the query's true identity.
        scorer: the embedding scorer (default ``facesal_fast.models.load("dlib-resnet",
            backend="torch")``).
        query: the unoccluded query (photo, ``AlignedFace`` or ``(D,)`` embedding) for the
            fixed-image variant of eq. 7 (A chosen once); None re-chooses A per copy.

    Returns:
        ``scorer.with_confidence(identification_confidence(...))``: ``cis(photo, it,
        face=...)`` gives the CIS of eq. 7 (``target`` must stay None).
    """
    scorer = _default_scorer(scorer)
    embeddings = embed_faces(scorer, gallery)
    anchor = None if query is None else embed_faces(scorer, query)
    if anchor is not None and len(anchor) != 1:
        raise ValueError(f"query must be one photo or embedding, got {len(anchor)}")
    return scorer.with_confidence(
        identification_confidence(embeddings, labels, identity, None if anchor is None else anchor[0])
    )


def verification_scorer(other: Any, c: int, tau: float, scorer: Scorer | None = None) -> Scorer:
    """An embedding scorer whose confidence is eq. 8 (sign fixed) against ``other`` left intact.

    ``other``: the other image of the pair (array, path, ``AlignedFace``) or its ``(D,)``
    embedding. ``cis(image1, it, face=...)`` then occludes image 1 only; to occlude the
    same region in both images use :func:`verification_cis`.
    """
    scorer = _default_scorer(scorer)
    embedding = embed_faces(scorer, other)
    if len(embedding) != 1:
        raise ValueError(f"need one other image or embedding, got {len(embedding)}")
    return scorer.with_confidence(verification_confidence(embedding[0], c, tau))


@dataclass
class VerificationCISResult(CISResult):
    """:class:`~facesal_fast.saliency.CISResult` of a verification pair (eq. 8), with the
    same facial region occluded in both images. The inherited fields describe image 1
    (``face``, ``input_image`` = chip 1, ``affine``, ``occlusion`` on chip 1); ``canonical``
    is the pair's map; ``base_score`` is ``c * (cos - tau)`` of the intact pair.

    Attributes:
        face2, input_image2, affine2, occlusion2: the same for image 2.
        c, tau: the pair label (+1 genuine, -1 impostor) and the cosine threshold.
        cosine: cosine of the intact pair's embeddings.
    """

    face2: Any = None
    input_image2: np.ndarray | None = None
    affine2: np.ndarray | None = None
    occlusion2: np.ndarray | None = None
    c: int = 1
    tau: float = 0.0
    cosine: float = float("nan")


@dataclass(frozen=True)
class _PairScorer:
    """Eq. 8 as a scorer of occluded windows, for :func:`~facesal_fast.saliency.cis.occlusion_steps`:
    a window row ``(x1, y1, x2, y2)`` occludes ``(x1, y1)`` in the image scored (chip 1) and
    ``(x2, y2)`` in ``chip2``; its score is ``c * (cos(Q1, Q2) - tau)``."""

    scorer: Scorer
    chip2: np.ndarray
    c: int
    tau: float
    batch_size: int | None

    def score_occluded(
        self, input_image: np.ndarray, centers: np.ndarray, patch: int, fill: Any = "black", target: Any = None
    ) -> np.ndarray:
        """``(K,)`` float32 scores of the pairs occluded at ``centers`` (``K x 4``)."""
        size = self.scorer.batch_size_for((self.scorer.channels, *input_image.shape[:2]), len(centers), self.batch_size)
        scores = verification_pair_scores(
            self.scorer,
            input_image,
            self.chip2,
            centers[:, :2],
            patch,
            self.c,
            self.tau,
            fill=fill,
            batch_size=size,
            centers2=centers[:, 2:],
        )
        return scores.cpu().numpy()


@dataclass(frozen=True)
class _Side:
    """One image of a pair: its face, chip (``h x w x 3`` uint8), ``2 x 3`` affine and points."""

    face: Any
    chip: np.ndarray
    affine: np.ndarray
    points: FacePoints


def _pair_sides(
    scorer: Scorer, images: tuple[Any, Any], faces: tuple[Any, Any], aligner: Any, stride: int
) -> tuple[_Side, _Side]:
    """Both images' chips and the points visible in both faces, kept by ``stride``."""
    face1, face2 = (find_face(image, face, aligner) for image, face in zip(images, faces))
    canon1, canon2 = np.asarray(face1.verts_canonical, np.float32), np.asarray(face2.verts_canonical, np.float32)
    if canon1.shape != canon2.shape or not np.allclose(canon1, canon2, atol=1e-3):
        raise ValueError("the two faces do not share their canonical points (align both with the same aligner)")
    both = np.asarray(face1.visible, bool) & np.asarray(face2.visible, bool)
    sides = []
    for face in (face1, face2):
        chip, affine = scorer.prepare(face.image, face)
        sides.append(_Side(face, chip, affine, FacePoints.of(face, affine, stride, both)))
    if not sides[0].points.used.any():
        raise ValueError("no correspondence point is visible in both faces")
    return sides[0], sides[1]


def _pair_drops(
    scorer: Scorer, one: _Side, two: _Side, patch: int, c: int, tau: float, options: CISOptions
) -> tuple[float, np.ndarray, int]:
    """``(base score, drops (N,), distinct window pairs scored)``: cis's exact mode on the
    pair's window rows (identical pairs scored once; automatic batches sized by their count)."""
    rows = np.concatenate([one.points.input, two.points.input], 1)
    pair = _PairScorer(scorer, two.chip, c, tau, options.batch_size)
    far = np.full((1, 4), FAR_CENTER, np.float32)  # occludes nothing: the intact pair, same kernel
    base = float(pair.score_occluded(one.chip, far, patch, options.fill)[0])
    drops, passes = run_steps(
        occlusion_steps(Windows.template(pair, one.chip, patch, options.fill), rows, base, options)
    )
    return base, drops, passes


def _check_pair_options(options: CISOptions, c: int) -> None:
    """``ValueError`` for what a verification CIS does not do: approximate, or choose a face."""
    if c not in (1, -1):
        raise ValueError(f"c must be +1 (genuine pair) or -1 (impostor pair), got {c!r}")
    if options.approximate:
        raise ValueError("verification_cis scores every window: mode and quality must be 'exact'")
    if options.face_index is not None or options.faces is not None:
        raise ValueError("verification_cis takes face1= and face2=, not face_index= / faces=")


def verification_cis(
    image1: Any,
    image2: Any,
    scorer: Scorer | None,
    c: int,
    tau: float,
    options: CISOptions | Mapping[str, Any] | None = None,
    *,
    face1: Any = None,
    face2: Any = None,
    aligner: Any = None,
    **overrides: Any,
) -> VerificationCISResult:
    """Canonical saliency of a verification pair (eq. 8): the same facial region occluded in both.

    The dense correspondence points are shared by all faces (point n is the same facial
    location in both photos), so point n is mapped into chip 1 through image 1's position and
    chip 2 through image 2's; both copies are occluded there, scored by ``c * (cos(Q1, Q2) -
    tau)`` (:func:`~facesal_fast.scoring.embedding.verification_pair_scores`), and the drop
    ``S(pair) - S(occluded pair)`` is splatted at the point's canonical position, then divided
    by the counts (Algorithm 1: :func:`~facesal_fast.saliency.cis.cis`'s exact mode). Points
    visible in both faces are used.

    Args:
        image1, image2: ``H x W x 3`` uint8 RGB photos or paths (ignored where the face is given).
        scorer: an embedding scorer with ``crop="chip"`` (None: ``load("dlib-resnet")``).
        c: +1 genuine pair, -1 impostor pair.
        tau: cosine threshold (:func:`~facesal_fast.scoring.embedding.calibrate_tau`).
        options: a :class:`~facesal_fast.core.options.CISOptions`, a mapping of its fields or
            None. Used here: ``patch`` (occlusion window in chip pixels, default
            :func:`~facesal_fast.saliency.cis.default_patch` of the chip), ``canonical_patch``
            (splat window; default ``patch`` scaled to the canonical face, mean of the two
            faces), ``stride``, ``fill`` and ``batch_size`` (occluded pairs per forward pass,
            default automatic). Every window is scored: an approximate ``mode`` or
            ``quality``, or a face choice (pass ``face1``/``face2``), is a ``ValueError``.
        face1, face2: precomputed :class:`~facesal_fast.align.AlignedFace` objects.
        aligner: aligner of the photos given without their face (default aligner otherwise).
        overrides: fields of ``options`` by keyword (``stride=4``, ``patch=20``).
    """
    options = CISOptions.build(options, **overrides)
    _check_pair_options(options, c)
    scorer = _default_scorer(scorer)
    if scorer.crop != "chip":
        raise ValueError(f"verification_cis needs a scorer with crop='chip' (aligned chips), got crop={scorer.crop!r}")
    one, two = _pair_sides(scorer, (image1, image2), (face1, face2), aligner, options.stride)
    patch = resolve_patch(options.patch, one.chip.shape[:2])
    base, drops, passes = _pair_drops(scorer, one, two, patch, c, tau, options)
    if options.canonical_patch is None:
        sizes = [side.face.canonical_patch_size(patch, side.affine) for side in (one, two)]
        c_patch = window_side(0.5 * sum(sizes))
    else:
        c_patch = int(options.canonical_patch)
    canonical, counts, occlusion = one.points.splat(drops, patch, c_patch, one.face.canonical_shape, one.chip.shape[:2])
    settings = dict(patch=int(patch), canonical_patch=c_patch, stride=int(options.stride), fill=str(options.fill))
    return VerificationCISResult(
        canonical=canonical,
        counts=counts,
        occlusion=occlusion,
        drops=drops,
        used=one.points.used,
        face=one.face,
        input_image=one.chip,
        affine=one.affine,
        target=None,
        target_name="genuine" if c == 1 else "impostor",
        base_score=base,
        patch=int(patch),
        canonical_patch=c_patch,
        forward_passes=2 * (passes + 1),
        settings=dict(settings, mode="exact", task="verification", c=int(c), tau=float(tau)),
        face2=two.face,
        input_image2=two.chip,
        affine2=two.affine,
        occlusion2=splat_mean(drops, two.points.input, patch, two.chip.shape[:2])[0],
        c=int(c),
        tau=float(tau),
        cosine=base / c + tau,
    )
