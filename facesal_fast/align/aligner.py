"""Dense face alignment with MediaPipe Face Mesh (478 3D landmarks, weights bundled in the wheel).

Pipeline per image: MediaPipe face detection (short- and full-range models, for the face box
and for faces the mesh's own detector misses) -> Face Mesh landmarks -> the canonical mesh
(468 vertices, 898 triangles) posed in the image -> the fixed dense canonical grid projected
through it (barycentric mix of the image-projected vertices) -> visibility (back-facing
triangles from the image winding, and a z-buffer of the posed mesh).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Iterator, Sequence, Union

import cv2
import numpy as np

from .canonical import N_MESH_VERTICES, canonical_geometry
from .choice import (
    box_iou,
    choice_note,
    choice_warning,
    face_at,
    face_confidence,
    face_size,
    rank_faces,
    turn_candidate,
    turn_image,
    turned_note,
    turned_warning,
    upside_down,
)
from .errors import ImageError, NoFaceError
from .face import AlignedFace, MeshBinding
from .image_io import MAX_PIXELS, as_rgb_uint8, load_image
from .mesh import dense_grid, front_facing, signed_areas, visible_points

_log = logging.getLogger(__name__)
ImageLike = Union[np.ndarray, str, os.PathLike]

#: Set to 1 to see MediaPipe's native log lines (XNNPACK, absl, feedback manager, NORM_RECT).
MEDIAPIPE_LOGS_ENV = "FACESAL_MEDIAPIPE_LOGS"
_STDERR_LOCK = threading.Lock()
_STDERR_STATE = {"depth": 0, "saved": -1}


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point the process's file descriptor 2 at ``/dev/null`` for the duration (native
    libraries write there directly, past ``sys.stderr``), then restore it. Nested and
    concurrent uses share one redirection; ``FACESAL_MEDIAPIPE_LOGS=1`` turns it off."""
    if os.environ.get(MEDIAPIPE_LOGS_ENV, "") not in ("", "0"):
        yield
        return
    with _STDERR_LOCK:
        if _STDERR_STATE["depth"] == 0:
            sys.stderr.flush()
            _STDERR_STATE["saved"] = os.dup(2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        _STDERR_STATE["depth"] += 1
    try:
        yield
    finally:
        with _STDERR_LOCK:
            _STDERR_STATE["depth"] -= 1
            if _STDERR_STATE["depth"] == 0:
                sys.stderr.flush()
                os.dup2(_STDERR_STATE["saved"], 2)
                os.close(_STDERR_STATE["saved"])


class QuietGraph:
    """A MediaPipe solution whose start (its calculators open on MediaPipe's own threads and
    log there, after the constructor has returned) and first ``process`` call run with native
    stderr silenced; later calls go straight through."""

    def __init__(self, graph: object) -> None:
        with native_stderr_silenced():
            graph._graph.wait_until_idle()  # the calculators' Open (and its log lines) done here
        self.graph, self._started = graph, False

    def process(self, image: np.ndarray) -> object:
        if self._started:
            return self.graph.process(image)
        with native_stderr_silenced():
            result = self.graph.process(image)
        self._started = True
        return result


# Landmarks of eyes, nose and mouth (used to match meshes with detector boxes).
CORE_LANDMARKS = (33, 133, 362, 263, 1, 4, 61, 291, 13, 14)


class Aligner:
    """MediaPipe Face Mesh aligner producing :class:`AlignedFace` objects.

    Args:
        density: dense points per canonical pixel along each axis (grid stride ``1/density``);
            1.0 gives one point per canonical pixel inside the face (N ~ 38k at 256x256).
        canonical_size: canonical face size, int (square) or ``(H_F, W_F)``.
        max_faces: most faces Face Mesh looks for in one pass over a photo; with
            ``all_faces`` every face the detectors find is returned, those beyond
            ``max_faces`` meshed on a crop around their detector box.
        min_face_size: faces whose box is smaller than this (pixels) are refused.
        max_side: images are downscaled to this longest side for detection and landmarks
            (landmarks are mapped back to full resolution; warps use the full image).
        min_detection_confidence: detector threshold.
        depth_tol: z-buffer tolerance as a fraction of ``face_scale``.
        refine_landmarks: Face Mesh attention model (adds the 10 iris landmarks, 478 total).
        stride: alternative to ``density``: canonical grid spacing in pixels (``1 / density``).
        check_orientation: align a photo turned 180 degrees when the face detectors score it
            higher that way up (an upside-down face; see :mod:`facesal_fast.align.choice`).

    Face choice: faces are ranked by detector confidence as well as size. Those whose
    detector score is within ``choice.SCORE_MARGIN`` (0.2) of the photo's best come first,
    largest first, then the others, largest first; the default face is the first (a large
    low-score detection such as an emblem does not beat a real face by size alone).
    """

    def __init__(
        self,
        density: float = 1.0,
        canonical_size: int | tuple[int, int] = 256,
        max_faces: int = 10,
        *,
        min_face_size: int = 32,
        max_side: int = 2048,
        min_detection_confidence: float = 0.5,
        depth_tol: float = 0.08,
        refine_landmarks: bool = True,
        stride: float | None = None,
        check_orientation: bool = True,
    ) -> None:
        if stride is not None:
            if stride <= 0:
                raise ValueError("stride must be > 0")
            density = 1.0 / float(stride)
        if density <= 0:
            raise ValueError("density must be > 0")
        self.density = float(density)
        self.stride = 1.0 / self.density
        if isinstance(canonical_size, (int, np.integer)):
            canonical_size = (int(canonical_size), int(canonical_size))
        self.canonical_shape: tuple[int, int] = (int(canonical_size[0]), int(canonical_size[1]))
        self.max_faces = int(max_faces)
        self.min_face_size = int(min_face_size)
        self.max_side = int(max_side)
        self.min_detection_confidence = float(min_detection_confidence)
        self.depth_tol = float(depth_tol)
        self.refine_landmarks = bool(refine_landmarks)
        self.check_orientation = bool(check_orientation)
        geo = canonical_geometry()
        self.triangles = geo.triangles
        self.canon_verts = geo.layout_pixels(self.canonical_shape)
        self.canon_depth = geo.depth_pixels(self.canonical_shape)
        ac = signed_areas(self.canon_verts, self.triangles)
        self._canon_front = ac > 0 if (ac > 0).sum() >= (ac < 0).sum() else ac < 0
        self.canonical_scale = geo.scale(self.canonical_shape)
        c3 = np.concatenate([self.canon_verts, self.canon_depth[:, None]], axis=1).astype(np.float64)
        self._canon_rms = float(np.sqrt(((c3 - c3.mean(axis=0)) ** 2).sum(axis=1).mean()))
        self.grid = dense_grid(
            self.canon_verts, self.triangles, self.canonical_shape, 1.0 / self.density, self.canon_depth
        )
        self.grid.points.setflags(write=False)
        self._lock = threading.Lock()
        self._mp = None

    def __getstate__(self) -> dict:
        """Picklable (e.g. for Ray workers): the MediaPipe graphs are rebuilt on first use."""
        d = self.__dict__.copy()
        d["_mp"] = None
        d.pop("_lock", None)
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ mediapipe
    def _models(self):
        """MediaPipe's graphs, built on first use with their native log lines silenced
        (:func:`native_stderr_silenced`; ``FACESAL_MEDIAPIPE_LOGS=1`` shows them)."""
        if self._mp is None:
            with native_stderr_silenced():
                # mediapipe: 1-2 s to import, so on first use, its native log lines silenced
                from mediapipe.python.solutions import face_detection, face_mesh

                c = self.min_detection_confidence
                self._mp = dict(
                    mesh=QuietGraph(
                        face_mesh.FaceMesh(
                            static_image_mode=True,
                            max_num_faces=self.max_faces,
                            refine_landmarks=self.refine_landmarks,
                            min_detection_confidence=c,
                        )
                    ),
                    crop=QuietGraph(
                        face_mesh.FaceMesh(
                            static_image_mode=True,
                            max_num_faces=1,
                            refine_landmarks=self.refine_landmarks,
                            min_detection_confidence=c,
                        )
                    ),
                    det=[
                        QuietGraph(face_detection.FaceDetection(model_selection=m, min_detection_confidence=c))
                        for m in (0, 1)
                    ],
                )
        return self._mp

    def detect(
        self, image: np.ndarray, models: Sequence[int] = (1, 0)
    ) -> list[tuple[tuple[float, float, float, float], float]]:
        """Face boxes ``[((x0, y0, x1, y1), score), ...]`` in pixels of an ``(H, W, 3)`` RGB image:
        the union of MediaPipe's full-range (1) and short-range (0) detectors (``models``),
        non-maximum suppressed, best score first."""
        h, w = image.shape[:2]
        found = []
        for m in models:
            for d in self._models()["det"][m].process(image).detections or []:
                b = d.location_data.relative_bounding_box
                box = (b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h)
                found.append((box, float(d.score[0])))
        found.sort(key=lambda t: -t[1])
        keep: list = []
        for box, s in found:
            if all(box_iou(box, k[0]) < 0.3 for k in keep):
                keep.append((box, s))
        return keep

    @staticmethod
    def _match(meshes: list[np.ndarray], dets: list) -> tuple[list, set]:
        """Pair each mesh with the detector box holding its eyes/nose/mouth (best IoU)."""
        faces: list[tuple[np.ndarray, tuple, float | None, str]] = []
        used: set = set()
        for lm in meshes:
            core = lm[list(CORE_LANDMARKS), :2]
            lb = (*lm[:N_MESH_VERTICES, :2].min(axis=0), *lm[:N_MESH_VERTICES, :2].max(axis=0))
            best, best_iou = None, 0.0
            for k, (b, _) in enumerate(dets):
                if k in used:
                    continue
                inside = (
                    (core[:, 0] >= b[0]) & (core[:, 0] <= b[2]) & (core[:, 1] >= b[1]) & (core[:, 1] <= b[3])
                ).mean()
                if inside >= 0.8 and box_iou(b, lb) > best_iou:
                    best, best_iou = k, box_iou(b, lb)
            if best is not None:
                used.add(best)
                faces.append((lm, tuple(float(v) for v in dets[best][0]), dets[best][1], "detector"))
            else:
                faces.append((lm, tuple(float(v) for v in lb), None, "landmarks"))
        return faces, used

    def _landmarks(self, model, image: np.ndarray) -> list[np.ndarray]:
        h, w = image.shape[:2]
        res = model.process(image)
        out = []
        for lm in res.multi_face_landmarks or []:
            a = np.array([(p.x * w, p.y * h, p.z * w) for p in lm.landmark], np.float32)
            out.append(a)
        return out

    def _crop_landmarks(self, image: np.ndarray, box) -> np.ndarray | None:
        """Face Mesh on a square crop (2x the box) around a detector box; landmarks in image px."""
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        side = 2.0 * max(x1 - x0, y1 - y0)
        ox, oy = int(round(cx - side / 2)), int(round(cy - side / 2))
        n = int(round(side))
        h, w = image.shape[:2]
        crop = np.zeros((n, n, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(ox, 0), max(oy, 0), min(ox + n, w), min(oy + n, h)
        if sx1 <= sx0 or sy1 <= sy0:
            return None
        crop[sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox] = image[sy0:sy1, sx0:sx1]
        target = int(np.clip(n, 256, 768))
        f = target / n
        if f != 1.0:
            crop = cv2.resize(crop, (target, target), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        lms = self._landmarks(self._models()["crop"], np.ascontiguousarray(crop))
        if not lms:
            return None
        lm = lms[0]
        lm[:, :2] = lm[:, :2] / f + np.array([ox, oy], np.float32)
        lm[:, 2] = lm[:, 2] / f
        return lm

    # ------------------------------------------------------------------ public
    def __call__(
        self, image: ImageLike, *, all_faces: bool = False, source: str | None = None, face_index: int | None = None
    ) -> AlignedFace | list[AlignedFace]:
        """Align the face(s) of one image.

        Args:
            image: ``(H, W, 3) uint8`` RGB array (grayscale/RGBA/16-bit/float arrays are
                converted by :func:`as_rgb_uint8`'s value-range rule) or a file path (read
                with :func:`load_image`).
            all_faces: return every face found (a list, in the order of the face-choice rule
                of the class doc: confident faces largest first, then the others) instead of
                the first.
            source: name used in messages (defaults to the file name for a path).
            face_index: return the ``face_index``-th face in that order (0: the default
                face); on a photo with several faces and no ``face_index`` the face used is
                logged at WARNING with its box and detector score. An upside-down photo is
                aligned turned (``check_orientation``), said at WARNING and in the note.
        Raises:
            NoFaceError: no face, or only faces smaller than ``min_face_size``.
            ImageError: unreadable file or unusable array.
            ValueError: ``face_index`` out of range for the faces found.
        """
        if isinstance(image, (str, os.PathLike)):
            source = source or Path(image).name
            image = load_image(image)
        img = as_rgb_uint8(image, source)
        if face_index is None:
            with self._lock:
                return self._align(img, all_faces, source)
        with self._lock:
            faces = self._align(img, True, source)
        return face_at(faces, face_index, source)

    def batch(
        self,
        images: Sequence[ImageLike],
        *,
        all_faces: bool = False,
        on_error: str = "raise",
        sources: Sequence[str | None] | None = None,
    ) -> list:
        """Align a sequence of images. Returns one entry per image: an :class:`AlignedFace`
        (a list with ``all_faces``); with ``on_error="none"`` a failed image gives the exception
        object instead of raising."""
        if on_error not in ("raise", "none"):
            raise ValueError("on_error must be 'raise' or 'none'")
        out = []
        for k, im in enumerate(images):
            src = sources[k] if sources is not None else None
            try:
                out.append(self(im, all_faces=all_faces, source=src))
            except (NoFaceError, ImageError) as e:
                if on_error == "raise":
                    raise
                out.append(e)
        return out

    # ------------------------------------------------------------------ internals
    def _shrunk_note(self, shape: tuple[int, ...], work: tuple[int, ...]) -> str:
        """What a no-face message adds when the photo (``shape``) was shrunk to ``work`` for
        detection: a face in a panorama may be too small once shrunk."""
        if work[:2] == shape[:2]:
            return ""
        return (
            f" (the {shape[1]}x{shape[0]} px photo was shrunk to {work[1]}x{work[0]} px for detection, "
            f"max_side={self.max_side}; crop it around the face)"
        )

    def _detection_image(self, img: np.ndarray, source) -> np.ndarray:
        """``img`` (``H x W x 3``) shrunk to ``max_side`` px for detection; checked against MAX_PIXELS."""
        h, w = img.shape[:2]
        if h * w > MAX_PIXELS:
            raise ImageError(source, f"image of {w}x{h} px exceeds the {MAX_PIXELS} pixel limit")
        if min(h, w) < self.min_face_size:
            raise NoFaceError(source, f"image of {w}x{h} px is too small (a face needs >= {self.min_face_size} px)")
        f = min(1.0, self.max_side / max(h, w))
        if f == 1.0:
            return img
        return cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)

    def _align(self, img: np.ndarray, all_faces: bool, source) -> AlignedFace | list[AlignedFace]:
        h, w = img.shape[:2]
        work = self._detection_image(img, source)
        shrunk = self._shrunk_note(img.shape, work.shape)
        photo, turned, union = img, False, self.detect(work)  # both detectors: orientation, confidences
        if self.check_orientation:
            union_turned = self.detect(turn_image(work))
            turned = upside_down(union, union_turned)
        if turned:  # MediaPipe fits an upright mesh to an upside-down face: align the photo turned
            img, work, union = turn_image(img), turn_image(work), union_turned
            _log.warning("%s", turned_warning(source or "<array>", union, union_turned))
        fx, fy = work.shape[1] / w, work.shape[0] / h
        union = [((b[0] / fx, b[1] / fy, b[2] / fx, b[3] / fy), s) for b, s in union]

        cands = self._candidates(work, (fx, fy), all_faces)
        if not cands:
            raise NoFaceError(source, "no face found" + shrunk)
        size = face_size

        def confidence(c: tuple) -> float:
            return face_confidence(c, union, self.min_detection_confidence)

        big = rank_faces([c for c in cands if size(c) >= self.min_face_size], size, confidence)
        if not big:
            largest = max(size(c) for c in cands)
            raise NoFaceError(source, f"face too small: {largest:.0f} px < min_face_size={self.min_face_size} px")
        done, unmeshed = self._meshed(img, big, all_faces)
        if not done:
            raise NoFaceError(source, "no face found (detector boxes gave no landmarks)" + shrunk)
        if turned:
            done = [turn_candidate(c, photo.shape[:2]) for c in done]
        if all_faces and unmeshed:
            _log.warning("%s: %d detected face(s) gave no landmarks and are left out", source or "<array>", unmeshed)
        if not all_faces:
            note = turned_note(choice_note(done[0], big, size, confidence), turned)
            if len(big) > 1:
                _log.warning("%s", choice_warning(source or "<array>", done[0], big, size, confidence))
            return self._make_face(photo, *done[0], source=source, n_faces=len(big), index=0, note=note)
        n = len(done)
        return [
            self._make_face(
                photo, *c, source=source, n_faces=n, index=r, note=turned_note(f"face {r + 1} of {n}", turned)
            )
            for r, c in enumerate(done)
        ]

    def _meshed(self, img: np.ndarray, ranked: list, all_faces: bool) -> tuple[list, int]:
        """``ranked`` candidates with landmarks (the first only unless ``all_faces``; a box is meshed
        on a crop of ``img``) and how many boxes gave none; a crop finding a kept face is left out."""
        done: list = []
        unmeshed = 0
        for c in ranked:
            if c[0] is None:
                lm = self._crop_landmarks(img, c[1])
                if lm is None:
                    unmeshed += 1
                    continue
                core = lm[list(CORE_LANDMARKS), :2].mean(axis=0)
                if any(d[1][0] <= core[0] <= d[1][2] and d[1][1] <= core[1] <= d[1][3] for d in done):
                    continue  # the crop found a face we already have
                c = (lm, *c[1:])
            done.append(c)
            if not all_faces:
                break
        return done, unmeshed

    def _candidates(self, work: np.ndarray, scale: tuple[float, float], all_faces: bool) -> list:
        """Candidate faces ``(landmarks or None, box, score, box source)`` of the detection
        image ``work`` (the photo scaled by ``scale`` = ``(fx, fy)``), in photo pixels: meshes
        paired with detector boxes, then detector boxes without a mesh (meshed on a crop later)."""
        fx, fy = scale

        def detect(models):
            return [((b[0] / fx, b[1] / fy, b[2] / fx, b[3] / fy), s) for b, s in self.detect(work, models)]

        # full-range detector first; the short-range one too for all_faces or unmatched meshes
        dets = detect((1, 0) if all_faces else (1,))
        meshes = self._landmarks(self._models()["mesh"], work)
        for lm in meshes:
            lm[:, 0] /= fx
            lm[:, 1] /= fy
            lm[:, 2] /= fx
        faces, used = self._match(meshes, dets)
        if not all_faces and (not dets or any(f[3] != "detector" for f in faces)):
            dets = detect((1, 0))
            faces, used = self._match(meshes, dets)
        pending = [(None, tuple(float(v) for v in b), s, "detector") for k, (b, s) in enumerate(dets) if k not in used]
        return faces + pending

    def _make_face(self, img, lm, box, score, box_source, *, source, n_faces, index, note) -> AlignedFace:
        v = lm[:N_MESH_VERTICES]
        v3 = v.astype(np.float64)
        rms = float(np.sqrt(((v3 - v3.mean(axis=0)) ** 2).sum(axis=1).mean()))
        face_scale = self.canonical_scale * rms / self._canon_rms
        tol = self.depth_tol * face_scale
        front = front_facing(v[:, :2], self.canon_verts, self.triangles) & self._canon_front
        pts, z, vis = visible_points(self.grid, self.triangles, v[:, :2], v[:, 2], front, img.shape[:2], tol)
        mesh = MeshBinding(
            triangles=self.triangles,
            canon_verts=self.canon_verts,
            canon_depth=self.canon_depth,
            img_verts=np.ascontiguousarray(v[:, :2]),
            img_depth=np.ascontiguousarray(v[:, 2]),
            front=front,
            depth_tol=tol,
        )
        return AlignedFace(
            image=img,
            verts_image=pts,
            verts_canonical=self.grid.points,
            visible=vis,
            canonical_shape=self.canonical_shape,
            face_box=box,
            face_scale=float(face_scale),
            canonical_scale=float(self.canonical_scale),
            source=source,
            landmarks=lm,
            depth=z,
            score=score,
            n_faces=n_faces,
            face_index=index,
            note=note,
            box_source=box_source,
            mesh=mesh,
        )


@functools.lru_cache(maxsize=4)
def default_aligner(density: float = 1.0, canonical_size: int = 256) -> Aligner:
    """A cached :class:`Aligner` with default settings."""
    return Aligner(density=density, canonical_size=canonical_size)


def find_face(image: ImageLike, face: AlignedFace | None = None, aligner: Aligner | None = None) -> AlignedFace:
    """``face`` when given (a precomputed correspondence of ``image``), else the face that
    ``aligner`` (default :func:`default_aligner`) finds in ``image`` (an ``(H, W, 3) uint8``
    RGB array or a path, as :meth:`Aligner.__call__` takes)."""
    if face is not None:
        return face
    return (aligner or default_aligner())(image)
