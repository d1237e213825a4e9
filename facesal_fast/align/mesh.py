"""Triangle-mesh machinery: rasterisation, barycentric coordinates, densification, visibility.

All points are ``(x, y)`` float32 pixel coordinates with pixel centres at integers.
Depth is in pixel units, smaller = nearer the camera (MediaPipe's convention).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel bits for cv2.fillPoly


def rasterize_triangles(
    verts: np.ndarray,
    triangles: np.ndarray,
    shape: tuple[int, int],
    depth: np.ndarray | None = None,
    tri_mask: np.ndarray | None = None,
    offset: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
) -> np.ndarray:
    """Triangle id of every pixel of an ``(H, W)`` buffer; ``-1`` where no triangle.

    ``verts (V, 2)`` pixel positions, ``triangles (T, 3)`` vertex indices. The buffer pixel
    ``(i, j)`` is at position ``offset + (j, i) / scale``. With ``depth (V,)`` triangles are
    drawn far to near (painter's z-buffer, nearest wins); ``tri_mask (T,)`` selects the
    triangles to draw. Returns ``(H, W) int32``.
    """
    h, w = shape
    ids = np.full((h, w), -1, np.int32)
    tri = np.asarray(triangles, np.int64)
    idx = np.arange(len(tri))
    if tri_mask is not None:
        idx = idx[np.asarray(tri_mask, bool)]
    if len(idx) == 0:
        return ids
    v = (np.asarray(verts, np.float64)[:, :2] - np.asarray(offset, np.float64)) * scale
    if depth is not None:
        zt = np.asarray(depth, np.float64)[tri[idx]].mean(axis=1)
        idx = idx[np.argsort(-zt, kind="stable")]
    pts = np.round(v[tri[idx]] * (1 << _SHIFT)).astype(np.int32)  # (T', 3, 2)
    # skip triangles entirely outside the buffer
    lim = np.array([w, h]) * (1 << _SHIFT)
    inside = (pts.max(axis=1) >= -(1 << _SHIFT)).all(axis=1) & (pts.min(axis=1) < lim + (1 << _SHIFT)).all(axis=1)
    for t, p in zip(idx[inside].tolist(), pts[inside]):
        cv2.fillPoly(ids, [p], int(t), lineType=cv2.LINE_8, shift=_SHIFT)
    return ids


def barycentric(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates ``(M, 3)`` of ``points (M, 2)`` in triangles ``a, b, c (M, 2)``.

    Degenerate triangles give ``(1/3, 1/3, 1/3)``.
    """
    p = np.asarray(points, np.float64)
    a = np.asarray(a, np.float64)
    v0 = np.asarray(b, np.float64) - a
    v1 = np.asarray(c, np.float64) - a
    v2 = p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok = np.abs(den) > 1e-12
    den = np.where(ok, den, 1.0)
    l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    out = np.stack([1.0 - l1 - l2, l1, l2], axis=1)
    out[~ok] = 1.0 / 3.0
    return out


def clip_barycentric(bary: np.ndarray) -> np.ndarray:
    """Clip barycentric coordinates to ``>= 0`` and renormalise (projects onto the triangle)."""
    b = np.clip(bary, 0.0, None)
    s = b.sum(axis=1, keepdims=True)
    return np.where(s > 0, b / np.where(s > 0, s, 1.0), 1.0 / 3.0)


def signed_areas(verts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed area ``(T,)`` of each triangle in (x, y) pixel coordinates (y down)."""
    v = np.asarray(verts, np.float64)[:, :2][np.asarray(triangles, np.int64)]
    e1 = v[:, 1] - v[:, 0]
    e2 = v[:, 2] - v[:, 0]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


@dataclass(frozen=True)
class DenseGrid:
    """A fixed dense sampling of a mesh in canonical space.

    ``points (N, 2)`` float32 canonical pixel positions; ``tri (N,)`` int32 triangle id of each
    point; ``bary (N, 3)`` float32 barycentric coordinates in that triangle (in ``[0, 1]``);
    ``corners (N, 3)`` int32 the triangle's vertex indices.
    """

    points: np.ndarray
    tri: np.ndarray
    bary: np.ndarray
    corners: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    def mix(self, verts: np.ndarray) -> np.ndarray:
        """The same barycentric mix of per-vertex values ``verts (V, D)`` -> ``(N, D)`` float32."""
        v = np.asarray(verts, np.float32)
        c, b = self.corners, self.bary
        out = v[c[:, 0]] * b[:, 0:1]
        out += v[c[:, 1]] * b[:, 1:2]
        out += v[c[:, 2]] * b[:, 2:3]
        return out


def densify(
    canon_verts: np.ndarray,
    triangles: np.ndarray,
    shape: tuple[int, int],
    stride: float = 1.0,
    canon_depth: np.ndarray | None = None,
) -> DenseGrid:
    """Sample every canonical grid point covered by the mesh.

    Grid points are ``(x, y) = (k * stride, l * stride)`` inside an ``(H_F, W_F)`` canonical
    image; each gets the id of the (front-most) triangle covering its pixel and its barycentric
    coordinates there. Triangles that are back-facing in canonical space are dropped (their
    canonical area sign differs from the majority). Returns a :class:`DenseGrid`.
    """
    if stride <= 0:
        raise ValueError("stride must be > 0")
    h, w = shape
    tris = np.asarray(triangles, np.int32)
    cv = np.asarray(canon_verts, np.float32)[:, :2]
    area = signed_areas(cv, tris)
    sign = 1.0 if (area > 0).sum() >= (area < 0).sum() else -1.0
    front = area * sign > 0
    ids = rasterize_triangles(cv, tris, shape, depth=canon_depth, tri_mask=front)
    xs = np.arange(0.0, w - 0.5 + 1e-6, stride, dtype=np.float64)
    ys = np.arange(0.0, h - 0.5 + 1e-6, stride, dtype=np.float64)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    pix = np.clip(np.floor(pts + 0.5).astype(np.int64), 0, [w - 1, h - 1])
    t = ids[pix[:, 1], pix[:, 0]]
    keep = t >= 0
    pts, t, pix = pts[keep], t[keep], pix[keep]
    t = _containing_triangle(pts, t, pix, ids, cv, tris)
    c = tris[t]
    bary = clip_barycentric(barycentric(pts, cv[c[:, 0]], cv[c[:, 1]], cv[c[:, 2]]))
    return DenseGrid(
        points=pts.astype(np.float32),
        tri=t.astype(np.int32),
        bary=bary.astype(np.float32),
        corners=np.ascontiguousarray(c, np.int32),
    )


@functools.lru_cache(maxsize=16)
def _cached_grid(key: tuple, canon_verts_bytes: bytes, tris_bytes: bytes, depth_bytes: bytes | None) -> DenseGrid:
    shape, stride, nv, nt = key
    cv = np.frombuffer(canon_verts_bytes, np.float32).reshape(nv, 2)
    tr = np.frombuffer(tris_bytes, np.int32).reshape(nt, 3)
    cd = None if depth_bytes is None else np.frombuffer(depth_bytes, np.float32)
    return densify(cv, tr, shape, stride=stride, canon_depth=cd)


def dense_grid(
    canon_verts: np.ndarray, triangles: np.ndarray, shape: tuple[int, int], stride: float, canon_depth=None
) -> DenseGrid:
    """Cached :func:`densify` (the same arrays are returned for the same mesh, shape and
    stride, so all faces share one canonical points array)."""
    cv = np.ascontiguousarray(canon_verts, np.float32)[:, :2].copy()
    tr = np.ascontiguousarray(triangles, np.int32)
    cd = None if canon_depth is None else np.ascontiguousarray(canon_depth, np.float32).tobytes()
    key = ((int(shape[0]), int(shape[1])), float(stride), len(cv), len(tr))
    return _cached_grid(key, cv.tobytes(), tr.tobytes(), cd)


def _containing_triangle(pts, t, pix, ids, cv, tris, eps: float = 1e-6) -> np.ndarray:
    """Rasterisation assigns edge pixels to either neighbour; re-pick, among the triangle ids of
    the 3x3 pixel neighbourhood, one that really contains the point (kept where none does)."""
    h, w = ids.shape
    c = tris[t]
    inside = barycentric(pts, cv[c[:, 0]], cv[c[:, 1]], cv[c[:, 2]]).min(axis=1) >= -eps
    bad = np.flatnonzero(~inside)
    t = t.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if len(bad) == 0:
                return t
            q = pix[bad] + np.array([dx, dy])
            ok = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
            cand = np.full(len(bad), -1, np.int64)
            cand[ok] = ids[q[ok, 1], q[ok, 0]]
            has = cand >= 0
            cc = tris[np.where(has, cand, 0)]
            b = barycentric(pts[bad], cv[cc[:, 0]], cv[cc[:, 1]], cv[cc[:, 2]]).min(axis=1)
            hit = has & (b >= -eps)
            t[bad[hit]] = cand[hit]
            bad = bad[~hit]
    return t


def front_facing(img_verts: np.ndarray, canon_verts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``(T,)`` bool: triangles whose image winding equals their canonical winding.

    Under the (weak-perspective) projection of the face this is the sign of the 3D normal's
    component towards the camera, i.e. back-facing triangles are False.
    """
    ai = signed_areas(img_verts, triangles)
    ac = signed_areas(canon_verts, triangles)
    return (ai * ac) > 0


def visible_points(
    grid: DenseGrid,
    triangles: np.ndarray,
    img_verts: np.ndarray,
    img_depth: np.ndarray | None,
    front: np.ndarray,
    image_shape: tuple[int, int],
    depth_tol: float,
    zbuffer_size: int = 384,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project a dense grid into an image and test its visibility.

    ``img_verts (V, 2)`` image positions, ``img_depth (V,)`` depths (None: no z-test),
    ``front (T,)`` front-facing triangles. Returns ``points (N, 2) float32`` image positions,
    ``depth (N,) float32`` (zeros without depth) and ``visible (N,) bool``: inside the image,
    on a front-facing triangle, and not behind the z-buffer surface by more than ``depth_tol``.
    The z-buffer is rasterised over the face's bounding box at most ``zbuffer_size`` px across.
    """
    tris = np.asarray(triangles, np.int32)
    h, w = image_shape
    iv = np.asarray(img_verts, np.float32)[:, :2]
    if img_depth is None:
        pts = grid.mix(iv)
        z = np.zeros(len(pts), np.float32)
    else:
        zv = np.asarray(img_depth, np.float32)
        pz = grid.mix(np.concatenate([iv, zv[:, None]], axis=1))
        pts, z = np.ascontiguousarray(pz[:, :2]), np.ascontiguousarray(pz[:, 2])
    vis = front[grid.tri]
    vis &= (pts[:, 0] >= -0.5) & (pts[:, 0] < w - 0.5) & (pts[:, 1] >= -0.5) & (pts[:, 1] < h - 0.5)
    if img_depth is None:
        return pts, z, vis
    v2 = iv.astype(np.float64)
    lo = np.maximum(np.floor(v2.min(axis=0)) - 2, [-1, -1])
    hi = np.minimum(np.ceil(v2.max(axis=0)) + 2, [w, h])
    ext = float(max(hi - lo))
    scale = min(1.0, zbuffer_size / max(ext, 1.0))
    bh, bw = (int(np.ceil((hi[1] - lo[1]) * scale)) + 1, int(np.ceil((hi[0] - lo[0]) * scale)) + 1)
    ids = rasterize_triangles(v2, tris, (bh, bw), depth=zv, tri_mask=front, offset=tuple(lo), scale=scale)
    cell = np.floor((pts - lo.astype(np.float32)) * np.float32(scale) + np.float32(0.5)).astype(np.int64)
    np.clip(cell[:, 0], 0, bw - 1, out=cell[:, 0])
    np.clip(cell[:, 1], 0, bh - 1, out=cell[:, 1])
    occ = ids[cell[:, 1], cell[:, 0]]
    # only points whose buffer pixel belongs to another triangle need a depth comparison
    chk = np.flatnonzero(vis & (occ >= 0) & (occ != grid.tri))
    if len(chk):
        c = tris[occ[chk]]
        b = clip_barycentric(barycentric(pts[chk], v2[c[:, 0]], v2[c[:, 1]], v2[c[:, 2]]))
        zb = (b * zv[c]).sum(axis=1)  # depth of the occluding triangle, clamped to it
        vis[chk[z[chk] > zb + depth_tol]] = False
    return pts, z, vis
