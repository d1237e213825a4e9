"""``Audit``: stream images through alignment and CIS, keep every result, build the CMS.

Feed it paths, a folder, ``H x W x 3`` arrays or a torch DataLoader; results come back as
they finish. With an output directory every result goes to a :class:`RunStore`, finished
images are skipped on a re-run, and the CMS is rebuilt from the store in key order, so a
resumed run gives exactly the result of an uninterrupted one.
"""

from __future__ import annotations

import importlib
import platform
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from facesal_fast import __version__
from facesal_fast.align import default_aligner
from facesal_fast.align.errors import NoFaceError
from facesal_fast.audit.approximation import record_approximation, settings_array
from facesal_fast.audit.groups import Groups, MatchAsReached, assigned, check_groups, group_of, label_of
from facesal_fast.audit.inputs import IMAGE_SUFFIXES, input_count, iter_inputs, list_images
from facesal_fast.audit.options import requested_options, run_settings
from facesal_fast.audit.resume import Resume
from facesal_fast.audit.store import RunStore
from facesal_fast.core.validate import check_window_sizes, one_target, positive_int
from facesal_fast.saliency.cis import CISResult, cis, cis_steps, resolve_patch
from facesal_fast.saliency.cms import CMSAccumulator, CMSResult
from facesal_fast.saliency.difference import build_stats
from facesal_fast.scoring.batching import run_together
from facesal_fast.scoring.confidence import resolve_class
from facesal_fast.scoring.progress import advance, inside_outer_bar

if TYPE_CHECKING:
    from facesal_fast.core.options import CISOptions, StatsOptions
    from facesal_fast.scoring.photos import AlignerLike, ScorerLike

__all__ = [
    "Audit",
    "AuditItem",
    "IMAGE_SUFFIXES",
    "check_cis_options",
    "fit_to_scorer",
    "group_of",
    "iter_inputs",
    "list_images",
    "versions",
]

Persons = None | Sequence[str] | Mapping[str, str]


@dataclass
class AuditItem:
    """One input's outcome: ``status`` is ``"done"``, ``"failed"`` or ``"skipped"`` (done before);
    ``face``: which face of the photo (1 = the default face, the largest confident one) with
    ``faces="all"``, else None."""

    key: str
    source: str
    status: str
    group: str | None = None
    result: CISResult | None = None
    error: str | None = None
    face: int | None = None


@dataclass(frozen=True)
class _Face:
    """One face to explain: its photo's ``index`` and ``photo`` key, the result's ``key``, its
    ``number`` (1 = the default face, with ``faces="all"``; None otherwise) and the ``source``."""

    index: int
    photo: str
    key: str
    number: int | None
    source: str
    sha256: str | None = None


@dataclass(frozen=True)
class _Entry:
    """One photo of a round: its ``index`` among the inputs, ``key``, ``source``, content hash,
    and the future of its alignment (None when it is done as it is)."""

    index: int
    key: str
    source: str
    sha256: str | None
    job: Future | None


@dataclass(frozen=True)
class _Labels:
    """The groups and persons of a feed (each None, a sequence by position or a mapping by key)."""

    groups: Groups
    persons: Persons


def fit_to_scorer(scorer: Any, options: CISOptions) -> CISOptions:
    """``options`` with ``patch`` resolved to the window used on ``scorer``'s input (model-input
    pixels; as they are when the scorer has no ``input_size``).

    Raises:
        ValueError: a patch larger than the model input or a grid step not smaller than it.
    """
    size = getattr(scorer, "input_size", None)
    if size is None:
        return options
    patch = resolve_patch(options.patch, size)
    check_window_sizes(size, patch, None if options.mode == "exact" else options.grid_step)
    return options.replace(patch=patch)


def check_cis_options(scorer: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """Deprecated: :class:`~facesal_fast.core.options.CISOptions` checks the options and
    :func:`fit_to_scorer` resolves the patch. ``options`` checked, ``patch`` resolved."""
    warnings.warn("check_cis_options is deprecated; use CISOptions and fit_to_scorer", DeprecationWarning, 2)
    return {**options, "patch": fit_to_scorer(scorer, requested_options(options, {})[0]).patch}


class Audit:
    """Run CIS over many images, store the results and build the CMS.

    Args:
        scorer: a :class:`~facesal_fast.scoring.Scorer`.
        out: run directory (a :class:`RunStore`), or ``None`` to keep results in memory.
        target: class index/name, or ``None``/``"predicted"``.
        aligner: the aligner (default: :func:`facesal_fast.align.default_aligner`).
        settings: extra settings recorded in the run (e.g. the model name and hash).
        photos_per_round: photos explained together: their occluded windows are scored in
            shared batches, so a small model keeps the runtime busy (maps as one at a time).
        options, **overrides: the CIS options, a :class:`~facesal_fast.core.options.CISOptions`
            or its fields by name (patch, stride, fill, mode, ...; checked here once, before
            run.json); on photos with several faces ``face_index=k`` explains the k-th in the aligner's
            face-choice order (:class:`~facesal_fast.align.Aligner`; default: the first, the
            largest face whose detector score is within 0.2 of the best, logged at WARNING
            with its box and score) and ``faces="all"`` every face, each its own result
            keyed ``"<photo key>#face<k>"`` (k = 1 for the default face).
        stats: how :meth:`cms` tests groups (a :class:`~facesal_fast.core.options.StatsOptions`,
            a mapping of its fields, or None: the defaults).
    """

    def __init__(
        self,
        scorer: ScorerLike,
        out: str | Path | None = None,
        *,
        target: int | str | None = None,
        aligner: AlignerLike | None = None,
        settings: dict[str, Any] | None = None,
        photos_per_round: int = 4,
        options: CISOptions | Mapping[str, Any] | None = None,
        stats: StatsOptions | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        self.scorer, self.target = scorer, one_target(target)
        self.stats = build_stats(stats, {})
        self.photos_per_round = positive_int(photos_per_round, "photos_per_round")
        requested, recorded = requested_options(options, overrides)
        self.options = fit_to_scorer(scorer, requested)
        self._per_face = self.options.per_face()
        self._all_faces = self.options.faces == "all"
        _check_target(scorer, self.target)
        self.aligner = aligner or default_aligner()
        self.resolved = {  # recorded in run.json: the values the settings resolved to
            "backend": getattr(getattr(scorer, "backend", None), "name", None),
            "patch": self.options.patch,
            "canonical_patch": self.options.canonical_patch
            or "per image: patch x canonical face size / face size in the input (canonical_patch in its results file)",
        }
        self._resumed = out is not None and (Path(out) / "run.json").is_file()
        recorded = run_settings(self.target, recorded, settings)
        self.store = None if out is None else RunStore(out, recorded, versions(), self.resolved)
        self._record_backend()
        self._memory: CMSAccumulator | None = None
        self.summary = {"done": 0, "failed": 0, "skipped": 0, "changed": 0, "gone": 0}
        self._resume = None if self.store is None else Resume(self.store, self._all_faces, self.summary)

    def explain(self, key: str, source: str, load: Callable[[], np.ndarray]) -> CISResult:
        """Load one input, align it and compute its CIS with the audit's settings (raises on
        bad input; :meth:`feed` records failures instead). For workers that shard an audit;
        one face per photo (``faces="all"`` is for :meth:`feed`)."""
        if self._all_faces:
            raise ValueError("explain() gives one result per photo; faces='all' works with feed() and run()")
        image, face, _ = self._align(source, load)
        return self._explain_aligned(image, face)

    def _align(self, source: str, load: Callable[[], np.ndarray]) -> tuple[np.ndarray, Any, float]:
        """(image, aligned face (a list of them for ``faces="all"``), seconds taken): an input's
        work before scoring."""
        start = time.perf_counter()
        image = load()
        choice = {"all_faces": True} if self._all_faces else {}
        if self.options.face_index is not None:
            choice["face_index"] = self.options.face_index
        return image, self.aligner(image, source=source, **choice), time.perf_counter() - start

    def _explain_aligned(self, image: np.ndarray, face: Any) -> CISResult:
        """CIS of one aligned image; its occlusion bar is off (the audit's bar, or a Ray
        driver's, tells the progress)."""
        with inside_outer_bar():
            return cis(image, self.scorer, self.target, face=face, options=self._per_face)

    def _explain_together(self, aligned: list[tuple[np.ndarray, Any]]) -> list[CISResult | Exception]:
        """CIS of several aligned images, their windows in shared batches; each one's result
        or error."""
        with inside_outer_bar():
            return run_together(
                [
                    cis_steps(image, self.scorer, self.target, face=face, options=self._per_face)
                    for image, face in aligned
                ]
            )

    def _aligned_ahead(self, items: Any, pool: ThreadPoolExecutor) -> Iterator[_Entry]:
        """An :class:`_Entry` per item (its job None when it is done with the content it has
        now); the next round's items are loaded and aligned in ``pool`` while this round is
        scored."""
        ahead: deque[_Entry] = deque()
        for index, (key, source, load) in enumerate(items):
            sha256 = None if self._resume is None else load.sha256()
            done = self._resume is not None and self._resume.is_done(key, sha256)
            ahead.append(_Entry(index, key, source, sha256, None if done else pool.submit(self._align, source, load)))
            if len(ahead) > self.photos_per_round:
                yield ahead.popleft()
        yield from ahead

    def record(
        self,
        key: str,
        source: str,
        group: str | None,
        result: CISResult,
        seconds: float,
        *,
        sha256: str | None = None,
        person: str | None = None,
    ) -> None:
        """Keep one finished result: into the run store (arrays written atomically, then the
        index row with its photo's content hash ``sha256`` and ``person``), or into the
        in-memory CMS when the audit has no run directory."""
        if self.store is None:
            if self._memory is None:
                self._memory = CMSAccumulator(result.canonical.shape, self.stats)
            self._memory.add(result.canonical, group, result.counts, person=person)
            return
        arrays = dict(
            canonical=result.canonical,
            counts=result.counts,
            occlusion=result.occlusion,
            drops=result.drops,
            affine=result.affine,
            face_box=np.asarray(result.face.face_box, np.float32),
            canonical_patch=np.asarray(result.canonical_patch, np.int32),
            settings=settings_array(result.settings),  # the mode used and its certificate
        )
        self.store.save_done(
            key,
            source,
            arrays,
            group=group,
            target=result.target,
            target_name=result.target_name,
            base_score=result.base_score,
            seconds=seconds,
            sha256=sha256,
            person=person,
        )

    def feed(
        self,
        inputs: Any,
        groups: Groups = None,
        progress: bool = True,
        *,
        persons: Persons = None,
        groups_from: str = "groups",
    ) -> Iterator[AuditItem]:
        """Explain every input, yielding an :class:`AuditItem` as each finishes.

        ``inputs``: a photo folder, a sequence of paths or ``H x W x 3`` arrays, or a torch
        ``Dataset`` / ``DataLoader`` whose items (or collated batches) are images
        (``C x H x W`` tensors, float in [0, 1] or uint8), ``(image, label, ...)`` tuples, or
        dicts with ``image``, optional ``key`` (e.g. the file name) and ``group`` (or
        ``label``). An item's key is its ``key``, else a digest of its pixels
        (:func:`content_key`), so keys do not depend on batch size or order and a resumed
        run skips what was done; items' groups are used when ``groups`` is None.

        ``groups`` / ``persons``: one name per input, or a mapping from photo names (paths
        relative to the folder, or file names when no two photos share one) to groups /
        persons (who each photo shows; the statistics resample persons, not photos). A
        mapping that names no photo, or one line naming two photos, is a ``ValueError``;
        photos it leaves out are a warning (``groups_from`` names the groups in messages).

        With a run directory, a photo is skipped when it is done with the same content (its
        content hash); a photo replaced under the same name is explained again, and with a
        folder, the results of photos gone from it are left out (``summary["changed"]``,
        ``summary["gone"]``).

        A failure (unreadable file, no face, NaN scores, ...) is recorded with a message
        naming the input and the audit carries on. Inputs are explained in rounds of
        ``photos_per_round`` whose occluded windows share batches; the next round is loaded and
        aligned in a background thread while this one is scored.
        """
        check_groups(groups)
        items, labels, matchers = self._inputs(inputs, _Labels(groups, persons), groups_from)
        total = len(items) if isinstance(items, list) else input_count(inputs)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="facesal-align") as pool:
            entries = self._aligned_ahead(items, pool)
            with tqdm(total=total, disable=not progress, unit="img", desc="audit", dynamic_ncols=True) as bar:
                while chunk := list(islice(entries, self.photos_per_round)):
                    done = self._finish(chunk, labels)
                    bar.set_postfix(failed=self.summary["failed"], refresh=False)
                    advance(bar, len(chunk))  # photos finished, not photos taken ahead
                    yield from done
        for matcher in matchers:
            matcher.check()
        message = None if self._resume is None else self._resume.unhashed_warning()
        if message:
            warnings.warn(message, stacklevel=2)

    def _inputs(self, inputs: Any, labels: _Labels, where: str) -> tuple[Any, _Labels, list[MatchAsReached]]:
        """(items, labels by key, matchers to check at the end): a folder's or a list's items
        listed, checked against the run (another folder's photos refused, photos gone from the
        folder left out) and matched to mapping labels now; other inputs' items as they come,
        matched as they arrive."""
        item_groups: dict[str, str] = {}
        folder = isinstance(inputs, (str, Path))
        tables = (("group", labels.groups), ("person", labels.persons))
        wheres = {"group": where, "person": "persons" if where == "groups" else where}
        if self._resume is not None and not folder:
            self._resume.refuse_position_keys()
        if not (folder or isinstance(inputs, (list, tuple))):
            items = iter_inputs(inputs, item_groups=item_groups)
            matchers = {w: MatchAsReached(t, wheres[w], w) for w, t in tables if isinstance(t, Mapping)}
            for matcher in matchers.values():
                items = matcher.wrap(items)
            groups, persons = (matchers[w].found if w in matchers else t for w, t in tables)
            return items, _Labels(item_groups if groups is None else groups, persons), list(matchers.values())
        items = list(iter_inputs(inputs, None if self.store is None else self.store.path, item_groups))
        if self._resume is not None and folder:
            self._resume.check_same_photos(items)
            self._resume.leave_out_gone(inputs, items)
        keys = [key for key, _, _ in items]
        groups, persons = (assigned(t, keys, wheres[w], w) for w, t in tables)
        return items, _Labels(item_groups if groups is None else groups, persons), []

    def _finish(self, chunk: list[_Entry], labels: _Labels) -> list[AuditItem]:
        """Score a round of aligned inputs together (recording why any failed); their
        :class:`AuditItem` in order, one per face with ``faces="all"`` (recorded largest face
        last, so that a photo whose ``#face1`` is done is done whole)."""
        items: dict[int, list[AuditItem]] = {}
        aligned = []
        for position, entry in enumerate(chunk):
            if entry.job is None:
                self.summary["skipped"] += 1
                items[position] = [AuditItem(entry.key, entry.source, "skipped")]
                continue
            try:
                image, found, align_seconds = entry.job.result()
                faces = self._faces_of(entry, found)
            except Exception as err:  # noqa: BLE001 - every failure is recorded, the audit goes on
                photo = _Face(entry.index, entry.key, entry.key, None, entry.source, entry.sha256)
                items[position] = [self._failed(photo, err, labels)]
                continue
            aligned += [(position, which, image, face, align_seconds / len(faces)) for which, face in faces]
        start = time.perf_counter()
        outcomes = self._explain_together([(image, face) for _, _, image, face, _ in aligned])
        share = (time.perf_counter() - start) / max(len(aligned), 1)  # scoring time, split evenly
        for (position, which, _, _, seconds), outcome in reversed(list(zip(aligned, outcomes))):
            items.setdefault(position, []).insert(0, self._outcome(which, outcome, labels, seconds + share))
        return [item for position in range(len(chunk)) for item in items[position]]

    def _faces_of(self, entry: _Entry, found: Any) -> list[tuple[_Face, Any]]:
        """Each face to explain of an aligned photo: its one face, or with ``faces="all"``
        every face, keyed ``key#faceK``."""
        index, key, source, sha256 = entry.index, entry.key, entry.source, entry.sha256
        if not self._all_faces:
            return [(_Face(index, key, key, None, source, sha256), found)]
        if not found:  # an aligner of its own may answer no face with an empty list
            raise NoFaceError(source, "no face found")
        return [(_Face(index, key, f"{key}#face{k}", k, source, sha256), face) for k, face in enumerate(found, start=1)]

    def _outcome(self, which: _Face, outcome: Any, labels: _Labels, seconds: float) -> AuditItem:
        """Record one face's result (or error); its group and person are its photo's."""
        if isinstance(outcome, Exception):
            return self._failed(which, outcome, labels)
        group = group_of(labels.groups, which.index, which.photo, outcome)
        person = label_of(labels.persons, which.index, which.photo)
        self.record(which.key, which.source, group, outcome, seconds, sha256=which.sha256, person=person)
        self.summary["done"] += 1
        return AuditItem(which.key, which.source, "done", group, outcome, face=which.number)

    def _failed(self, which: _Face, err: Exception, labels: _Labels) -> AuditItem:
        """Record why one face (or its whole photo) failed; its :class:`AuditItem`."""
        message = f"{which.source}: {err}" if which.source not in str(err) else str(err)
        if self.store is not None:
            self.store.save_failed(
                which.key,
                which.source,
                message,
                group_of(labels.groups, which.index, which.photo, None),
                sha256=which.sha256,
                person=label_of(labels.persons, which.index, which.photo),
            )
        self.summary["failed"] += 1
        return AuditItem(which.key, which.source, "failed", error=message, face=which.number)

    def run(self, inputs: Any, groups: Groups = None, progress: bool = True, **labels: Any) -> dict[str, int]:
        """Feed every input (see :meth:`feed`; ``labels``: its ``persons`` and ``groups_from``);
        returns the summary ``{"done", "failed", "skipped", "changed", "gone"}`` (changed: photos
        explained again because their content changed; gone: photos whose results were left out
        because they left the folder)."""
        for _ in self.feed(inputs, groups, progress, **labels):
            pass
        self._record_backend()  # backend="auto" may have probed and switched meanwhile
        if self.store is not None:
            record_approximation(self.store)
        return dict(self.summary)

    def _record_backend(self) -> None:
        """Record the backend this session runs on in run.json (a resumed run switching: a warning)."""
        name = getattr(getattr(self.scorer, "backend", None), "name", None)
        if self.store is not None and name is not None and (switched := self.store.record_backend(name)):
            if self._resumed:
                warnings.warn(switched, stacklevel=3)

    def close(self) -> None:
        """Close the run store and release the run folder's lock (also done on leaving a
        ``with Audit(...) as audit:`` block, or when the process ends)."""
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> Audit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cms(self, stats: StatsOptions | Mapping[str, Any] | None = None, **overrides: Any) -> CMSResult:
        """The CMS of every finished image (from the run store in key order, when there is one),
        its groups tested with ``stats`` and its field ``overrides`` (default: the Audit's)."""
        stats = build_stats(self.stats if stats is None else stats, overrides)
        if self.store is None:
            if self._memory is None:
                raise ValueError("no image was explained successfully")
            self._memory.stats = stats
            return self._memory.result()
        return cms_from_store(self.store, stats)


def cms_from_store(store: RunStore, stats: StatsOptions | Mapping[str, Any] | None = None, **options: Any) -> CMSResult:
    """Rebuild the CMS of a run from its stored CIS maps, in key order; groups tested with
    ``stats`` and ``options`` (:class:`~facesal_fast.saliency.cms.CMSAccumulator`'s)."""
    accumulator = None
    for row, arrays in store.iter_done():
        if accumulator is None:
            accumulator = CMSAccumulator(arrays["canonical"].shape, stats, **options)
        # a run without counts: all covered; without persons: each photo its own person
        accumulator.add(arrays["canonical"], row.group, arrays.get("counts"), person=row.person)
    if accumulator is None:
        raise ValueError(f"{store.path} has no finished image")
    return accumulator.result()


def _check_target(scorer: Any, target: int | str | None) -> None:
    """A class target must name one of the scorer's classes (checked before any image)."""
    classes = getattr(scorer, "classes", None)
    if target in (None, "predicted") or classes is None:
        return
    resolve_class(target, classes, len(classes))


_VERSIONED = ("torch", "numpy", "mediapipe", "onnxruntime", "cv2", "PIL")


def versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers (recorded in ``run.json``)."""
    found = {"facesal_fast": __version__, "python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = str(importlib.import_module(name).__version__)
        except Exception:  # noqa: BLE001 - an optional package: missing or broken is recorded as such
            found[name] = "not installed"
    return found
