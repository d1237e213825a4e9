"""Warps between a photo and the canonical face, through an :class:`AlignedFace`.

- :func:`to_canonical`: texture unwrap, image-space array -> ``(H_F, W_F, ...)`` canonical array.
- :func:`to_image`: reproject any canonical map (e.g. a CMS) onto the photo.

With a triangle mesh (default aligner, or ``from_arrays`` with triangles / sparse landmarks)
the warps are piecewise affine per triangle, respecting visibility. For a plain point
correspondence (``from_arrays(mode="points")``) they are nearest-pixel point splats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from .mesh import barycentric, clip_barycentric, dense_grid, rasterize_triangles, visible_points

if TYPE_CHECKING:
    from .face import AlignedFace


def _remap(src: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, interpolation: int) -> np.ndarray:
    """cv2.remap for any number of channels / dtypes (constant 0 border)."""
    a = src
    if a.dtype not in (np.uint8, np.uint16, np.int16, np.float32):
        a = a.astype(np.float32)
    squeeze = a.ndim == 2
    if squeeze:
        a = a[:, :, None]
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    outs = []
    for c0 in range(0, flat.shape[2], 4):
        chunk = np.ascontiguousarray(flat[:, :, c0 : c0 + 4])
        r = cv2.remap(chunk, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if r.ndim == 2:
            r = r[:, :, None]
        outs.append(r)
    out = np.concatenate(outs, axis=2).reshape(map_x.shape + a.shape[2:])
    return out[:, :, 0] if squeeze else out


def _sample(src: np.ndarray, x: np.ndarray, y: np.ndarray, interpolation: int) -> np.ndarray:
    """Values of ``src`` at points ``x, y (M,)`` -> ``(M, ...)`` (cv2.remap, maps laid out 2D
    because remap needs both map sides < 32767)."""
    m = len(x)
    cols = 1024
    rows = max(1, -(-m // cols))
    mx = np.full(rows * cols, -1e4, np.float32)
    my = np.full(rows * cols, -1e4, np.float32)
    mx[:m], my[:m] = x, y
    out = _remap(src, mx.reshape(rows, cols), my.reshape(rows, cols), interpolation)
    return out.reshape((rows * cols,) + out.shape[2:])[:m]


def _check_image_like(arr: np.ndarray, face: AlignedFace) -> np.ndarray:
    a = np.asarray(arr)
    if a.shape[:2] != face.image.shape[:2]:
        raise ValueError(f"array of shape {a.shape} does not match the face's image {face.image.shape[:2]}")
    return a


def canonical_pixel_mapping(face: AlignedFace) -> tuple[np.ndarray, np.ndarray]:
    """For every canonical pixel: image position ``(H_F, W_F, 2) float32`` and validity
    ``(H_F, W_F) bool`` (covered by the face mesh and visible in the image). Mesh faces only."""
    m = face.mesh
    if m is None:
        raise ValueError("canonical_pixel_mapping needs a triangle mesh")
    hf, wf = face.canonical_shape
    g = dense_grid(m.canon_verts, m.triangles, (hf, wf), 1.0, m.canon_depth)
    if g.points is face.verts_canonical:  # density 1: the face's own points are the pixel grid
        pts, vis = face.verts_image, face.visible
    else:
        pts, _, vis = visible_points(
            g, m.triangles, m.img_verts, m.img_depth, m.front, face.image.shape[:2], m.depth_tol
        )
    pos = np.full((hf, wf, 2), -1e4, np.float32)
    valid = np.zeros((hf, wf), bool)
    ij = np.floor(g.points + 0.5).astype(np.int64)
    pos[ij[:, 1], ij[:, 0]] = pts
    valid[ij[:, 1], ij[:, 0]] = vis
    pos[~valid] = -1e4
    return pos, valid


def _point_warp(
    src: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray, dst_shape: tuple[int, int], interpolation: int
) -> tuple[np.ndarray, np.ndarray]:
    """Warp through bare point correspondences: sample ``src`` at ``src_points`` (N x 2) and
    average the samples landing on each pixel ``round(dst_points)`` of a ``dst_shape`` image.

    Returns ``(warped dst_shape + channels, uint8 like src or float32; covered dst_shape bool)``.
    """
    h, w = dst_shape
    dst = np.floor(dst_points + 0.5).astype(np.int64)
    ok = (dst[:, 0] >= 0) & (dst[:, 0] < w) & (dst[:, 1] >= 0) & (dst[:, 1] < h)
    src_points, dst = src_points[ok], dst[ok]
    samples = _sample(src, src_points[:, 0], src_points[:, 1], interpolation).reshape(len(dst), -1).astype(np.float64)
    flat = dst[:, 1] * w + dst[:, 0]
    count = np.bincount(flat, minlength=h * w)
    acc = np.stack([np.bincount(flat, samples[:, k], minlength=h * w) for k in range(samples.shape[1])], axis=1)
    covered = count > 0
    acc[covered] /= count[covered, None]
    out = acc.reshape((h, w) + src.shape[2:])
    out = np.clip(np.round(out), 0, 255).astype(np.uint8) if src.dtype == np.uint8 else out.astype(np.float32)
    return out, covered.reshape(h, w)


def to_canonical(
    image: np.ndarray,
    face: AlignedFace,
    *,
    return_mask: bool = False,
    interpolation: int = cv2.INTER_LINEAR,
):
    """Unwrap an image-space array onto the canonical face.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array aligned with ``face.image`` (the photo itself
            for the texture, or any per-pixel map).
        face: the :class:`AlignedFace`.
        return_mask: also return the ``(H_F, W_F) bool`` mask of canonical pixels that are
            visible in the image.
    Returns:
        ``(H_F, W_F[, C])`` array (uint8/uint16/int16/float32 kept, others -> float32), 0 where
        the canonical pixel is not visible; and the mask if asked.
    """
    a = _check_image_like(image, face)
    hf, wf = face.canonical_shape
    if face.mesh is not None:
        pos, valid = canonical_pixel_mapping(face)
        out = _remap(a, pos[:, :, 0].copy(), pos[:, :, 1].copy(), interpolation)
        out[~valid] = 0
        return (out, valid) if return_mask else out
    # point correspondence: bilinear sample at M_I, average at round(M_F)
    vis = face.visible
    out, valid = _point_warp(a, face.verts_image[vis], face.verts_canonical[vis], (hf, wf), interpolation)
    return (out, valid) if return_mask else out


def to_image(
    canonical_map: np.ndarray,
    face: AlignedFace,
    *,
    return_mask: bool = False,
    interpolation: int = cv2.INTER_LINEAR,
    max_map_side: int = 768,
):
    """Reproject a canonical map onto the photo.

    Args:
        canonical_map: ``(H_F, W_F)`` or ``(H_F, W_F, C)`` (e.g. a CIS/CMS map or a texture).
        face: the :class:`AlignedFace`.
        return_mask: also return the ``(H, W) bool`` mask of image pixels covered by the
            visible face.
        max_map_side: the pixel -> canonical coordinate map is rasterised at most this many
            pixels across the face and upsampled linearly (exact for faces up to that size).
    Returns:
        ``(H, W[, C])`` array (uint8/uint16/int16/float32 kept, others -> float32), 0 outside
        the visible face; and the mask if asked.
    """
    cm = np.asarray(canonical_map)
    hf, wf = face.canonical_shape
    if cm.shape[:2] != (hf, wf):
        raise ValueError(f"canonical map of shape {cm.shape} does not match canonical_shape {face.canonical_shape}")
    h, w = face.image.shape[:2]
    m = face.mesh
    if m is not None:
        v = m.img_verts.astype(np.float64)
        x0 = int(max(0, np.floor(v[:, 0].min()) - 1))
        y0 = int(max(0, np.floor(v[:, 1].min()) - 1))
        x1 = int(min(w, np.ceil(v[:, 0].max()) + 2))
        y1 = int(min(h, np.ceil(v[:, 1].max()) + 2))
        out_shape = (h, w) + cm.shape[2:]
        dtype = cm.dtype if cm.dtype in (np.uint8, np.uint16, np.int16, np.float32) else np.float32
        out = np.zeros(out_shape, dtype)
        mask = np.zeros((h, w), bool)
        if x1 <= x0 or y1 <= y0:
            return (out, mask) if return_mask else out
        # canonical coordinates of every image pixel, rasterised at <= max_map_side px across the
        # face (piecewise affine, so a linear upsampling of the coordinate maps is near exact)
        bw, bh = x1 - x0, y1 - y0
        sc = min(1.0, max_map_side / max(bw, bh))
        rw, rh = max(2, int(np.ceil(bw * sc))), max(2, int(np.ceil(bh * sc)))
        sx, sy = (rw - 1) / max(bw - 1, 1), (rh - 1) / max(bh - 1, 1)  # corner-aligned grid
        vs = (v - [x0, y0]) * [sx, sy]
        ids = rasterize_triangles(vs, m.triangles, (rh, rw), depth=m.img_depth, tri_mask=m.front)
        yy, xx = np.nonzero(ids >= 0)
        t = ids[yy, xx]
        p = np.stack([xx, yy], axis=1).astype(np.float64)
        c = m.triangles[t]
        b = clip_barycentric(barycentric(p, vs[c[:, 0]], vs[c[:, 1]], vs[c[:, 2]]))
        q = np.einsum("nk,nkd->nd", b, m.canon_verts[c].astype(np.float64)).astype(np.float32)
        qmap = np.full((rh, rw, 2), -1e4, np.float32)
        qmap[yy, xx] = q
        inside = (ids >= 0).astype(np.uint8)
        if (rw, rh) != (bw, bh):
            # fill outside pixels with their nearest inside value before interpolating
            valid = inside.astype(bool)
            _, lab = cv2.distanceTransformWithLabels(1 - inside, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
            iy, ix = np.nonzero(valid)
            lut = np.zeros(lab.max() + 1, np.int64)
            lut[lab[iy, ix]] = np.arange(len(iy))
            src = lut[lab]
            qmap = qmap[iy[src], ix[src]]
            qmap = cv2.resize(qmap, (bw, bh), interpolation=cv2.INTER_LINEAR)
            inside = cv2.resize(inside, (bw, bh), interpolation=cv2.INTER_NEAREST)
        sub = _remap(cm, np.ascontiguousarray(qmap[:, :, 0]), np.ascontiguousarray(qmap[:, :, 1]), interpolation)
        msk = inside.astype(bool)
        sub[~msk] = 0
        out[y0:y1, x0:x1] = sub
        mask[y0:y1, x0:x1] = msk
        return (out, mask) if return_mask else out
    # point correspondence: value at M_F splatted to round(M_I), averaged
    vis = face.visible
    out, mask = _point_warp(cm, face.verts_canonical[vis], face.verts_image[vis], (h, w), interpolation)
    return (out, mask) if return_mask else out
