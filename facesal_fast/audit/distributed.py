"""Dataset-scale audits on Ray: shard the images across actors, reduce their partial sums.

Each Ray actor builds the scorer and the aligner once and explains one image per task: it
writes the image's result file into the shared run directory (atomically, as
:class:`~facesal_fast.audit.store.RunStore` does) and returns the index row, which the
driver alone commits to the SQLite index. Every actor also keeps float64 partial sums and
counts per group of the maps it computed; the driver reduces them (in worker order) and
checks the reduction against the CMS rebuilt from the run store in key order, which is
the returned CMS and equals a single-process run exactly.

Fault tolerance: actors are restarted and their in-flight tasks retried (``retries``);
an image is finished once its index row is committed, so finished images are never
recomputed, by a retry or by a re-run of the same command. The partial sums of a killed
actor are lost with it; the driver re-reads those images (and images finished by an
earlier run) from the store.

Backpressure: image paths are streamed and at most ``in_flight`` tasks per actor are
outstanding; no process holds more than one image's maps plus its partial sums.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from facesal_fast import models
from facesal_fast.align import load_image
from facesal_fast.audit.approximation import record_approximation
from facesal_fast.audit.groups import label_of
from facesal_fast.audit.options import print_summary, requested_options, run_settings
from facesal_fast.audit.resume import Resume
from facesal_fast.audit.runner import Audit, Groups, cms_from_store, group_of, iter_inputs, versions
from facesal_fast.audit.store import RunStore, StoredImage, file_sha256
from facesal_fast.saliency.cms import covered_mean

if TYPE_CHECKING:
    from facesal_fast.audit.options import AuditPlan
    from facesal_fast.core.options import CISOptions
    from facesal_fast.saliency.cms import CMSResult

__all__ = ["PartialSums", "RayAuditResult", "cms_ray", "run_audit_ray"]

ScorerSpec = str | Callable[[], Any]


@dataclass
class PartialSums:
    """float64 sums of CIS maps, images covering each pixel and image counts, overall and per
    group (name -> ``(sum, covered, n)``), and the keys they cover."""

    keys: list[str] = field(default_factory=list)
    total: np.ndarray | None = None
    covered: np.ndarray | None = None
    count: int = 0
    groups: dict[str, tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict)

    def add(self, key: str, canonical: np.ndarray, group: str | None, counts: np.ndarray | None = None) -> None:
        """Add one image's canonical map (to its group, when given); ``counts``: its CIS density
        (the pixels it covers are ``counts > 0``; None: all)."""
        cmap = np.asarray(canonical, np.float64)
        covered = np.ones(cmap.shape) if counts is None else (np.asarray(counts) > 0).astype(np.float64)
        self._merge(
            [key], cmap * covered, covered, 1, {} if group is None else {str(group): (cmap * covered, covered, 1)}
        )

    def merge(self, other: PartialSums) -> None:
        """Add another partial (the reduction step)."""
        if other.total is not None:
            self._merge(other.keys, other.total, other.covered, other.count, other.groups)

    def _merge(self, keys, total, covered, count, groups) -> None:
        self.keys.extend(keys)
        self.total = total.copy() if self.total is None else self.total + total
        self.covered = covered.copy() if self.covered is None else self.covered + covered
        self.count += count
        for group, (g_total, g_covered, n) in groups.items():
            old, old_covered, m = self.groups.get(group, (0.0, 0.0, 0))
            self.groups[group] = (old + g_total, old_covered + g_covered, m + n)


@dataclass
class RayAuditResult:
    """What :func:`cms_ray` returns.

    Attributes:
        summary: ``{"done", "failed", "skipped", "changed", "gone"}`` counts of this run (skipped:
            done before with the same content; changed: explained again; gone: left out).
        cms: the CMS rebuilt from the run store in key order, ``None`` when no image is done.
        reduced: the reduction of the workers' partial sums (plus ``recovered``).
        recovered: keys whose partial sums were not returned by a worker (finished by an
            earlier run, or by an actor that was killed afterwards), re-read from the store.
        workers: number of actors.
    """

    summary: dict[str, int]
    cms: CMSResult | None
    reduced: PartialSums
    recovered: list[str]
    workers: int


class _ShardStore(RunStore):
    """A worker's view of the run directory: writes result files, hands index rows back.

    It inherits :meth:`RunStore.save_done` / :meth:`RunStore.save_failed` (same file names,
    same atomic write) but never opens the SQLite index: :meth:`put` leaves the row in ``last_row``.
    """

    def __init__(self, path: str | Path) -> None:  # noqa: D107 - no index, no run.json check
        self.path = Path(path)
        self.results_dir = self.path / "results"
        self.last_row: StoredImage | None = None

    def put(self, row: StoredImage) -> None:
        """Hand the row back (the driver commits it) instead of writing the index."""
        self.last_row = row


class _Worker:
    """Ray actor body: one scorer and aligner, one image per :meth:`explain` call."""

    def __init__(
        self,
        out: str,
        scorer: ScorerSpec,
        backend: str,
        device: str,
        target: int | str | None,
        groups: Groups,
        options: CISOptions,
    ) -> None:
        self.audit = Audit(_make_scorer(scorer, backend, device), None, target=target, options=options)
        self.store = _ShardStore(out)
        self.audit.store = self.store
        self.groups = groups
        self.partial = PartialSums()

    def explain(self, index: int, key: str, source: str, path: str) -> tuple[StoredImage, int]:
        """Explain one image, write its result file; returns its index row and this PID."""
        start = time.perf_counter()
        try:
            result = self.audit.explain(key, source, lambda: load_image(path))
        except Exception as err:  # noqa: BLE001 - every failure is recorded, the audit goes on
            message = f"{source}: {err}" if source not in str(err) else str(err)
            self.store.save_failed(key, source, message, group_of(self.groups, index, key, None))
            return self.store.last_row, os.getpid()
        group = group_of(self.groups, index, key, result)
        self.audit.record(key, source, group, result, time.perf_counter() - start)
        self.partial.add(key, result.canonical, group, result.counts)
        return self.store.last_row, os.getpid()

    def resolved(self) -> dict[str, Any]:
        """The values this actor's audit resolved its settings to (backend chosen, patch, ...)."""
        return self.audit.resolved

    def partials(self) -> PartialSums:
        """The float64 partial sums of every image this actor (since its last restart) computed."""
        return self.partial


def _make_scorer(scorer: ScorerSpec, backend: str, device: str) -> Any:
    if callable(scorer):
        return scorer()
    return models.load(scorer, backend=backend, device=device)


def _paths(inputs: str | Path | Iterable[str | Path], out: str | Path) -> Iterator[tuple[str, str]]:
    """(key, source) per image, with the keys a single-process :class:`Audit` gives them."""
    if isinstance(inputs, (str, Path)):
        for key, source, _ in iter_inputs(inputs, exclude=out):
            yield key, source
        return
    for item in inputs:
        if not isinstance(item, (str, Path)):
            raise TypeError(
                f"cms_ray takes a folder or image paths (workers read the files); got {type(item).__name__}"
            )
        yield str(item), str(item)


def _commit(store: RunStore, row: StoredImage) -> None:
    """The driver's write of one index row (the image's commit point)."""
    store.put(row)


def _check_reduction(reduced: PartialSums, cms: CMSResult) -> None:
    """The reduced partial sums must give the store's CMS (up to float64 summation order)."""
    problems = []
    if reduced.count != cms.count or reduced.total is None:
        problems.append(f"{reduced.count} maps reduced, {cms.count} in the store")
    elif not np.allclose(covered_mean(reduced.total, reduced.covered), cms.cms, rtol=1e-5, atol=1e-8):
        problems.append("the overall CMS differs")
    for group, (cmap, n) in cms.groups.items():
        total, covered, m = reduced.groups.get(group, (None, None, 0))
        if m != n or not np.allclose(covered_mean(total, covered), cmap, rtol=1e-5, atol=1e-8):
            problems.append(f"group {group!r} differs ({m} vs {n} maps)")
    if problems or set(reduced.groups) != set(cms.groups):
        raise RuntimeError(
            f"the workers' partial sums disagree with the run store: {'; '.join(problems) or 'groups differ'}"
        )


def cms_ray(
    inputs: str | Path | Iterable[str | Path],
    out: str | Path,
    scorer: ScorerSpec = "gender",
    *,
    backend: str = "auto",
    device: str = "cpu",
    target: int | str | None = None,
    groups: Groups = None,
    persons: Sequence[str] | Mapping[str, str] | None = None,
    settings: dict[str, Any] | None = None,
    address: str | None = None,
    num_cpus: int = 2,
    workers: int | None = None,
    in_flight: int = 2,
    retries: int = 3,
    on_item: Callable[[StoredImage, int], None] | None = None,
    progress: bool = True,
    cms_options: dict[str, Any] | None = None,
    options: CISOptions | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> RayAuditResult:
    """Audit ``inputs`` on Ray actors into the run directory ``out``; returns the CMS.

    The run directory is the one a single-process :class:`~facesal_fast.Audit` with the
    same arguments writes (same settings, keys and files), so either can resume the other,
    and the CMS equals the single-process one exactly. On a cluster ``out`` and the photos
    must be on a filesystem every node mounts at the same path.

    Args:
        inputs: a folder (keys are paths relative to it) or image paths.
        out: run directory.
        scorer: a bundled model name (loaded in each actor with ``backend``/``device``)
            or a picklable zero-argument callable returning a scorer.
        backend, device: for a bundled model; ``device="cuda"`` gives each actor one GPU.
        target, groups, persons, settings: as for :class:`~facesal_fast.Audit` /
            ``Audit.feed`` (a photo is skipped when done with the same content hash).
        address: Ray cluster address (``"auto"``, ``"ray://head:10001"``); ``None`` starts a
            local Ray with ``num_cpus`` CPUs. An already initialised Ray is used as it is.
        num_cpus: CPUs of the local Ray (ignored with ``address``).
        workers: number of actors (default: one per GPU with ``device="cuda"``, else one
            per CPU of the cluster).
        in_flight: outstanding tasks per actor (backpressure).
        retries: actor restarts and task retries after a worker dies.
        on_item: called on the driver after each image's index row is committed, with the
            row and the PID of the worker process that computed it.
        progress: show a progress bar.
        cms_options: passed to :class:`~facesal_fast.saliency.cms.CMSAccumulator`.
        options, **overrides: the CIS options, as for :class:`~facesal_fast.Audit` (checked
            once here, on the driver; every actor gets the checked record).
    """
    import ray  # the optional "ray" extra

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        return _run(
            ray,
            inputs,
            out,
            scorer,
            backend,
            device,
            target,
            groups,
            settings,
            workers,
            in_flight,
            retries,
            on_item,
            progress,
            cms_options or {},
            options,
            persons=persons,
            overrides=overrides,
        )
    finally:
        if started:
            ray.shutdown()


def _run(
    ray: Any,
    inputs: str | Path | Iterable[str | Path],
    out: str | Path,
    scorer: ScorerSpec,
    backend: str,
    device: str,
    target: int | str | None,
    groups: Groups,
    settings: dict[str, Any] | None,
    workers: int | None,
    in_flight: int,
    retries: int,
    on_item: Callable[[StoredImage, int], None] | None,
    progress: bool,
    cms_options: dict[str, Any],
    options: CISOptions | Mapping[str, Any] | None,
    *,
    persons: Sequence[str] | Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RayAuditResult:
    checked, recorded = requested_options(options, overrides or {})
    store = RunStore(out, run_settings(target, recorded, settings), versions())
    actors = _start_actors(
        ray, workers, retries, device, (str(Path(out).resolve()), scorer, backend, device, target, groups, checked)
    )
    n_workers = len(actors)
    summary = {"done": 0, "failed": 0, "skipped": 0, "changed": 0, "gone": 0}
    items = list(_paths(inputs, out)) if isinstance(inputs, (str, Path)) else _paths(inputs, out)
    resume, photo = Resume(store, False, summary), {}  # photo: key -> (content hash, person)
    if isinstance(items, list):  # a folder: photos gone from it are left out
        resume.leave_out_gone(inputs, [(key, source, None) for key, source in items])
    bar = tqdm(
        total=len(items) if isinstance(items, list) else None,
        disable=not progress,
        unit="img",
        desc=f"audit ({n_workers} Ray workers)",
        dynamic_ncols=True,
    )
    pending: dict[Any, int] = {}
    load = [0] * n_workers

    def collect() -> None:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            load[pending.pop(ref)] -= 1
            row, pid = ray.get(ref)
            row.sha256, row.person = photo.pop(row.key, (None, None))
            _commit(store, row)
            summary[row.status] += 1
            bar.update()
            if on_item is not None:
                on_item(row, pid)

    try:
        store.record_resolved(ray.get(actors[0].resolved.remote()))  # as a single-process run records them
        for index, (key, source) in enumerate(items):
            sha256 = file_sha256(source)
            if resume.is_done(key, sha256):
                summary["skipped"] += 1
                bar.update()
                continue
            while len(pending) >= in_flight * n_workers:
                collect()
            w = load.index(min(load))
            photo[key] = (sha256, label_of(persons, index, key))
            pending[actors[w].explain.remote(index, key, source, str(Path(source).resolve()))] = w
            load[w] += 1
        while pending:
            collect()
        record_approximation(store)  # the modes used and their certificates, as a single-process run
        partials = ray.get([a.partials.remote() for a in actors])
    finally:
        bar.close()
        for a in actors:
            ray.kill(a)
    return _finish(store, partials, summary, cms_options, n_workers)


def _start_actors(ray: Any, workers: int | None, retries: int, device: str, arguments: tuple) -> list[Any]:
    """``workers`` Ray actors (default: one per GPU for a CUDA ``device``, else one per CPU of
    the cluster), each a :class:`_Worker` of ``arguments``, restarted up to ``retries`` times."""
    gpu = device.startswith("cuda")
    n_workers = workers or max(1, int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1)))
    actor = ray.remote(_Worker).options(
        num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1, max_restarts=retries, max_task_retries=retries
    )
    return [actor.remote(*arguments) for _ in range(n_workers)]


def _finish(
    store: RunStore, partials: Sequence[PartialSums], summary: dict[str, int], cms_options: dict[str, Any], workers: int
) -> RayAuditResult:
    """The workers' partial sums reduced in worker order, plus those of the done photos no
    worker returned (re-read from the ``store``), checked against the store's CMS; the store closed."""
    reduced = PartialSums()
    for partial in partials:
        reduced.merge(partial)
    covered = set(reduced.keys)
    recovered = PartialSums()
    for row in store.rows("done"):
        if row.key not in covered:
            arrays = store.load(row.key)
            recovered.add(row.key, arrays["canonical"], row.group, arrays.get("counts"))
    reduced.merge(recovered)
    cms = cms_from_store(store, **cms_options) if store.rows("done") else None
    if cms is not None:
        _check_reduction(reduced, cms)
    store.close()
    return RayAuditResult(summary, cms, reduced, recovered.keys, workers)


def run_audit_ray(plan: AuditPlan, *, address: str | None = None, progress: bool = True) -> dict[str, int]:
    """``facesal audit --ray [ADDRESS]``: :func:`facesal_fast.cli.run_audit` on Ray (same run directory,
    same checks before any work). A worker explains one face per photo: ``faces="all"`` is refused."""
    if plan.options.faces is not None:
        raise ValueError(f"--faces {plan.options.faces} works without --ray (a Ray worker explains one face per photo)")
    start = time.perf_counter()
    given = {name: getattr(plan, name) for name in ("backend", "device", "target", "groups", "persons", "settings")}
    result = cms_ray(
        plan.photos, plan.out, plan.model, address=address, progress=progress, options=plan.options, **given
    )
    store = RunStore(plan.out)
    print_summary(result.summary, time.perf_counter() - start, f"{result.workers} Ray workers", store)
    store.close()
    return result.summary
