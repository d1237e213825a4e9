"""Image loading and normalisation to the API convention (H x W x 3 uint8 RGB)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

PathLike = Union[str, os.PathLike]

#: Refuse images with more pixels than this (decompression bombs, absurd scans).
MAX_PIXELS = 200_000_000


#: Value-range rule for array images (documented in :func:`as_rgb_uint8`).
VALUE_RANGE_RULE = (
    "uint8: 0..255; uint16: 0..65535 (16-bit); bool: 0/1; other integer types: 8-bit values 0..255; float: 0..1"
)
_FLOAT_SLACK = 0.5 / 255.0  # half an 8-bit step of rounding tolerated outside [0, 1]


def _where(source: object) -> str:
    return "the image" if source is None else f"image {source}"


def _unit_float(a: np.ndarray, source: object) -> np.ndarray:
    """A float image checked to be finite and in ``[0, 1]``, as float32 clipped to it."""
    if not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ImageError(source, f"{_where(source)} has {bad} NaN or Inf pixel values")
    lo, hi = float(a.min()), float(a.max())
    if lo < -_FLOAT_SLACK or hi > 1.0 + _FLOAT_SLACK:
        hint = (
            " (it looks like 0..255: pass image / 255 or image.astype(np.uint8))"
            if hi <= 255.0 + _FLOAT_SLACK and lo >= -_FLOAT_SLACK
            else ""
        )
        raise ImageError(source, f"float image values must lie in [0, 1], got [{lo:g}, {hi:g}]{hint}")
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def _eight_bit_integers(a: np.ndarray, source: object) -> np.ndarray:
    """An integer image other than uint8/uint16 checked to hold 8-bit values, as uint8."""
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 255:
        raise ImageError(
            source,
            f"{a.dtype} image values must lie in 0..255 (8-bit), got [{lo}, {hi}]; "
            "pass uint16 for 16-bit images or a float image in [0, 1]",
        )
    return a.astype(np.uint8)


def as_rgb_uint8(image: np.ndarray, source: object = None) -> np.ndarray:
    """Convert an array image to ``(H, W, 3) uint8`` RGB.

    Accepts ``(H, W)`` / ``(H, W, 1)`` grayscale, ``(H, W, 3)`` RGB and ``(H, W, 4)`` RGBA
    (alpha composited over white); channel order is assumed to be RGB already. Value range
    by dtype (:data:`VALUE_RANGE_RULE`): ``uint8`` 0..255; ``uint16`` 0..65535 (a 16-bit
    image, scaled by 1/257); ``bool`` 0/1; any other integer type must hold 8-bit values
    0..255; a float image must be finite and in ``[0, 1]`` (half an 8-bit step of slack).
    Anything else raises :class:`ImageError` (a ``ValueError``) naming ``source``: a float
    image in 0..255 is refused, not clipped to white, and NaN/Inf pixels are refused, not
    made black.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(source, f"unsupported image shape {a.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(source, f"empty image of shape {a.shape}")
    if a.dtype == np.uint8:
        f = None
    elif a.dtype == np.uint16:
        f = a.astype(np.float32) / 65535.0
    elif a.dtype == bool:
        f = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.floating):
        f = _unit_float(a, source)
    elif np.issubdtype(a.dtype, np.integer):
        a, f = _eight_bit_integers(a, source), None
    else:
        raise ImageError(source, f"unsupported image dtype {a.dtype}")
    if f is not None:
        a = np.round(f * 255.0).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float32) / 255.0
        a = np.round(a[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(a)


def load_image(path: PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB.

    EXIF orientation is applied; grayscale, palette, RGBA/LA (composited over white),
    CMYK, 16-bit and 32-bit images are converted. Raises :class:`ImageError` naming the
    file for a missing, corrupt or non-image file, or one with more than ``MAX_PIXELS``.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageError(p, "file not found")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(p, f"image of {w}x{h} px exceeds the {MAX_PIXELS} pixel limit")
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(im, dtype=np.uint16)
            elif mode == "I":
                arr = np.asarray(im, dtype=np.int32)
                arr = np.clip(arr, 0, 65535).astype(np.uint16) if arr.max(initial=0) > 255 else arr.astype(np.uint8)
            elif mode == "F":
                arr = np.asarray(im, dtype=np.float32)
                if arr.max(initial=0.0) > 1.0:
                    arr = arr / 255.0 if arr.max() <= 255.0 else arr / 65535.0
            elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                arr = np.asarray(im.convert("RGBA"))
            elif mode in ("L", "RGB"):
                arr = np.asarray(im)
            else:
                arr = np.asarray(im.convert("RGB"))
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(p, f"cannot read image ({type(e).__name__}: {e})") from e
    return as_rgb_uint8(arr, source=p)


def _is_tensor(x: object) -> bool:
    """True for a torch tensor (without importing torch when it is not loaded)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "permute")


def tensor_images(tensor: object, source: object = None) -> list[np.ndarray]:
    """A torch image tensor as ``(H, W, 3) uint8`` RGB arrays, one per image.

    ``tensor`` is channels-first, as torchvision's ``ToTensor`` / ``read_image`` give:
    ``C x H x W`` (one image) or ``N x C x H x W`` (a batch), ``C`` 1 (grey) or 3 (RGB),
    ``uint8`` in 0..255 or floating point in ``[0, 1]`` (the rule of :func:`as_rgb_uint8`).
    Raises :class:`ImageError` for other shapes, out-of-range or non-finite values, and for a
    meta tensor (no data) or a complex one.
    """
    t = tensor.detach()
    if t.is_meta or t.is_complex():
        raise ImageError(source, f"an image tensor must hold real pixel values, got a {t.dtype} tensor on {t.device}")
    if t.ndim not in (3, 4) or t.shape[-3] not in (1, 3):
        raise ImageError(
            source,
            f"an image tensor must be C x H x W or N x C x H x W with C = 1 or 3 (channels first), "
            f"got shape {tuple(t.shape)}",
        )
    if t.dtype.is_floating_point:
        t = t.float()  # numpy has no bfloat16
    arrays = t.cpu().numpy()
    batch = arrays if arrays.ndim == 4 else arrays[None]
    label = (lambda k: source) if arrays.ndim == 3 else (lambda k: f"{source or 'batch'}[{k}]")
    return [as_rgb_uint8(np.moveaxis(a, 0, -1), label(k)) for k, a in enumerate(batch)]
