"""The evaluated faces in the scorer's input geometry, and ``M(.)`` of float images there.

Every metric is computed in the scorer's input geometry (the 64 x 64 grey face crop of the
bundled models): a canonical map is reprojected onto the photo
(:func:`facesal_fast.align.to_image`) and mapped through the scorer's crop affine into the
input; ``M(.)`` is the softmax probability of the class predicted on the unmodified crop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from facesal_fast import ops
from facesal_fast.align import load_image, to_image
from facesal_fast.methods.registry import ModelInput
from facesal_fast.scoring.progress import outer_bar

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    import torch

    from facesal_fast.scoring.photos import AlignerLike

__all__ = ["Item", "normalised_zero", "prepare_items", "reproject", "score_images", "to_input"]

_SCORE_BATCH = 256


@dataclass(frozen=True)
class Item:
    """One evaluated face.

    Attributes:
        key: the photo's file name.
        face: its ``AlignedFace``.
        input_image: ``h x w x C`` uint8 crop the scorer sees.
        affine: ``2 x 3`` photo -> input affine.
        target, label: the class predicted on ``input_image`` (index and name).
        base: ``M(I)``, the target's confidence on ``input_image``.
    """

    key: str
    face: Any
    input_image: np.ndarray
    affine: np.ndarray
    target: int
    label: str
    base: float

    def model_input(self, scorer: Any, model: torch.nn.Module | None, *, scored_by_scorer: bool = True) -> ModelInput:
        """The crop as the methods take it, normalised as ``scorer`` does (``model`` None: the
        scorer's torch module, if any); occluded and masked inputs are scored by ``scorer``,
        or by ``model`` itself without ``scored_by_scorer``."""
        found = ModelInput.from_scorer(
            scorer, self.input_image, model=model, photo=self.face.image, face_box=self.face.face_box
        )
        return found if scored_by_scorer else replace(found, scorer=None)


def prepare_items(
    photos: Sequence[Path], scorer: Any, aligner: AlignerLike, log: Callable[[str], None]
) -> tuple[list[Item], list[dict[str, str]]]:
    """Align each photo and prepare its crop: (items, failed ``[{"image", "error"}]``).

    A photo that cannot be read or shows no face is recorded as failed, not fatal; a bar
    ("faces") shows after 2 s."""
    items, failed = [], []
    for path in outer_bar(photos, desc="faces", unit="photo"):
        try:
            face = aligner(load_image(path), source=path.name)  # messages name the file
        except Exception as err:  # noqa: BLE001 - unreadable file or no face: recorded, not fatal
            failed.append({"image": path.name, "error": f"{type(err).__name__}: {err}"})
            continue
        input_image, affine = scorer.prepare(face.image, face.face_box)
        pred = scorer.predict_input(input_image)
        base = float(scorer.base_score(input_image, pred.index))
        items.append(Item(path.name, face, input_image, affine, pred.index, pred.label or str(pred.index), base))
    log(f"  {len(items)} faces aligned, {len(failed)} failed")
    return items, failed


def normalised_zero(scorer: Any) -> np.ndarray:
    """``(C,)`` pixel value that the scorer's normalisation maps to 0 (``mean / scale``):
    RISE's deleted pixel and blur padding (mean grey)."""
    mean = np.asarray(scorer.mean, np.float32).reshape(-1)
    return np.broadcast_to(mean / np.float32(scorer.scale), (scorer.channels,)).astype(np.float32)


def to_input(photo_map: np.ndarray, affine: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An ``H x W`` photo-space map carried into the scorer's ``h x w`` input geometry
    (``affine``: photo -> input, 2 x 3); 0 outside the photo."""
    h, w = shape
    return cv2.warpAffine(
        np.asarray(photo_map, np.float32),
        np.asarray(affine, np.float64),
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )


def reproject(canonical: np.ndarray, item: Item) -> np.ndarray:
    """A canonical-face map on ``item``'s input crop (``h x w`` float32)."""
    return to_input(to_image(canonical, item.face), item.affine, item.input_image.shape[:2])


def score_images(scorer: Any, images: np.ndarray, target: int) -> np.ndarray:
    """``M(.)`` of float images in input geometry (``K x h x w x C`` or ``K x h x w``, pixel
    units): the scorer's normalisation ``(v * scale - mean) / std`` in its layout
    (:func:`facesal_fast.ops.unoccluded`, the kernel that normalises occluded copies), then its
    confidence; ``(K,)`` float64."""
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    norm = dict(mean=scorer.mean, std=scorer.std, scale=scorer.scale, layout=scorer.backend.layout)
    x = np.concatenate([ops.unoccluded(image, **norm) for image in images])
    out = [
        scorer.score(np.ascontiguousarray(x[lo : lo + _SCORE_BATCH]), target) for lo in range(0, len(x), _SCORE_BATCH)
    ]
    return np.concatenate(out).astype(np.float64)
