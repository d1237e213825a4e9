"""Checks of a user's model made once, when a scorer is built (each raises one ``ValueError``)."""

from __future__ import annotations

import torch
from torch import nn

from facesal_fast.core.validate import torch_device
from facesal_fast.scoring.backends import TorchBackend

__all__ = ["check_first_forward", "module_device"]


def module_device(module: nn.Module, device: str | torch.device | None) -> torch.device:
    """``device`` (checked), else the device of ``module``'s weights (the CPU without any);
    ``ValueError`` when the weights are on the meta device (not loaded)."""
    first = next(module.parameters(), None)
    if first is not None and first.is_meta:
        raise ValueError("the module's weights are on the meta device (not loaded): load them before from_torch")
    return torch_device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))


def check_first_forward(module: nn.Module, input_shape: tuple[int, int, int], device: torch.device) -> None:
    """Run ``module`` once on a ``1 x C x H x W`` zero batch (``input_shape`` = ``(C, H, W)``)
    on ``device``; a failure (wrong input size, channels, device) becomes one ``ValueError``
    naming the input shape, before any backend is built or probed."""
    c, h, w = input_shape
    try:
        TorchBackend(module, device, "fp32")(torch.zeros((1, c, h, w), device=device))
    except Exception as err:  # whatever the module raises, said in one line naming the input
        raise ValueError(
            f"the model fails on a 1 x {c} x {h} x {w} input (input_size=({h}, {w}), channels={c}): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}; "
            "check input_size and channels against the model"
        ) from err
