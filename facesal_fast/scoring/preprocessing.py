"""How a scorer turns a photo into a model input: :class:`Preprocessing`, one frozen spec
(geometry: input size, crop, margin, chip padding; photometry: channels, mean, std, scale)
shared by every :class:`~facesal_fast.scoring.Scorer` constructor and checked once."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from facesal_fast.ops.checks import per_channel

__all__ = [
    "CROPS",
    "FIELDS",
    "Preprocessing",
    "SpecField",
    "check_normalisation",
    "check_stated_normalisation",
    "module_spec",
]

CROPS = ("face", "none", "chip", "auto")


def check_stated_normalisation(keywords: dict[str, Any], spec_given: bool) -> None:
    """``Scorer.from_torch``'s normalisation must be said: ``mean`` and ``std`` together
    (``ValueError`` for one without the other, which would keep the other's default); neither,
    without a ``spec``, warns once per call site naming the defaults and how to state them."""
    given = [name for name in ("mean", "std") if name in keywords]
    if len(given) == 1 and not spec_given:
        missing = "std" if given == ["mean"] else "mean"
        raise ValueError(
            f"{given[0]}= given without {missing}=: give both (e.g. ImageNet's mean=(0.485, 0.456, 0.406), "
            f"std=(0.229, 0.224, 0.225)), or {missing}={'1.0' if missing == 'std' else '0.0'} to keep the default"
        )
    if not given and not spec_given:
        warnings.warn(
            "Scorer.from_torch: no mean/std given, so the model gets pixels * scale (0..1) with mean 0 and std 1; "
            "if it was trained on normalised input (e.g. ImageNet's mean and std) pass mean= and std=, and to "
            "keep 0..1 say so with mean=0.0, std=1.0 (which silences this warning)",
            UserWarning,
            stacklevel=3,
        )


def check_normalisation(mean: Any, std: Any, scale: float, channels: int, half: bool = False) -> None:
    """Refuse a normalisation ``(v * scale - mean) / std`` whose batches would not be finite.

    The occlusion kernel computes it in float32 (``1 / std`` first), so pixel values 0 and
    255 (the extremes of every fill too) must normalise to finite float32 values, and to
    float16's range (65504) when ``half`` batches are written.

    Raises:
        ValueError: naming ``mean``, ``std`` or ``scale``.
    """
    mean_c, std_c = (
        per_channel(mean, channels, "mean")[:channels],
        per_channel(std, channels, "std")[:channels],
    )
    if not all(s > 0 for s in std_c):
        raise ValueError(f"std must be positive, got {std_c}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    limit = 65504.0 if half else float(np.finfo(np.float32).max)
    with np.errstate(all="ignore"):
        inv_std = np.float32(1.0) / np.asarray(std_c, np.float32)
        pixels = np.array([[0.0], [255.0]], np.float32) * np.float32(scale)
        values = (pixels - np.asarray(mean_c, np.float32)) * inv_std
    if not (np.all(np.isfinite(pixels)) and np.all(np.isfinite(values)) and np.abs(values).max() <= limit):
        raise ValueError(
            f"normalisation (v * scale - mean) / std with scale={scale!r}, mean={mean!r}, std={std!r} gives "
            f"non-finite{' float16' if half else ' float32'} model inputs (pixels 0 and 255 -> "
            f"{values.ravel().tolist()}); "
            "check std and scale (e.g. std=0.229, scale=1/255)"
        )


#: Largest model input side ``input_size`` accepts (a model input, not a photo: photos of any
#: size up to the aligner's pixel limit are cropped or resized to it).
MAX_INPUT_SIDE = 4096


def _size(input_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if input_size is None:
        return None
    size = (int(input_size), int(input_size)) if np.ndim(input_size) == 0 else tuple(int(s) for s in input_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input_size must be a positive int or (height, width), got {input_size!r}")
    if max(size) > MAX_INPUT_SIDE:
        raise ValueError(
            f"input_size must be at most {MAX_INPUT_SIDE} px a side (one {MAX_INPUT_SIDE} x {MAX_INPUT_SIDE} RGB "
            f"float32 input is 200 MB), got {input_size!r}"
        )
    return size


def _frozen(values: float | Sequence[float]) -> float | tuple[float, ...]:
    """A number as a float, one value per channel as a tuple of floats (hashable, immutable)."""
    array = torch.as_tensor(values, dtype=torch.float64).cpu().numpy()
    return float(array) if array.ndim == 0 else tuple(float(v) for v in array.reshape(-1))


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes a model input, checked once when it is made.

    Attributes:
        input_size: model input ``(H, W)`` (an int gives a square), or None when the model
            takes images as they are.
        channels: 1 (grey) or 3 (RGB) model input channels.
        mean, std, scale: photometric normalisation ``(v * scale - mean) / std``: a number,
            or one per channel (stored as a tuple).
        crop: ``"face"`` (square crop around the face box), ``"chip"`` (dlib-style chip
            aligned by a similarity transform of 5 landmarks; square ``input_size``),
            ``"none"`` (the whole photo) or ``"auto"`` (the face crop when a face is known);
            ``"face"``, ``"chip"`` and ``"auto"`` need an ``input_size``.
        crop_margin: fraction of the box side added on each side of a face crop (>= 0).
        chip_padding: padding around the 5-point template of a ``"chip"`` crop (>= 0; dlib: 0.25).

    Raises:
        ValueError: naming the field whose value cannot be used (also a normalisation whose
            float32 batches would not be finite, see :func:`check_normalisation`).
    """

    input_size: tuple[int, int] | None = None
    channels: int = 3
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0
    scale: float = 1.0 / 255.0
    crop: str = "none"
    crop_margin: float = 0.2
    chip_padding: float = 0.25

    def __post_init__(self) -> None:
        size = _size(self.input_size)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.crop in ("face", "chip", "auto") and size is None:
            raise ValueError(f"crop={self.crop!r} needs an input_size to resize the crop to")
        if self.crop == "chip" and len(set(size)) != 1:
            raise ValueError(f"crop='chip' makes square chips; input_size must be square, got {self.input_size!r}")
        for name in ("crop_margin", "chip_padding"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.number)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        check_normalisation(self.mean, self.std, self.scale, self.channels)
        frozen = dict(
            input_size=size,
            channels=int(self.channels),
            mean=_frozen(self.mean),
            std=_frozen(self.std),
            scale=float(self.scale),
            crop_margin=float(self.crop_margin),
            chip_padding=float(self.chip_padding),
        )
        for name, value in frozen.items():
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, spec: Preprocessing | None = None, **fields: Any) -> Preprocessing:
        """``spec`` (default: the defaults above) with ``fields`` replaced: how a
        :class:`~facesal_fast.scoring.Scorer` constructor combines its ``spec=`` and keyword
        arguments.

        Raises:
            TypeError: naming a keyword that is not a field.
        """
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {unknown}; the preprocessing fields are {FIELDS}")
        return cls(**fields) if spec is None else dataclasses.replace(spec, **fields)


#: The field names of :class:`Preprocessing`, in order.
FIELDS = tuple(field.name for field in dataclasses.fields(Preprocessing))


def module_spec(
    spec: Preprocessing | None, input_size: Any, grayscale: bool | None, fields: dict[str, Any]
) -> Preprocessing:
    """``Scorer.from_torch``'s spec: ``spec`` with ``fields`` replaced, ``input_size`` and
    ``grayscale`` (``channels=1``) where given, and ``crop`` (None: the spec's) defaulting,
    without a ``spec``, to ``"auto"`` with an ``input_size`` and ``"none"`` without one."""
    fields = dict(fields)
    if input_size is not None:
        fields["input_size"] = input_size
    if grayscale is not None:
        fields["channels"] = 1 if grayscale else 3
    if fields.get("crop") is None:
        fields.pop("crop", None)
        if spec is None:
            fields["crop"] = "auto" if input_size is not None else "none"
    return Preprocessing.of(spec, **fields)


class SpecField:
    """A read-only attribute of a scorer (anything with a ``spec``): the field of the same name
    of its frozen :class:`Preprocessing`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, scorer: Any, owner: type | None = None) -> Any:
        return self if scorer is None else getattr(scorer.spec, self.name)

    def __set__(self, scorer: Any, value: Any) -> None:
        raise AttributeError(f"{self.name} is part of the scorer's frozen spec; build a scorer with another spec")
