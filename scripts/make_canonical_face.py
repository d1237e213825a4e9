#!/usr/bin/env python
"""Build the canonical-face package data of ``facesal_fast.align`` (deterministic).

1. ``geometry.npz`` from MediaPipe's canonical face model (``canonical_face_model.obj``):
   the 468 vertices, their UVs, the 898 triangles, and the frontal layout (orthographic
   frontal projection x, -y of the vertices, normalised into the unit square with a margin).
2. ``texture.png``: the mean face texture. Every photo in the faces folder is aligned with the
   default MediaPipe aligner, unwrapped to canonical space (``to_canonical``, visible pixels
   only), colour-normalised (each face's mean colour scaled to the set's mean colour, which
   removes white-balance casts) and averaged with per-pixel visibility counts. Pixels seen in
   fewer than 3 faces are filled from their mirror image (the face is near symmetric) and then
   by inpainting.
3. ``LICENSE-mediapipe.txt`` copied next to them.

Usage: python scripts/make_canonical_face.py --obj OBJ --faces DIR [--out DIR] [--size 512]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MARGIN = 0.06


def parse_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    verts, uvs, faces, faces_uv = [], [], [], []
    for line in path.read_text().splitlines():
        p = line.split()
        if not p:
            continue
        if p[0] == "v":
            verts.append([float(x) for x in p[1:4]])
        elif p[0] == "vt":
            uvs.append([float(x) for x in p[1:3]])
        elif p[0] == "f":
            faces.append([int(q.split("/")[0]) - 1 for q in p[1:4]])
            faces_uv.append([int(q.split("/")[1]) - 1 for q in p[1:4]])
    v = np.array(verts, np.float32)
    vt = np.array(uvs, np.float32)
    f = np.array(faces, np.int32)
    ft = np.array(faces_uv, np.int32)
    uv = np.zeros((len(v), 2), np.float32)
    uv[f.ravel()] = vt[ft.ravel()]
    return v, uv, f


def make_geometry(obj: Path, out: Path) -> None:
    v, uv, f = parse_obj(obj)
    assert v.shape == (468, 3) and f.shape == (898, 3), (v.shape, f.shape)
    xy = np.stack([v[:, 0], -v[:, 1]], axis=1)  # frontal orthographic projection, y down
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    centre = (lo + hi) / 2
    extent = float((hi - lo).max()) / (1.0 - 2 * MARGIN)
    layout = ((xy - centre) / extent + 0.5).astype(np.float32)
    np.savez_compressed(out / "geometry.npz", vertices=v, uv=uv, triangles=f, layout=layout, margin=np.float32(MARGIN))
    print(f"geometry: {len(v)} vertices, {len(f)} triangles -> {out / 'geometry.npz'}")


def make_texture(faces_dir: Path, out: Path, size: int) -> None:
    import cv2

    from facesal_fast.align import Aligner, NoFaceError, load_image
    from facesal_fast.align.canonical import canonical_mask

    aligner = Aligner(canonical_size=size, density=0.25)
    files = sorted(p for p in faces_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    acc = np.zeros((size, size, 3), np.float64)
    cnt = np.zeros((size, size), np.float64)
    texs, masks = [], []
    for p in files:
        try:
            faces = aligner(load_image(p), all_faces=True, source=p.name)
        except NoFaceError as e:
            print("skip", e)
            continue
        for face in faces:
            if face.visible_fraction < 0.6:  # skip strong profiles
                continue
            tex, m = face.to_canonical(face.image, return_mask=True)
            texs.append(tex.astype(np.float64))
            masks.append(m)
    means = np.array([t[m].mean(axis=0) for t, m in zip(texs, masks)])
    target = means.mean(axis=0)
    for t, m, mu in zip(texs, masks, means):
        acc[m] += t[m] * (target / np.maximum(mu, 1.0))
        cnt[m] += 1
    print(f"texture: {len(texs)} faces from {len(files)} files")
    face_mask = canonical_mask(size)
    good = cnt >= 3
    tex = np.zeros_like(acc)
    tex[good] = acc[good] / cnt[good, None]
    mir = tex[:, ::-1]
    fill = face_mask & ~good & good[:, ::-1]
    tex[fill] = mir[fill]
    good |= fill
    tex8 = np.clip(np.round(tex), 0, 255).astype(np.uint8)
    hole = (face_mask & ~good).astype(np.uint8)
    if hole.any():
        tex8 = cv2.inpaint(tex8, hole, 5, cv2.INPAINT_TELEA)
    tex8[~face_mask] = 0
    cv2.imwrite(str(out / "texture.png"), tex8[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"texture -> {out / 'texture.png'} ({int(good.sum())} of {int(face_mask.sum())} face pixels observed)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--obj",
        type=Path,
        required=True,
        help="MediaPipe's canonical_face_model.obj (mediapipe/modules/face_geometry/data)",
    )
    ap.add_argument("--faces", type=Path, required=True, help="folder of face photos (the deepface unit-test set)")
    ap.add_argument("--out", type=Path, default=ROOT / "facesal_fast" / "data" / "canonical")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--geometry-only", action="store_true")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    make_geometry(a.obj, a.out)
    shutil.copyfile(a.obj.parent / "LICENSE-mediapipe.txt", a.out / "LICENSE-mediapipe.txt")
    if not a.geometry_only:
        make_texture(a.faces, a.out, a.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
