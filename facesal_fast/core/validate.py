"""Argument checks shared across the package (each raises ``ValueError`` naming the argument)."""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np


def one_target(target: Any, name: str = "target") -> Any:
    """``target`` as a plain ``int`` / ``str`` (or as given): a numpy scalar, a 0-d array or an
    array / tensor of one element unwrapped; ``ValueError`` naming ``name`` for several
    elements (one class is explained)."""
    if isinstance(target, np.generic) or (hasattr(target, "shape") and hasattr(target, "reshape")):
        size = int(np.prod(tuple(target.shape)))
        if size != 1:
            raise ValueError(f"{name} must be one class index or name, got an array of {size} values")
        target = target.reshape(-1)[0]
        return target.item() if hasattr(target, "item") else target
    return target


def positive_int(value: Any, name: str, hint: str = "") -> int:
    """``value`` as an ``int`` if it is a positive integer (``bool`` is refused), else
    ``ValueError("NAME must be a positive integer{hint}, got ...")``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer{hint}, got {value!r}")
    return int(value)


def non_negative_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 0 (``bool`` is refused), else
    ``ValueError("NAME must be an integer >= 0, got ...")``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def fraction(value: Any, name: str, example: str, *, closed: bool = False) -> float:
    """``value`` as a ``float`` if it is a number in (0, 1) (``[0, 1]`` if ``closed``; ``bool`` is
    refused), else ``ValueError`` naming ``name`` with an ``example``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not (0 <= value <= 1 if closed else 0 < value < 1):
        span = "in [0, 1]" if closed else "between 0 and 1"
        raise ValueError(f"{name} must be a number {span} (e.g. {example}), got {value!r}")
    return float(value)


def torch_device(device: Any, name: str = "device") -> Any:
    """``device`` as a ``torch.device`` where this machine has it (the CPU, or a CUDA GPU that
    is visible), else ``ValueError`` naming ``name``; ``meta`` (no data) is refused too."""
    import torch  # here, not at the top: the command line imports this module before it needs torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{name}={device!r}: expected 'cpu', 'cuda' or 'cuda:N'") from err
    if dev.type == "meta":
        raise ValueError(f"{name}={device!r}: the meta device holds no data; use 'cpu' or 'cuda'")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise ValueError(f"{name}={device!r}: no such CUDA GPU here ({count} visible); use {name}='cpu'")
    return dev


#: Fewest correspondence points a ``stride`` may leave (fewer give a map of a few windows).
MIN_STRIDE_POINTS = 16


def check_window_sizes(input_shape: tuple[int, int], patch: int, grid_step: int | None = None) -> None:
    """``ValueError`` naming ``patch`` or ``grid_step`` when it cannot make a map on a model
    input of ``input_shape`` ``(H, W)`` px: a window larger than the input (it hides the whole
    face: a flat map), or a grid step of at least the input's shorter side (one window per
    axis). ``grid_step=None``: not used (exact mode)."""
    h, w = (int(s) for s in input_shape)
    if positive_int(patch, "patch") > max(h, w):
        raise ValueError(f"patch {patch} is larger than the model input {h} x {w} px (the window must fit in it)")
    if grid_step is not None and positive_int(grid_step, "grid_step") >= min(h, w):
        raise ValueError(
            f"grid_step {grid_step} is not smaller than the model input {h} x {w} px "
            "(a step that large scores one window per axis)"
        )


def check_stride(stride: int, kept: int, visible: int) -> None:
    """``ValueError`` naming ``stride`` when it keeps fewer than :data:`MIN_STRIDE_POINTS`
    (``kept``) of a face's ``visible`` correspondence points (``stride=1`` keeps them all)."""
    if stride > 1 and kept < MIN_STRIDE_POINTS:
        raise ValueError(
            f"stride {stride} keeps {kept} of the face's {visible} visible points; a map needs at least "
            f"{MIN_STRIDE_POINTS}: use a smaller stride"
        )
