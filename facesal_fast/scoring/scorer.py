"""Scorer: one face model + its preprocessing + a confidence function, fast on occluded batches.

A scorer separates geometry from photometry. :meth:`Scorer.prepare` crops/resizes an
image into the model's input geometry once (returning the 2 x 3 image -> input affine;
the face preparation itself, MediaPipe alignment for chips included, is
:class:`~facesal_fast.scoring.face_input.FacePreparation`);
:meth:`Scorer.score_occluded` then draws the occlusion patches in that geometry and
normalises in the same pass (``ops.occlude_batch`` with the scorer's mean/std/scale,
layout and dtype), runs the backend batch by batch (producer overlapped with inference)
and applies the confidence function on the device.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from facesal_fast import ops
from facesal_fast.core.renamed import RenamedAttribute
from facesal_fast.core.validate import torch_device
from facesal_fast.scoring.backends import Backend, CallableBackend, onnx_input_layout
from facesal_fast.scoring.batching import batch_size_for, run_pipelined
from facesal_fast.scoring.confidence import (
    Confidence,
    check_class_outputs,
    class_confidence,
    class_scores,
    resolve_class,
)
from facesal_fast.scoring.face_input import FacePreparation
from facesal_fast.scoring.model_checks import check_first_forward, module_device
from facesal_fast.scoring.preprocessing import (
    Preprocessing,
    SpecField,
    check_normalisation,
    check_stated_normalisation,
    module_spec,
)
from facesal_fast.scoring.progress import step_bar
from facesal_fast.scoring.selection import BACKENDS, ProbeResult, named_backend, onnx_file_backend

if TYPE_CHECKING:
    from pathlib import Path

    from facesal_fast.scoring.geometry import FaceBox

__all__ = ["Preprocessing", "Prediction", "Scorer"]

Target = int | str | None


@dataclass(frozen=True)
class Prediction:
    """Model decision on one image: class ``index``, ``label`` (None without class names),
    ``probabilities`` (D,) (softmax of logits, or the model's own probabilities) and raw
    ``outputs`` (D,)."""

    index: int
    label: str | None
    probabilities: np.ndarray
    outputs: np.ndarray


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
        confidence_name: classification confidence ``"softmax"`` or ``"logit"`` (``kind``,
            its former name, reads it with a ``DeprecationWarning`` for one release).
        batch_size: fixed batch size, or None for automatic (:meth:`batch_size_for`).
        face_preparation: the :class:`~facesal_fast.scoring.face_input.FacePreparation` that
            :meth:`prepare` runs.
        shares_batches: (class attribute) windows of several images on this scorer may share
            batches (:class:`~facesal_fast.scoring.batching.SharedBatchScorer`); False for a
            subclass overriding :meth:`score_occluded` unless it sets it True itself.
        probe: the ``backend="auto"`` probe table read from the probe stored on disk (empty
            when a backend was named, and before a first probe: then the backend's
            ``probes`` fills per input shape once the work pays for it).
        module: the torch module the scorer was built from (``from_torch``), or None; used
            by incremental inference whatever the backend.
    """

    input_size = SpecField()
    channels = SpecField()
    mean = SpecField()
    std = SpecField()
    scale = SpecField()
    crop = SpecField()
    crop_margin = SpecField()
    chip_padding = SpecField()
    shares_batches: ClassVar[bool] = True
    kind = RenamedAttribute("confidence_name")  # its name until issue 28, warned

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass with its own ``score_occluded`` scores each request alone unless it says
        ``shares_batches = True`` (shared batches would bypass its override)."""
        super().__init_subclass__(**kwargs)
        if "score_occluded" in vars(cls) and "shares_batches" not in vars(cls):
            cls.shares_batches = False

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
            class_confidence(0, confidence, outputs)  # validates the confidence name and outputs
        if backend.input_dtype == torch.float16:
            check_normalisation(spec.mean, spec.std, spec.scale, spec.channels, half=True)
        self.backend, self.spec = backend, spec
        self.face_preparation = FacePreparation(spec)
        self.classes = list(classes) if classes is not None else None
        self.outputs, self.confidence_name, self.batch_size = outputs, confidence, batch_size
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
        spec = module_spec(spec, input_size, grayscale, preprocessing)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        dev = module_device(module, device)
        shape = (spec.channels, *spec.input_size) if spec.input_size else None
        if backend not in ("torch", "auto") and shape is None:
            raise ValueError(f"backend={backend!r} needs a fixed input_size (the export shape)")
        if shape is not None:
            check_first_forward(module, shape, dev)
        bs = batch_size_for(shape, dev, requested=batch_size) if shape else (batch_size or None)
        # "auto": a probe stored on disk, else probed per shape once the work pays for it
        chosen, probe = named_backend(
            backend, module, shape, dev, precision, bs, channels_last, cuda_graphs, compile, cache_dir
        )
        model = dict(classes=classes, outputs=outputs, confidence=confidence, batch_size=batch_size)
        return cls(chosen, spec, probe=probe, module=module, **model)

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
        layout, channels, size = onnx_input_layout(path)
        spec = Preprocessing.of(spec, input_size=size, channels=channels, **preprocessing)
        dev, shape = torch_device(device), (channels, *size)
        bs = batch_size_for(shape, dev, requested=batch_size) if backend == "tensorrt" else None
        chosen = onnx_file_backend(path, backend, layout, shape, bs, dev)
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
        other.face_preparation = copy.copy(self.face_preparation)  # its own small-face warning
        return other

    # ------------------------------------------------------------------ geometry

    def prepare(self, image: np.ndarray, face_box: FaceBox | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``image`` (H x W x 3 uint8 RGB) -> ``(input image h x w x C uint8, affine 2 x 3)``:
        the face crop, dlib chip or whole photo of the scorer's ``crop`` and the affine mapping
        image pixels to input pixels; ``face_box``: ``(x0, y0, x1, y1)``, an ``AlignedFace`` or
        (chips) its points. :attr:`face_preparation` does the work
        (:meth:`FacePreparation.__call__ <facesal_fast.scoring.face_input.FacePreparation.__call__>`
        says how each crop is made)."""
        return self.face_preparation(image, face_box, stacklevel=3)

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
        """``outputs`` (``K x D``, from the backend; a model returning ``(K,)`` arrives as
        ``K x 1``) if a classifier's confidence can use them, else one ``ValueError`` naming the
        expected shape (:func:`~facesal_fast.scoring.confidence.check_class_outputs`)."""
        if self._confidence is not None or self.outputs == "embedding":
            return outputs
        return check_class_outputs(outputs, self.classes, self.confidence_name, self.outputs)

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
        return class_confidence(index, self.confidence_name, self.outputs)

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
            return class_scores(outputs, self.confidence_name, self.outputs).gather(1, predicted)[:, 0].cpu().numpy()
        index = resolve_class(target, self.classes, outputs.shape[1])
        return class_confidence(index, self.confidence_name, self.outputs)(outputs).cpu().numpy()

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
        size = self.batch_size_for((self.channels, int(img.shape[0]), int(img.shape[1])), len(pts), batch_size)
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

    def batch_size_for(
        self,
        input_shape: tuple[int, int, int],
        total: int | None = None,
        requested: int | None = None,
        *,
        boxes: bool = False,
    ) -> int:
        """Images per forward pass for ``total`` inputs of ``C x H x W``: ``requested``, else the
        scorer's ``batch_size``, else automatic for its backend; ``boxes``: batches of patch boxes
        (incremental inference). The one policy: :func:`~facesal_fast.scoring.batching.batch_size_for`."""
        return batch_size_for(
            input_shape,
            self.backend.device,
            total,
            requested=requested,
            fixed=self.batch_size,
            cpu_max=self.backend.cpu_max_batch,
            boxes=boxes,
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
            f"confidence={'custom' if self._confidence else self.confidence_name!r})"
        )
