"""Batch sizing, the produce/consume pipeline that overlaps occlusion with inference, and
windows of several images scored in shared batches.

On the CPU a producer thread builds batch i+1 (``occlude_batch`` releases the GIL) while
the model runs batch i; on CUDA batch i+1 is written on a side stream while batch i runs
on torch's current stream. Scores stay on the device until the end (one copy).

Explaining several images, each image's work is a generator of :class:`Windows` requests
(``cis_steps``, ``adaptive_steps``): :func:`run_steps` drives one, scoring each request as
``scorer.score_occluded`` would; :func:`run_together` drives several in lockstep and scores
the requests of one round together (:func:`score_windows`): windows of images of one shape
on one scorer fill shared batches, so a small model keeps the runtime busy, and the scores
are split back per image (the same windows, the same scores as one image at a time).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Generator, Protocol, Sequence

import numpy as np
import torch

from facesal_fast.scoring.progress import step_bar

__all__ = [
    "SharedBatchScorer",
    "Windows",
    "auto_batch_size",
    "batch_size_for",
    "run_pipelined",
    "run_steps",
    "run_together",
    "score_windows",
]

_CPU_ELEMENTS, _CPU_MAX = 1 << 21, 256  # ~8 MiB of float32 input per CPU batch
_CUDA_ELEMENTS, _CUDA_MAX = 1 << 26, 1024  # ~256 MiB per GPU batch
# Patch boxes are smaller than whole inputs: 4x the whole-input batch, at most 256, amortises the
# per-layer bookkeeping of incremental inference (best measured: 32 for ResNet-50 at 224 px,
# 64-128 at 150 px).
_BOXES_FACTOR, _BOXES_MAX = 4, 256


def auto_batch_size(
    input_shape: tuple[int, int, int], device: torch.device, total: int | None = None, cpu_max: int = _CPU_MAX
) -> int:
    """Power-of-two batch size for ``C x H x W`` inputs on ``device``, capped by ``total``
    (and on the CPU by ``cpu_max``, see ``Backend.cpu_max_batch``)."""
    elements, cap = (_CUDA_ELEMENTS, _CUDA_MAX) if device.type == "cuda" else (_CPU_ELEMENTS, cpu_max)
    per_image = max(1, int(np.prod(input_shape)))
    size = 1 << max(0, int(np.floor(np.log2(max(1, elements // per_image)))))
    size = min(size, cap)
    return max(1, min(size, total)) if total else size


def batch_size_for(
    input_shape: tuple[int, int, int],
    device: torch.device,
    total: int | None = None,
    *,
    requested: int | None = None,
    fixed: int | None = None,
    cpu_max: int = _CPU_MAX,
    boxes: bool = False,
) -> int:
    """The batch-size policy, the one place that decides images per forward pass (through
    ``Scorer.batch_size_for`` wherever a scorer exists): ``requested`` (a call's
    ``batch_size``), else ``fixed`` (the scorer's), else automatic for ``total`` inputs of
    ``C x H x W`` on ``device``: :func:`auto_batch_size` capped by ``total`` (and on the CPU by
    ``cpu_max``); with ``boxes`` (incremental inference, whose batches hold patch boxes) 4x the
    uncapped automatic size, at most 256 and at most ``max(1, total)``."""
    if requested or fixed:
        return requested or fixed
    if boxes:
        most = _BOXES_MAX if total is None else min(_BOXES_MAX, max(1, total))
        return min(_BOXES_FACTOR * auto_batch_size(input_shape, device), most)
    return auto_batch_size(input_shape, device, total, cpu_max)


def run_pipelined(
    produce: Callable[[int, int], torch.Tensor],
    consume: Callable[[torch.Tensor], torch.Tensor],
    total: int,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """``concat(consume(produce(lo, hi)) for consecutive [lo, hi) of batch_size)`` as float32 numpy.

    Args:
        produce: builds the model-ready batch for items ``lo..hi-1``.
        consume: batch -> ``hi - lo`` scores (a torch tensor on ``device``).
        total: number of items; batch_size: items per batch (> 0).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    bounds = [(lo, min(lo + batch_size, total)) for lo in range(0, total, batch_size)]
    if not bounds:
        return np.zeros(0, dtype=np.float32)
    if device.type == "cuda":
        return _run_cuda(produce, consume, bounds, device)
    scores = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(produce, *bounds[0])
        for nxt in bounds[1:] + [None]:
            batch = pending.result()
            if nxt is not None:
                pending = pool.submit(produce, *nxt)
            scores.append(consume(batch).float().reshape(-1))
    return torch.cat(scores).cpu().numpy()


def _run_cuda(produce, consume, bounds, device) -> np.ndarray:
    main, side = torch.cuda.current_stream(device), torch.cuda.Stream(device)
    side.wait_stream(main)  # inputs written on the main stream must be ready for the producer

    def make(lo: int, hi: int) -> tuple[torch.Tensor, torch.cuda.Event]:
        with torch.cuda.stream(side):
            batch = produce(lo, hi)
            event = torch.cuda.Event()
            event.record(side)
        return batch, event

    scores = []
    batch, ready = make(*bounds[0])
    for nxt in bounds[1:] + [None]:
        main.wait_event(ready)
        batch.record_stream(main)  # allocated on the side stream, used on the main one
        current = batch
        if nxt is not None:
            batch, ready = make(*nxt)
        scores.append(consume(current).float().reshape(-1))
    return torch.cat(scores).cpu().numpy()


# ---------------------------------------------------------------------------- shared batches


@dataclass(frozen=True)
class Windows:
    """One image's windows to score: ``scorer.score_occluded(image, centers, patch, fill, target)``.

    Attributes:
        scorer: the scorer (a ``Scorer``, or anything with ``score_occluded``).
        image: ``h x w x C`` uint8 in the scorer's input geometry.
        centers: ``K x 2`` ``(x, y)`` window centres in input pixels.
        patch, fill, target: as ``Scorer.score_occluded``.
    """

    scorer: Any
    image: np.ndarray
    centers: np.ndarray
    patch: int
    fill: Any = "black"
    target: Any = None

    @classmethod
    def template(cls, scorer: Any, image: np.ndarray, patch: int, fill: Any = "black", target: Any = None) -> Windows:
        """The request without windows (``centers`` ``0 x 2``); a steps generator yields
        ``dataclasses.replace(template, centers=...)`` for each batch of centres it wants scored."""
        return cls(scorer, image, np.zeros((0, 2), np.float32), patch, fill, target)

    def score(self) -> np.ndarray:
        """``(K,)`` scores, this request alone."""
        return self.scorer.score_occluded(self.image, self.centers, self.patch, fill=self.fill, target=self.target)


#: A generator of requests: yields :class:`Windows`, is sent their ``(K,)`` scores, returns its result.
Steps = Generator[Windows, np.ndarray, Any]


class SharedBatchScorer(Protocol):
    """What :func:`score_windows` needs of a scorer whose requests share batches. A class says
    that its ``score_occluded`` scores windows as shared batches do (by its backend, each window's
    ``occluded_batch`` and ``confidence_for``) with the class attribute ``shares_batches = True``:
    ``Scorer`` does, a ``Scorer`` subclass overriding ``score_occluded`` does only if it sets the
    attribute itself, and any other object (an ``IncrementalScorer``) scores each request alone."""

    shares_batches: ClassVar[bool]
    channels: int
    backend: Any

    def input_tensor(self, input_image: np.ndarray) -> torch.Tensor: ...

    def confidence_for(self, img: torch.Tensor, target: Any) -> Callable[[torch.Tensor], torch.Tensor]: ...

    def occluded_batch(self, img: torch.Tensor, centers: torch.Tensor, patch: int, fill: Any) -> torch.Tensor: ...

    def batch_size_for(self, input_shape: tuple[int, int, int], total: int | None = None) -> int: ...


def _shares_batches(scorer: Any) -> bool:
    """Whether ``scorer``'s class declares ``shares_batches = True`` (:class:`SharedBatchScorer`);
    read on the class, so a wrapper forwarding attributes to a Scorer does not inherit it."""
    return getattr(type(scorer), "shares_batches", False) is True


def _score_shared(requests: Sequence[Windows]) -> list[np.ndarray]:
    """Scores of requests on one :class:`SharedBatchScorer` and one input shape, in one pipelined
    stream of shared batches (each window keeps its own image, patch, fill and confidence)."""
    scorer = requests[0].scorer
    images = [scorer.input_tensor(r.image) for r in requests]
    centers = [torch.as_tensor(np.asarray(r.centers, np.float32)).to(img.device) for r, img in zip(requests, images)]
    confidences = [scorer.confidence_for(img, r.target) for r, img in zip(requests, images)]
    bounds = np.cumsum([0] + [len(c) for c in centers])
    total, shape = int(bounds[-1]), (scorer.channels, *images[0].shape[:2])
    size = scorer.batch_size_for(shape, total)

    def pieces(lo: int, hi: int) -> list[tuple[int, int, int]]:
        """(request, first, end) slices of the windows ``lo..hi-1``."""
        return [
            (k, max(lo, a) - a, min(hi, b) - a)
            for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))
            if max(lo, a) < min(hi, b)
        ]

    def produce(lo: int, hi: int) -> torch.Tensor:
        parts = [
            scorer.occluded_batch(images[k], centers[k][a:b], requests[k].patch, requests[k].fill)
            for k, a, b in pieces(lo, hi)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    done = [0]

    def consume(batch: torch.Tensor) -> torch.Tensor:
        lo = done[0]
        done[0] += len(batch)
        outputs, scores, row = scorer.backend(batch), [], 0
        for k, a, b in pieces(lo, done[0]):
            scores.append(confidences[k](outputs[row : row + b - a]).reshape(-1))
            row += b - a
        bar.update(len(batch))
        return torch.cat(scores)

    with step_bar(total=total, desc="occlusion", unit="window") as bar:  # as one image's windows: after 2 s
        flat = run_pipelined(produce, consume, total, size, scorer.backend.device)
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def score_windows(requests: Sequence[Windows]) -> list[np.ndarray]:
    """``(K_i,)`` scores of every request, in order: requests on one :class:`SharedBatchScorer`
    (a ``Scorer``) with inputs of one shape share batches; any other request is scored alone
    (:meth:`Windows.score`)."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
        key = (id(r.scorer), np.shape(r.image)) if _shares_batches(r.scorer) and len(r.centers) else (i,)
        groups.setdefault(key, []).append(i)
    scores: list[np.ndarray] = [np.zeros(0, np.float32)] * len(requests)
    for members in groups.values():
        batch = [requests[i] for i in members]
        for i, got in zip(members, _score_shared(batch) if len(batch) > 1 else [batch[0].score()]):
            scores[i] = got
    return scores


def run_steps(steps: Steps) -> Any:
    """Drive one generator of requests to its result, each request scored alone."""
    try:
        request = next(steps)
        while True:
            request = steps.send(request.score())
    except StopIteration as end:
        return end.value


def run_together(all_steps: Sequence[Steps]) -> list[Any]:
    """Drive several generators of requests in lockstep, each round's requests scored in
    shared batches (:func:`score_windows`); each generator's result, or the exception it
    raised (the others carry on)."""
    outcomes: list[Any] = [None] * len(all_steps)
    pending: dict[int, Windows] = {}

    def advance(i: int, scores: np.ndarray | None) -> None:
        try:
            pending[i] = next(all_steps[i]) if scores is None else all_steps[i].send(scores)
        except StopIteration as end:
            outcomes[i] = end.value
        except Exception as err:  # noqa: BLE001 - one image's failure is its outcome, the others go on
            outcomes[i] = err

    for i in step_bar(range(len(all_steps)), desc="align", unit="photo"):  # each one's work up to its first request
        advance(i, None)
    while pending:
        order = sorted(pending)
        scores = score_windows([pending.pop(i) for i in order])
        for i, got in zip(order, scores):
            advance(i, got)
    return outcomes
