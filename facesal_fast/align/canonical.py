"""The canonical face: MediaPipe's neutral 3D face model, its frontal layout and mean texture.

Package data (``facesal_fast/data/canonical/``, made by ``scripts/make_canonical_face.py``):

- ``geometry.npz``: ``vertices (468, 3)`` model vertices (cm, +y up, +z towards the viewer),
  ``uv (468, 2)``, ``triangles (898, 3)`` (Face Mesh vertex order), ``layout (468, 2)``: the
  orthographic frontal projection of the vertices normalised to the unit square (x right,
  y down, ``margin`` around the face).
- ``texture.png``: the mean face texture (RGB, ``TEXTURE_SIZE`` square) on that layout,
  averaged over the deepface unit-test photos (``scripts/make_canonical_face.py``).
- ``LICENSE-mediapipe.txt``: Apache-2.0 licence of the canonical face model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .mesh import rasterize_triangles

#: Outer eye corners (Face Mesh indices): subject's right eye (image left), subject's left eye.
EYE_OUTER_CORNERS = (33, 263)
N_MESH_VERTICES = 468


@dataclass(frozen=True)
class CanonicalGeometry:
    """Canonical face geometry (see module docstring for the arrays)."""

    vertices: np.ndarray  # (468, 3) float32
    uv: np.ndarray  # (468, 2) float32
    triangles: np.ndarray  # (T, 3) int32
    layout: np.ndarray  # (468, 2) float32 in [0, 1]
    margin: float

    def layout_pixels(self, shape: tuple[int, int]) -> np.ndarray:
        """Canonical vertex positions ``(468, 2)`` float32 (x, y) in pixels of an ``(H, W)`` face
        image (pixel centres at integers: the unit square maps onto ``[-0.5, S-0.5]``, S =
        min(H, W), centred; a non-square canonical image keeps the face's aspect ratio)."""
        h, w = shape
        s = min(h, w)
        off = np.array([(w - s) / 2.0, (h - s) / 2.0], np.float64)
        return (self.layout.astype(np.float64) * s + off - 0.5).astype(np.float32)

    def depth_pixels(self, shape: tuple[int, int]) -> np.ndarray:
        """Depth ``(468,)`` of each vertex in canonical pixel units (smaller = nearer the viewer)."""
        s = self.pixels_per_unit(shape)
        return (-(self.vertices[:, 2] - self.vertices[:, 2].mean()) * s).astype(np.float32)

    def pixels_per_unit(self, shape: tuple[int, int]) -> float:
        """Canonical pixels per model unit (cm) for an ``(H, W)`` canonical image."""
        lp = self.layout_pixels(shape)
        i, j = EYE_OUTER_CORNERS
        return float(np.linalg.norm(lp[i] - lp[j]) / np.linalg.norm(self.vertices[i, :2] - self.vertices[j, :2]))

    def scale(self, shape: tuple[int, int]) -> float:
        """``canonical_scale``: outer-eye-corner distance (33 to 263) in canonical pixels."""
        lp = self.layout_pixels(shape)
        i, j = EYE_OUTER_CORNERS
        return float(np.linalg.norm(lp[i] - lp[j]))


#: Directory of the shipped canonical-face package data.
DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "canonical"


def _data_path(name: str) -> Path:
    return DATA_DIR / name


@functools.lru_cache(maxsize=1)
def canonical_geometry() -> CanonicalGeometry:
    """Load the shipped canonical geometry (cached)."""
    with _data_path("geometry.npz").open("rb") as f:
        z = np.load(f)
        return CanonicalGeometry(
            vertices=z["vertices"].astype(np.float32),
            uv=z["uv"].astype(np.float32),
            triangles=z["triangles"].astype(np.int32),
            layout=z["layout"].astype(np.float32),
            margin=float(z["margin"]),
        )


@functools.lru_cache(maxsize=1)
def _texture() -> np.ndarray:
    with _data_path("texture.png").open("rb") as f:
        buf = np.frombuffer(f.read(), np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[:, :, ::-1])


@functools.lru_cache(maxsize=8)
def _canonical_face(size: tuple[int, int]) -> np.ndarray:
    tex = _texture()
    h, w = size
    s = min(h, w)
    interp = cv2.INTER_AREA if s < tex.shape[0] else cv2.INTER_CUBIC
    sq = cv2.resize(tex, (s, s), interpolation=interp)
    out = np.zeros((h, w, 3), np.uint8)
    y0, x0 = (h - s) // 2, (w - s) // 2
    if (h - s) % 2 or (w - s) % 2:  # half-pixel offset: resample onto the exact layout
        m = np.float32([[1, 0, (w - s) / 2.0], [0, 1, (h - s) / 2.0]])
        out = cv2.warpAffine(sq, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    else:
        out[y0 : y0 + s, x0 : x0 + s] = sq
    out[~canonical_mask((h, w))] = 0
    out.setflags(write=False)
    return out


def _shape(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = tuple(size)[:2]  # also accepts an array .shape
    return int(h), int(w)


def canonical_face(size: int | tuple[int, int] = 256) -> np.ndarray:
    """The canonical face image ``(H_F, W_F, 3) uint8`` RGB (mean texture, black outside the face).

    ``size`` is an int (square) or ``(H_F, W_F)``. The returned array is read-only.
    """
    return _canonical_face(_shape(size))


@functools.lru_cache(maxsize=8)
def _canonical_mask(shape: tuple[int, int]) -> np.ndarray:
    geo = canonical_geometry()
    ids = rasterize_triangles(geo.layout_pixels(shape), geo.triangles, shape, depth=geo.depth_pixels(shape))
    m = ids >= 0
    m.setflags(write=False)
    return m


def canonical_mask(size: int | tuple[int, int] = 256) -> np.ndarray:
    """Boolean ``(H_F, W_F)`` mask of the canonical face (pixels covered by the mesh)."""
    return _canonical_mask(_shape(size))
