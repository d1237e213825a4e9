"""Scoring: face model + preprocessing + confidence, fast on batches of occluded images.

See :class:`Scorer` (``from_torch`` / ``from_onnx`` / ``from_callable``, sharing one
:class:`Preprocessing` spec; ``Scorer.prepare`` runs its :class:`FacePreparation`) and the
backends in :mod:`facesal_fast.scoring.backends`.
"""

from facesal_fast.scoring.backends import Backend, CallableBackend, OnnxBackend, TorchBackend, export_onnx
from facesal_fast.scoring.batching import auto_batch_size
from facesal_fast.scoring.confidence import Confidence, class_confidence, resolve_class
from facesal_fast.scoring.face_input import FacePreparation
from facesal_fast.scoring.preprocessing import Preprocessing
from facesal_fast.scoring.scorer import Prediction, Scorer
from facesal_fast.scoring.selection import ProbeResult
from facesal_fast.scoring.tensorrt_backend import TensorRTBackend, tensorrt_available

__all__ = [
    "Backend",
    "CallableBackend",
    "Confidence",
    "FacePreparation",
    "OnnxBackend",
    "Prediction",
    "Preprocessing",
    "ProbeResult",
    "Scorer",
    "TensorRTBackend",
    "TorchBackend",
    "auto_batch_size",
    "class_confidence",
    "export_onnx",
    "resolve_class",
    "tensorrt_available",
]
