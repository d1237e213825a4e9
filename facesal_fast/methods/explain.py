"""One entry point for every classic method: image-space map, then the canonical face."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from facesal_fast import ops
from facesal_fast.inputs import ImagesInput, per_photo
from facesal_fast.methods import cams, guided_backprop, lrp, occlusion
from facesal_fast.methods._common import to_canonical_map

__all__ = ["METHODS", "MethodResult", "explain"]

METHODS = (
    "guided-backprop",
    "saliency-difference",
    "lrp-epsilon",
    "lrp-alpha-beta",
    "gradcam",
    "gradcam++",
    "scorecam",
    "occlusion",
    "occlusion-skin",
)


@dataclass(frozen=True)
class MethodResult:
    """``image_map``: ``H x W`` float32 on the photo; ``canonical_map``: the same map on the
    canonical face (``face.canonical_shape``), or None when no face was given."""

    method: str
    image_map: np.ndarray
    canonical_map: np.ndarray | None

    def __repr__(self) -> str:
        """Shapes, not arrays."""
        shape = lambda a: None if a is None else tuple(a.shape)  # noqa: E731
        where = f" tensor on {self.image_map.device}" if isinstance(self.image_map, torch.Tensor) else ""
        return (
            f"MethodResult({self.method!r}, image_map={shape(self.image_map)}{where}, "
            f"canonical_map={shape(self.canonical_map)})"
        )


def _model_input(image: np.ndarray, mean: Any, std: Any, scale: float) -> torch.Tensor:
    """``1 x C x H x W`` normalised input, built by the occlusion kernel with nothing occluded."""
    return torch.from_numpy(ops.unoccluded(image, mean, std, scale=scale))


@per_photo("image", ("image_map", "canonical_map"), read_paths=True)
def explain(
    name: str,
    scorer_or_model: Any,
    image: ImagesInput,
    target: int,
    face: Any = None,
    *,
    other: int | None = None,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    scale: float = 1.0 / 255.0,
    patch: int = 8,
    stride: int = 4,
    target_layer: torch.nn.Module | str | None = None,
    lrp_rtol: float | None = 1e-2,
) -> MethodResult:
    """Run method ``name`` (one of :data:`METHODS`) and put its map on the canonical face.

    Args:
        scorer_or_model: a :class:`facesal_fast.scoring.Scorer` (its preprocessing,
            ``mean``/``std``/``scale`` and, for gradient methods, its ``.module`` are used;
            the map is computed in model-input pixels and warped back onto the photo) or a
            torch module taking ``image`` as it is (normalised with ``mean``/``std``/``scale``).
        image: ``H x W x 3`` uint8 RGB photo (``H x W x C`` model-ready image for a module),
            a path, a channels-first ``3 x H x W`` torch tensor (uint8, or float in 0..1),
            or a batch of them (list, ``N x 3 x H x W``): one result per photo, maps as
            tensors on the input tensor's device (see :mod:`facesal_fast.inputs`).
        target: class index explained; ``other``: the second class of
            ``"saliency-difference"``.
        face: an ``AlignedFace`` of ``image`` for the canonical map (None: no canonical map).
        patch, stride: occlusion window and grid step (model-input pixels).
        target_layer: CAM layer (default: the last Conv2d).
        lrp_rtol: relevance-conservation tolerance for LRP (None: unchecked).
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {METHODS}")
    image = np.asarray(image)
    is_module = isinstance(scorer_or_model, torch.nn.Module)
    face_box = getattr(face, "face_box", None)
    if name in ("occlusion", "occlusion-skin"):
        fill = "black" if name == "occlusion" else occlusion.skin_colour(image, face_box)
        if is_module:
            image_map = occlusion.occlusion(
                scorer_or_model, image, target, patch=patch, stride=stride, fill=fill, mean=mean, std=std, scale=scale
            )
        else:
            image_map = occlusion.occlusion_with_scorer(
                scorer_or_model, image, target, face_box=face_box, patch=patch, stride=stride, fill=fill
            )
        return _finish(name, image_map, face)
    if is_module:
        model, input_image, affine = scorer_or_model, image, None
        x = _model_input(image, mean, std, scale)
    else:
        model = getattr(scorer_or_model, "module", None) or getattr(
            getattr(scorer_or_model, "backend", None), "module", None
        )
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"{name} needs gradients: pass a torch module or a Scorer with a torch .module")
        input_image, affine = scorer_or_model.prepare(image, face_box)
        x = _model_input(input_image, scorer_or_model.mean, scorer_or_model.std, scorer_or_model.scale)
    if name == "guided-backprop":
        input_map = guided_backprop.guided_backprop(model, x, target)
    elif name == "saliency-difference":
        if other is None:
            raise ValueError("saliency-difference needs other=<second class index>")
        input_map = guided_backprop.saliency_difference(model, x, target, other)
    elif name in ("lrp-epsilon", "lrp-alpha-beta"):
        input_map = lrp.lrp(model, x, target, name[4:], rtol=lrp_rtol)
    elif name == "gradcam":
        input_map = cams.gradcam(model, x, target, target_layer)
    elif name == "gradcam++":
        input_map = cams.gradcam_plus_plus(model, x, target, target_layer)
    else:
        scorer = None if is_module else scorer_or_model
        score_batch = None if scorer is None else (lambda batch: torch.from_numpy(scorer.score(batch, target)))
        input_map = cams.scorecam(model, x, target, target_layer, score_batch=score_batch)
    image_map = input_map if affine is None else occlusion.to_photo(input_map, affine, image.shape[:2])
    return _finish(name, image_map, face)


def _finish(name: str, image_map: np.ndarray, face: Any) -> MethodResult:
    image_map = np.asarray(image_map, np.float32)
    canonical = None if face is None else to_canonical_map(image_map, face)
    return MethodResult(name, image_map, canonical)
