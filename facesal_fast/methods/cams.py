"""Class activation maps: GradCAM, GradCAM++ (pytorch-grad-cam) and ScoreCAM (batched).

All three return ``H x W`` float32 maps in ``[0, 1]`` at the input resolution, scaled as
pytorch-grad-cam does (ReLU; min-max scaling; bilinear resize; min-max scaling again).
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from facesal_fast.methods._common import check_input, check_logits, check_target, eval_mode

__all__ = ["resolve_layer", "gradcam", "gradcam_plus_plus", "scorecam"]


def resolve_layer(model: torch.nn.Module, layer: torch.nn.Module | str | None) -> torch.nn.Module:
    """The CAM layer: a module of ``model``, its dotted name, or None for the last ``Conv2d``."""
    if isinstance(layer, torch.nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("target_layer is not a submodule of the model")
        return layer
    if isinstance(layer, str):
        named = dict(model.named_modules())
        if layer not in named:
            raise ValueError(f"model has no submodule named {layer!r}")
        return named[layer]
    if layer is not None:
        raise ValueError(f"target_layer must be a module, a module name or None, got {type(layer).__name__}")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no Conv2d layer; pass target_layer")
    return convs[-1]


def _grad_cam_library(cls: type, model: torch.nn.Module, input_tensor: torch.Tensor, target: int, layer) -> np.ndarray:
    x = check_input(input_tensor)
    with eval_mode(model):
        with torch.no_grad():
            t = check_target(target, check_logits(model(x)).shape[1])
        with cls(model=model, target_layers=[resolve_layer(model, layer)]) as cam:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(t)])[0].astype(np.float32)


def gradcam(
    model: torch.nn.Module, input_tensor: torch.Tensor, target: int, target_layer: torch.nn.Module | str | None = None
) -> np.ndarray:
    """GradCAM of logit ``target`` at ``target_layer`` (default: last Conv2d).

    Args:
        input_tensor: ``1 x C x H x W`` model input.

    Returns:
        ``H x W`` float32 in ``[0, 1]``.
    """
    return _grad_cam_library(GradCAM, model, input_tensor, target, target_layer)


def gradcam_plus_plus(
    model: torch.nn.Module, input_tensor: torch.Tensor, target: int, target_layer: torch.nn.Module | str | None = None
) -> np.ndarray:
    """GradCAM++ of logit ``target`` at ``target_layer`` (default: last Conv2d); ``H x W`` float32."""
    return _grad_cam_library(GradCAMPlusPlus, model, input_tensor, target, target_layer)


def _activations(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    store: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, inputs, output: store.append(output.detach()))
    try:
        with torch.no_grad():
            check_logits(model(x))
    finally:
        handle.remove()
    if len(store) != 1 or store[0].ndim != 4:
        raise ValueError("target_layer must run once per forward pass and return N x K x h x w activations")
    return store[0]


def scorecam(
    model: torch.nn.Module,
    input_tensor: torch.Tensor,
    target: int,
    target_layer: torch.nn.Module | str | None = None,
    *,
    score_batch: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """ScoreCAM (Wang et al. 2020) of class ``target``.

    Each of the K activation maps of ``target_layer`` is upsampled (bilinear, corners
    aligned), min-max normalised to ``[0, 1]`` and multiplied into the input; the K masked
    inputs are scored in batches of ``batch_size`` by ``score_batch`` (default: the
    model's ``target`` logit). The channel weights are the softmax of those scores, the map
    ``ReLU(sum_k w_k A_k)`` scaled to ``[0, 1]`` at the input size.

    Args:
        input_tensor: ``1 x C x H x W`` model input.
        score_batch: ``N x C x H x W -> (N,)`` confidence of ``target`` for a batch of
            masked inputs, e.g. ``lambda b: scorer.score(b, target)`` for a
            :class:`facesal_fast.scoring.Scorer`.

    Returns:
        ``H x W`` float32 in ``[0, 1]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = check_input(input_tensor).detach()
    with eval_mode(model):
        layer = resolve_layer(model, target_layer)
        with torch.no_grad():
            t = check_target(target, check_logits(model(x)).shape[1])
        acts = _activations(model, layer, x)[0]  # K x h x w
        H, W = x.shape[-2:]
        up = F.interpolate(acts[None], size=(H, W), mode="bilinear", align_corners=True)[0]
        low = up.flatten(1).min(1).values[:, None, None]
        high = up.flatten(1).max(1).values[:, None, None]
        masks = (up - low) / (high - low + 1e-8)
        scorer = score_batch if score_batch is not None else (lambda b: model(b)[:, t])
        scores = []
        with torch.no_grad():
            for lo in range(0, masks.shape[0], batch_size):
                batch = x * masks[lo : lo + batch_size, None]  # n x C x H x W
                scores.append(torch.as_tensor(scorer(batch)).reshape(-1).float().to(x.device))
    weights = torch.softmax(torch.cat(scores), dim=0)
    cam = torch.relu((weights[:, None, None] * acts.float()).sum(0)).cpu().numpy()
    return _scale(cv2.resize(_scale(cam).astype(np.float32), (int(W), int(H))))


def _scale(cam: np.ndarray) -> np.ndarray:
    """Minus the minimum, over the maximum (pytorch-grad-cam's ``scale_cam_image``)."""
    cam = cam - cam.min()
    return (cam / (1e-7 + cam.max())).astype(np.float32)
