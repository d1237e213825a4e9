"""Which face of a photo is explained, and which way up the photo is aligned.

A candidate face is ``(landmarks (L, 3) or None, box (x0, y0, x1, y1), detector score or None,
box source)`` in photo pixels.

Face choice (the rule :class:`~facesal_fast.align.Aligner` states): faces are ranked by
detector confidence as well as size. A face is *confident* when its detector score is within
:data:`SCORE_MARGIN` of the best score in the photo; confident faces come first, largest
first, then the others, largest first. The default face is the first: the largest confident
face, so a large low-score detection (an emblem at 0.69 beside a face at 0.95) does not win
by size alone. A face without a detector score (a mesh no detector box matched) counts as
scoring the detection threshold. A face's score is the best that either detector (full- or
short-range) gives a box overlapping it, so the ranking does not depend on which detector
supplied the face's box.

Orientation: MediaPipe fits an upright mesh to an upside-down face (eyes on the mouth), and
its detectors score the face lower than upright. A photo whose best detector score turned
by 180 degrees beats its score as it is by more than :data:`UPSIDE_DOWN_MARGIN` is aligned
turned, and the landmarks are mapped back to the photo's pixels. On the 89 real photos we
checked (the bundled demo faces and the deepface unit photos), the upright score beat the
turned one by at least 0.10. A face on its side (turned 90 degrees) needs nothing, as the mesh
follows it; it may still be aligned turned 180 degrees when that way up scores higher, with
the same landmarks within about a pixel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .canonical import N_MESH_VERTICES

if TYPE_CHECKING:
    from .face import AlignedFace

#: A face whose detector score is more than this below the photo's best is not "confident".
SCORE_MARGIN = 0.2
#: A photo is aligned turned 180 degrees when its best detector score turned beats its best
#: score as it is by more than this.
UPSIDE_DOWN_MARGIN = 0.05
#: How the multi-face warning says to choose another face, in Python words (the ``facesal``
#: command shows :data:`CLI_ADVICE` instead).
PYTHON_ADVICE = "(face_index= or faces='all' to choose)"
CLI_ADVICE = "(--face-index K or --faces all to choose)"

Candidate = tuple  # (landmarks or None, box, score or None, box source)


def best_score(detections: Sequence[tuple[tuple[float, float, float, float], float]]) -> float:
    """The highest score of ``[(box, score), ...]`` (0 when there is none)."""
    return max((float(s) for _, s in detections), default=0.0)


def upside_down(upright: Sequence, turned: Sequence) -> bool:
    """Whether a photo is upside down: the best score of the detections of the photo turned
    180 degrees (``turned``) beats that of the photo as it is (``upright``) by more than
    :data:`UPSIDE_DOWN_MARGIN`."""
    return best_score(turned) > best_score(upright) + UPSIDE_DOWN_MARGIN


def turn_image(image: np.ndarray) -> np.ndarray:
    """``image`` (``H x W x ...``) turned 180 degrees, contiguous."""
    return np.ascontiguousarray(image[::-1, ::-1])


def turn_candidate(candidate: Candidate, shape: tuple[int, int]) -> Candidate:
    """A candidate found in a photo of ``shape`` ``(H, W)`` turned 180 degrees, in the pixels
    of the photo itself: ``x -> W - x``, ``y -> H - y`` (MediaPipe's coordinates run along
    pixel edges, 0 to W), depth unchanged; the box's corners swap."""
    landmarks, box, score, source = candidate
    h, w = shape
    if landmarks is not None:
        landmarks = landmarks.copy()
        landmarks[:, 0] = w - landmarks[:, 0]
        landmarks[:, 1] = h - landmarks[:, 1]
    x0, y0, x1, y1 = box
    return landmarks, (w - x1, h - y1, w - x0, h - y0), score, source


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes ``(x0, y0, x1, y1)``."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def face_confidence(candidate: Candidate, detections: Sequence, floor: float) -> float:
    """A face's detector confidence: the best of its own score and the scores of the
    ``detections`` ``[(box, score), ...]`` of both detectors overlapping its box (IoU >= 0.3),
    so that it does not depend on which detector supplied the box; ``floor`` (the detection
    threshold) for a face no detector scored."""
    own = floor if candidate[2] is None else float(candidate[2])
    return max([own] + [float(s) for box, s in detections if box_iou(box, candidate[1]) >= 0.3])


Measure = Callable[[Candidate], float]


def rank_faces(candidates: list[Candidate], size: Measure, confidence: Measure) -> list[Candidate]:
    """``candidates`` in the order of the face-choice rule (module doc): confident faces
    (``confidence`` within :data:`SCORE_MARGIN` of the best) largest first, then the others
    largest first."""
    best = max((confidence(c) for c in candidates), default=0.0)
    return sorted(candidates, key=lambda c: (confidence(c) < best - SCORE_MARGIN, -size(c)))


def face_size(candidate: Candidate) -> float:
    """Face size in px: the detector box side, or for a meshed face 3x the RMS radius of its 3D
    landmarks (the same scale as MediaPipe's boxes, independent of the detector that supplied
    the box, and of the head's yaw)."""
    landmarks, box = candidate[0], candidate[1]
    if landmarks is None:
        return max(box[2] - box[0], box[3] - box[1])
    v = landmarks[:N_MESH_VERTICES].astype(np.float64)
    return 3.0 * float(np.sqrt(((v - v.mean(axis=0)) ** 2).sum(axis=1).mean()))


def face_at(faces: list[AlignedFace], face_index: int, source: str | None) -> AlignedFace:
    """``faces[face_index]`` (faces largest first), range-checked."""
    if isinstance(face_index, bool) or not isinstance(face_index, (int, np.integer)):
        raise ValueError(f"face_index must be an integer, got {face_index!r}")
    if not 0 <= face_index < len(faces):
        raise ValueError(f"{source or '<array>'}: face_index={face_index} but {len(faces)} face(s) were found")
    return faces[int(face_index)]


def _passed_over(chosen: Candidate, ranked: list[Candidate], size: Measure, confidence: Measure) -> list[Candidate]:
    """The faces of ``ranked`` passed over for a low score: not confident, larger than ``chosen``."""
    best = max(confidence(c) for c in ranked)
    return [c for c in ranked if confidence(c) < best - SCORE_MARGIN and size(c) > size(chosen)]


def choice_note(chosen: Candidate, ranked: list[Candidate], size: Measure, confidence: Measure) -> str:
    """How the default face ``chosen`` was chosen among ``ranked`` (:attr:`AlignedFace.note`)."""
    n, larger = len(ranked), _passed_over(chosen, ranked, size, confidence)
    if n == 1:
        return "single face"
    note = f"largest of {n} faces" if not larger else f"largest confident of {n} faces"
    return f"{note}, detector score {confidence(chosen):.2f}"


def choice_warning(source: str, chosen: Candidate, ranked: list[Candidate], size: Measure, confidence: Measure) -> str:
    """The warning for a photo with several faces: the face explained, its box and detector
    score, and the larger faces passed over with their scores."""
    larger = _passed_over(chosen, ranked, size, confidence)
    box = tuple(round(float(v)) for v in chosen[1])
    what = "the largest confident face" if larger else "the largest"
    message = (
        f"{source}: {len(ranked)} faces found, explaining {what}, box (x0, y0, x1, y1) = {box}, "
        f"detector score {confidence(chosen):.2f}"
    )
    if larger:
        scores = ", ".join(f"{confidence(c):.2f}" for c in larger[:5])
        message += (
            f"; passed over {len(larger)} larger detection(s) scoring more than {SCORE_MARGIN} below the best "
            f"({scores})"
        )
    return f"{message} {PYTHON_ADVICE}"


def turned_note(note: str, turned: bool) -> str:
    """``note`` with the orientation said when the photo was aligned turned."""
    return f"{note}; aligned turned 180 degrees (it scored higher that way up)" if turned else note


def turned_warning(source: str, upright: Sequence, turned: Sequence) -> str:
    """The warning for a photo aligned turned: the detectors' best scores both ways."""
    return (
        f"{source}: aligning the photo turned 180 degrees: the face detectors score it higher that way up "
        f"({best_score(turned):.2f} against {best_score(upright):.2f} as it is; an upside-down face, or one on "
        "its side); the landmarks are mapped back to the photo"
    )
