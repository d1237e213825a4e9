"""Classic saliency methods and human annotations, comparable on the canonical face.

Each method maps ``(model, input_tensor 1 x C x H x W, target)`` to an ``H x W`` float32
map; :func:`explain` runs one by name on a photo and warps the map onto the canonical
face through the aligner; :mod:`~facesal_fast.methods.registry` holds the names, aliases and
options of every method. See docs/methods.md.
"""

from typing import Any

from facesal_fast.methods import annotations, masks, registry
from facesal_fast.methods._common import to_canonical_map
from facesal_fast.methods.cams import gradcam, gradcam_plus_plus, scorecam
from facesal_fast.methods.explain import METHOD_NAMES, MethodResult, explain, renamed_attribute
from facesal_fast.methods.guided_backprop import guided_backprop, guided_gradient, saliency_difference
from facesal_fast.methods.lrp import RelevanceNotConservedError, check_conservation, lrp, lrp_relevance
from facesal_fast.methods.masks import group_mean_heatmaps, r2_by_class, relative_saliency, top_k_mask
from facesal_fast.methods.occlusion import occlusion, skin_colour

__all__ = [
    "METHOD_NAMES",
    "MethodResult",
    "RelevanceNotConservedError",
    "annotations",
    "check_conservation",
    "explain",
    "gradcam",
    "gradcam_plus_plus",
    "group_mean_heatmaps",
    "guided_backprop",
    "guided_gradient",
    "lrp",
    "lrp_relevance",
    "masks",
    "occlusion",
    "r2_by_class",
    "registry",
    "relative_saliency",
    "saliency_difference",
    "scorecam",
    "skin_colour",
    "to_canonical_map",
    "top_k_mask",
]


def __getattr__(name: str) -> Any:
    """Former names, warned: ``METHODS`` is now :data:`METHOD_NAMES` (one release)."""
    return renamed_attribute(__name__, name)
