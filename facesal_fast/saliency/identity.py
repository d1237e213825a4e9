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
from typing import TYPE_CHECKING, Any, Hashable, Sequence

import numpy as np

from facesal_fast.align import find_face
from facesal_fast.align.face import window_side
from facesal_fast.core.grid import unique_windows
from facesal_fast.core.validate import positive_int
from facesal_fast.models import load
from facesal_fast.ops import FAR_CENTER, splat_mean
from facesal_fast.saliency.cis import CISResult, apply_affine, resolve_patch
from facesal_fast.scoring.batching import auto_batch_size
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


def verification_cis(
    image1: Any,
    image2: Any,
    scorer: Scorer | None,
    c: int,
    tau: float,
    *,
    face1: Any = None,
    face2: Any = None,
    patch: int | None = None,
    canonical_patch: int | None = None,
    stride: int = 1,
    fill: Any = "black",
    aligner: Any = None,
    batch_size: int | None = None,
) -> VerificationCISResult:
    """Canonical saliency of a verification pair (eq. 8): the same facial region occluded in both.

    The dense correspondence points are shared by all faces (point n is the same facial
    location in both photos), so point n is mapped into chip 1 through image 1's
    position and chip 2 through image 2's; both copies are occluded there, scored by
    ``c * (cos(Q1, Q2) - tau)`` (:func:`~facesal_fast.scoring.embedding.verification_pair_scores`), and the drop
    ``S(pair) - S(occluded pair)`` is splatted at the point's canonical position, then
    divided by the counts (Algorithm 1). Points visible in both faces are used.

    Args:
        image1, image2: ``H x W x 3`` uint8 RGB photos or paths (ignored where the face is given).
        scorer: an embedding scorer with ``crop="chip"`` (None: ``load("dlib-resnet")``).
        c: +1 genuine pair, -1 impostor pair.
        tau: cosine threshold (:func:`~facesal_fast.scoring.embedding.calibrate_tau`).
        face1, face2: precomputed :class:`~facesal_fast.align.AlignedFace` objects.
        patch: occlusion window in chip pixels (default :func:`~facesal_fast.saliency.cis.default_patch` of the chip).
        canonical_patch: splat window (default: ``patch`` scaled to the canonical face,
            mean of the two faces).
        stride: keep every ``stride``-th point. fill: as ``ops.occlude_batch``.
        batch_size: occluded pairs per forward pass (default: automatic).
    """
    positive_int(stride, "stride")
    if c not in (1, -1):
        raise ValueError(f"c must be +1 (genuine pair) or -1 (impostor pair), got {c!r}")
    scorer = _default_scorer(scorer)
    if scorer.crop != "chip":
        raise ValueError(f"verification_cis needs a scorer with crop='chip' (aligned chips), got crop={scorer.crop!r}")
    face1, face2 = find_face(image1, face1, aligner), find_face(image2, face2, aligner)
    canon1, canon2 = np.asarray(face1.verts_canonical, np.float32), np.asarray(face2.verts_canonical, np.float32)
    if canon1.shape != canon2.shape or not np.allclose(canon1, canon2, atol=1e-3):
        raise ValueError("the two faces do not share their canonical points (align both with the same aligner)")
    chip1, affine1 = scorer.prepare(face1.image, face1)
    chip2, affine2 = scorer.prepare(face2.image, face2)
    patch = resolve_patch(patch, chip1.shape[:2])
    used = np.asarray(face1.visible, bool) & np.asarray(face2.visible, bool)
    used[np.arange(len(used)) % stride != 0] = False
    if not used.any():
        raise ValueError("no correspondence point is visible in both faces")
    p1 = apply_affine(affine1, np.asarray(face1.verts_image, np.float32)[used, :2])
    p2 = apply_affine(affine2, np.asarray(face2.verts_image, np.float32)[used, :2])
    # Identical window pairs are scored once (same rule as cis: the window's centre pixel).
    unique, inverse = unique_windows(np.concatenate([p1, p2], 1))
    size = (
        batch_size
        or scorer.batch_size
        or auto_batch_size(
            (scorer.channels, *chip1.shape[:2]), scorer.backend.device, len(unique), scorer.backend.cpu_max_batch
        )
    )
    pair = dict(c=c, tau=tau, fill=fill, batch_size=size)
    far = np.full((1, 2), FAR_CENTER, np.float32)  # occludes nothing: the intact pair, same kernel
    base = float(verification_pair_scores(scorer, chip1, chip2, far, patch, **pair)[0])
    scores = verification_pair_scores(scorer, chip1, chip2, unique[:, :2], patch, centers2=unique[:, 2:], **pair)
    drops = (base - scores.double().cpu().numpy()).astype(np.float32)[inverse]
    if canonical_patch is None:
        sizes = (face1.canonical_patch_size(patch, affine1), face2.canonical_patch_size(patch, affine2))
        c_patch = window_side(0.5 * sum(sizes))
    else:
        c_patch = int(canonical_patch)
    canonical_points = canon1[used, :2]
    canonical, counts = splat_mean(drops, canonical_points, c_patch, face1.canonical_shape)
    return VerificationCISResult(
        canonical=canonical,
        counts=counts,
        occlusion=splat_mean(drops, p1, patch, chip1.shape[:2])[0],
        drops=drops,
        used=used,
        face=face1,
        input_image=chip1,
        affine=affine1,
        target=None,
        target_name="genuine" if c == 1 else "impostor",
        base_score=base,
        patch=int(patch),
        canonical_patch=c_patch,
        forward_passes=2 * (len(unique) + 1),
        settings=dict(
            patch=int(patch),
            canonical_patch=c_patch,
            stride=int(stride),
            fill=str(fill),
            mode="exact",
            task="verification",
            c=int(c),
            tau=float(tau),
        ),
        face2=face2,
        input_image2=chip2,
        affine2=affine2,
        occlusion2=splat_mean(drops, p2, patch, chip2.shape[:2])[0],
        c=int(c),
        tau=float(tau),
        cosine=base / c + tau,
    )
