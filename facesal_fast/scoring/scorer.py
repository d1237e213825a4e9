"""Scorer: one face model + its preprocessing + a confidence function, fast on occluded batches.

A scorer separates geometry from photometry. :meth:`Scorer.prepare` crops/resizes an
image into the model's input geometry once (returning the 2 x 3 image -> input affine);
:meth:`Scorer.score_occluded` then draws the occlusion patches in that geometry and
normalises in the same pass (``ops.occlude_batch`` with the scorer's mean/std/scale,
layout and dtype), runs the backend batch by batch (producer overlapped with inference)
and applies the confidence function on the device.
"""

from __future__ import annotations

import copy
import hashlib
import sys
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from facesal_fast import ops
from facesal_fast.align import default_aligner
from facesal_fast.core.validate import torch_device
from facesal_fast.scoring.backends import Backend, CallableBackend, OnnxBackend, export_onnx
from facesal_fast.scoring.batching import auto_batch_size, run_pipelined
from facesal_fast.scoring.confidence import (
    Confidence,
    check_probabilities,
    class_confidence,
    class_scores,
    resolve_class,
)
from facesal_fast.scoring.geometry import FaceBox, box_tuple, chip_geometry, five_points, to_model_geometry
from facesal_fast.scoring.model_checks import check_first_forward
from facesal_fast.scoring.preprocessing import Preprocessing, check_normalisation, check_stated_normalisation
from facesal_fast.scoring.progress import step_bar
from facesal_fast.scoring.selection import (
    BACKENDS,
    ProbeResult,
    auto_backend,
    torch_backend,
)
from facesal_fast.scoring.tensorrt_backend import TensorRTBackend

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Preprocessing", "Prediction", "Scorer"]

Target = int | str | None
#: With ``crop="none"``, warn when the face box's side is under this fraction of the photo's shorter side.
SMALL_FACE = 0.4
_CHIP_POINTS_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()  # (image key, box) -> 5 points
_CHIP_CACHE_SIZE = 64


@dataclass(frozen=True)
class Prediction:
    """Model decision on one image: class ``index``, ``label`` (None without class names),
    ``probabilities`` (D,) (softmax of logits, or the model's own probabilities) and raw
    ``outputs`` (D,)."""

    index: int
    label: str | None
    probabilities: np.ndarray
    outputs: np.ndarray


def _onnx_input_dims(path: str | Path) -> list[int | str]:
    """Dimensions of an ONNX model's single input (ints, or names for symbolic axes)."""
    import onnx  # about 2 s to import: only for a model given as an ONNX file

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected one input, got {len(inputs)}")
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inputs[0].type.tensor_type.shape.dim]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


class _SpecField:
    """A read-only :class:`Scorer` attribute: the field of the same name of ``scorer.spec``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, scorer: Any, owner: type | None = None) -> Any:
        return self if scorer is None else getattr(scorer.spec, self.name)

    def __set__(self, scorer: Any, value: Any) -> None:
        raise AttributeError(f"{self.name} is part of the scorer's frozen spec; build a scorer with another spec")


class Scorer:
    """A face model ready for occlusion scoring. Build with :meth:`from_torch`,
    :meth:`from_onnx`, :meth:`from_callable` or :func:`facesal_fast.models.load`.

    Attributes:
        backend: the inference backend (``backend.name`` says which).
        spec: the :class:`~facesal_fast.scoring.preprocessing.Preprocessing` (frozen, checked
            once); its fields read as attributes too (read-only):
        input_size: model input ``(H, W)``, or None when the model takes images as they are.
        channels: 1 (grey) or 3 (RGB) model input channels.
        mean, std, scale: photometric normalisation ``(v * scale - mean) / std`` per channel.
        crop: ``"face"`` (square crop around the face box), ``"chip"`` (dlib-style chip
            aligned by a similarity transform of 5 landmarks, see :meth:`prepare`), ``"none"``
            (the whole photo; a warning when the face is small in it), or ``"auto"`` (the face
            crop when :meth:`prepare` is given a face, as ``cis`` and ``Audit`` do, else the
            whole image; :meth:`from_torch`'s default).
        crop_margin: fraction of the box side added on each side of a face crop.
        chip_padding: padding around the 5-point template of a ``"chip"`` crop (dlib: 0.25).
        classes: class names (index order) or None.
        outputs: ``"logits"`` or ``"probabilities"`` (what the model returns), or
            ``"embedding"`` (a descriptor: score it through :meth:`with_confidence`, e.g.
            :func:`facesal_fast.saliency.identity.identification_scorer`).
        kind: classification confidence ``"softmax"`` or ``"logit"``.
        batch_size: fixed batch size, or None for :func:`auto_batch_size`.
        probe: the ``backend="auto"`` probe table read from the probe stored on disk (empty
            when a backend was named, and before a first probe: then the backend's
            ``probes`` fills per input shape once the work pays for it).
        module: the torch module the scorer was built from (``from_torch``), or None; used
            by incremental inference whatever the backend.
    """

    input_size = _SpecField()
    channels = _SpecField()
    mean = _SpecField()
    std = _SpecField()
    scale = _SpecField()
    crop = _SpecField()
    crop_margin = _SpecField()
    chip_padding = _SpecField()

    def __init__(
        self,
        backend: Backend,
        spec: Preprocessing | None = None,
        *,
        classes: Sequence[str] | None = None,
        outputs: str = "logits",
        confidence: str = "softmax",
        batch_size: int | None = None,
        probe: Sequence[ProbeResult] = (),
        module: nn.Module | None = None,
        **preprocessing: Any,
    ):
        """``spec`` with the :class:`Preprocessing` fields given as keywords replaced."""
        spec = Preprocessing.of(spec, **preprocessing)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if outputs != "embedding":
            class_confidence(0, confidence, outputs)  # validates kind and outputs
        if backend.input_dtype == torch.float16:
            check_normalisation(spec.mean, spec.std, spec.scale, spec.channels, half=True)
        self.backend, self.spec = backend, spec
        self.classes = list(classes) if classes is not None else None
        self.outputs, self.kind, self.batch_size = outputs, confidence, batch_size
        self.probe = list(probe)
        self.module = module
        self._confidence: Confidence | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_torch(
        cls,
        module: nn.Module,
        input_size: int | Sequence[int] | None = None,
        *,
        spec: Preprocessing | None = None,
        grayscale: bool | None = None,
        classes: Sequence[str] | None = None,
        outputs: str = "logits",
        confidence: str = "softmax",
        backend: str = "auto",
        device: str | torch.device | None = None,
        precision: str = "fp32",
        batch_size: int | None = None,
        channels_last: bool | None = None,
        cuda_graphs: bool | None = None,
        compile: bool = False,
        cache_dir: str | Path | None = None,
        **preprocessing: Any,
    ) -> "Scorer":
        """Scorer for a PyTorch module taking ``N x C x H x W`` normalised float input.

        Preprocessing: ``spec`` (a :class:`Preprocessing`), with any of its fields given as
        keywords replaced (``mean=``, ``std=``, ``scale=``, ``crop=``, ``crop_margin=``,
        ``chip_padding=``, ``channels=``; ``input_size`` and ``grayscale=True``, i.e.
        ``channels=1``, as here). ``crop``: default ``"auto"`` with an ``input_size`` (the
        face crop whenever a face is known, so the face fills the input) and ``"none"``
        without one (without a ``spec``); see the class doc.

        ``backend``: ``"auto"`` (the fastest of torch eager / channels_last / CUDA graphs,
        onnxruntime and TensorRT where available that agrees with torch eager, by a timed
        probe stored on disk per model and machine (``scorer.probe``); with none stored,
        torch eager until the work on an input shape has cost what a probe costs, then a
        probe, see :class:`~facesal_fast.scoring.selection.ProbingBackend`), ``"torch"``,
        ``"onnx"`` (exported once into ``cache_dir``) or ``"tensorrt"`` (CUDA).
        ``precision``: ``"fp32"``, or ``"fp16"``/``"bf16"`` autocast on CUDA.
        """
        check_stated_normalisation(preprocessing, spec is not None)
        if input_size is not None:
            preprocessing["input_size"] = input_size
        if grayscale is not None:
            preprocessing["channels"] = 1 if grayscale else 3
        if preprocessing.get("crop") is None:
            preprocessing.pop("crop", None)
            if spec is None:
                preprocessing["crop"] = "auto" if input_size is not None else "none"
        spec = Preprocessing.of(spec, **preprocessing)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        first = next(module.parameters(), None)
        if first is not None and first.is_meta:
            raise ValueError("the module's weights are on the meta device (not loaded): load them before from_torch")
        dev = (
            torch_device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
        )
        shape = (spec.channels, *spec.input_size) if spec.input_size else None
        if backend not in ("torch", "auto") and shape is None:
            raise ValueError(f"backend={backend!r} needs a fixed input_size (the export shape)")
        if shape is not None:
            check_first_forward(module, shape, dev)
        bs = batch_size or (auto_batch_size(shape, dev) if shape else None)
        probe: list[ProbeResult] = []
        if backend == "auto":  # a probe stored on disk, else probed per shape once the work pays for it
            chosen, probe = auto_backend(module, shape, dev, precision, bs, cache_dir, compile)
        elif backend == "torch":
            chosen = torch_backend(module, dev, precision, channels_last, cuda_graphs, compile)
        elif backend == "onnx":
            chosen = OnnxBackend(export_onnx(module, shape, cache_dir), dev)
        else:
            chosen = TensorRTBackend(export_onnx(module, shape, cache_dir), shape, bs, dev, fp16=precision != "fp32")
        return cls(
            chosen,
            spec,
            classes=classes,
            outputs=outputs,
            confidence=confidence,
            batch_size=batch_size,
            probe=probe,
            module=module,
        )

    @classmethod
    def from_onnx(
        cls,
        path: str | Path,
        *,
        spec: Preprocessing | None = None,
        classes: Sequence[str] | None = None,
        outputs: str = "logits",
        confidence: str = "softmax",
        backend: str = "onnx",
        device: str | torch.device = "cpu",
        batch_size: int | None = None,
        **preprocessing: Any,
    ) -> "Scorer":
        """Scorer for an ONNX model (code not needed). Input size, channels and layout
        (NCHW or NHWC) are read from the model's input shape, which must be static
        except for the batch axis; they replace a ``spec``'s. The other preprocessing is
        ``spec`` (default ``crop="none"``) with any of its fields given as keywords replaced
        (``mean=``, ``std=``, ``scale=``, ``crop=``, ``crop_margin=``, ``chip_padding=``).
        ``backend``: ``"onnx"`` or ``"tensorrt"`` (NCHW, CUDA)."""
        if backend not in ("onnx", "tensorrt"):
            raise ValueError(f"an ONNX model runs with backend 'onnx' or 'tensorrt', got {backend!r}")
        given = sorted({"input_size", "channels"} & set(preprocessing))
        if given:
            raise ValueError(f"{', '.join(given)}: read from the ONNX model's input shape, not given")
        dims = _onnx_input_dims(path)
        if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            raise ValueError(f"{path}: expected a static N x C x H x W or N x H x W x C input, got {dims}")
        if dims[1] in (1, 3):
            layout, channels, size = "nchw", dims[1], (dims[2], dims[3])
        elif dims[3] in (1, 3):
            layout, channels, size = "nhwc", dims[3], (dims[1], dims[2])
        else:
            raise ValueError(f"{path}: cannot find a 1- or 3-channel axis in input shape {dims}")
        spec = Preprocessing.of(spec, input_size=size, channels=channels, **preprocessing)
        dev = torch_device(device)
        if backend == "tensorrt":
            if layout != "nchw":
                raise ValueError("the TensorRT backend takes NCHW models")
            chosen: Backend = TensorRTBackend(
                path, (channels, *size), batch_size or auto_batch_size((channels, *size), dev), dev
            )
        else:
            chosen = OnnxBackend(path, dev, layout)
        return cls(chosen, spec, classes=classes, outputs=outputs, confidence=confidence, batch_size=batch_size)

    @classmethod
    def from_callable(
        cls,
        fn: Callable,
        input_size: int | Sequence[int] | None = None,
        *,
        spec: Preprocessing | None = None,
        layout: str = "nchw",
        array: str = "numpy",
        device: str | torch.device = "cpu",
        classes: Sequence[str] | None = None,
        outputs: str = "logits",
        confidence: str = "softmax",
        batch_size: int | None = None,
        **preprocessing: Any,
    ) -> "Scorer":
        """Scorer for a black box: ``fn(batch) -> K x D`` on normalised float32 batches
        (numpy, or torch tensors with ``array="torch"``) in ``layout``. Preprocessing:
        ``spec`` (default ``crop="none"``) with any of its fields given as keywords replaced
        (``channels=``, ``mean=``, ``std=``, ``scale=``, ``crop=``, ``crop_margin=``,
        ``chip_padding=``; ``input_size`` as here)."""
        if input_size is not None:
            preprocessing["input_size"] = input_size
        return cls(
            CallableBackend(fn, layout, array, torch_device(device)),
            Preprocessing.of(spec, **preprocessing),
            classes=classes,
            outputs=outputs,
            confidence=confidence,
            batch_size=batch_size,
        )

    @property
    def bound_confidence(self) -> Confidence | None:
        """The confidence function set by :meth:`with_confidence` (it binds its own target),
        or None for class confidences chosen by ``target``."""
        return self._confidence

    def with_confidence(self, fn: Confidence) -> "Scorer":
        """A scorer sharing this backend whose confidence is ``fn(outputs K x D) -> K``.

        The function owns its target (e.g. a gallery identity or a reference embedding),
        so such a scorer takes ``target=None`` only.
        """
        if not callable(fn):
            raise ValueError(f"confidence must be callable outputs -> scores, got {type(fn).__name__}")
        other = copy.copy(self)
        other._confidence = fn
        return other

    # ------------------------------------------------------------------ geometry

    def prepare(self, image: np.ndarray, face_box: FaceBox | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``image`` (H x W x 3 uint8 RGB) -> ``(input image h x w x C uint8, affine 2 x 3)``.

        With ``crop="face"`` the square crop around ``face_box`` (``(x0, y0, x1, y1)`` or an
        object with ``.face_box``, e.g. an ``AlignedFace``) is resized to ``input_size``;
        with ``crop="none"`` the whole image is (``face_box`` is ignored). The affine maps
        image pixel coordinates to input pixel coordinates (identity when nothing changes).

        With ``crop="chip"`` the input is dlib's aligned chip (side ``input_size``, padding
        ``chip_padding``): the similarity transform of 5 face points (eye corners, nose
        bottom; :func:`~facesal_fast.scoring.geometry.five_points`) to dlib's template.
        ``face_box`` is then best an ``AlignedFace`` (its landmarks are used), or the
        points themselves (``(5, 2)`` in dlib order, 478 MediaPipe or 68 iBUG landmarks).
        Given only a box (as ``cis`` passes ``face.face_box``) or None, the default
        MediaPipe aligner is run on ``image`` and the face overlapping the box most (None:
        the aligner's choice) gives the points; they are cached per (image, box), so
        repeated calls on one photo align it once.
        """
        if self.crop == "face" and face_box is None:
            raise ValueError("this scorer crops the face: pass face_box=(x0, y0, x1, y1) or an AlignedFace")
        crop = ("face" if face_box is not None else "none") if self.crop == "auto" else self.crop
        image = np.asarray(image)
        if self.channels == 3 and (image.ndim != 3 or image.shape[2] != 3):
            raise ValueError(f"this scorer takes RGB images (H x W x 3), got shape {image.shape}")
        if self.crop == "chip":
            points = self._chip_points(image, face_box)
            if self.channels == 1 and image.ndim == 3 and image.shape[2] == 3:
                image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
            return chip_geometry(image, points, self.input_size[0], self.chip_padding)
        if crop == "none" and face_box is not None:
            self._warn_small_face(image.shape[:2], box_tuple(face_box))
        box = face_box if crop == "face" else None
        return to_model_geometry(image, self.input_size, self.channels == 1, box, self.crop_margin)

    def _warn_small_face(self, shape: tuple[int, int], box: tuple[float, float, float, float]) -> None:
        """Warn (once per scorer) when ``crop="none"`` leaves the face small in the model input."""
        side = max(box[2] - box[0], box[3] - box[1]) / min(shape)
        if side < SMALL_FACE and not getattr(self, "_warned_small_face", False):
            self._warned_small_face = True
            warnings.warn(
                f"crop='none': the face spans {side:.0%} of the photo's shorter side, so the model sees it small "
                f"(and the canonical patch grows); crop='face' or 'auto' crops the face",
                UserWarning,
                stacklevel=3,
            )

    @staticmethod
    def _chip_points(image: np.ndarray, face: object) -> np.ndarray:
        """dlib's 5 points for a chip crop (see :meth:`prepare`)."""
        if face is not None and getattr(face, "landmarks", None) is not None:
            return five_points(face)
        if face is not None and not hasattr(face, "face_box"):
            arr = np.asarray(face, dtype=np.float64)
            if arr.ndim == 2:
                return five_points(arr)
        box = None if face is None else box_tuple(face)
        digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()
        key = (image.shape, digest, box)
        if key in _CHIP_POINTS_CACHE:
            _CHIP_POINTS_CACHE.move_to_end(key)
            return _CHIP_POINTS_CACHE[key]
        aligner = default_aligner()
        if box is None:
            chosen = aligner(image)
        else:
            faces = aligner(image, all_faces=True)
            faces = faces if isinstance(faces, list) else [faces]
            overlaps = [_iou(box, box_tuple(f)) for f in faces]
            best = int(np.argmax(overlaps))
            if overlaps[best] < 0.3:
                raise ValueError(
                    f"no aligned face overlaps the box {box} (best IoU {overlaps[best]:.2f}); "
                    "pass the AlignedFace or its 5 points to prepare()"
                )
            chosen = faces[best]
        points = five_points(chosen)
        _CHIP_POINTS_CACHE[key] = points
        while len(_CHIP_POINTS_CACHE) > _CHIP_CACHE_SIZE:
            _CHIP_POINTS_CACHE.popitem(last=False)
        return points

    # ------------------------------------------------------------------ scoring

    def input_tensor(self, input_image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``input_image`` (``h x w x C`` in model geometry, from :meth:`prepare`) as a tensor on
        the backend's device, shape-checked; what :meth:`occluded_batch` takes."""
        img = torch.as_tensor(input_image)
        if img.ndim == 2:
            img = img.unsqueeze(-1)
        if img.ndim != 3 or img.shape[2] != self.channels:
            raise ValueError(f"input image must be H x W x {self.channels}, got shape {tuple(img.shape)}")
        if self.input_size is not None and tuple(img.shape[:2]) != self.input_size:
            raise ValueError(f"input image must be {self.input_size} (use prepare()), got {tuple(img.shape[:2])}")
        return img.to(self.backend.device)

    def occluded_batch(self, img: torch.Tensor, centers: torch.Tensor, patch: int, fill: Any = "black") -> torch.Tensor:
        """Model-ready batch (backend layout and dtype, normalised) of ``img`` (from
        :meth:`input_tensor`) with a ``patch`` window at each of the ``K x 2`` ``centers``."""
        # One CPU thread: batches are made while the model runs on the other cores, and a
        # second OpenMP team spinning beside the backend's threads slowed both down.
        return ops.occlude_batch(
            img,
            centers,
            patch,
            fill,
            self.mean,
            self.std,
            scale=self.scale,
            layout=self.backend.layout,
            dtype="float16" if self.backend.input_dtype == torch.float16 else "float32",
            threads=None if img.is_cuda else 1,
        )

    def unoccluded_batch(self, img: torch.Tensor) -> torch.Tensor:
        """:meth:`occluded_batch` of ``img`` with nothing occluded: the batch of one whose score
        is phi(I, c), made by the same kernel as the occluded copies."""
        return self.occluded_batch(img, torch.full((1, 2), ops.FAR_CENTER, device=img.device), 1)

    def _base_outputs(self, img: torch.Tensor) -> torch.Tensor:
        return self.check_outputs(self.backend(self.unoccluded_batch(img)))

    def check_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """``outputs`` (``K x D``, from the backend) if a classifier's confidence can use them.

        Raises ``ValueError`` naming the expected shape when ``D`` differs from the number
        of class names, or when ``D`` is 1 under a softmax of logits (the probability of
        the only class is always 1: every occlusion drop would be 0, an all-zero map), or
        when ``outputs="probabilities"`` and a row is no probability distribution
        (:func:`~facesal_fast.scoring.confidence.check_probabilities`). A model returning
        ``(K,)`` arrives here as ``K x 1``."""
        if self._confidence is not None or self.outputs == "embedding":
            return outputs
        k, d = int(outputs.shape[0]), int(outputs.shape[1])
        if self.classes is not None and d != len(self.classes):
            raise ValueError(
                f"the model returned outputs of shape {(k, d)} (a 1-D (K,) output reads as (K, 1)); expected "
                f"({k}, {len(self.classes)}): one score per class of classes={self.classes}"
            )
        if d == 1 and self.kind == "softmax" and self.outputs == "logits":
            raise ValueError(
                f"the model returned one score per image (shape {(k, d)}); a softmax over one logit is always 1. "
                f"Return ({k}, D) scores with D >= 2 classes, or use confidence='logit' for a single score"
            )
        if self.outputs == "probabilities":
            check_probabilities(outputs)
        return outputs

    def confidence_for(self, img: torch.Tensor, target: Target, base_outputs: torch.Tensor | None = None) -> Confidence:
        """The confidence function ``outputs K x D -> (K,)`` for ``target`` on ``img`` (from
        :meth:`input_tensor`): the scorer's own when it binds one, else the class confidence;
        the unoccluded image is run (unless ``base_outputs`` are given) only to find a
        predicted class for ``target=None``."""
        if self._confidence is not None:
            if target is not None:
                raise ValueError("this scorer's confidence function binds its own target; pass target=None")
            return self._confidence
        self._check_classifier()
        if target is None:
            outputs = self._base_outputs(img) if base_outputs is None else base_outputs
            index = int(outputs[0].argmax())
        else:  # without class names the index is range-checked against the outputs later
            index = resolve_class(target, self.classes, len(self.classes) if self.classes is not None else sys.maxsize)
        return class_confidence(index, self.kind, self.outputs)

    def _check_classifier(self) -> None:
        if self.outputs == "embedding":
            raise ValueError(
                "this scorer outputs embeddings, not classes: bind a confidence first, e.g. "
                "facesal_fast.saliency.identity.identification_scorer / verification_scorer, or with_confidence(fn)"
            )

    def embed(self, image: np.ndarray, face_box: FaceBox | None = None) -> np.ndarray:
        """Raw outputs ``(D,)`` float32 of the prepared, unoccluded image (e.g. a face
        descriptor); normalised by the same kernel as occluded copies."""
        input_image, _ = self.prepare(image, face_box)
        return self._base_outputs(self.input_tensor(input_image))[0].float().cpu().numpy()

    def forward(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw model outputs ``K x D`` (float32, backend device) of a model-ready batch in
        the backend's layout (``scorer.backend.layout``)."""
        x = torch.as_tensor(batch).to(self.backend.device, self.backend.input_dtype)
        return self.check_outputs(self.backend(x))

    def score(self, batch: np.ndarray | torch.Tensor, target: Target = None) -> np.ndarray:
        """Confidences ``(K,)`` of a model-ready batch; ``target=None``: each row's predicted class."""
        outputs = self.forward(batch)
        if self._confidence is not None:
            if target is not None:
                raise ValueError("this scorer's confidence function binds its own target; pass target=None")
            return self._confidence(outputs).float().cpu().numpy()
        self._check_classifier()
        if target is None:
            predicted = outputs.argmax(1, keepdim=True)
            return class_scores(outputs, self.kind, self.outputs).gather(1, predicted)[:, 0].cpu().numpy()
        index = resolve_class(target, self.classes, outputs.shape[1])
        return class_confidence(index, self.kind, self.outputs)(outputs).cpu().numpy()

    def base_score(self, input_image: np.ndarray | torch.Tensor, target: Target = None) -> float:
        """phi(I, c) of the unoccluded input image, normalised by the same kernel as the
        occluded ones (an empty patch scores the same, up to the backend's batch-size
        dependent rounding; bit-exact on the CPU torch backend, tested)."""
        img = self.input_tensor(input_image)
        outputs = self._base_outputs(img)
        return float(self.confidence_for(img, target, outputs)(outputs)[0])

    def score_occluded(
        self,
        input_image: np.ndarray | torch.Tensor,
        centers: np.ndarray | torch.Tensor,
        patch: int,
        fill="black",
        target: Target = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """phi(I with a ``patch`` x ``patch`` window at each centre, c) -> ``(K,)`` float32.

        Args:
            input_image: ``h x w x C`` uint8 in model geometry (from :meth:`prepare`).
            centers: ``K x 2`` ``(x, y)`` in input pixels (map image points with the affine).
            patch: window side in input pixels; fill: as ``ops.occlude_batch``.
            target: class index or name; None = the class predicted on the unoccluded
                image (classification), or the confidence function's own target.
            batch_size: images per forward pass (default: the scorer's, else automatic).
        """
        img = self.input_tensor(input_image)
        pts = torch.as_tensor(
            np.asarray(centers, dtype=np.float32) if not isinstance(centers, torch.Tensor) else centers
        )
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"centers must be K x 2 (x, y), got shape {tuple(pts.shape)}")
        pts = pts.to(img.device, torch.float32)
        confidence = self.confidence_for(img, target)
        shape = (self.channels, int(img.shape[0]), int(img.shape[1]))
        size = (
            batch_size
            or self.batch_size
            or auto_batch_size(shape, self.backend.device, len(pts), self.backend.cpu_max_batch)
        )
        with step_bar(total=len(pts), desc="occlusion", unit="window") as bar:

            def consume(batch: torch.Tensor) -> torch.Tensor:
                scores = confidence(self.backend(batch))
                bar.update(len(batch))
                return scores

            return run_pipelined(
                lambda lo, hi: self.occluded_batch(img, pts[lo:hi], patch, fill),
                consume,
                len(pts),
                size,
                self.backend.device,
            )

    def predict(self, image: np.ndarray, face_box: FaceBox | None = None) -> Prediction:
        """Prepare ``image`` and classify it."""
        return self.predict_input(self.prepare(image, face_box)[0])

    def predict_input(self, input_image: np.ndarray | torch.Tensor) -> Prediction:
        """Classify an image already in model geometry (from :meth:`prepare`)."""
        self._check_classifier()
        outputs = self._base_outputs(self.input_tensor(input_image))[0].float()
        probs = torch.softmax(outputs, 0) if self.outputs == "logits" else outputs
        index = int(outputs.argmax())
        label = self.classes[index] if self.classes is not None and index < len(self.classes) else None
        return Prediction(index, label, probs.cpu().numpy(), outputs.cpu().numpy())

    def __repr__(self) -> str:
        return (
            f"Scorer(backend={self.backend.name!r}, input_size={self.input_size}, channels={self.channels}, "
            f"crop={self.crop!r}, mean={self.spec.mean}, std={self.spec.std}, outputs={self.outputs!r}, "
            f"classes={self.classes}, "
            f"confidence={'custom' if self._confidence else self.kind!r})"
        )
