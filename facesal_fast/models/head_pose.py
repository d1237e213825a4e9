"""Head pose from MediaPipe Face Mesh, as a black-box classifier over the paper's 9 pose bins.

``models.load("head-pose")`` scores a face crop (square, the face box plus ``CROP_MARGIN`` on
each side, resized to ``INPUT_SIZE``) by running MediaPipe's Face Mesh on it (its face
detector, then the 468-landmark network, ``static_image_mode``), fitting the canonical face's
468 3D vertices rigidly to the landmarks (least-squares rotation + scale + translation,
:func:`rigid_fit`) and reading yaw and pitch off the rotation (:func:`yaw_pitch`):

- yaw: the face turned towards the image's right (the subject's left) is positive;
- pitch: the face tilted up is positive.

The 9 classes (:data:`POSE_BINS`) are yaw {left, centre, right} x pitch {up, level, down},
as the paper's Figure 17. The outputs are a soft assignment (probabilities): for yaw,
``p(right) = sigmoid((yaw - YAW_EDGE) / SOFTNESS)``, ``p(left) = sigmoid((-yaw - YAW_EDGE) /
SOFTNESS)``, ``p(centre) = 1 - p(left) - p(right)`` (likewise pitch with ``PITCH_EDGE``), and
the bin probability is the product of its yaw and pitch probabilities. An image in which
Face Mesh finds no face (an occlusion that hides it) scores the uniform 1/9 in every bin.

Cost: MediaPipe's Python solution takes one image per call, so a batch is a loop over its
images (no batching beyond that); every occluded copy pays the detector and the landmark
network (docs/models.md has the measured time per occluded image).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from facesal_fast.align.aligner import QuietGraph, native_stderr_silenced
from facesal_fast.align.canonical import N_MESH_VERTICES, canonical_geometry
from facesal_fast.align.geometry import similarity_transform
from facesal_fast.scoring.scorer import Scorer

__all__ = [
    "CROP_MARGIN",
    "INPUT_SIZE",
    "PITCH_EDGE",
    "POSE_BINS",
    "SOFTNESS",
    "YAW_EDGE",
    "FaceMeshPose",
    "bin_probabilities",
    "head_pose_scorer",
    "landmark_model_path",
    "rigid_fit",
    "yaw_pitch",
]

#: Yaw x pitch classes, row-major: ``(pitch, yaw)`` for pitch in up/level/down, yaw in left/centre/right.
POSE_BINS: tuple[str, ...] = tuple(f"{p}-{y}" for p in ("up", "level", "down") for y in ("left", "centre", "right"))
#: Bin edges (degrees) and the width of the soft transition between bins.
YAW_EDGE, PITCH_EDGE, SOFTNESS = 15.0, 10.0, 4.0
#: Model input side (pixels) and crop margin (fraction of the face box side on each side).
INPUT_SIZE, CROP_MARGIN = 128, 0.5


def landmark_model_path() -> Path:
    """MediaPipe's Face Mesh landmark network (``face_landmark.tflite``, Apache-2.0, in the mediapipe wheel)."""
    import mediapipe  # 1-2 s to import: only to find the file

    return Path(mediapipe.__file__).resolve().parent / "modules" / "face_landmark" / "face_landmark.tflite"


def rigid_fit(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``target ~ s R source + t`` of two ``(N, 3)`` point sets
    (:func:`~facesal_fast.align.geometry.similarity_transform`: Umeyama, proper rotation).
    Returns ``(s, R (3, 3), t (3,))``."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3 or len(source) < 3:
        raise ValueError(f"rigid_fit needs two N x 3 point sets (N >= 3), got {source.shape} and {target.shape}")
    affine = similarity_transform(source, target)
    scale = float(np.linalg.norm(affine[:, 0]))
    return scale, affine[:, :3] / scale, affine[:, 3]


def yaw_pitch(landmarks: np.ndarray) -> tuple[float, float]:
    """``(yaw, pitch)`` in degrees of Face Mesh landmarks ``(468+, 3)`` (x right, y down, z away
    from the camera, pixel units) by a rigid fit of the canonical face (x right, y up, z
    towards the viewer). Yaw > 0: facing the image's right; pitch > 0: facing up."""
    points = np.asarray(landmarks, np.float64)
    if points.ndim != 2 or points.shape[0] < N_MESH_VERTICES or points.shape[1] != 3:
        raise ValueError(f"landmarks must be (468 or 478) x 3 Face Mesh points, got shape {points.shape}")
    observed = points[:N_MESH_VERTICES] * np.array([1.0, -1.0, -1.0])
    _, rot, _ = rigid_fit(canonical_geometry().vertices.astype(np.float64), observed)
    forward = rot[:, 2]  # where the canonical face's +z (its facing direction) points
    yaw = np.degrees(np.arctan2(forward[0], forward[2]))
    pitch = np.degrees(np.arctan2(forward[1], np.hypot(forward[0], forward[2])))
    return float(yaw), float(pitch)


def _three_way(angle: float, edge: float) -> np.ndarray:
    """Soft ``(negative side, centre, positive side)`` assignment of an angle."""
    low = 1.0 / (1.0 + np.exp(-(-angle - edge) / SOFTNESS))
    high = 1.0 / (1.0 + np.exp(-(angle - edge) / SOFTNESS))
    return np.array([low, 1.0 - low - high, high])


def bin_probabilities(yaw: float, pitch: float) -> np.ndarray:
    """``(9,)`` float32 soft assignment of a pose to :data:`POSE_BINS` (sums to 1)."""
    p_yaw = _three_way(yaw, YAW_EDGE)  # left, centre, right
    p_pitch = _three_way(pitch, PITCH_EDGE)[::-1]  # up, level, down
    return np.outer(p_pitch, p_yaw).reshape(-1).astype(np.float32)


class FaceMeshPose:
    """Callable ``(K, H, W, 3)`` float batch in ``[0, 1]`` (NHWC) -> ``(K, 9)`` bin probabilities.

    One MediaPipe Face Mesh graph (static images, one face), used under a lock; picklable
    (the graph is rebuilt on first use).
    """

    def __init__(self) -> None:
        self._mesh = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def _graph(self):
        if self._mesh is None:
            from mediapipe.python.solutions import face_mesh  # 1-2 s to import: on first use

            with native_stderr_silenced():
                mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)
            self._mesh = QuietGraph(mesh)
        return self._mesh

    def pose(self, image: np.ndarray) -> tuple[float, float] | None:
        """``(yaw, pitch)`` of the face in an ``(H, W, 3) uint8`` RGB image, or None without a face."""
        h, w = image.shape[:2]
        with self._lock:
            found = self._graph().process(np.ascontiguousarray(image)).multi_face_landmarks
        if not found:
            return None
        points = np.array([(p.x * w, p.y * h, p.z * w) for p in found[0].landmark], np.float64)
        return yaw_pitch(points)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[3] != 3:
            raise ValueError(f"head pose takes K x H x W x 3 RGB batches, got shape {batch.shape}")
        images = np.clip(np.rint(batch * 255.0), 0, 255).astype(np.uint8)
        out = np.full((len(images), len(POSE_BINS)), 1.0 / len(POSE_BINS), np.float32)
        for k, image in enumerate(images):
            pose = self.pose(image)
            if pose is not None:
                out[k] = bin_probabilities(*pose)
        return out


def head_pose_scorer(confidence: str = "softmax", batch_size: int | None = None):
    """The ``"head-pose"`` :class:`~facesal_fast.scoring.Scorer` (see the module doc).

    ``confidence``: ``"softmax"`` (the bin's probability) or ``"logit"`` (its log).
    """
    return Scorer.from_callable(
        FaceMeshPose(),
        INPUT_SIZE,
        channels=3,
        layout="nhwc",
        mean=0.0,
        std=1.0,
        scale=1.0 / 255.0,
        crop="face",
        crop_margin=CROP_MARGIN,
        classes=POSE_BINS,
        outputs="probabilities",
        confidence=confidence,
        batch_size=batch_size or 64,
    )
