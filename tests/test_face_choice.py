"""Which face of a photo is explained and which way up it is aligned (issue 27, items 5, 6, 9):
an upside-down photo, a large low-score detection beside a confident face, a group photo
of more than ten faces."""

import logging

import cv2
import numpy as np
import pytest
from photos import BUNDLED

from facesal_fast.align import Aligner, default_aligner, load_image
from facesal_fast.align.choice import SCORE_MARGIN

#: Bundled photos that make a 4 x 4 grid (one cell white) in which the detectors find all 15 faces.
GRID = [f"img{i}.jpg" for i in (10, 11, 12, 13, 2, 1, 16, 17, 18, 19, 20, 21, 22, 23, 24)]


@pytest.fixture(scope="module")
def aligner() -> Aligner:
    return default_aligner()


def _quarter_turns(points: np.ndarray, shape: tuple[int, int], k: int) -> np.ndarray:
    """``(N, 2)`` points of a photo of ``shape`` ``(H, W)`` in the pixels of ``np.rot90(photo, k)``
    (MediaPipe's coordinates run along pixel edges, 0 to W)."""
    h, w = shape
    x, y = points[:, 0], points[:, 1]
    for _ in range(k % 4):
        x, y, w, h = y, w - x, h, w
    return np.stack([x, y], axis=1)


# ----------------------------------------------------------------------------- item 5: orientation


def test_upside_down_photo_is_aligned_turned_and_mapped_back(aligner, caplog):
    photo = load_image(BUNDLED / "img1.jpg")
    upright = aligner(photo)
    with caplog.at_level(logging.WARNING):
        turned = aligner(np.ascontiguousarray(photo[::-1, ::-1]), source="upside-down.jpg")
    assert "upside-down.jpg: aligning the photo turned 180 degrees: the face detectors score it higher" in caplog.text
    assert turned.note.endswith("aligned turned 180 degrees (it scored higher that way up)")
    expected = _quarter_turns(upright.landmarks[:, :2], photo.shape[:2], 2)
    np.testing.assert_allclose(turned.landmarks[:, :2], expected, atol=1e-3)  # off by ~76 px before the fix
    eyes, mouth = turned.landmarks[[33, 263], 1].mean(), turned.landmarks[[13, 14], 1].mean()
    assert eyes > mouth  # the eyes are below the mouth in the upside-down photo
    assert turned.visible_fraction == pytest.approx(upright.visible_fraction, abs=1e-3)


@pytest.mark.parametrize("k", [1, 3])
def test_a_quarter_turned_photo_still_aligns(aligner, k):
    """MediaPipe's mesh follows a face on its side; aligned as it is or turned 180 degrees
    (whichever the detectors score higher), the landmarks land on the face."""
    photo = load_image(BUNDLED / "img1.jpg")
    upright = aligner(photo)
    turned = aligner(np.ascontiguousarray(np.rot90(photo, k)))
    expected = _quarter_turns(upright.landmarks[:468, :2], photo.shape[:2], k)
    assert np.abs(turned.landmarks[:468, :2] - expected).mean() < 3.0


def test_no_bundled_upright_photo_is_turned(aligner):
    notes = {p.name: aligner(p, all_faces=True)[0].note for p in sorted(BUNDLED.glob("*.jpg"))}
    assert not [name for name, note in notes.items() if "turned 180 degrees" in note]


# ----------------------------------------------------------------------------- item 6: face choice


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    canvas = np.full((max(len(left), len(right)), left.shape[1] + right.shape[1] + 20, 3), 255, np.uint8)
    canvas[: len(left), : left.shape[1]] = left
    canvas[: len(right), left.shape[1] + 20 :] = right
    return canvas


def test_a_large_low_score_detection_does_not_beat_a_confident_face(aligner, caplog):
    """A real composed photo: a large upside-down face (the detectors score it about 0.65)
    beside a small upright one (about 0.95). The largest face used to be explained."""
    big = cv2.resize(load_image(BUNDLED / "img20.jpg")[::-1, ::-1], None, fx=1.2, fy=1.2)
    small = cv2.resize(load_image(BUNDLED / "img5.jpg"), None, fx=0.6, fy=0.6)
    photo = _side_by_side(big, small)
    with caplog.at_level(logging.WARNING):
        face = aligner(photo, source="press.jpg")
    assert face.face_box[0] > big.shape[1]  # the small upright face, on the right
    assert face.note.startswith("largest confident of 2 faces, detector score 0.9")
    (warning,) = [r.getMessage() for r in caplog.records if "faces found" in r.getMessage()]
    assert "press.jpg: 2 faces found, explaining the largest confident face" in warning
    assert f"passed over 1 larger detection(s) scoring more than {SCORE_MARGIN} below the best (0.6" in warning
    every = aligner(photo, all_faces=True)
    assert [f.face_box for f in every][0] == face.face_box and every[1].face_box[2] < big.shape[1]


def test_face_choice_by_score_with_the_detector_scores_replaced(aligner, monkeypatch, caplog):
    """couple.jpg with the detectors' scores replaced: the largest face 0.69, the other 0.95."""
    photo = BUNDLED / "couple.jpg"
    before = aligner(photo, all_faces=True)  # both faces confident: largest first
    assert before[0].face_scale > before[1].face_scale
    x0, y0, x1, y1 = before[0].face_box
    centre, detect = ((x0 + x1) / 2, (y0 + y1) / 2), Aligner.detect

    def scored(self, image, models=(1, 0)):
        holds = lambda b: b[0] <= centre[0] <= b[2] and b[1] <= centre[1] <= b[3]  # noqa: E731
        return [(b, 0.69 if holds(b) else 0.95) for b, _ in detect(self, image, models)]

    monkeypatch.setattr(Aligner, "detect", scored)
    with caplog.at_level(logging.WARNING):
        chosen = aligner(photo)
    np.testing.assert_allclose(chosen.landmarks, before[1].landmarks, atol=1e-3)
    assert "detector score 0.95; passed over 1 larger detection(s)" in caplog.text and "(0.69)" in caplog.text
    after = aligner(photo, all_faces=True)
    assert [f.face_box for f in after] == [before[1].face_box, before[0].face_box]
    assert aligner(photo, face_index=1).face_box == before[0].face_box


# ----------------------------------------------------------------------------- item 9: every face


def test_all_faces_returns_every_detected_face_past_ten(aligner):
    side = 200
    tiles = []
    for name in GRID:
        image = load_image(BUNDLED / name)
        h, w = image.shape[:2]
        s = min(h, w)
        square = image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        tiles.append(cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA))
    tiles.append(np.full((side, side, 3), 255, np.uint8))
    group = np.ascontiguousarray(np.concatenate([np.concatenate(tiles[r * 4 : r * 4 + 4], 1) for r in range(4)], 0))
    found = aligner.detect(group)
    faces = aligner(group, all_faces=True)
    assert len(faces) == len(found) > aligner.max_faces  # at most 10 (max_faces) before the fix
    cells = {
        (int((f.face_box[1] + f.face_box[3]) / 2 // side), int((f.face_box[0] + f.face_box[2]) / 2 // side))
        for f in faces
    }
    assert len(cells) == len(faces)  # one face per cell: no face twice
    assert all(f.n_faces == len(faces) for f in faces)
