"""The bundled real models, by name: ``load("gender" | "expression-fer" | "expression-kdef" | "dlib-resnet")``.

The three classifiers are mini-XCEPTION classifiers from oarriaga/face_classification (MIT licence,
``weights/LICENSE-face_classification.txt``), ported from their Keras HDF5 files. Their
preprocessing reproduces the training: grey 64 x 64 face crop, ``x / 255``, then
``(x - 0.5) * 2`` (mean 0.5, std 0.5). The crop is a square around the face box with
``crop_margin`` = 0.2 of the box side added on each side (the original demos padded
OpenCV Haar boxes by 20-30 px sideways and 40-60 px vertically, i.e. roughly 0.1-0.3 of
a typical box; we use one square, documented margin for all).

They are :data:`KERAS_MODELS` (named ``MODELS`` before; that name still reads them, with a
``DeprecationWarning``, for one release).

``"dlib-resnet"`` (:data:`EMBEDDING_MODELS`) is dlib's 128-d ResNet face descriptor
(CC0, :mod:`facesal_fast.models.dlib_resnet`, no dlib needed): a Scorer with
``crop="chip"`` (dlib's 150 x 150 chip from 5 landmarks), ``outputs="embedding"`` and
no classes; bind eq. 7 / eq. 8 with ``facesal_fast.saliency.identity.identification_scorer``
/ ``verification_scorer`` / ``verification_cis`` (docs/identity.md).

``"age"`` and ``"gender-dlib"`` (:data:`DLIB_CLASSIFIERS`) are dlib's Cydral networks (CC0,
:mod:`facesal_fast.models.dlib_cydral`): RGB dlib chips (64 / 32 px, padding 0.2) from
MediaPipe's landmarks. ``"head-pose"`` (:data:`BLACK_BOX_MODELS`) is a black-box scorer over
MediaPipe Face Mesh (:mod:`facesal_fast.models.head_pose`). :data:`CLASSIFIERS` lists every
bundled classifier (what ``facesal audit --model`` takes).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facesal_fast.models import head_pose
from facesal_fast.models.dlib_cydral import (
    AGE_BINS,
    AGE_CHIP_SIZE,
    CHIP_PADDING,
    GENDER_CHIP_SIZE,
    AgeBins,
    ExpectedAge,
    load_age_net,
    load_gender_net,
)
from facesal_fast.models.dlib_resnet import chip_preprocessing, load_dlib_resnet
from facesal_fast.models.head_pose import POSE_BINS
from facesal_fast.models.mini_xception import from_keras_h5
from facesal_fast.scoring.progress import status_line
from facesal_fast.scoring.scorer import Scorer

if TYPE_CHECKING:
    import torch

__all__ = [
    "BLACK_BOX_MODELS",
    "CLASSIFIERS",
    "DLIB_CLASSIFIERS",
    "EMBEDDING_MODELS",
    "KERAS_MODELS",
    "ModelSpec",
    "load",
    "load_module",
    "weights_path",
]


@dataclass(frozen=True)
class ModelSpec:
    """A bundled model: weight file, class names (output order), task description."""

    file: str
    classes: tuple[str, ...]
    task: str


#: The mini-XCEPTION classifiers ported from Keras HDF5 files: name -> spec (HDF5 file, classes, task).
KERAS_MODELS: dict[str, ModelSpec] = {
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

#: Bundled embedding (face-descriptor) models: name -> task. Kept apart from :data:`CLASSIFIERS`
#: (the classifiers the CLI, evaluate and audits iterate over).
EMBEDDING_MODELS: dict[str, str] = {
    "dlib-resnet": "128-d face descriptor, dlib_face_recognition_resnet_model_v1 (CC0); eq. 7 / eq. 8 saliency",
}


#: dlib's Cydral classifiers (CC0, ONNX graphs ported to torch): name -> spec (ONNX file, classes, task).
DLIB_CLASSIFIERS: dict[str, ModelSpec] = {
    "age": ModelSpec("age-v1.onnx", AGE_BINS, "age in ten-year bins (dlib dnn_age_predictor_v1, Cydral)"),
    "gender-dlib": ModelSpec("gender-v1.onnx", ("woman", "man"), "gender (dlib dnn_gender_classifier_v1, Cydral)"),
}
#: Black-box scorers over other bundled networks: name -> spec (network file, classes, task).
BLACK_BOX_MODELS: dict[str, ModelSpec] = {
    "head-pose": ModelSpec(
        "face_landmark.tflite", POSE_BINS, "head pose in 9 yaw x pitch bins from MediaPipe Face Mesh (Apache-2.0)"
    ),
}
#: Every bundled classifier, by name (``facesal audit --model NAME``).
CLASSIFIERS: tuple[str, ...] = (*KERAS_MODELS, *DLIB_CLASSIFIERS, *BLACK_BOX_MODELS)
#: Former names kept one release: old name -> new name.
DEPRECATED_NAMES = {"MODELS": "KERAS_MODELS"}


def deprecated_name(module: str, name: str) -> Any:
    """The value of ``name`` in this module when it is a former name (:data:`DEPRECATED_NAMES`),
    with a ``DeprecationWarning`` naming its new name; ``AttributeError`` (naming ``module``,
    where it was looked up) for any other."""
    if name not in DEPRECATED_NAMES:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new = DEPRECATED_NAMES[name]
    warnings.warn(f"{module}.{name} is deprecated; use {module}.{new}", DeprecationWarning, stacklevel=3)
    return globals()[new]


def __getattr__(name: str) -> Any:
    return deprecated_name(__name__, name)


def weights_path(name: str) -> Path:
    """Path of a bundled classifier's weight file (HDF5, ONNX, or MediaPipe's Face Mesh ``.tflite``)."""
    if name in BLACK_BOX_MODELS:
        return head_pose.landmark_model_path()
    spec = KERAS_MODELS.get(name) or DLIB_CLASSIFIERS.get(name)
    if spec is None:
        raise ValueError(f"unknown model {name!r}; bundled classifiers are {sorted(CLASSIFIERS)}")
    return Path(str(resources.files("facesal_fast.models") / "weights" / spec.file))


def load_module(name: str) -> torch.nn.Module:
    """The PyTorch module of a bundled classifier: normalised ``N x C x H x W`` -> ``N x D`` logits
    (mini-XCEPTIONs: ``N x 1 x 64 x 64``; ``"age"``: ``N x 3 x 64 x 64`` -> 9 bin logits,
    :class:`~facesal_fast.models.dlib_cydral.AgeBins`; ``"gender-dlib"``: ``N x 3 x 32 x 32``)."""
    if name in DLIB_CLASSIFIERS:
        return AgeBins(load_age_net()) if name == "age" else load_gender_net()
    if name in BLACK_BOX_MODELS:
        raise ValueError(f"{name!r} is a black-box scorer (MediaPipe), it has no torch module; use load({name!r})")
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
        name: ``"gender"``, ``"expression-fer"``, ``"expression-kdef"``, ``"gender-dlib"``, ``"age"``,
            ``"head-pose"`` (classifiers, :data:`CLASSIFIERS`) or
            ``"dlib-resnet"`` (128-d embeddings, ``crop="chip"``, no classes: bind a
            confidence, see :mod:`facesal_fast.scoring.embedding`).
        backend: ``"auto"`` (timed probe), ``"torch"``, ``"onnx"`` or ``"tensorrt"``.
        device, precision, confidence, batch_size, cache_dir: see :meth:`Scorer.from_torch`.
            ``"age"`` also takes ``confidence="expected-age"``: the scorer then outputs the 81
            age logits and explains the expected age in years (bound confidence, ``target=None``;
            drop > 0: the occlusion makes the face look younger, < 0: older).
            ``"head-pose"`` runs on the CPU through MediaPipe (``backend``/``device`` ignored).
        crop_margin: fraction of the face box side added on each side of the square crop
            (classifiers; the chip's geometry is dlib's).

    A load still running after 2 s (``backend="auto"`` times the backends once) says so on
    stderr, then how long it took and the backend chosen.
    """
    with status_line(f"facesal_fast: loading model {name!r}") as notes:
        scorer = _load(name, backend, device, precision, confidence, batch_size, crop_margin, cache_dir)
        notes.append(f"backend {scorer.backend.name}")
    return scorer


def _load(
    name: str,
    backend: str,
    device: str | torch.device,
    precision: str,
    confidence: str,
    batch_size: int | None,
    crop_margin: float,
    cache_dir: str | Path | None,
) -> Scorer:
    """:func:`load`'s work: the scorer of ``name`` (arguments as there)."""
    runtime = dict(backend=backend, device=device, precision=precision, batch_size=batch_size, cache_dir=cache_dir)
    if name in EMBEDDING_MODELS:
        return Scorer.from_torch(
            load_dlib_resnet(device=device), spec=chip_preprocessing(), classes=None, outputs="embedding", **runtime
        )
    if name in DLIB_CLASSIFIERS:
        return _load_dlib_classifier(name, confidence, runtime)
    if name in BLACK_BOX_MODELS:
        return head_pose.head_pose_scorer(confidence=confidence, batch_size=batch_size)
    if name not in KERAS_MODELS:
        raise ValueError(f"unknown model {name!r}; bundled models are {sorted(CLASSIFIERS) + sorted(EMBEDDING_MODELS)}")
    module = load_module(name)
    h, w, c = 64, 64, 1
    if module.input_shape_chw != (c, h, w):
        raise ValueError(f"{name}: unexpected input shape {module.input_shape_chw}")
    return Scorer.from_torch(
        module,
        (h, w),
        mean=MEAN,
        std=STD,
        scale=1.0 / 255.0,
        grayscale=True,
        crop="face",
        crop_margin=crop_margin,
        classes=KERAS_MODELS[name].classes,
        outputs="logits",
        confidence=confidence,
        **runtime,
    )


def _load_dlib_classifier(name: str, confidence: str, runtime: dict[str, Any]) -> Scorer:
    """Scorer of ``"age"`` / ``"gender-dlib"``: RGB dlib chip (padding 0.2), dlib's normalisation;
    ``runtime``: :func:`load`'s backend, device, precision, batch_size and cache_dir."""
    expected_age = confidence == "expected-age"
    if expected_age and name != "age":
        raise ValueError(f"confidence='expected-age' is for the 'age' model, not {name!r}")
    module = load_age_net() if expected_age else load_module(name)
    classes = tuple(str(a) for a in range(81)) if expected_age else DLIB_CLASSIFIERS[name].classes
    scorer = Scorer.from_torch(
        module.to(runtime["device"]),
        spec=chip_preprocessing(AGE_CHIP_SIZE if name == "age" else GENDER_CHIP_SIZE, CHIP_PADDING),
        classes=classes,
        outputs="logits",
        confidence="softmax" if expected_age else confidence,
        **runtime,
    )
    return scorer.with_confidence(ExpectedAge()) if expected_age else scorer
