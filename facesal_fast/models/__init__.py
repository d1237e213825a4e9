"""Bundled real face models: mini-XCEPTION classifiers (Keras HDF5 ports, no TensorFlow)
and dlib's ResNet face descriptor (PyTorch port, no dlib).

``load("gender" | "expression-fer" | "expression-kdef" | "gender-dlib" | "age" | "head-pose" |
"dlib-resnet")`` returns a ready
:class:`facesal_fast.scoring.Scorer`; :mod:`facesal_fast.saliency.identity` binds eqs. 7 / 8
to the embedding model (docs/identity.md). ``MODELS`` is the former name of ``KERAS_MODELS``
(deprecated, one release).
"""

from typing import Any

from facesal_fast.models import registry
from facesal_fast.models.mini_xception import KerasGraphNet, from_keras_h5
from facesal_fast.models.registry import *  # noqa: F403 - the registry's public names are this package's

__all__ = [*registry.__all__, "KerasGraphNet", "from_keras_h5"]


def __getattr__(name: str) -> Any:
    return registry.deprecated_name(__name__, name)
