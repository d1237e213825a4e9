"""Shared checks for the saliency methods: model inputs, targets, eval mode, canonical warp."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch

from facesal_fast.align import to_canonical

__all__ = ["check_input", "check_target", "check_logits", "eval_mode", "check_map", "to_canonical_map"]


def check_input(x: torch.Tensor, name: str = "input_tensor") -> torch.Tensor:
    """A detached float copy of a ``1 x C x H x W`` model input that requires grad."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape 1 x C x H x W, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"{name} must have shape 1 x C x H x W, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return x.detach().clone().requires_grad_(True)


def check_target(target: int, num_outputs: int) -> int:
    """``target`` as a class index in ``[0, num_outputs)``."""
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise ValueError(f"target must be an integer class index, got {target!r}")
    if not 0 <= int(target) < num_outputs:
        raise ValueError(f"target {target} is out of range for a model with {num_outputs} outputs")
    return int(target)


def check_logits(out: Any) -> torch.Tensor:
    """The model output as a ``1 x num_classes`` tensor."""
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return 1 x num_classes scores for one input, got {shape}")
    return out


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``model`` in eval mode (BatchNorm statistics frozen, no dropout), then restore it."""
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_map(saliency: np.ndarray, name: str = "saliency") -> np.ndarray:
    """A finite ``H x W`` float array (float64 copy for accumulation)."""
    arr = np.asarray(saliency)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty H x W map, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


def to_canonical_map(image_map: np.ndarray, face: Any) -> np.ndarray:
    """Warp an image-space ``H x W`` map onto the canonical face of ``face`` (an AlignedFace).

    This is the single place where the methods meet the aligner: it calls
    ``facesal_fast.align.to_canonical(image_map, face)``.

    Returns:
        ``canonical_shape`` float32 map.
    """
    image_map = np.asarray(image_map)
    if image_map.ndim != 2:
        raise ValueError(f"image_map must be an H x W map, got shape {image_map.shape}")
    return np.asarray(to_canonical(np.asarray(image_map, dtype=np.float32), face), dtype=np.float32)
