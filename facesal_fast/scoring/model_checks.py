"""Checks of a user's model made once, when a scorer is built (each raises one ``ValueError``)."""

from __future__ import annotations

import torch
from torch import nn

from facesal_fast.scoring.backends import TorchBackend

__all__ = ["check_first_forward"]


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
