"""Bundled real face models: mini-XCEPTION classifiers (Keras HDF5 ports, no TensorFlow)
and dlib's ResNet face descriptor (PyTorch port, no dlib).

``load("gender" | "expression-fer" | "expression-kdef" | "gender-dlib" | "age" | "head-pose" |
"dlib-resnet")`` returns a ready
:class:`facesal_fast.scoring.Scorer`; ``identification_scorer`` / ``verification_scorer`` /
``verification_cis`` bind eqs. 7 / 8 to the embedding model (docs/identity.md).
"""

from facesal_fast.models.mini_xception import KerasGraphNet, from_keras_h5
from facesal_fast.models.registry import (
    BLACK_BOX_MODELS,
    CLASSIFIERS,
    DLIB_CLASSIFIERS,
    EMBEDDING_MODELS,
    MODELS,
    load,
    load_module,
    weights_path,
)

__all__ = [
    "BLACK_BOX_MODELS",
    "CLASSIFIERS",
    "DLIB_CLASSIFIERS",
    "EMBEDDING_MODELS",
    "MODELS",
    "KerasGraphNet",
    "from_keras_h5",
    "identification_scorer",
    "load",
    "load_module",
    "verification_cis",
    "verification_scorer",
    "weights_path",
]

_IDENTITY = ("identification_scorer", "verification_cis", "verification_scorer")


def __getattr__(name: str):
    """The identity helpers of :mod:`facesal_fast.scoring.embedding`, imported on first use."""
    if name in _IDENTITY:
        from facesal_fast.scoring import embedding

        return getattr(embedding, name)
    raise AttributeError(f"module 'facesal_fast.models' has no attribute {name!r}")
