"""The fastest exact path without being asked, and speed presets with a stated error.

``cis`` (and so ``cms``, ``Audit`` and the CLI) calls :func:`choose_incremental` with its
``incremental`` option (``"auto"`` by default): incremental inference
(:class:`~facesal_fast.speed.IncrementalScorer`) is used when the scorer has a torch
module that ``torch.fx`` traces, and the trace's multiply-add count says it pays:

    full multiply-adds / incremental multiply-adds  >=  INCREMENTAL_MIN_MAC_RATIO x
    (speed of the scorer's backend over torch eager, from its ``backend="auto"`` probe)

counted (``Conv2d`` and ``Linear``) on 16 patch positions spread over the input. That rule
is cautious (wall-clock gain per multiply-add ratio was 0.5-1.3); where it says no but the
count is at least ``INCREMENTAL_MIN_MAC_RATIO``, a **race** decides: one request of
:data:`RACE_WINDOWS` windows through each, twice, interleaved; incremental is used if it is
:data:`RACE_MARGIN` times faster. The race is stored on disk beside the backend probes
(per model weights, input shape, patch, backend, versions and CPU), so it runs once per
machine. (On the 2-core VM, ResNet-18 at 218 x 178 with a 15 px patch counted 2.03 against
the 2.7 its onnxruntime backend asked for, yet incremental exact CIS took 17 s against 26 s.) Before
``backend="auto"`` has a probe of the input shape (none stored on disk) the speed is not
known: full batches run, so that the probe happens once the work pays for it. Otherwise
the scorer is used as it is, silently; each decision is logged once (logger
``facesal_fast.speed``, INFO) per model, input shape and patch, and cached.

The ``quality`` presets, which promise an SSIM against exact per photo, are
:mod:`facesal_fast.speed.certified`.
"""

from __future__ import annotations

import hashlib
import logging
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from facesal_fast.scoring.probe_cache import CachedProbe, load_probe, probe_key, store_probe
from facesal_fast.speed.incremental import IncrementalModel, IncrementalScorer, patch_boxes

__all__ = [
    "INCREMENTAL_MIN_MAC_RATIO",
    "RACE_MARGIN",
    "RACE_MIN_WORK",
    "RACE_WINDOWS",
    "IncrementalChoice",
    "choose_incremental",
    "mac_ratio",
]

log = logging.getLogger("facesal_fast.speed")

#: Multiply-add ratio (full / incremental) from which incremental inference (torch eager)
#: is chosen over full inference on torch eager. Measured on 2 CPU cores
#: (docs/performance.md): wall-clock gain / multiply-add ratio was 0.5-1.3 across the
#: bundled mini-XCEPTIONs, dlib's ResNet, ResNet-18/50 and VGG-16; at 1.5 the worst case
#: about breaks even and the rest gain.
INCREMENTAL_MIN_MAC_RATIO = 1.5

#: Windows a race times through each of incremental inference and the backend (twice); an
#: image with fewer than RACE_MIN_WORK x RACE_WINDOWS distinct windows is not raced (the
#: race would cost more than a quarter of its exact work).
RACE_WINDOWS, RACE_MIN_WORK = 48, 16
#: How much faster incremental inference must be in the race to be chosen.
RACE_MARGIN = 1.1

_POSITIONS = 4  # the multiply-add count occludes a 4 x 4 grid of patch positions


@dataclass(frozen=True)
class IncrementalChoice:
    """What :func:`choose_incremental` decided.

    Attributes:
        scorer: the scorer to occlude with (an ``IncrementalScorer`` or the one given).
        incremental: whether incremental inference is used.
        reason: why, in words (also logged once).
        mac_ratio: full / incremental multiply-adds, when counted.
    """

    scorer: Any
    incremental: bool
    reason: str
    mac_ratio: float | None = None


def mac_ratio(model: IncrementalModel, x: torch.Tensor, patch: int, centres: np.ndarray | None = None) -> float:
    """Multiply-adds (``Conv2d``, ``Linear``) of full inference / of incremental inference
    for ``patch``-pixel windows at ``centres`` (K x 2 ``(x, y)``; default a 4 x 4 grid of
    positions spread over the input) on ``x`` (1 x C x H x W, normalised input)."""
    H, W = x.shape[2:]
    if centres is None:
        xs, ys = np.linspace(0, W - 1, _POSITIONS), np.linspace(0, H - 1, _POSITIONS)
        centres = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    starts, size = patch_boxes(centres, int(patch), (H, W))
    model.multiply_adds = 0
    cache = model.cache(x)
    full, model.multiply_adds = model.multiply_adds * len(centres), 0
    for lo in range(0, len(centres), 256):
        hi = min(lo + 256, len(centres))
        model.run(cache, torch.zeros(hi - lo, x.shape[1], *size, device=x.device), starts[lo:hi])
    return full / max(model.multiply_adds, 1)


# module -> traced IncrementalModel (or the reason it cannot be traced); module -> decisions
_MODELS: "weakref.WeakKeyDictionary[torch.nn.Module, IncrementalModel | str]" = weakref.WeakKeyDictionary()
_RATIOS: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, float | str]]" = weakref.WeakKeyDictionary()
# module -> {(input shape, patch, backend name): (race times, when raced)}
_RACES: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, tuple[dict[str, float], str]]]" = (
    weakref.WeakKeyDictionary()
)


def _traced(module: torch.nn.Module) -> IncrementalModel | str:
    if module not in _MODELS:
        try:
            _MODELS[module] = IncrementalModel(module)
        except Exception as err:  # noqa: BLE001 - any tracing failure means: run in full
            _MODELS[module] = f"the model does not trace ({type(err).__name__}: {err})"
    return _MODELS[module]


def _ratio(scorer: Any, model: IncrementalModel, input_image: Any, patch: int) -> float | str:
    """The multiply-add ratio for this scorer's module, input shape and patch (cached), or
    why it could not be counted."""
    key = (tuple(np.shape(input_image)), int(patch))
    ratios = _RATIOS.setdefault(scorer.module, {})
    if key not in ratios:
        try:
            ratios[key] = mac_ratio(model, scorer.unoccluded_batch(scorer.input_tensor(input_image)), patch)
        except Exception as err:  # noqa: BLE001 - e.g. a traceable() twin that only holds for one size
            ratios[key] = f"incremental inference failed on this input ({type(err).__name__}: {err})"
    return ratios[key]


def backend_speedup(scorer: Any, input_shape: tuple[int, ...]) -> float | None:
    """How much faster the scorer's backend runs than torch eager on inputs of
    ``input_shape`` (``C x H x W``): 1 for torch eager, the probe's ratio for a probed
    backend, None when unknown (a backend named explicitly, a compiled module, or
    ``backend="auto"`` before its first probe of this shape)."""
    backend = scorer.backend
    if hasattr(backend, "speedup"):  # backend="auto" with no stored probe: probed per shape
        return backend.speedup(input_shape)
    if backend.name == "torch-fp32":
        return 1.0
    times = {p.name: p.ms_per_image for p in getattr(scorer, "probe", ()) if p.ms_per_image}
    if backend.name in times and "torch-fp32" in times:
        return times["torch-fp32"] / times[backend.name]
    return None


def _unsupported(scorer: Any) -> str | None:
    """Why incremental inference cannot run for this scorer, or None."""
    module, backend = getattr(scorer, "module", None), getattr(scorer, "backend", None)
    if module is None or backend is None:
        return "no torch module (black-box or ONNX scorer)"
    if backend.layout != "nchw" or backend.input_dtype != torch.float32:
        return f"backend {backend.name} does not take fp32 NCHW batches"
    return None


_NOT_PROBED = (
    "backend auto has not probed this input shape yet: full batches until the work pays for a probe, "
    "then the probe's speed decides (stored on disk for the next run)"
)
_LOGGED: "weakref.WeakKeyDictionary[Any, set[tuple]]" = weakref.WeakKeyDictionary()  # owner -> logged keys


def _decided(choice: IncrementalChoice, owner: Any, key: tuple) -> IncrementalChoice:
    """``choice``, logged the first time ``owner`` (the module, or the backend) meets ``key``."""
    seen = _LOGGED.setdefault(owner, set())
    if key not in seen:
        seen.add(key)
        log.info("incremental inference %s: %s", "on" if choice.incremental else "off", choice.reason)
    return choice


def _weighed(
    scorer: Any, input_image: Any, patch: int, model: IncrementalModel, windows: int | None
) -> IncrementalChoice:
    """The ``"auto"`` decision for a scorer whose module traces."""
    shape = tuple(np.shape(input_image))
    if scorer.backend.device.type != "cpu":
        return IncrementalChoice(scorer, False, "full batches on an accelerator (the threshold was measured on CPUs)")
    speedup = backend_speedup(scorer, (shape[2] if len(shape) == 3 else 1, *shape[:2]))
    if speedup is None and hasattr(scorer.backend, "speedup"):
        return IncrementalChoice(scorer, False, _NOT_PROBED)
    if speedup is None:
        return IncrementalChoice(scorer, False, f"backend {scorer.backend.name} was named explicitly")
    ratio = _ratio(scorer, model, input_image, patch)
    if isinstance(ratio, str):
        return IncrementalChoice(scorer, False, ratio)
    needed = INCREMENTAL_MIN_MAC_RATIO * speedup
    pays = ratio >= needed
    if not pays and ratio >= INCREMENTAL_MIN_MAC_RATIO and (windows is None or windows >= RACE_MIN_WORK * RACE_WINDOWS):
        return _raced(scorer, input_image, patch, model, ratio)
    reason = (
        f"multiply-add ratio full/incremental {ratio:.2f} {'>=' if pays else '<'} {needed:.2f} "
        f"({INCREMENTAL_MIN_MAC_RATIO} x backend {scorer.backend.name} at {speedup:.2f}x torch eager)"
    )
    return IncrementalChoice(IncrementalScorer(scorer, model=model) if pays else scorer, pays, reason, ratio)


def _raced(scorer: Any, input_image: Any, patch: int, model: IncrementalModel, ratio: float) -> IncrementalChoice:
    """The ``"auto"`` decision by a race (remembered, stored, or run and stored) when the
    count alone says no."""
    incremental = IncrementalScorer(scorer, model=model)
    times, when = _race_times(scorer, incremental, input_image, patch)
    pays = times["full"] >= RACE_MARGIN * times["incremental"]
    reason = (
        f"multiply-add ratio full/incremental {ratio:.2f}, and in a race (run {when}) incremental "
        f"took {times['incremental']:.2f} ms a window against {times['full']:.2f} ms for backend "
        f"{scorer.backend.name} ({'at least' if pays else 'less than'} {RACE_MARGIN}x faster)"
    )
    return IncrementalChoice(incremental if pays else scorer, pays, reason, ratio)


def _race_times(scorer: Any, incremental: Any, input_image: Any, patch: int) -> tuple[dict[str, float], str]:
    """(ms a window per path, when raced) for this module, input shape, patch and backend:
    remembered in this process (the disk key hashes every weight, too slow for each photo),
    else read from disk, else raced and stored."""
    key = (tuple(np.shape(input_image)), int(patch), scorer.backend.name)
    races = _RACES.setdefault(scorer.module, {})
    if key not in races:
        disk_key = _race_key(scorer, input_image, patch)
        stored = load_probe(disk_key)
        if stored is None:
            times = race(scorer, incremental, input_image, patch)
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            stored = CachedProbe("", [(name, ms, None, "") for name, ms in times.items()], stamp, [])
            store_probe(disk_key, stored)
        races[key] = ({name: ms for name, ms, _, _ in stored.rows}, stored.probed_at)
    return races[key]


def _race_key(scorer: Any, input_image: Any, patch: int) -> str:
    h, w = np.shape(input_image)[:2]
    channels = np.shape(input_image)[2] if np.ndim(input_image) == 3 else 1
    base = probe_key(scorer.module, (channels, h, w), scorer.backend.device, "fp32", False)
    return hashlib.sha256(f"{base} incremental race {scorer.backend.name} patch {int(patch)}".encode()).hexdigest()[:32]


def race(scorer: Any, incremental: Any, input_image: Any, patch: int) -> dict[str, float]:
    """Milliseconds a window through ``scorer`` (``"full"``) and ``incremental``: the best of
    two interleaved requests of :data:`RACE_WINDOWS` windows at seeded random centres in the
    middle half of the image (where a face's windows are)."""
    h, w = np.shape(input_image)[:2]
    rng = np.random.default_rng(0)
    centers = np.stack([rng.uniform(w / 4, 3 * w / 4, RACE_WINDOWS), rng.uniform(h / 4, 3 * h / 4, RACE_WINDOWS)], 1)
    best = {"full": float("inf"), "incremental": float("inf")}
    for _ in range(2):
        for name, runner in (("full", scorer), ("incremental", incremental)):
            start = time.perf_counter()
            runner.score_occluded(input_image, centers.astype(np.float32), patch)
            best[name] = min(best[name], 1000.0 * (time.perf_counter() - start) / RACE_WINDOWS)
    return best


def choose_incremental(
    scorer: Any, input_image: Any, patch: int, incremental: bool | str = "auto", windows: int | None = None
) -> IncrementalChoice:
    """Whether to occlude ``input_image`` (``h x w x C``, model geometry) through incremental
    inference, and the scorer to use (see the module docstring for the rule).

    Args:
        scorer: a :class:`~facesal_fast.scoring.Scorer` (or an ``IncrementalScorer``, kept).
        input_image: the prepared input (only its shape and content for the count are used).
        patch: occlusion window side in input pixels.
        incremental: ``"auto"`` (decide), ``True`` (use it; ``ValueError`` naming the reason
            if it cannot run), ``False`` (never).
        windows: distinct windows the image will score, if known: a race runs only for at
            least ``RACE_MIN_WORK x RACE_WINDOWS``.
    """
    if incremental is False or isinstance(scorer, IncrementalScorer):
        return IncrementalChoice(scorer, incremental is not False, "asked for" if incremental else "incremental=False")
    if incremental not in (True, "auto"):
        raise ValueError(f"incremental must be 'auto', True or False, got {incremental!r}")
    model = _unsupported(scorer) or _traced(scorer.module)
    if isinstance(model, str):
        if incremental is True:
            raise ValueError(f"incremental=True, but {model}")
        return _decided(IncrementalChoice(scorer, False, model), scorer.backend, (model,))
    if incremental is True:
        return IncrementalChoice(IncrementalScorer(scorer, model=model), True, "incremental=True")
    choice = _weighed(scorer, input_image, patch, model, windows)
    return _decided(choice, scorer.module, (choice.reason, tuple(np.shape(input_image)), int(patch)))
