"""The inputs of an audit: a photo folder, paths, ``H x W x 3`` arrays, a torch Dataset or a
DataLoader, as ``(key, source, loader)``. A loader loads its image when called and gives its
content hash (``sha256()``): the SHA-256 of a file's bytes, or of an array's or tensor's
shape, dtype and pixels. Photos are keyed by their path (relative to a folder); arrays and
tensors without a key by a digest of their pixels (:func:`content_key`), so a resumed run
finds them whatever their position or batch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facesal_fast.align import as_rgb_uint8, load_image
from facesal_fast.align.errors import ImageError
from facesal_fast.align.image_io import _is_tensor, tensor_images
from facesal_fast.audit.store import file_sha256

__all__ = ["IMAGE_SUFFIXES", "InMemoryImage", "PhotoFile", "content_key", "iter_inputs", "list_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: str | Path, exclude: str | Path | None = None) -> list[Path]:
    """Every file under ``folder`` (recursively, sorted) except hidden ones, CSV/JSON/text
    sidecars and anything under ``exclude`` (a run folder inside the photo folder). Broken
    symbolic links are listed, so that the audit records them as failed instead of
    skipping them without a word."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory")
    skip = {".csv", ".json", ".txt", ".md"}
    skipped = Path(exclude).resolve() if exclude is not None else None
    return sorted(
        p
        for p in folder.rglob("*")
        if (p.is_file() or p.is_symlink() and not p.exists())
        and not p.name.startswith(".")
        and p.suffix.lower() not in skip
        and (skipped is None or skipped not in p.resolve().parents)
    )


def _load_file(path: Path) -> np.ndarray:
    """:func:`load_image`, with a broken symbolic link said as such."""
    if path.is_symlink() and not path.exists():
        raise ImageError(path, f"broken symbolic link (its target {os.readlink(path)} does not exist)")
    return load_image(path)


def _image_from_tensor(t: Any, source: str | None = None) -> np.ndarray:
    """``C x H x W`` tensor (float in [0, 1] or uint8), or an ``H x W x C`` / ``C x H x W``
    array -> ``H x W x 3`` uint8, by the value-range rule of :func:`as_rgb_uint8`."""
    if _is_tensor(t):
        return tensor_images(t, source)[0]
    a = np.asarray(t)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
        a = a.transpose(1, 2, 0)
    return as_rgb_uint8(a, source)


def _pixels(image: Any) -> np.ndarray:
    """An array or tensor as a contiguous numpy array (what its content hashes are of); a meta
    tensor (no data) is an :class:`ImageError`."""
    if _is_tensor(image) and image.is_meta:
        raise ImageError(None, f"an image tensor on the meta device holds no pixels (shape {tuple(image.shape)})")
    return image.detach().cpu().contiguous().numpy() if _is_tensor(image) else np.ascontiguousarray(image)


def _content_digest(a: np.ndarray, digest: Any) -> str:
    digest.update(f"{a.shape}{a.dtype}".encode())
    digest.update(a.data)
    return digest.hexdigest()


def content_key(image: Any) -> str:
    """A key for an image without a name: a digest of its shape, dtype and pixels, the same
    whatever the batch size or order it arrives in (so a resumed run skips it)."""
    return f"image-{_content_digest(_pixels(image), hashlib.blake2b(digest_size=10))}"


@dataclass(frozen=True, eq=False)
class PhotoFile:
    """Loads a photo file (calling it); its content hash is the SHA-256 of the file's bytes."""

    path: Path

    def __call__(self) -> np.ndarray:
        return _load_file(self.path)

    def sha256(self) -> str | None:
        return file_sha256(self.path)


@dataclass(frozen=True, eq=False)
class InMemoryImage:
    """Loads an array or tensor image (calling it) as ``H x W x 3`` uint8, ``source`` naming
    it in messages; its content hash is the SHA-256 of its shape, dtype and pixels."""

    image: Any
    source: str

    def __call__(self) -> np.ndarray:
        return _image_from_tensor(self.image, self.source)

    def sha256(self) -> str:
        return _content_digest(_pixels(self.image), hashlib.sha256())


def _nth(value: Any, j: int, size: int) -> Any:
    """Element ``j`` of a collated batch field (a list, tuple or tensor of ``size``), or None."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or len(value) != size:
        raise ValueError(f"a batch of {size} images has a key/group field of {value!r}; expected one per image")
    item = value[j]
    return item.item() if _is_tensor(item) else item


def _records(item: Any) -> Iterator[tuple[Any, Any, Any]]:
    """``(image, key or None, group or None)`` of a dataset item or a DataLoader batch: a dict
    with ``image`` and optional ``key`` and ``group`` (or ``label``), an ``(image, label, ...)``
    tuple (the label is not a group), or an image; a 4-D image is a batch of them."""
    if isinstance(item, Mapping):
        if "image" not in item:
            raise ValueError(f"a dataset item given as a dict needs an 'image' entry, got keys {sorted(item)}")
        image, key, group = item["image"], item.get("key"), item.get("group", item.get("label"))
    else:
        image, key, group = (item[0] if isinstance(item, (tuple, list)) else item), None, None
    if len(getattr(image, "shape", ())) == 4:
        for j in range(len(image)):
            yield image[j], _nth(key, j, len(image)), _nth(group, j, len(image))
    else:
        yield image, (key.item() if _is_tensor(key) else key), (group.item() if _is_tensor(group) else group)


def input_count(inputs: Any) -> int | None:
    """How many images ``inputs`` (as :func:`iter_inputs` takes them) holds when that is known
    without reading it: a list, an ``N x H x W x 3`` array or tensor, a sized Dataset, a
    DataLoader over one; else None (a generator, an iterable dataset)."""
    try:
        if isinstance(inputs, (list, tuple)):
            return len(inputs)
        if hasattr(inputs, "shape"):
            return int(inputs.shape[0]) if len(inputs.shape) == 4 else None
        if hasattr(inputs, "batch_size") and hasattr(inputs, "sampler"):  # a torch DataLoader
            batch, count = inputs.batch_size, len(inputs.sampler)
            return count - count % batch if batch and getattr(inputs, "drop_last", False) else count
        return len(inputs) if hasattr(inputs, "__getitem__") and not isinstance(inputs, (str, Mapping)) else None
    except TypeError:  # an IterableDataset (or its loader) has no length
        return None


def iter_inputs(
    inputs: Any, exclude: str | Path | None = None, item_groups: dict[str, str] | None = None
) -> Iterator[tuple[str, str, PhotoFile | InMemoryImage]]:
    """(key, source, loader) for each image of a folder (without ``exclude``), paths, arrays, a
    torch Dataset or a DataLoader (see :meth:`Audit.feed`); groups given by dataset items go
    into ``item_groups`` (key -> group) as their images are reached. A loader is called to
    load its image; its ``sha256()`` is the image's content hash."""
    if isinstance(inputs, (str, Path)):
        root = Path(inputs)
        for path in list_images(root, exclude):
            yield str(path.relative_to(root)), str(path), PhotoFile(path)
        return
    for i, item in enumerate(inputs):
        if isinstance(item, (str, Path)):
            yield str(item), str(item), PhotoFile(Path(item))
            continue
        if isinstance(item, np.ndarray) and item.ndim in (2, 3):  # keyed by content, as tensors are
            yield content_key(item), f"array #{i}", InMemoryImage(item, f"array #{i}")
            continue
        for image, key, group in _records(item):
            key = content_key(image) if key is None else str(key)
            if group is not None and item_groups is not None:
                item_groups[key] = str(group)
            yield key, key, InMemoryImage(image, key)
