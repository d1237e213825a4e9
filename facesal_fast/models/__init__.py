"""Bundled real face models (mini-XCEPTION ports of Keras HDF5 files, no TensorFlow).

``load("gender" | "expression-fer" | "expression-kdef")`` returns a ready
:class:`facesal_fast.scoring.Scorer`.
"""
from facesal_fast.models.mini_xception import KerasGraphNet, from_keras_h5
from facesal_fast.models.registry import MODELS, load, load_module, weights_path

__all__ = ["MODELS", "KerasGraphNet", "from_keras_h5", "load", "load_module", "weights_path"]
