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

End to end (docs/identity.md): :mod:`facesal_fast.saliency.identity` binds eq. 7 / eq. 8 to
an embedding :class:`~facesal_fast.scoring.Scorer` for ``facesal_fast.cis`` and occludes the
same facial region in both images of a verification pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesal_fast.align import load_image
from facesal_fast.ops import occlude_batch
from facesal_fast.scoring.scorer import Scorer

if TYPE_CHECKING:
    from facesal_fast.scoring.confidence import Confidence

__all__ = [
    "calibrate_tau",
    "cosine_similarity",
    "embed_faces",
    "identification_confidence",
    "verification_confidence",
    "verification_pair_scores",
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
