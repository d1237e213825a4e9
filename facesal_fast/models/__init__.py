"""Bundled real face models: mini-XCEPTION classifiers (Keras HDF5 ports, no TensorFlow)
and dlib's ResNet face descriptor (PyTorch port, no dlib).

``load("gender" | "expression-fer" | "expression-kdef" | "gender-dlib" | "age" | "head-pose" |
"dlib-resnet")`` returns a ready
:class:`facesal_fast.scoring.Scorer`; :mod:`facesal_fast.saliency.identity` binds eqs. 7 / 8
to the embedding model (docs/identity.md).
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
    "load",
    "load_module",
    "weights_path",
]
