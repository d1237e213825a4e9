"""``AlignedFace``: one face of one image with its dense correspondence to the canonical face."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from . import warp
from .geometry import similarity_transform
from .image_io import as_rgb_uint8
from .mesh import dense_grid, front_facing, signed_areas, visible_points

#: ``from_arrays`` in "auto" mode treats up to this many points as sparse landmarks (meshed).
SPARSE_MAX_POINTS = 2000


@dataclass(frozen=True, eq=False)
class MeshBinding:
    """A triangle mesh fitted to one image (used by the dense grid and the warps).

    ``triangles (T, 3)``; ``canon_verts (V, 2)`` canonical pixel positions; ``canon_depth (V,)``
    or None; ``img_verts (V, 2)`` image pixel positions; ``img_depth (V,)`` or None (pixel
    units, smaller = nearer the camera); ``front (T,)`` triangles front-facing in the image *and*
    in the canonical layout; ``depth_tol`` z-buffer tolerance in pixels.
    """

    triangles: np.ndarray
    canon_verts: np.ndarray
    canon_depth: np.ndarray | None
    img_verts: np.ndarray
    img_depth: np.ndarray | None
    front: np.ndarray
    depth_tol: float


def window_side(size: float) -> int:
    """A window size in whole pixels: ``size`` rounded to the nearest integer, at least 1."""
    return max(1, int(round(size)))


@dataclass(eq=False)
class AlignedFace:
    """One face with a dense 1:1 correspondence ``M_I <-> M_F`` to the canonical face.

    Attributes:
        image: ``(H, W, 3) uint8`` RGB photo.
        verts_image: ``(N, 2) float32`` image position ``M_I`` (x, y pixels) of each point.
        verts_canonical: ``(N, 2) float32`` canonical position ``M_F`` (x, y pixels of the
            ``canonical_shape`` face). For the default aligner this is one fixed grid shared
            by all images (the same array object), so many faces can be splatted at once.
        visible: ``(N,) bool``: the point is inside the image, on a front-facing triangle and
            not hidden behind another part of the face (z-buffer). Occlusion and splatting
            must use only visible points.
        canonical_shape: ``(H_F, W_F)``.
        face_box: ``(x0, y0, x1, y1)`` face detector box in image pixels (the landmark
            bounding box where no detector box matched, see ``box_source``).
        face_scale: size of the face in the image, in pixels: the outer-eye-corner distance
            (landmarks 33-263) corrected for pose: ``canonical_scale`` times the RMS size ratio
            of the 3D landmarks to the 3D canonical model (so it does not shrink with yaw).
            For ``from_arrays`` faces: ``canonical_scale`` times the scale of a least-squares
            similarity transform from canonical to image points (visible points).
        canonical_scale: the same measure on the canonical face (outer-eye-corner distance in
            canonical pixels; for ``from_arrays`` faces, unless given, half the square root of the
            canonical points' convex-hull area, close to the inter-ocular distance). An image
            patch of ``p`` px maps to ``p * canonical_scale / face_scale`` canonical px.
        source: file name (or None) used in messages.
        landmarks: ``(L, 3) float32`` raw landmarks (x, y, depth) in image pixels, or None.
        depth: ``(N,) float32`` depth of each point (pixels, smaller = nearer), or None.
        score: detector confidence, or None.
        n_faces: number of faces found in the image; ``face_index`` this face's rank in the
            face-choice order (:class:`~facesal_fast.align.Aligner`: confident faces first,
            largest first).
        note: how this face was chosen (e.g. "largest of 3 faces, detector score 0.95"; it
            ends "aligned turned 180 degrees (it scored higher that way up)" for an upside-down
            photo).
        mesh: the fitted :class:`MeshBinding`, or None for a plain point correspondence.
    """

    image: np.ndarray
    verts_image: np.ndarray
    verts_canonical: np.ndarray
    visible: np.ndarray
    canonical_shape: tuple[int, int]
    face_box: tuple[float, float, float, float]
    face_scale: float
    canonical_scale: float
    source: str | None = None
    landmarks: np.ndarray | None = None
    depth: np.ndarray | None = None
    score: float | None = None
    n_faces: int = 1
    face_index: int = 0
    note: str = ""
    box_source: str = "detector"
    mesh: MeshBinding | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (
            f"AlignedFace(source={self.source!r}, image={self.image.shape}, N={self.n_points}, "
            f"visible={self.visible_fraction:.2f}, face_box={tuple(round(v, 1) for v in self.face_box)}, "
            f"face_scale={self.face_scale:.1f}, canonical_shape={self.canonical_shape}, note={self.note!r})"
        )

    @property
    def n_points(self) -> int:
        """N, the number of dense correspondence points."""
        return int(len(self.verts_canonical))

    @property
    def visible_fraction(self) -> float:
        """Share of the N points that are visible."""
        return float(self.visible.mean()) if len(self.visible) else 0.0

    def canonical_patch_size(self, patch: float, affine: np.ndarray | None = None) -> float:
        """Unrounded canonical size of an occlusion window of ``patch`` pixels:
        ``patch * canonical_scale / face_scale``, the face size measured in the pixels the
        window is drawn in: the photo's, or a model input's when ``affine`` (``2 x 3``, image ->
        input pixels, from ``Scorer.prepare``) is given."""
        input_scale = float(self.face_scale)
        if affine is not None:
            input_scale *= float(np.sqrt(abs(np.linalg.det(np.asarray(affine)[:, :2]))))
        return patch * float(self.canonical_scale) / input_scale

    def canonical_patch(self, patch: int, affine: np.ndarray | None = None) -> int:
        """:meth:`canonical_patch_size` as a window side (:func:`window_side`, >= 1): the CIS
        splat window for occlusion windows of ``patch`` pixels."""
        return window_side(self.canonical_patch_size(patch, affine))

    def to_canonical(self, image: np.ndarray | None = None, **kw):
        """See :func:`facesal_fast.align.warp.to_canonical` (default: this face's image)."""
        return warp.to_canonical(self.image if image is None else image, self, **kw)

    def to_image(self, canonical_map: np.ndarray, **kw):
        """See :func:`facesal_fast.align.warp.to_image`."""
        return warp.to_image(canonical_map, self, **kw)

    @classmethod
    def from_arrays(
        cls,
        image: np.ndarray,
        verts_image: np.ndarray,
        verts_canonical: np.ndarray,
        canonical_shape: tuple[int, int],
        visible: np.ndarray | None = None,
        *,
        triangles: np.ndarray | None = None,
        mode: str = "auto",
        density: float = 1.0,
        source: str | None = None,
        face_box: tuple[float, float, float, float] | None = None,
        face_scale: float | None = None,
        canonical_scale: float | None = None,
        depth_tol: float | None = None,
        canonical_depth: np.ndarray | None = None,
    ) -> "AlignedFace":
        """Wrap a correspondence computed elsewhere (PRNet, a 3DMM fit, 68 landmarks, ...).

        Args:
            image: ``(H, W, 3) uint8`` RGB (other layouts are converted).
            verts_image: ``(N, 2|3)`` x, y in image pixels; an optional third column is depth
                (pixel units, smaller = nearer the camera), used only for the z-buffer.
            verts_canonical: ``(N, 2|3)`` x, y in canonical pixels (third column ignored).
            canonical_shape: ``(H_F, W_F)``.
            visible: ``(N,) bool`` or None. Points mode: which points to use (and-ed with
                "inside the image"). Mesh mode: per-vertex flags; triangles touching a hidden
                vertex are dropped, then front-facing + z-buffer visibility is computed.
            triangles: ``(T, 3)`` vertex indices: the points are mesh vertices and the mesh is
                densified on the canonical grid (``density`` points per canonical pixel along
                each axis, i.e. ``stride = 1 / density``), like the default aligner.
            mode: ``"mesh"`` (densify; triangles from Delaunay on the canonical points when not
                given), ``"points"`` (use the N points as they are), ``"auto"`` (mesh when
                triangles are given or N <= ``SPARSE_MAX_POINTS``, e.g. 68 landmarks).
        """
        img = as_rgb_uint8(image, source)
        vi, vc = _checked_points(verts_image, verts_canonical)
        cshape = (int(canonical_shape[0]), int(canonical_shape[1]))
        mode = _resolved_mode(mode, triangles, len(vi))
        if canonical_scale is None:
            canonical_scale = float(np.sqrt(max(_hull_area(vc[:, :2]), 1.0)) / 2.0)
        if mode == "mesh":
            dense = _mesh_correspondence(
                vi, vc, img.shape[:2], cshape, visible, triangles, density, depth_tol, canonical_depth
            )
        else:
            dense = _point_correspondence(vi, vc, img.shape[:2], visible)
        if face_scale is None:
            face_scale = canonical_scale * _similarity_scale(dense.fit_canonical, dense.fit_image)
        box_source = "given" if face_box is not None else "points"
        if face_box is None:
            bi = dense.fit_image
            face_box = (float(bi[:, 0].min()), float(bi[:, 1].min()), float(bi[:, 0].max()), float(bi[:, 1].max()))
        return cls(
            image=img,
            verts_image=np.ascontiguousarray(dense.verts_image, np.float32),
            verts_canonical=dense.verts_canonical,
            visible=np.ascontiguousarray(dense.visible, bool),
            canonical_shape=cshape,
            face_box=tuple(float(v) for v in face_box),
            face_scale=float(face_scale),
            canonical_scale=float(canonical_scale),
            source=source,
            landmarks=dense.landmarks,
            depth=dense.depth,
            note="from_arrays (" + mode + ")",
            box_source=box_source,
            mesh=dense.mesh,
        )


class _Correspondence(NamedTuple):
    """What :meth:`AlignedFace.from_arrays` builds from the given points: the ``(N, 2)``
    image and canonical positions, ``(N,)`` visibility and depth (or None), the landmarks
    (``(L, 2|3)``, or None), the mesh (or None) and the ``(M, 2)`` canonical and image
    points that the face scale and the face box are fitted to."""

    verts_image: np.ndarray
    verts_canonical: np.ndarray
    visible: np.ndarray
    depth: np.ndarray | None
    landmarks: np.ndarray | None
    mesh: MeshBinding | None
    fit_canonical: np.ndarray
    fit_image: np.ndarray


def _checked_points(verts_image: np.ndarray, verts_canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 2|3)`` float32 image and canonical points, or a ValueError."""
    vi = np.asarray(verts_image, np.float32)
    vc = np.asarray(verts_canonical, np.float32)
    if vi.ndim != 2 or vi.shape[1] not in (2, 3) or vc.ndim != 2 or vc.shape[1] not in (2, 3):
        raise ValueError("verts_image and verts_canonical must be (N, 2) or (N, 3)")
    if len(vi) != len(vc):
        raise ValueError(f"verts_image has {len(vi)} points but verts_canonical has {len(vc)}")
    if not (np.isfinite(vi[:, :2]).all() and np.isfinite(vc[:, :2]).all()):
        raise ValueError("non-finite coordinates")
    return vi, vc


def _resolved_mode(mode: str, triangles: np.ndarray | None, n_points: int) -> str:
    """``"mesh"`` or ``"points"`` for ``mode`` (``"auto"``: mesh with triangles or at most
    :data:`SPARSE_MAX_POINTS` points)."""
    if mode == "auto":
        mode = "mesh" if (triangles is not None or n_points <= SPARSE_MAX_POINTS) else "points"
    if mode not in ("mesh", "points"):
        raise ValueError(f"mode must be 'auto', 'mesh' or 'points', not {mode!r}")
    return mode


def _mesh_correspondence(
    vi: np.ndarray,
    vc: np.ndarray,
    image_shape: tuple[int, int],
    canonical_shape: tuple[int, int],
    visible: np.ndarray | None,
    triangles: np.ndarray | None,
    density: float,
    depth_tol: float | None,
    canonical_depth: np.ndarray | None,
) -> _Correspondence:
    """The points ``vi``/``vc`` (``(V, 2|3)``) as mesh vertices, densified on the canonical
    grid; visibility from front-facing triangles and the z-buffer (see ``from_arrays``)."""
    if triangles is None:
        from scipy.spatial import Delaunay  # about 1 s to import: only for a sparse mesh without triangles

        triangles = Delaunay(vc[:, :2].astype(np.float64)).simplices
    tris = np.asarray(triangles, np.int32)
    if tris.ndim != 2 or tris.shape[1] != 3 or tris.min() < 0 or tris.max() >= len(vi):
        raise ValueError("triangles must be (T, 3) indices into the points")
    zi = vi[:, 2].copy() if vi.shape[1] == 3 else None
    grid = dense_grid(vc[:, :2], tris, canonical_shape, 1.0 / density, canonical_depth)
    ac = signed_areas(vc, tris)
    sign = 1.0 if (ac > 0).sum() >= (ac < 0).sum() else -1.0
    front = front_facing(vi, vc, tris) & (ac * sign > 0)
    if depth_tol is None:
        depth_tol = 0.05 * float(np.sqrt(max(_hull_area(vi[:, :2]), 1.0)))
    if visible is not None:  # per-vertex flags: drop triangles touching a hidden vertex
        vv = np.asarray(visible, bool).reshape(-1)
        if len(vv) != len(vi):
            raise ValueError(f"visible must be ({len(vi)},), got {np.shape(visible)}")
        front &= vv[tris].all(axis=1)
    pts, z, vis = visible_points(grid, tris, vi[:, :2], zi, front, image_shape, depth_tol)
    cd = None if canonical_depth is None else np.asarray(canonical_depth, np.float32)
    mesh = MeshBinding(tris, vc[:, :2].copy(), cd, vi[:, :2].copy(), zi, front, float(depth_tol))
    depth = z if zi is not None else None
    return _Correspondence(pts, grid.points, vis, depth, vi.copy(), mesh, vc[:, :2], vi[:, :2])


def _point_correspondence(
    vi: np.ndarray, vc: np.ndarray, image_shape: tuple[int, int], visible: np.ndarray | None
) -> _Correspondence:
    """The points ``vi``/``vc`` (``(N, 2|3)``) used as they are, visible where inside the
    image (and ``visible``); the scale and box fit the visible ones (all when fewer than 3)."""
    h, w = image_shape
    verts_i, verts_c = vi[:, :2].copy(), vc[:, :2].copy()
    inside = (verts_i[:, 0] >= -0.5) & (verts_i[:, 0] < w - 0.5) & (verts_i[:, 1] >= -0.5) & (verts_i[:, 1] < h - 0.5)
    vis = inside if visible is None else (np.asarray(visible, bool).reshape(-1) & inside)
    if len(vis) != len(verts_i):
        raise ValueError("visible must be (N,)")
    zi = vi[:, 2].copy() if vi.shape[1] == 3 else None
    fit = vis if vis.sum() >= 3 else np.ones(len(vis), bool)
    return _Correspondence(verts_i, verts_c, vis, zi, None, None, verts_c[fit], verts_i[fit])


def _hull_area(p: np.ndarray) -> float:
    if len(p) < 3:
        return 0.0
    q = np.ascontiguousarray(np.asarray(p, np.float32)[:, :2]).reshape(-1, 1, 2)
    return float(cv2.contourArea(cv2.convexHull(q)))


def _similarity_scale(src: np.ndarray, dst: np.ndarray) -> float:
    """Scale of the least-squares 2D similarity ``src (N, 2) -> dst (N, 2)`` (reflection allowed);
    1 where there is no scale to fit (no points, or all ``src`` points coincide)."""
    try:
        return float(np.linalg.norm(similarity_transform(src, dst, reflection=True)[:, 0]))
    except ValueError:
        return 1.0
