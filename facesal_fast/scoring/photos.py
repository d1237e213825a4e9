"""What the public API takes as images and scorers, and one call per photo for batches.

An image is a path, an ``H x W x 3`` uint8 RGB array (grey, RGBA, 16-bit and float
arrays in ``[0, 1]`` are converted by :func:`facesal_fast.align.as_rgb_uint8`), or a
channels-first torch tensor ``C x H x W`` (uint8 0..255 or float 0..1, what torchvision's
``ToTensor`` gives). Batches are lists or tuples of those, an ``N x C x H x W`` tensor or
an ``N x H x W x 3`` array. :func:`per_photo` turns a function of one photo into one that
takes any of these: a batch gives a list of results (one per photo), and a photo given as
a tensor gives its maps back as tensors on that tensor's device.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np
import torch

from facesal_fast.align import default_aligner
from facesal_fast.align.errors import ImageError, NoFaceError
from facesal_fast.align.image_io import _is_tensor, load_image, tensor_images
from facesal_fast.core.options import CISOptions
from facesal_fast.scoring.batching import run_together

__all__ = ["AlignerLike", "ImageInput", "ImagesInput", "Photo", "ScorerLike", "as_numpy", "per_photo", "photos"]

#: One image: a file path, an ``H x W x 3`` array, or a ``C x H x W`` torch tensor.
ImageInput = Union[str, os.PathLike, np.ndarray, torch.Tensor]
#: One image, or a batch: a list/tuple of images, ``N x C x H x W`` tensor, ``N x H x W x 3`` array.
ImagesInput = Union[ImageInput, Sequence[ImageInput]]


@runtime_checkable
class ScorerLike(Protocol):
    """What ``cis``/``cms``/``Audit`` need of a scorer (:class:`facesal_fast.scoring.Scorer`
    implements it): model geometry, one prediction and occluded-batch confidences."""

    classes: list[str] | None

    def prepare(self, image: np.ndarray, face_box: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``H x W x 3`` uint8 photo -> (``h x w x C`` model-geometry image, ``2 x 3`` affine)."""

    def predict_input(self, input_image: np.ndarray) -> Any:
        """The model's decision on a model-geometry image (``.index``, ``.outputs``)."""

    def base_score(self, input_image: np.ndarray, target: Any = None) -> float:
        """phi(I, c) of the unoccluded model-geometry image."""

    def score_occluded(
        self,
        input_image: np.ndarray,
        centers: np.ndarray,
        patch: int,
        fill: Any = "black",
        target: Any = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """phi of ``K`` occluded copies (``K x 2`` centres) -> ``(K,)``."""


@runtime_checkable
class AlignerLike(Protocol):
    """What ``cis``/``cms``/``Audit``/``CanonicalOcclusion`` need of an aligner
    (:class:`facesal_fast.align.Aligner` implements it): a photo's aligned face(s)."""

    def __call__(
        self, image: Any, *, all_faces: bool = False, source: str | None = None, face_index: int | None = None
    ) -> Any:
        """``H x W x 3`` uint8 photo (or its path) -> its :class:`~facesal_fast.align.AlignedFace`
        (the default face, or the ``face_index``-th; every face with ``all_faces``; in the order of
        :class:`~facesal_fast.align.Aligner`'s face-choice rule: confident faces largest first)."""


@dataclass(frozen=True)
class Photo:
    """One photo of a call: ``image`` (a path, or an ``H x W x 3`` array), its ``source``
    name for messages (None: the path or ``<array>``), and the ``device`` its results go
    to as tensors (None: numpy results)."""

    image: Any
    source: str | None
    device: torch.device | None


def _one(image: Any, source: str | None) -> list[Photo]:
    """The photo(s) in one element of a batch (a 4-D tensor or array is itself a batch)."""
    if isinstance(image, (str, os.PathLike)):
        return [Photo(image, None, None)]
    if _is_tensor(image):
        arrays = tensor_images(image, source)
        names = [source] if image.ndim == 3 else [f"{source or 'batch'}[{k}]" for k in range(len(arrays))]
        return [Photo(a, n, image.device) for a, n in zip(arrays, names)]
    if isinstance(image, np.ndarray):
        if image.ndim == 4:
            return [Photo(a, f"{source or 'batch'}[{k}]", None) for k, a in enumerate(image)]
        return [Photo(image, source, None)]
    raise ValueError(
        f"image{'' if source is None else ' ' + source} must be a path, an H x W x 3 array or a C x H x W "
        f"torch tensor (or a list/batch of them), got {type(image).__name__}"
    )


def photos(images: ImagesInput) -> tuple[list[Photo], bool]:
    """``(photos, many)``: the photos in ``images`` and whether it was a batch (a list,
    tuple, ``N x C x H x W`` tensor or ``N x H x W x 3`` array) rather than one photo."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("image: got an empty list of images")
        return [
            p
            for k, im in enumerate(images)
            for p in _one(im, f"images[{k}]" if not isinstance(im, (str, os.PathLike)) else None)
        ], True
    many = (_is_tensor(images) and images.ndim == 4) or (isinstance(images, np.ndarray) and images.ndim == 4)
    return _one(images, None), bool(many)


def as_numpy(x: Any) -> Any:
    """``x`` as a numpy array when it is a tensor (any device), else unchanged."""
    return x.detach().cpu().numpy() if _is_tensor(x) else x


def _to_device(result: Any, fields: Sequence[str], device: torch.device | None) -> Any:
    """``result`` (a dataclass) with its array ``fields`` as tensors on ``device``."""
    if device is None:
        return result
    tensors = {f: torch.as_tensor(getattr(result, f)).to(device) for f in fields if getattr(result, f) is not None}
    return dataclasses.replace(result, **tensors)


def _renamed(error: Exception, source: str | None) -> Exception:
    """An image/face error re-made to name the batch element (errors on arrays say ``<array>``)."""
    if source is None or getattr(error, "path", getattr(error, "source", "x")) is not None:
        return error
    return type(error)(source, error.reason)


def per_photo(
    param: str,
    tensor_fields: Sequence[str],
    choose_face: bool = False,
    read_paths: bool = False,
    steps: Callable[..., Any] | None = None,
) -> Callable:
    """Decorator: ``fn(..., param=one photo, ...)`` -> a function that also takes tensors and batches.

    A path or a 2-/3-D numpy array goes to ``fn`` unchanged. A tensor is converted to
    ``H x W x 3`` uint8 (:func:`~facesal_fast.align.image_io.tensor_images`) and the result's
    ``tensor_fields`` come back as tensors on its device. A batch gives a list, one result
    per photo. With ``choose_face``, ``fn`` takes ``options`` (a
    :class:`~facesal_fast.core.options.CISOptions`, a mapping of its fields or None) and
    ``**overrides`` of its fields: the record is built here, once, and handed to ``fn`` whole;
    its ``face_index=k`` explains the k-th largest face and ``faces="all"`` every face (a
    list per photo) of photos aligned by ``fn``'s ``aligner``.
    With ``read_paths``, paths are read (:func:`~facesal_fast.align.load_image`) before ``fn``.
    With ``steps`` (``fn``'s twin with the same parameters, returning a generator of scoring
    requests, :mod:`facesal_fast.scoring.batching`), the photos (and faces) of a batch are
    explained together: their occluded windows share batches.
    """

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = _keywords(signature, signature.bind(*args, **kwargs))
            if choose_face:
                bound = _options_built(signature, bound)
            choice = bound["options"] if choose_face else None
            items, many = photos(bound[param])
            plain = not (read_paths and isinstance(items[0].image, (str, os.PathLike)))
            if plain and not many and items[0].device is None and not _chooses(choice):
                return fn(**bound) if choose_face else fn(*args, **kwargs)  # one path or array: unchanged
            if many and bound.get("face") is not None:
                raise ValueError("face= is one photo's AlignedFace: it cannot go with a batch of images")
            if read_paths:
                items = [_read(photo) for photo in items]
            if steps is not None and many:
                return _together(steps, bound, param, items, tensor_fields, choice)
            out = [_call(fn, bound, param, photo, tensor_fields, choice) for photo in items]
            return out if many else out[0]

        return wrapper

    return decorate


def _options_built(signature: inspect.Signature, bound: dict[str, Any]) -> dict[str, Any]:
    """``bound`` with ``fn``'s ``options`` and keyword overrides built into one
    :class:`~facesal_fast.core.options.CISOptions` (``TypeError`` naming an unknown field)."""
    named = {k: v for k, v in bound.items() if k in signature.parameters}
    overrides = {k: v for k, v in bound.items() if k not in signature.parameters}
    return dict(named, options=CISOptions.build(named.get("options"), **overrides))


def _chooses(options: CISOptions | None) -> bool:
    """Whether ``options`` choose the face(s) to explain."""
    return options is not None and (options.face_index is not None or options.faces is not None)


def _keywords(signature: inspect.Signature, bound: inspect.BoundArguments) -> dict[str, Any]:
    """The bound arguments as keywords of ``fn``, its ``**kwargs`` spread out."""
    spread = {n for n, p in signature.parameters.items() if p.kind is inspect.Parameter.VAR_KEYWORD}
    named = {k: v for k, v in bound.arguments.items() if k not in spread}
    return {**named, **{k: v for n in spread for k, v in bound.arguments.get(n, {}).items()}}


def _read(photo: Photo) -> Photo:
    """``photo`` with a path read into an ``H x W x 3`` uint8 array."""
    if not isinstance(photo.image, (str, os.PathLike)):
        return photo
    return dataclasses.replace(photo, image=load_image(photo.image), source=os.fspath(photo.image))


def _face_arguments(
    bound: dict[str, Any], param: str, photo: Photo, options: CISOptions | None
) -> list[dict[str, Any]]:
    """``fn``'s arguments for one photo: one set per chosen face, the face choice done (one
    set, ``fn`` aligning, without a choice)."""
    arguments = dict(bound, **{param: photo.image})
    if not _chooses(options) or arguments.get("face") is not None:
        return [arguments]  # fn aligns, or says that face= already chooses
    try:
        chosen = _chosen_faces(photo, arguments, options)
    except (ImageError, NoFaceError) as e:
        raise _renamed(e, photo.source) from e
    done = options.replace(face_index=None, faces=None)
    return [dict(arguments, face=face, options=done) for face in chosen]


def _call(
    fn: Callable, bound: dict[str, Any], param: str, photo: Photo, fields: Sequence[str], options: CISOptions | None
) -> Any:
    """``fn`` on one photo (every chosen face of it with ``faces="all"``), results moved to its device."""
    try:
        results = [
            _to_device(fn(**arguments), fields, photo.device)
            for arguments in _face_arguments(bound, param, photo, options)
        ]
    except (ImageError, NoFaceError) as e:
        raise _renamed(e, photo.source) from e
    return results if _all_faces(options) else results[0]


def _all_faces(options: CISOptions | None) -> bool:
    return options is not None and options.faces == "all"


def _together(
    steps: Callable[..., Any],
    bound: dict[str, Any],
    param: str,
    items: Sequence[Photo],
    fields: Sequence[str],
    options: CISOptions | None,
) -> list[Any]:
    """:func:`_call` for every photo of a batch, their ``steps`` driven together
    (:func:`~facesal_fast.scoring.batching.run_together`); the first photo's error is raised."""
    arguments = [_face_arguments(bound, param, photo, options) for photo in items]
    outcomes = iter(run_together([steps(**a) for per_face in arguments for a in per_face]))
    out = []
    for photo, per_face in zip(items, arguments):
        results = [next(outcomes) for _ in per_face]
        for result in results:
            if isinstance(result, (ImageError, NoFaceError)):
                raise _renamed(result, photo.source) from result
            if isinstance(result, Exception):
                raise result
        results = [_to_device(result, fields, photo.device) for result in results]
        out.append(results if _all_faces(options) else results[0])
    return out


def _chosen_faces(photo: Photo, arguments: dict, options: CISOptions) -> list:
    """The aligned faces asked for by ``options.face_index`` / ``options.faces="all"``."""
    aligner = arguments.get("aligner") or default_aligner()
    if options.faces == "all":
        return list(aligner(photo.image, all_faces=True, source=photo.source))
    return [aligner(photo.image, face_index=options.face_index, source=photo.source)]
