"""Tests of facesal_fast.align on real photos (tests/photos.py: the bundled ones, or the full deepface set)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from photos import FACES, photo, requires_full_photos

from facesal_fast.align import (
    REGION_NAMES,
    AlignedFace,
    Aligner,
    ImageError,
    NoFaceError,
    as_rgb_uint8,
    canonical_face,
    canonical_mask,
    default_aligner,
    find_face,
    load_image,
    region_masks,
    region_shares,
    to_canonical,
    to_image,
)
from facesal_fast.align.aligner import CORE_LANDMARKS
from facesal_fast.align.face import window_side
from facesal_fast.align.geometry import similarity_transform

MULTI = {"couple.jpg": 2, "selfie-many-people.jpg": 4}


def _photos() -> list[Path]:
    return sorted(FACES.glob("*.jpg"))


@pytest.fixture(scope="module")
def aligner() -> Aligner:
    return default_aligner()


@pytest.fixture(scope="module")
def aligned(aligner) -> dict[str, list[AlignedFace]]:
    """Every photo aligned once (all faces), keyed by file name."""
    return {p.name: aligner(p, all_faces=True) for p in _photos()}


@pytest.fixture(scope="module")
def small_face(aligner) -> AlignedFace:
    """img1 downscaled so that its face is about the canonical face's size (round-trip tests)."""
    img = load_image(FACES / "img1.jpg")
    f = aligner(img)
    s = f.canonical_scale / f.face_scale * 1.3
    small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    return aligner(small, source="img1-small")


# ----------------------------------------------------------------------------- aligner
def test_every_single_face_photo_aligns(aligned):
    singles = {k: v for k, v in aligned.items() if k not in MULTI}
    assert len(singles) >= min(60, len(_photos()) - 1)  # 62 shared photos, or the 24 bundled
    for name, faces in singles.items():
        assert len(faces) == 1, (name, [f.note for f in faces])
        f = faces[0]
        assert f.source == name
        assert f.landmarks.shape == (478, 3)
        assert f.box_source == "detector", name
        x0, y0, x1, y1 = f.face_box
        core = f.landmarks[list(CORE_LANDMARKS), :2]  # eye corners, nose, mouth
        assert ((core[:, 0] >= x0) & (core[:, 0] <= x1) & (core[:, 1] >= y0) & (core[:, 1] <= y1)).all(), name
        # pose-corrected face_scale agrees with the 2D inter-ocular distance on these near-frontal photos
        iod = np.linalg.norm(f.landmarks[33, :2] - f.landmarks[263, :2])
        assert 0.75 < iod / f.face_scale < 1.15, (name, iod, f.face_scale)


def test_find_face_keeps_a_given_face_and_aligns_otherwise(aligned, aligner):
    given = aligned["img2.jpg"][0]
    assert find_face(given.image, given) is given
    found = find_face(FACES / "img2.jpg")
    assert found.source == "img2.jpg" and found.face_box == aligner(FACES / "img2.jpg").face_box
    small = Aligner(canonical_size=128)
    assert find_face(given.image, aligner=small).canonical_shape == (128, 128)


@pytest.mark.parametrize("name,count", sorted(MULTI.items()))
def test_multi_face_count_and_choice(aligned, aligner, name, count):
    photo(name)
    faces = aligned[name]
    # selfie-many-people: 7 people, 4 detectable faces (the others are cut by the frame / hidden)
    assert len(faces) == count
    assert all(f.n_faces == count for f in faces)
    sizes = [f.face_scale for f in faces]
    assert sizes == sorted(sizes, reverse=True)
    boxes = np.array([f.face_box for f in faces])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert np.min(np.linalg.norm(centres[:, None] - centres[None], axis=2) + 1e9 * np.eye(count)) > 30
    one = aligner(FACES / name)
    assert isinstance(one, AlignedFace)
    assert one.note.startswith(f"largest of {count} faces, detector score ")
    np.testing.assert_allclose(one.landmarks, faces[0].landmarks, atol=1e-3)  # the same (largest) face


def test_dense_grid_is_shared_and_dense(aligned, aligner):
    faces = [fs[0] for fs in aligned.values()]
    n = faces[0].n_points
    assert 30_000 <= n <= 60_000  # PRNet gave ~40k
    for f in faces:
        assert f.verts_canonical is faces[0].verts_canonical  # one shared canonical points array
        assert f.verts_image.shape == (n, 2) and f.verts_image.dtype == np.float32
        assert f.visible.shape == (n,) and f.visible.dtype == bool
        assert f.canonical_shape == (256, 256)
    vc = faces[0].verts_canonical
    assert vc.min() >= 0 and vc.max() <= 255
    assert (vc == np.round(vc)).all()  # density 1: one point per canonical pixel centre
    assert len(np.unique(vc[:, 1] * 256 + vc[:, 0])) == n
    assert len(Aligner(density=0.5).grid) == pytest.approx(n / 4, rel=0.05)
    assert len(Aligner(stride=2).grid) == len(Aligner(density=0.5).grid)
    assert default_aligner() is aligner
    a128 = Aligner(canonical_size=128)
    assert len(a128.grid) == pytest.approx(n / 4, rel=0.05)
    g = a128(aligned["img1.jpg"][0].image)
    assert g.canonical_shape == (128, 128) and g.to_canonical().shape == (128, 128, 3)
    assert g.canonical_scale == pytest.approx(aligned["img1.jpg"][0].canonical_scale / 2, rel=0.02)
    # CIS patch mapping: image patch p -> p * canonical_scale / face_scale canonical px
    f = aligned["img1.jpg"][0]
    assert f.canonical_patch(31) == round(31 * f.canonical_scale / f.face_scale)
    assert f.canonical_patch(31, [[2.0, 0.0, 5.0], [0.0, 2.0, 1.0]]) == round(
        31 * f.canonical_scale / (2 * f.face_scale)
    )
    assert window_side(0.2) == 1 and window_side(2.6) == 3
    assert f.canonical_scale == pytest.approx(np.linalg.norm(f.mesh.canon_verts[33] - f.mesh.canon_verts[263]))


def test_visible_points_map_inside_image(aligned):
    for name, faces in aligned.items():
        for f in faces:
            h, w = f.image.shape[:2]
            v = f.verts_image[f.visible]
            assert len(v) > 0.85 * f.n_points if name not in MULTI else len(v) > 0.5 * f.n_points
            assert (v[:, 0] >= -0.5).all() and (v[:, 0] < w - 0.5).all()
            assert (v[:, 1] >= -0.5).all() and (v[:, 1] < h - 0.5).all()


def _yawed(face: AlignedFace, degrees: float) -> AlignedFace:
    """The face's 3D landmarks rotated about the vertical axis, wrapped with from_arrays."""
    lm = face.landmarks[:468].astype(np.float64)
    c = lm.mean(axis=0)
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    v = (lm - c) @ rot.T + c
    m = face.mesh
    return AlignedFace.from_arrays(
        face.image,
        v.astype(np.float32),
        m.canon_verts,
        face.canonical_shape,
        triangles=m.triangles,
        depth_tol=m.depth_tol,
        canonical_scale=face.canonical_scale,
        canonical_depth=m.canon_depth,
    )


def _grid_tri(f: AlignedFace) -> np.ndarray:
    """Triangle id of each dense point (the aligner's fixed canonical grid)."""
    return default_aligner().grid.tri


def _occluded_brute_force(f: AlignedFace, idx: np.ndarray, margin: float) -> np.ndarray:
    """Reference z-test: is point idx[k] strictly inside some front-facing posed triangle whose
    surface there is nearer the camera by more than ``margin``? (plain numpy, all triangles)."""
    m = f.mesh
    tri = m.triangles[m.front]
    v = m.img_verts.astype(np.float64)
    z = m.img_depth.astype(np.float64)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    den = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    out = np.zeros(len(idx), bool)
    for k0 in range(0, len(idx), 2000):
        sl = idx[k0 : k0 + 2000]
        p = f.verts_image[sl].astype(np.float64)[:, None, :]  # (P, 1, 2)
        l1 = ((p[..., 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (p[..., 1] - a[:, 1])) / den
        l2 = ((b[:, 0] - a[:, 0]) * (p[..., 1] - a[:, 1]) - (p[..., 0] - a[:, 0]) * (b[:, 1] - a[:, 1])) / den
        l0 = 1 - l1 - l2
        inside = (l0 > 0.02) & (l1 > 0.02) & (l2 > 0.02)
        zt = l0 * z[tri[:, 0]] + l1 * z[tri[:, 1]] + l2 * z[tri[:, 2]]
        nearer = inside & (zt < f.depth[sl][:, None] - margin)
        out[k0 : k0 + 2000] = nearer.any(axis=1)
    return out


def test_from_arrays_with_mesh_reproduces_aligner(aligned):
    f = aligned["img1.jpg"][0]
    m = f.mesh
    g = AlignedFace.from_arrays(
        f.image,
        f.landmarks[:468],
        m.canon_verts,
        f.canonical_shape,
        triangles=m.triangles,
        depth_tol=m.depth_tol,
        canonical_depth=m.canon_depth,
    )
    np.testing.assert_allclose(g.verts_canonical, f.verts_canonical)
    np.testing.assert_allclose(g.verts_image, f.verts_image, atol=1e-3)
    assert (g.visible == f.visible).mean() > 0.999
    assert g.face_scale == pytest.approx(f.face_scale * g.canonical_scale / f.canonical_scale, rel=0.1)


@requires_full_photos
def test_visibility_profile_view_and_zbuffer(aligned):
    f = aligned["img1.jpg"][0]
    shares = [_yawed(f, d).visible_fraction for d in (0, 25, 50, 75)]
    assert shares[0] > 0.95
    assert all(a > b + 0.03 for a, b in zip(shares, shares[1:])), shares
    assert shares[-1] < 0.8
    prof = _yawed(f, 60)
    margin = 2 * prof.mesh.depth_tol
    # no visible point lies behind another part of the posed face (brute-force reference) ...
    vis_idx = np.flatnonzero(prof.visible)
    assert _occluded_brute_force(prof, vis_idx, margin).mean() < 0.002
    # ... and the z-buffer had work to do: many front-facing points inside the image are hidden
    h, w = prof.image.shape[:2]
    p = prof.verts_image
    cand = prof.mesh.front[_grid_tri(prof)] & ~prof.visible
    cand &= (p[:, 0] >= 0) & (p[:, 0] < w - 1) & (p[:, 1] >= 0) & (p[:, 1] < h - 1)
    hidden = np.flatnonzero(cand)
    assert len(hidden) > 0.05 * prof.n_points
    assert _occluded_brute_force(prof, hidden, 0.0).mean() > 0.9
    # the real face turned furthest from the camera shows fewer points than the frontal ones
    faces = [fs[0] for k, fs in aligned.items() if k not in MULTI]
    yaw = [
        abs((g.landmarks[1, 0] - g.landmarks[33, 0]) / (g.landmarks[263, 0] - g.landmarks[33, 0]) - 0.5) for g in faces
    ]
    assert faces[int(np.argmax(yaw))].visible_fraction < np.median([g.visible_fraction for g in faces]) - 0.005


# ----------------------------------------------------------------------------- warps
def test_round_trip_reproduces_face(small_face):
    f = small_face
    tex, cmask = to_canonical(f.image, f, return_mask=True)
    assert tex.shape == (256, 256, 3) and tex.dtype == np.uint8
    assert cmask.mean() > 0.4
    back, imask = to_image(tex, f, return_mask=True)
    assert back.shape == f.image.shape
    inner = cv2.erode(imask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert inner.sum() > 0.5 * (f.face_scale**2)
    err = np.abs(back[inner].astype(np.float32) - f.image[inner].astype(np.float32)).mean()
    assert err < 4.0, err
    # and it is not trivially small: a shifted texture does much worse
    shifted = np.roll(tex, 6, axis=1)
    err2 = np.abs(to_image(shifted, f)[inner].astype(np.float32) - f.image[inner].astype(np.float32)).mean()
    assert err2 > 1.5 * err


def test_flipped_photo_gives_mirrored_texture(aligner, small_face):
    f = small_face
    flipped = np.ascontiguousarray(f.image[:, ::-1])
    g = aligner(flipped)
    w = f.image.shape[1]
    # eyes swap: subject's right eye corner of the flip sits where the left one was
    assert np.abs(g.landmarks[33, 0] - (w - 1 - f.landmarks[263, 0])) < 0.03 * f.face_scale
    assert np.abs(g.landmarks[263, 0] - (w - 1 - f.landmarks[33, 0])) < 0.03 * f.face_scale
    t, mt = to_canonical(f.image, f, return_mask=True)
    u, mu = to_canonical(flipped, g, return_mask=True)
    both = mu & mt[:, ::-1]
    mirrored = np.abs(u[both].astype(np.float32) - t[:, ::-1][both].astype(np.float32)).mean()
    same = np.abs(u[mu & mt].astype(np.float32) - t[mu & mt].astype(np.float32)).mean()
    assert mirrored < 8 and mirrored < 0.3 * same, (mirrored, same)
    regions = region_masks(256)
    le, re = regions["left_eye"], regions["right_eye"]
    assert (le[:, ::-1] == re).mean() > 0.99  # region masks are mirror images
    d_swap = np.abs(u[le].astype(np.float32) - t[:, ::-1][le].astype(np.float32)).mean()
    assert d_swap < 15


def test_to_image_float_map_and_channels(small_face):
    f = small_face
    hf, wf = f.canonical_shape
    ramp = np.tile(np.arange(wf, dtype=np.float32), (hf, 1))
    out, m = to_image(ramp, f, return_mask=True)
    assert out.dtype == np.float32 and out.shape == f.image.shape[:2]
    # canonical x grows left to right across the photo of a near-frontal face
    ys, xs = np.nonzero(m)
    assert np.corrcoef(xs, out[ys, xs])[0, 1] > 0.95
    many = np.repeat(ramp[:, :, None], 7, axis=2)
    np.testing.assert_allclose(to_image(many, f)[..., 6], out)


# ----------------------------------------------------------------------------- pluggable input
def test_from_arrays_dense_points_and_sparse_landmarks(aligned):
    f = aligned["img2.jpg"][0]
    # dense points (e.g. a PRNet fit): used as they are
    g = AlignedFace.from_arrays(f.image, f.verts_image[f.visible], f.verts_canonical[f.visible], (256, 256))
    assert g.mesh is None and g.n_points == f.visible.sum() and g.visible.all()
    tex_g, mg = to_canonical(f.image, g, return_mask=True)
    tex_f, mf = to_canonical(f.image, f, return_mask=True)
    both = mg & mf
    assert both.sum() > 0.9 * mf.sum()
    assert np.abs(tex_g[both].astype(np.float32) - tex_f[both].astype(np.float32)).mean() < 3
    back = to_image(tex_g, g)
    assert (back.sum(axis=2) > 0).sum() > 0.3 * f.face_scale**2
    # 68 sparse landmarks with (x, y, depth): Delaunay-meshed and densified
    idx = np.linspace(0, 467, 68).astype(int)
    s = AlignedFace.from_arrays(f.image, f.landmarks[idx], f.mesh.canon_verts[idx], (256, 256))
    assert s.mesh is not None and s.n_points > 10_000
    assert s.visible.mean() > 0.9
    assert s.face_scale == pytest.approx(f.face_scale * s.canonical_scale / f.canonical_scale, rel=0.15)
    hide = np.ones(68, bool)
    hide[:10] = False
    s2 = AlignedFace.from_arrays(f.image, f.landmarks[idx], f.mesh.canon_verts[idx], (256, 256), visible=hide)
    assert 0.3 < s2.visible.mean() < s.visible.mean() - 0.02
    with pytest.raises(ValueError):
        AlignedFace.from_arrays(f.image, f.verts_image[:10], f.verts_canonical[:11], (256, 256))


def test_similarity_transform_recovers_similarities_in_2d_and_3d():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 2)) * 30
    th = 0.4
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    A = similarity_transform(src, 1.7 * src @ rot.T + [5.0, -2.0])
    np.testing.assert_allclose(A, np.c_[1.7 * rot, [5.0, -2.0]], atol=1e-9)
    src3 = rng.normal(size=(30, 3))
    A3 = similarity_transform(src3, 0.5 * src3 + 1.0)
    np.testing.assert_allclose(A3, np.c_[0.5 * np.eye(3), np.ones(3)], atol=1e-9)
    # a mirror image: a rotation cannot fit it (scale shrinks), a reflection can
    mirror = src * [-1.0, 1.0]
    assert np.linalg.norm(similarity_transform(src, mirror)[:, 0]) < 1.0
    np.testing.assert_allclose(
        similarity_transform(src, mirror, reflection=True), np.c_[np.diag([-1.0, 1.0]), [0, 0]], atol=1e-9
    )
    with pytest.raises(ValueError, match="src points all coincide"):
        similarity_transform(np.ones((4, 2)), src[:4])
    with pytest.raises(ValueError, match="src and dst"):
        similarity_transform(src, src[:, :1])
    with pytest.raises(ValueError, match="finite"):
        similarity_transform(src, np.full_like(src, np.nan))


def test_from_arrays_face_scale_is_the_similarity_scale(aligned):
    f = aligned["img2.jpg"][0]
    canon = f.verts_canonical[f.visible]
    g = AlignedFace.from_arrays(f.image, 0.5 * canon + 10.0, canon, (256, 256), mode="points")
    assert g.face_scale == pytest.approx(0.5 * g.canonical_scale)
    one = AlignedFace.from_arrays(f.image, [[5.0, 5.0]] * 3, [[1.0, 1.0]] * 3, (256, 256), mode="points")
    assert one.face_scale == one.canonical_scale  # coinciding points: no scale to fit, 1


# ----------------------------------------------------------------------------- canonical face, regions
def test_canonical_face_and_regions():
    img = canonical_face()
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    m = canonical_mask(256)
    assert 0.4 < m.mean() < 0.8
    assert (img[~m] == 0).all() and img[m].mean() > 60
    assert canonical_face(128).shape == (128, 128, 3)
    # configurable size: the same layout scaled; non-square keeps the aspect ratio (centred)
    small = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32)
    both = canonical_mask(128) & cv2.erode(canonical_mask(128).astype(np.uint8), np.ones((3, 3))).astype(bool)
    assert np.abs(canonical_face(128)[both] - small[both]).mean() < 6
    wide = canonical_face((128, 192))
    assert wide.shape == (128, 192, 3) and (wide[:, :32] == 0).all() and (wide[:, -32:] == 0).all()
    assert np.abs(wide[:, 32:160][both].astype(np.float32) - small[both]).mean() < 6
    regions = region_masks(256)
    assert tuple(regions) == REGION_NAMES
    for name, r in regions.items():
        assert r.sum() > 50, name
        assert (r & ~m).sum() < 0.05 * r.sum(), name
    # facial layout: eyes above nose above mouth above chin; subject's left eye on the image right
    cy = {k: np.nonzero(v)[0].mean() for k, v in regions.items()}
    cx = {k: np.nonzero(v)[1].mean() for k, v in regions.items()}
    assert cy["forehead"] < cy["left_eyebrow"] < cy["left_eye"] < cy["nose"] < cy["mouth"] < cy["chin"]
    assert cx["left_eye"] > 128 > cx["right_eye"] and cx["left_cheek"] > 128 > cx["right_cheek"]
    shares = region_shares(np.ones((256, 256)))
    opening = shares["mouth"] - shares["upper_lip"] - shares["lower_lip"]
    assert opening > 0
    assert sum(v for k, v in shares.items() if k != "mouth") + opening == pytest.approx(1.0)
    only_nose = np.where(regions["nose"], 2.0, -1.0)
    s = region_shares(only_nose)
    assert s["nose"] == pytest.approx(1.0) and s["left_eye"] == 0
    assert region_shares(only_nose, mode="abs")["nose"] < 1.0


# ----------------------------------------------------------------------------- bad input
def test_pickle_for_workers(aligned, aligner):
    import pickle

    f = aligned["img5.jpg"][0]
    g = pickle.loads(pickle.dumps(f))
    np.testing.assert_array_equal(g.verts_image, f.verts_image)
    np.testing.assert_array_equal(g.to_canonical(), f.to_canonical())
    a2 = pickle.loads(pickle.dumps(aligner))
    np.testing.assert_allclose(a2(f.image).landmarks, f.landmarks, atol=1e-3)


def test_no_face_names_the_file(aligner, tmp_path):
    p = tmp_path / "wall.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(p), cv2.GaussianBlur(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), (0, 0), 8))
    with pytest.raises(NoFaceError, match="wall.png"):
        aligner(p)
    with pytest.raises(NoFaceError):
        aligner(np.full((40, 40, 3), 128, np.uint8))
    out = aligner.batch(
        [np.full((64, 64, 3), 0, np.uint8), FACES / "img5.jpg"], on_error="none", sources=["black", None]
    )
    assert isinstance(out[0], NoFaceError) and "black" in str(out[0])
    assert isinstance(out[1], AlignedFace) and out[1].source == "img5.jpg"
    with pytest.raises(NoFaceError, match="black"):
        aligner.batch([np.zeros((64, 64, 3), np.uint8)], sources=["black"])


def test_tiny_and_huge_images(aligner):
    img = load_image(FACES / "img1.jpg")
    f = aligner(img)
    tiny = cv2.resize(img, None, fx=0.04, fy=0.04, interpolation=cv2.INTER_AREA)  # face box ~ 26 px
    with pytest.raises(NoFaceError, match="small|no face"):
        aligner(tiny, source="tiny.jpg")
    s = 4500 / max(img.shape[:2])
    huge = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
    g = aligner(huge)
    assert g.image.shape == huge.shape
    np.testing.assert_allclose(g.landmarks[:, :2] / s, f.landmarks[:, :2], atol=0.03 * f.face_scale)
    assert g.face_scale / s == pytest.approx(f.face_scale, rel=0.05)


def test_array_formats(aligner):
    img = load_image(FACES / "img5.jpg")
    ref = aligner(img)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
    u16 = img.astype(np.uint16) * 257
    for arr in (gray, gray[:, :, None], rgba, u16, img.astype(np.float32) / 255):
        g = aligner(arr)
        assert np.abs(g.landmarks[:, :2] - ref.landmarks[:, :2]).max() < 0.15 * ref.face_scale
    np.testing.assert_array_equal(as_rgb_uint8(u16), img)
    with pytest.raises(ImageError):
        as_rgb_uint8(np.zeros((10, 10, 2), np.uint8))


def test_load_image_files(tmp_path):
    from PIL import Image

    img = load_image(FACES / "img5.jpg")
    h, w = img.shape[:2]
    # EXIF orientation 6 (rotate 90 CW to display): stored sideways, loaded upright
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(img, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    up = load_image(tmp_path / "rot.jpg")
    assert up.shape == (h, w, 3)
    assert np.abs(up.astype(np.float32) - img).mean() < 6
    cv2.imwrite(str(tmp_path / "g16.png"), (cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257))
    g16 = load_image(tmp_path / "g16.png")
    assert g16.shape == (h, w, 3) and g16.dtype == np.uint8
    np.testing.assert_array_equal(g16[..., 0], cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    Image.fromarray(np.dstack([img, np.full((h, w), 255, np.uint8)])).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), img)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" + bytes(100))
    with pytest.raises(ImageError, match="bad.jpg"):
        load_image(tmp_path / "bad.jpg")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageError, match="notes.txt"):
        load_image(tmp_path / "notes.txt")
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.jpg")
