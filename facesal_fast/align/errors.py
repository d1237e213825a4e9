"""Errors raised by :mod:`facesal_fast.align`."""

from __future__ import annotations


class ImageError(ValueError):
    """An image that cannot be read or used (corrupt file, not an image, too large, ...)."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        where = self.path if self.path is not None else "<array>"
        super().__init__(f"{where}: {reason}")


class NoFaceError(ValueError):
    """No usable face was found in an image."""

    def __init__(self, source: object, reason: str = "no face found") -> None:
        self.source = None if source is None else str(source)
        self.reason = reason
        where = self.source if self.source is not None else "<array>"
        super().__init__(f"{where}: {reason}")
