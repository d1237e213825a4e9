"""Image loading and normalisation to the API convention (H x W x 3 uint8 RGB)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from .errors import ImageError

PathLike = Union[str, os.PathLike]

#: Refuse images with more pixels than this (decompression bombs, absurd scans).
MAX_PIXELS = 200_000_000


def as_rgb_uint8(image: np.ndarray, source: object = None) -> np.ndarray:
    """Convert an array image to ``(H, W, 3) uint8`` RGB.

    Accepts ``(H, W)`` / ``(H, W, 1)`` grayscale, ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA
    (alpha composited over white), ``uint8``, ``uint16`` (scaled by 1/257), ``bool`` and
    float images in ``[0, 1]``. Channel order is assumed to be RGB already.
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
        f = np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0)
    elif np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        f = np.clip(a.astype(np.float64) / max(int(info.max), 1), 0.0, 1.0).astype(np.float32)
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
    from PIL import Image, ImageOps, UnidentifiedImageError

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
