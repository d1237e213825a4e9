"""Guided Backpropagation (Springenberg et al.; Algorithm 1 of sun-teoh-guerzhoy).

Every ReLU of the model passes back only the positive part of the signal it receives
(``grad_in = relu(grad_out) * [x > 0]``). The ReLUs are found by intercepting the torch
functions themselves (``torch.relu``, ``torch.relu_``, ``F.relu`` with or without
``inplace``, ``Tensor.relu`` / ``Tensor.relu_``) with a :class:`TorchFunctionMode`, so
``nn.ReLU`` modules, functional calls and in-place ReLUs are all guided, whatever the
model's structure.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from facesal_fast.methods._common import check_input, check_logits, check_target, eval_mode

__all__ = ["OUTPUTS", "guided_gradient", "guided_backprop", "saliency_difference"]

OUTPUTS = ("logit", "probability")


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0)


class _GuidedReLUInplace(_GuidedReLU):
    """The in-place twin (``relu_``, ``ReLU(inplace=True)``); same guided backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x.clamp_(min=0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x


_OUT_OF_PLACE = {torch.relu, torch.Tensor.relu}
_IN_PLACE = {torch.relu_, torch.Tensor.relu_, F.relu_}


class _GuidedReLUMode(TorchFunctionMode):
    """Replaces every ReLU call made while active by its guided version."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.relu:
            inplace = kwargs.get("inplace", args[1] if len(args) > 1 else False)
            return (_GuidedReLUInplace if inplace else _GuidedReLU).apply(args[0])
        if func in _OUT_OF_PLACE:
            return _GuidedReLU.apply(args[0])
        if func in _IN_PLACE:
            return _GuidedReLUInplace.apply(args[0])
        return func(*args, **kwargs)


def _check_output(output: str) -> str:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    return output


def guided_gradient(
    model: torch.nn.Module, input_tensor: torch.Tensor, target: int, output: str = "logit"
) -> torch.Tensor:
    """The guided gradient of output ``target`` with respect to the input.

    Args:
        model: any torch model mapping ``1 x C x H x W`` to ``1 x num_classes`` scores
            (logits); run in eval mode (its mode is restored afterwards).
        input_tensor: ``1 x C x H x W`` float model input.
        target: class index whose score is explained.
        output: ``"logit"`` differentiates the target's logit; ``"probability"`` its
            softmax probability ``P(y)``, where Sun et al.'s Algorithm 1 starts (the
            softmax is differentiated plainly, the guided rule acts at every ReLU).

    Returns:
        ``1 x C x H x W`` float32 tensor (signed: the input step is a plain gradient, as in
        captum's ``GuidedBackprop``).
    """
    _check_output(output)
    x = check_input(input_tensor)
    with eval_mode(model), torch.enable_grad(), _GuidedReLUMode():
        out = check_logits(model(x))
        t = check_target(target, out.shape[1])
        explained = out[0].softmax(0)[t] if output == "probability" else out[0, t]
        (grad,) = torch.autograd.grad(explained, x)
    return grad.detach().float()


def _pixel_map(grad: torch.Tensor) -> np.ndarray:
    """``H x W`` map: ReLU of the input gradient (Algorithm 1's last step), max over channels."""
    return grad[0].clamp(min=0).amax(dim=0).cpu().numpy().astype(np.float32)


def guided_backprop(
    model: torch.nn.Module, input_tensor: torch.Tensor, target: int, output: str = "logit"
) -> np.ndarray:
    """GB(target, X) as a per-pixel saliency map.

    Algorithm 1 of sun-teoh-guerzhoy: the guided gradient (of the logit, or of ``P(y)``
    with ``output="probability"`` as the algorithm states) followed by a last ReLU at the
    input; colour channels are reduced by their maximum.

    Returns:
        ``H x W`` float32, non-negative.
    """
    return _pixel_map(guided_gradient(model, input_tensor, target, output))


def saliency_difference(
    model: torch.nn.Module, input_tensor: torch.Tensor, target: int, other: int, output: str = "logit"
) -> np.ndarray:
    """``ReLU(GB(target, X) - GB(other, X))`` (eq. 1 of sun-teoh-guerzhoy), per pixel.

    Both guided gradients (of logits, or of ``P(target)`` and ``P(other)`` with
    ``output="probability"``) are rectified per channel (Algorithm 1), subtracted per
    channel, rectified, then reduced over channels by their maximum.

    Returns:
        ``H x W`` float32, non-negative.
    """
    g_y = guided_gradient(model, input_tensor, target, output).clamp(min=0)
    g_z = guided_gradient(model, input_tensor, other, output).clamp(min=0)
    return _pixel_map(g_y - g_z)
