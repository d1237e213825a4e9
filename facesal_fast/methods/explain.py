"""One entry point for every classic method: image-space map, then the canonical face.

The methods, their names, aliases and options are those of :mod:`facesal_fast.methods.registry`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from facesal_fast.core.validate import one_target
from facesal_fast.methods import occlusion, registry
from facesal_fast.methods._common import to_canonical_map
from facesal_fast.scoring.photos import ImagesInput, per_photo

__all__ = ["METHOD_NAMES", "MethodResult", "explain"]

#: The names of the methods :func:`explain` runs, a tuple (canonical names; the registry's
#: aliases are accepted too). The methods themselves: ``registry.METHODS``, a mapping.
METHOD_NAMES = tuple(m.name for m in registry.METHODS.values() if m.run is not None)
#: Former public names of this module and of :mod:`facesal_fast.methods` (old -> new), kept
#: one release: reading one warns.
RENAMED = {"METHODS": "METHOD_NAMES"}


def renamed_attribute(module: str, name: str) -> Any:
    """The value of ``name``'s new name (:data:`RENAMED`) with a DeprecationWarning, for the
    ``__getattr__`` of module ``module``; AttributeError for any other name."""
    if name not in RENAMED:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new = RENAMED[name]
    warnings.warn(f"{module}.{name} is now {new}; the old name goes in the next release", DeprecationWarning, 3)
    return globals()[new]


def __getattr__(name: str) -> Any:
    """Former names (:data:`RENAMED`), warned."""
    return renamed_attribute(__name__, name)


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


@per_photo("image", ("image_map", "canonical_map"), read_paths=True)
def explain(
    name: str,
    scorer_or_model: Any,
    image: ImagesInput,
    target: int,
    face: Any = None,
    *,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    scale: float = 1.0 / 255.0,
    **options: Any,
) -> MethodResult:
    """Run method ``name`` (one of :data:`METHOD_NAMES` or an alias) and put its map on the canonical face.

    Args:
        scorer_or_model: a :class:`facesal_fast.scoring.Scorer` (its preprocessing,
            ``mean``/``std``/``scale`` and, for gradient methods, its ``.module`` are used;
            the map is computed in model-input pixels and warped back onto the photo) or a
            torch module taking ``image`` as it is (normalised with ``mean``/``std``/``scale``).
        image: ``H x W x 3`` uint8 RGB photo (``H x W x C`` model-ready image for a module),
            a path, a channels-first ``3 x H x W`` torch tensor (uint8, or float in 0..1),
            or a batch of them (list, ``N x 3 x H x W``): one result per photo, maps as
            tensors on the input tensor's device (see :mod:`facesal_fast.scoring.photos`).
        target: class index explained (an int, a numpy integer or a one-element array or tensor).
        face: an ``AlignedFace`` of ``image`` for the canonical map (None: no canonical map).
        options: per-method options (:data:`facesal_fast.methods.registry.OPTIONS`; each
            method takes its own and leaves the others): ``output`` (``"logit"`` or
            ``"probability"``) of Guided Backprop and the saliency difference; ``other``,
            the second class of ``"saliency-difference"``; ``patch``, ``step`` (occlusion
            window and grid step, model-input pixels; ``stride``, its former name, is taken
            with a DeprecationWarning) and ``fill`` (``"occlusion"``);
            ``target_layer`` of the CAMs (default: the last Conv2d); ``lrp_rtol``, the
            relevance-conservation tolerance of LRP (None: unchecked).
    """
    method = registry.resolve(name)
    image = np.asarray(image)
    face_box = getattr(face, "face_box", None)
    if isinstance(scorer_or_model, torch.nn.Module):
        affine = None
        model_input = registry.ModelInput(image, scorer_or_model, mean, std, scale, face_box=face_box)
    else:
        input_image, affine = scorer_or_model.prepare(image, face_box)
        model_input = registry.ModelInput.from_scorer(scorer_or_model, input_image, photo=image, face_box=face_box)
    input_map = registry.compute(method.name, model_input, one_target(target), **options)
    image_map = input_map if affine is None else occlusion.to_photo(input_map, affine, image.shape[:2])
    image_map = np.asarray(image_map, np.float32)
    canonical = None if face is None else to_canonical_map(image_map, face)
    return MethodResult(method.name, image_map, canonical)
