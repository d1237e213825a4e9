"""Confidence functions for embedding (face-descriptor) models: eqs. 7 and 8 of the CSM paper.

- Zero-shot identification (eq. 7): ``S = cos(A, Q)``, Q the query's embedding
  and A the gallery embedding *of the true identity* closest to Q (highest
  cosine). By default A is re-chosen for every occluded copy, so the confidence is
  a function of the (occluded) query image alone, as phi is in eq. 1. The paper
  does not say which; the *fixed-image* variant (``query=`` the unoccluded query's
  embedding) picks A once, closest to the unoccluded query, and keeps it for every
  occluded copy. The two agree on the unoccluded image; per copy, the default is
  never lower (it maximises over the same rows).
- Verification (eq. 8): ``S = c * (cos(Q1, Q2) - tau)`` with ``c = +1`` for a
  genuine pair and ``-1`` for an impostor pair, the same region occluded in
  both images. **Sign, a labelling convention:** the paper prints
  ``c * (tau - cos)`` with ``c in {-1, 1}`` and never says which label is +1;
  read with ``c = +1`` for a genuine pair it is negative for a correctly verified
  pair and makes the occlusion drop ``S(I) - S(I_occluded)`` negative exactly
  where a region matters. ``c * (cos - tau)`` with ``c = +1`` for a genuine pair
  is the printed formula with the other labelling: positive when the pair is
  decided correctly, dropping when an occlusion pushes it towards the wrong
  decision, like a class probability.

All confidences follow the Scorer's convention ``outputs (K, D) torch tensor
-> scores (K,)`` (see :mod:`facesal_fast.scoring.confidence`).

End to end (docs/identity.md): :func:`identification_scorer` / :func:`verification_scorer`
bind eq. 7 / eq. 8 to an embedding :class:`~facesal_fast.scoring.Scorer` (e.g.
``facesal_fast.models.load("dlib-resnet")``) for ``facesal_fast.cis``;
:func:`verification_cis` occludes the same facial region in both images of a pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesal_fast._validate import positive_int
from facesal_fast.align import find_face
from facesal_fast.align.face import window_side
from facesal_fast.ops import FAR_CENTER, occlude_batch
from facesal_fast.saliency.cis import CISResult, apply_affine, resolve_patch, splat_drops, unique_windows
from facesal_fast.scoring.batching import auto_batch_size
from facesal_fast.scoring.confidence import Confidence
from facesal_fast.scoring.scorer import Scorer

__all__ = [
    "VerificationCISResult",
    "calibrate_tau",
    "cosine_similarity",
    "embed_chips",
    "embed_faces",
    "identification_confidence",
    "identification_scorer",
    "verification_cis",
    "verification_confidence",
    "verification_pair_scores",
    "verification_scorer",
    "verification_score",
]


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def cosine_similarity(q: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of ``q (K, D)`` with ``a (D,)`` or ``a (K, D)`` -> ``(K,)`` float32."""
    q = F.normalize(q.float(), dim=-1)
    a = F.normalize(a.float().to(q.device), dim=-1)
    return (q * a).sum(-1) if a.ndim == 2 else q @ a


def identification_confidence(
    gallery_embeddings: np.ndarray | torch.Tensor,
    gallery_labels: Sequence[Hashable] | np.ndarray,
    identity: Hashable,
    query: np.ndarray | torch.Tensor | None = None,
) -> Confidence:
    """Eq. 7: cosine between the query and the closest gallery embedding of ``identity``.

    Args:
        gallery_embeddings: ``(G, D)`` embeddings of the labelled gallery (leave the
            query image itself out).
        gallery_labels: ``(G,)`` identity label of each gallery row.
        identity: the query's true identity (must occur in ``gallery_labels``).
        query: ``(D,)`` embedding of the unoccluded query for the fixed-image variant
            (A chosen once, closest to it); None re-chooses A for every copy.

    Returns:
        ``fn(outputs (K, D)) -> (K,)``: ``max_g cos(outputs[k], gallery[g])`` over
        the rows ``g`` labelled ``identity`` (or ``cos(outputs[k], A)`` with ``query``).
    """
    gallery = _as_tensor(gallery_embeddings).float()
    labels = list(np.asarray(gallery_labels).tolist())
    if gallery.ndim != 2 or len(labels) != gallery.shape[0]:
        raise ValueError(f"need (G, D) embeddings and G labels, got {tuple(gallery.shape)} and {len(labels)}")
    rows = [i for i, label in enumerate(labels) if label == identity]
    if not rows:
        raise ValueError(f"identity {identity!r} has no gallery embedding")
    own = F.normalize(gallery[rows], dim=1)  # (G_c, D)
    if query is not None:
        q0 = _as_tensor(query).float().reshape(-1)
        if q0.shape[0] != own.shape[1] or not torch.isfinite(q0).all():
            raise ValueError(f"query must be a finite ({own.shape[1]},) embedding, got shape {tuple(q0.shape)}")
        own = own[int(torch.argmax(own @ F.normalize(q0, dim=0)))][None]  # A fixed: (1, D)

    def confidence(outputs: torch.Tensor) -> torch.Tensor:
        if outputs.ndim != 2 or outputs.shape[1] != own.shape[1]:
            raise ValueError(f"expected (K, {own.shape[1]}) embeddings, got {tuple(outputs.shape)}")
        q = F.normalize(outputs.float(), dim=1)
        return (q @ own.to(q.device).T).max(dim=1).values

    return confidence


def verification_score(q1: torch.Tensor, q2: torch.Tensor, c: int, tau: float) -> torch.Tensor:
    """Eq. 8 with the sign fix: ``c * (cos(q1, q2) - tau)``.

    ``q1 (K, D)``, ``q2 (D,)`` or ``(K, D)`` (row-wise pairs); ``c`` = +1 genuine,
    -1 impostor. Returns ``(K,)`` float32.
    """
    if c not in (1, -1):
        raise ValueError(f"c must be +1 (genuine pair) or -1 (impostor pair), got {c!r}")
    return c * (cosine_similarity(q1, q2) - tau)


def verification_confidence(other_embedding: np.ndarray | torch.Tensor, c: int, tau: float) -> Confidence:
    """Eq. 8 confidence of one image of a pair against the other image's embedding.

    ``other_embedding``: ``(D,)`` (the other image left intact) or ``(K, D)``
    (row k = the other image with the same region occluded as query row k; see
    :func:`verification_pair_scores`, which does both sides at once).
    Returns ``fn(outputs (K, D)) -> c * (cos(outputs, other) - tau)  (K,)``.
    """
    other = _as_tensor(other_embedding).float()
    if c not in (1, -1):
        raise ValueError(f"c must be +1 (genuine pair) or -1 (impostor pair), got {c!r}")

    def confidence(outputs: torch.Tensor) -> torch.Tensor:
        return verification_score(outputs, other, c, tau)

    return confidence


@torch.no_grad()
def embed_chips(model: nn.Module, batch: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Run ``model`` over ``batch (N, C, H, W)`` in chunks of ``batch_size`` -> ``(N, D)``."""
    return torch.cat([model(batch[i : i + batch_size]) for i in range(0, len(batch), batch_size)])


def verification_pair_scores(
    model: nn.Module | Scorer,
    chip1: np.ndarray,
    chip2: np.ndarray,
    centers: np.ndarray,
    patch: int,
    c: int,
    tau: float,
    *,
    fill: str | float | Sequence[float] | np.ndarray = "black",
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    scale: float = 1.0 / 255.0,
    batch_size: int = 64,
    centers2: np.ndarray | None = None,
) -> torch.Tensor:
    """Eq. 8 for a pair with the same region occluded in both images, one score per centre.

    Args:
        model: embedding network, ``(B, 3, H, W)`` float32 -> ``(B, D)``.
        chip1, chip2: the two aligned face chips, ``(H, W, 3) uint8`` RGB of the same
            size; alignment to one template makes equal chip coordinates the same
            facial region.
        centers: ``(K, 2)`` float32 occlusion centres ``(x, y)`` in chip pixels.
        patch: occluding square side in pixels.
        c: +1 genuine pair, -1 impostor pair.
        tau: cosine threshold (see :func:`calibrate_tau`).
        fill, mean, std, scale: as in :func:`facesal_fast.ops.occlude_batch`; the
            network input is ``(v * scale - mean) / std``. For
            :class:`~facesal_fast.models.dlib_resnet.DlibFaceResNet` pass
            ``scale=1.0, mean=DLIB_MEAN_RGB, std=DLIB_INPUT_STD``.
        batch_size: occluded copies per forward pass.
        centers2: ``(K, 2)`` centres in ``chip2`` when they differ from ``centers`` (row k
            = the same facial point as ``centers[k]``, e.g. a dense correspondence
            point mapped into each chip); default ``centers``.

    A :class:`~facesal_fast.scoring.Scorer` may stand for ``model``: its backend, device,
    normalisation (``mean``/``std``/``scale`` are then ignored) and layout are used.

    Returns:
        ``(K,)`` float32 ``c * (cos(Q1_k, Q2_k) - tau)``. The unoccluded score is
        ``verification_score(Q1, Q2, c, tau)`` of the intact chips' embeddings.
    """
    if chip1.shape != chip2.shape:
        raise ValueError(f"chips differ in shape: {chip1.shape} vs {chip2.shape}")
    centers = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
    centers2 = centers if centers2 is None else np.asarray(centers2, dtype=np.float32).reshape(-1, 2)
    if len(centers2) != len(centers):
        raise ValueError(f"centers and centers2 differ in length: {len(centers)} vs {len(centers2)}")
    if isinstance(model, Scorer):
        device = model.backend.device

        def occlude(chip: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
            return model.occluded_batch(chip, pts, patch, fill)

        def embed(batch: torch.Tensor) -> torch.Tensor:
            return model.backend(batch)
    else:
        device = next(model.parameters()).device

        def occlude(chip: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
            return occlude_batch(chip, pts, patch, fill, mean, std, scale=scale, layout="nchw", dtype="float32")

        def embed(batch: torch.Tensor) -> torch.Tensor:
            return model(batch)

    chips = [torch.from_numpy(np.ascontiguousarray(chip)).to(device) for chip in (chip1, chip2)]
    scores = []
    for lo in range(0, len(centers), batch_size):
        parts = (centers[lo : lo + batch_size], centers2[lo : lo + batch_size])
        both = [occlude(chip, torch.from_numpy(part).to(device)) for chip, part in zip(chips, parts)]
        with torch.no_grad():
            q = embed(torch.cat(both))
        k = len(parts[0])
        scores.append(verification_score(q[:k], q[k:], c, tau))
    return torch.cat(scores) if scores else torch.zeros(0, device=device)


def calibrate_tau(
    pairs: Sequence[tuple[Hashable, Hashable, bool]],
    embeddings: Mapping[Hashable, np.ndarray] | np.ndarray,
) -> tuple[float, float]:
    """Cosine threshold tau that best separates genuine from impostor pairs.

    Args:
        pairs: ``(key1, key2, same)`` triples; keys index ``embeddings``.
        embeddings: ``{key: (D,)}`` or an ``(N, D)`` array indexed by int keys.

    Returns:
        ``(tau, accuracy)``: a pair is declared genuine when ``cos > tau``; tau is
        the midpoint between the two cosines around the best split, and
        ``accuracy`` the fraction of ``pairs`` decided correctly with it (on the
        calibration pairs themselves, so optimistic for unseen pairs).
    """
    if not pairs:
        raise ValueError("no pairs to calibrate on")
    a = torch.stack([_as_tensor(embeddings[k1]).float() for k1, _, _ in pairs])
    b = torch.stack([_as_tensor(embeddings[k2]).float() for _, k2, _ in pairs])
    cos = cosine_similarity(a, b).double().numpy()
    same = np.asarray([bool(s) for _, _, s in pairs])
    order = np.argsort(cos)
    cos_sorted, same_sorted = cos[order], same[order]
    # Threshold below sorted position i: pairs [0, i) impostor, [i, P) genuine.
    impostors_below = np.concatenate([[0], np.cumsum(~same_sorted)])
    genuine_above = np.concatenate([np.cumsum(same_sorted[::-1])[::-1], [0]])
    correct = impostors_below + genuine_above
    # Only split between distinct cosines (or at the ends).
    valid = np.ones(len(correct), dtype=bool)
    valid[1:-1] = cos_sorted[1:] > cos_sorted[:-1]
    best = int(np.flatnonzero(valid)[np.argmax(correct[valid])])
    if best == 0:
        tau = cos_sorted[0] - 1e-6
    elif best == len(cos_sorted):
        tau = cos_sorted[-1]
    else:
        tau = 0.5 * (cos_sorted[best - 1] + cos_sorted[best])
    return float(tau), float(correct[best] / len(pairs))


# ----------------------------------------------------------------------------- end to end (Scorer, CIS)


def _default_scorer(scorer: Scorer | None) -> Scorer:
    if scorer is not None:
        return scorer
    from facesal_fast.models import load  # the registry imports scoring

    return load("dlib-resnet", backend="torch")


def _is_embeddings(items: Any) -> bool:
    """True for ``(G, D)`` float arrays/tensors or a sequence of ``(D,)`` float vectors."""
    if isinstance(items, torch.Tensor):
        return items.is_floating_point()
    if isinstance(items, np.ndarray):
        return items.dtype.kind == "f" and items.ndim in (1, 2)
    if isinstance(items, (list, tuple)) and items:
        first = items[0]
        return (isinstance(first, torch.Tensor) and first.ndim == 1) or (
            isinstance(first, np.ndarray) and first.ndim == 1 and first.dtype.kind == "f"
        )
    return False


def _embed_one(scorer: Scorer, item: Any) -> np.ndarray:
    from facesal_fast.align import load_image

    if hasattr(item, "image") and hasattr(item, "face_box"):  # AlignedFace: its own landmarks
        return scorer.embed(item.image, item)
    image = load_image(item) if isinstance(item, (str, Path)) else np.asarray(item)
    return scorer.embed(image)


def embed_faces(scorer: Scorer, items: Any) -> np.ndarray:
    """``(G, D)`` float32 embeddings of photos (``H x W x 3`` uint8 arrays, paths or
    ``AlignedFace`` objects); each is prepared by ``scorer`` (a chip scorer aligns photos
    with the default aligner) and run unoccluded. Embeddings given as ``(G, D)`` / ``(D,)``
    float arrays are returned as they are."""
    if _is_embeddings(items):
        arr = (
            np.stack([np.asarray(torch.as_tensor(v).float().cpu()) for v in items])
            if isinstance(items, (list, tuple))
            else np.asarray(torch.as_tensor(items).float().cpu())
        )
        return arr.reshape(-1, arr.shape[-1]).astype(np.float32)
    if (
        isinstance(items, np.ndarray)
        and items.ndim == 3
        or hasattr(items, "face_box")
        or isinstance(items, (str, Path))
    ):
        items = [items]  # one photo
    return np.stack([_embed_one(scorer, item) for item in items]).astype(np.float32)


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
    ``c * (cos(Q1, Q2) - tau)`` (:func:`verification_pair_scores`), and the drop
    ``S(pair) - S(occluded pair)`` is splatted at the point's canonical position, then
    divided by the counts (Algorithm 1). Points visible in both faces are used.

    Args:
        image1, image2: ``H x W x 3`` uint8 RGB photos or paths (ignored where the face is given).
        scorer: an embedding scorer with ``crop="chip"`` (None: ``load("dlib-resnet")``).
        c: +1 genuine pair, -1 impostor pair. tau: cosine threshold (:func:`calibrate_tau`).
        face1, face2: precomputed :class:`~facesal_fast.align.AlignedFace` objects.
        patch: occlusion window in chip pixels (default :func:`default_patch` of the chip).
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
        or auto_batch_size((scorer.channels, *chip1.shape[:2]), scorer.backend.device, len(unique))
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
    canonical, counts = splat_drops(drops, canonical_points, c_patch, face1.canonical_shape)
    return VerificationCISResult(
        canonical=canonical,
        counts=counts,
        occlusion=splat_drops(drops, p1, patch, chip1.shape[:2])[0],
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
        occlusion2=splat_drops(drops, p2, patch, chip2.shape[:2])[0],
        c=int(c),
        tau=float(tau),
        cosine=base / c + tau,
    )
