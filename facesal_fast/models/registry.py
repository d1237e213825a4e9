"""The bundled real models, by name: ``load("gender" | "expression-fer" | "expression-kdef" | "dlib-resnet")``.

The three classifiers are mini-XCEPTION classifiers from oarriaga/face_classification (MIT licence,
``weights/LICENSE-face_classification.txt``), ported from their Keras HDF5 files. Their
preprocessing reproduces the training: grey 64 x 64 face crop, ``x / 255``, then
``(x - 0.5) * 2`` (mean 0.5, std 0.5). The crop is a square around the face box with
``crop_margin`` = 0.2 of the box side added on each side (the original demos padded
OpenCV Haar boxes by 20-30 px sideways and 40-60 px vertically, i.e. roughly 0.1-0.3 of
a typical box; we use one square, documented margin for all).

``"dlib-resnet"`` (:data:`EMBEDDING_MODELS`) is dlib's 128-d ResNet face descriptor
(CC0, :mod:`facesal_fast.models.dlib_resnet`, no dlib needed): a Scorer with
``crop="chip"`` (dlib's 150 x 150 chip from 5 landmarks), ``outputs="embedding"`` and
no classes; bind eq. 7 / eq. 8 with ``facesal_fast.scoring.embedding.identification_scorer``
/ ``verification_scorer`` / ``verification_cis`` (docs/identity.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from facesal_fast.models.mini_xception import KerasGraphNet, from_keras_h5
from facesal_fast.scoring.scorer import Scorer

__all__ = ["EMBEDDING_MODELS", "MODELS", "ModelSpec", "load", "load_module", "weights_path"]


@dataclass(frozen=True)
class ModelSpec:
    """A bundled model: weight file, class names (output order), task description."""

    file: str
    classes: tuple[str, ...]
    task: str


MODELS: dict[str, ModelSpec] = {
    "gender": ModelSpec("gender_mini_XCEPTION.21-0.95.hdf5", ("woman", "man"), "gender (IMDB faces)"),
    "expression-fer": ModelSpec(
        "fer2013_mini_XCEPTION.107-0.66.hdf5",
        ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
        "facial expression (FER-2013)",
    ),
    "expression-kdef": ModelSpec(
        "mini_XCEPTION_KDEF.hdf5",
        ("angry", "disgust", "afraid", "happy", "sad", "surprised", "neutral"),  # KDEF AN DI AF HA SA SU NE
        "facial expression (KDEF)",
    ),
}

MEAN, STD, CROP_MARGIN = 0.5, 0.5, 0.2

#: Bundled embedding (face-descriptor) models: name -> task. Kept apart from :data:`MODELS`
#: (the classifiers the CLI, evaluate and audits iterate over).
EMBEDDING_MODELS: dict[str, str] = {
    "dlib-resnet": "128-d face descriptor, dlib_face_recognition_resnet_model_v1 (CC0); eq. 7 / eq. 8 saliency",
}


def weights_path(name: str) -> Path:
    """Path of a bundled model's HDF5 weight file."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; bundled models are {sorted(MODELS)}")
    return Path(str(resources.files("facesal_fast.models") / "weights" / MODELS[name].file))


def load_module(name: str) -> KerasGraphNet:
    """The PyTorch module of a bundled model (``N x 1 x 64 x 64`` normalised -> ``N x D`` logits)."""
    return from_keras_h5(weights_path(name))


def load(
    name: str,
    backend: str = "auto",
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    confidence: str = "softmax",
    batch_size: int | None = None,
    crop_margin: float = CROP_MARGIN,
    cache_dir: str | Path | None = None,
) -> Scorer:
    """A ready :class:`Scorer` for a bundled model, with its preprocessing and class names.

    Args:
        name: ``"gender"``, ``"expression-fer"``, ``"expression-kdef"`` (classifiers) or
            ``"dlib-resnet"`` (128-d embeddings, ``crop="chip"``, no classes: bind a
            confidence, see :mod:`facesal_fast.scoring.embedding`).
        backend: ``"auto"`` (timed probe), ``"torch"``, ``"onnx"`` or ``"tensorrt"``.
        device, precision, confidence, batch_size, cache_dir: see :meth:`Scorer.from_torch`.
        crop_margin: fraction of the face box side added on each side of the square crop
            (classifiers; the chip's geometry is dlib's).
    """
    if name in EMBEDDING_MODELS:
        from facesal_fast.models.dlib_resnet import CHIP_PADDING, CHIP_SIZE, DLIB_INPUT_STD, DLIB_MEAN_RGB, load_dlib_resnet

        return Scorer.from_torch(
            load_dlib_resnet(device=device), CHIP_SIZE, mean=DLIB_MEAN_RGB, std=DLIB_INPUT_STD, scale=1.0,
            crop="chip", chip_padding=CHIP_PADDING, classes=None, outputs="embedding", backend=backend,
            device=device, precision=precision, batch_size=batch_size, cache_dir=cache_dir,
        )
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; bundled models are {sorted(MODELS) + sorted(EMBEDDING_MODELS)}")
    module = load_module(name)
    h, w, c = 64, 64, 1
    if module.input_shape_chw != (c, h, w):
        raise ValueError(f"{name}: unexpected input shape {module.input_shape_chw}")
    return Scorer.from_torch(
        module, (h, w), mean=MEAN, std=STD, scale=1.0 / 255.0, grayscale=True, crop="face",
        crop_margin=crop_margin, classes=MODELS[name].classes, outputs="logits", confidence=confidence,
        backend=backend, device=device, precision=precision, batch_size=batch_size, cache_dir=cache_dir,
    )
