"""Head pose over MediaPipe Face Mesh: the rigid fit, the soft 9-bin assignment, the scorer
on bundled photos (a mirrored photo flips the sign of yaw)."""

import numpy as np
import pytest
from photos import BUNDLED
from scipy.spatial.transform import Rotation

from facesal_fast import models
from facesal_fast.align import default_aligner
from facesal_fast.align.canonical import canonical_geometry
from facesal_fast.align.image_io import load_image
from facesal_fast.models.head_pose import POSE_BINS, FaceMeshPose, bin_probabilities, rigid_fit, yaw_pitch


def posed_landmarks(yaw: float, pitch: float) -> np.ndarray:
    """The canonical face turned by ``yaw`` / ``pitch`` degrees, as Face Mesh landmarks (y down, z away)."""
    turn = Rotation.from_euler("xy", [-pitch, yaw], degrees=True).as_matrix()  # +pitch: nose up (+y model)
    model = canonical_geometry().vertices.astype(np.float64) @ turn.T * 7.0 + np.array([300.0, -200.0, 0.0])
    return model * np.array([1.0, -1.0, -1.0])


def test_rigid_fit_recovers_a_similarity():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(50, 3))
    rot = Rotation.from_euler("xyz", [10, -25, 40], degrees=True).as_matrix()
    scale, found, shift = rigid_fit(source, 2.5 * source @ rot.T + [1.0, 2.0, 3.0])
    assert scale == pytest.approx(2.5) and np.allclose(found, rot) and np.allclose(shift, [1, 2, 3])
    with pytest.raises(ValueError, match="N x 3"):
        rigid_fit(source, source[:, :2])


@pytest.mark.parametrize("yaw, pitch", [(0, 0), (30, 0), (-20, 5), (0, -15), (12, 12)])
def test_yaw_and_pitch_of_a_turned_canonical_face(yaw, pitch):
    found = yaw_pitch(posed_landmarks(yaw, pitch))
    assert found == pytest.approx((yaw, pitch), abs=0.5)


def test_soft_bins():
    for yaw, pitch, label in [
        (0, 0, "level-centre"),
        (40, 0, "level-right"),
        (-40, 25, "up-left"),
        (0, -30, "down-centre"),
    ]:
        p = bin_probabilities(yaw, pitch)
        assert p.sum() == pytest.approx(1.0, abs=1e-6) and (p >= 0).all()
        assert POSE_BINS[int(p.argmax())] == label
    assert bin_probabilities(14, 0)[4] < bin_probabilities(5, 0)[4]  # softer near an edge
    with pytest.raises(ValueError, match="468 or 478"):
        yaw_pitch(np.zeros((10, 3)))


@pytest.fixture(scope="module")
def scorer():
    return models.load("head-pose")


def test_a_mirrored_photo_flips_the_sign_of_yaw(scorer):
    image = load_image(BUNDLED / "couple.jpg")
    crop, _ = scorer.prepare(image, default_aligner()(image))
    pose = FaceMeshPose()
    (yaw, pitch), (mirror_yaw, mirror_pitch) = pose.pose(crop), pose.pose(np.ascontiguousarray(crop[:, ::-1]))
    assert abs(yaw) > 8 and np.sign(mirror_yaw) == -np.sign(yaw)
    assert mirror_yaw == pytest.approx(-yaw, abs=4) and mirror_pitch == pytest.approx(pitch, abs=4)
    flipped = scorer.predict(
        np.ascontiguousarray(image[:, ::-1]), default_aligner()(np.ascontiguousarray(image[:, ::-1]))
    )
    assert (
        scorer.predict(image, default_aligner()(image)).label.split("-")[1]
        == {"right": "left", "left": "right"}[flipped.label.split("-")[1]]
    )


def test_scorer_drops_when_the_face_is_hidden(scorer):
    image = load_image(BUNDLED / "img1.jpg")
    crop, _ = scorer.prepare(image, default_aligner()(image))
    assert crop.shape == (128, 128, 3) and scorer.classes == list(POSE_BINS)
    base = scorer.base_score(crop)
    scores = scorer.score_occluded(crop, np.array([[64.0, 64.0], [2.0, 2.0]]), 80)
    assert base > 0.4 and scores[0] == pytest.approx(1 / 9) and scores[1] > 0.3  # a hidden face scores 1/9
    with pytest.raises(ValueError, match="K x H x W x 3"):
        FaceMeshPose()(np.zeros((2, 8, 8)))
