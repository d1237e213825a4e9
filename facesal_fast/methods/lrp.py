"""Layer-wise Relevance Propagation through zennit composites (arbabzadah et al.).

Rules, applied to every convolution and linear layer (ReLUs pass relevance on, average
pools and residual sums redistribute it in proportion to their inputs, max pools to the
winner, BatchNorm is merged into the preceding layer by zennit's canonizers):

- ``"epsilon"``: ``R_i = sum_j z_ij / (z_j + eps * sign(z_j)) R_j`` with ``z_ij = a_i w_ij``.
- ``"alpha-beta"``: ``R_i = sum_j (alpha z+_ij / z+_j - beta z-_ij / z-_j) R_j``. The paper
  writes the negative weight as ``beta = -1`` in ``alpha z+/z+ + beta z-/z-``; zennit (and
  this module) write it with a minus sign, so the paper's ``alpha = 2, beta = -1`` is
  ``alpha=2.0, beta=1.0`` here.

Biases are left out of the rules by default (``zero_params="bias"``), as in the paper's
``z_ij = a_i w_ij``, so relevance is conserved layer to layer (exactly for alpha-beta
where each neuron has both positive and negative inputs, up to ``eps`` for epsilon).
The relevance entering the output layer is the target logit. :func:`lrp_relevance`
reports the relevance totals leaving and entering every rule layer, and
:func:`check_conservation` checks that each layer, and the model as a whole, conserves it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from zennit.canonizers import Canonizer, SequentialMergeBatchNorm
from zennit.composites import LayerMapComposite
from zennit.rules import AlphaBeta, Epsilon, Norm, Pass
from zennit.layer import Sum
from zennit.types import Activation, AvgPool, Convolution, Linear

from facesal_fast.methods._common import check_input, check_logits, check_target, eval_mode

__all__ = ["LayerRelevance", "LRPResult", "RelevanceNotConservedError", "lrp_composite", "lrp_relevance", "check_conservation", "lrp"]

RULES = ("epsilon", "alpha-beta")


class RelevanceNotConservedError(RuntimeError):
    """Relevance totals of consecutive layers differ by more than the tolerance."""


@dataclass(frozen=True)
class LayerRelevance:
    """Total relevance leaving (``output_total``) and entering (``input_total``) one rule layer."""

    name: str
    output_total: float
    input_total: float


@dataclass(frozen=True)
class LRPResult:
    """Relevance of one explanation.

    Attributes:
        relevance: ``C x H x W`` float32 input relevance.
        output_total: relevance put on the output (the target logit).
        input_total: total input relevance.
        layers: relevance totals of every convolution / linear layer, in backward order.
    """

    relevance: np.ndarray
    output_total: float
    input_total: float
    layers: list[LayerRelevance]

    @property
    def heatmap(self) -> np.ndarray:
        """``H x W`` float32 relevance summed over channels."""
        return self.relevance.sum(axis=0).astype(np.float32)


def _default_canonizers(model: torch.nn.Module) -> list[Canonizer]:
    try:
        from torchvision.models import ResNet
    except ImportError:  # torchvision is optional for LRP
        return [SequentialMergeBatchNorm()]
    if isinstance(model, ResNet):
        from zennit.torchvision import ResNetCanonizer

        return [ResNetCanonizer()]
    return [SequentialMergeBatchNorm()]


def lrp_composite(
    rule: str = "epsilon",
    *,
    epsilon: float = 1e-6,
    alpha: float = 2.0,
    beta: float = 1.0,
    zero_params: str | None = "bias",
    canonizers: Sequence[Canonizer] = (),
) -> LayerMapComposite:
    """The zennit composite of ``rule`` for convolutions and linear layers (see module doc)."""
    if rule == "epsilon":
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        layer_rule = Epsilon(epsilon=epsilon, zero_params=zero_params)
    elif rule == "alpha-beta":
        if not (alpha >= 1 and beta >= 0 and abs(alpha - beta - 1) < 1e-9):
            raise ValueError(f"alpha-beta needs alpha - beta = 1 with alpha >= 1, beta >= 0, got alpha={alpha}, beta={beta}")
        layer_rule = AlphaBeta(alpha=alpha, beta=beta, zero_params=zero_params)
    else:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    layer_map = [(Activation, Pass()), (Sum, Norm()), (AvgPool, Norm()), (Convolution, layer_rule), (Linear, layer_rule)]
    return LayerMapComposite(layer_map=layer_map, canonizers=list(canonizers))


def lrp_relevance(
    model: torch.nn.Module,
    input_tensor: torch.Tensor,
    target: int,
    rule: str = "epsilon",
    *,
    epsilon: float = 1e-6,
    alpha: float = 2.0,
    beta: float = 1.0,
    canonizers: Sequence[Canonizer] | None = None,
) -> LRPResult:
    """Input relevance of the ``target`` logit and per-layer relevance totals.

    Args:
        model: torch model ``1 x C x H x W -> 1 x num_classes`` built from modules zennit
            knows (conv, linear, ReLU modules, pooling, BatchNorm after conv/linear);
            run in eval mode, restored afterwards.
        input_tensor: ``1 x C x H x W`` float.
        target: class index.
        rule: ``"epsilon"`` or ``"alpha-beta"``.
        canonizers: zennit canonizers; default merges BatchNorm into the preceding layer
            (``ResNetCanonizer`` for torchvision ResNets).
    """
    x = check_input(input_tensor)
    chosen = _default_canonizers(model) if canonizers is None else list(canonizers)
    composite = lrp_composite(rule, epsilon=epsilon, alpha=alpha, beta=beta, canonizers=chosen)
    totals: dict[str, dict[str, torch.Tensor]] = {}
    handles = []

    def keep(name: str, side: str):
        return lambda grad: totals.setdefault(name, {}).__setitem__(side, grad.detach().double().sum())

    def tap_input(name: str):
        # A fresh node in front of the layer (before zennit's own pre-hook), whose gradient
        # is exactly the relevance the layer's rule hands back to its input.
        def pre_hook(module: torch.nn.Module, inputs: tuple) -> tuple:
            if not inputs[0].requires_grad:
                return inputs
            tapped = inputs[0] + 0
            tapped.register_hook(keep(name, "input"))
            return (tapped, *inputs[1:])

        return pre_hook

    def tap_output(name: str):
        def forward_hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(keep(name, "output"))

        return forward_hook

    with eval_mode(model), torch.enable_grad():
        for name, module in model.named_modules():
            if isinstance(module, (Convolution, Linear)):
                handles.append(module.register_forward_pre_hook(tap_input(name)))
        try:
            with composite.context(model) as modified:
                for name, module in modified.named_modules():
                    if isinstance(module, (Convolution, Linear)):
                        handles.append(module.register_forward_hook(tap_output(name)))
                out = check_logits(modified(x))
                t = check_target(target, out.shape[1])
                seed = torch.zeros_like(out)
                seed[0, t] = out[0, t].detach()
                (relevance,) = torch.autograd.grad(out, x, grad_outputs=seed)
        finally:
            for handle in handles:
                handle.remove()
    layers = [
        LayerRelevance(name, float(sides["output"]), float(sides["input"]))
        for name, sides in totals.items()
        if "output" in sides and "input" in sides
    ]
    return LRPResult(
        relevance=relevance[0].detach().float().cpu().numpy(),
        output_total=float(seed.sum()),
        input_total=float(relevance.double().sum()),
        layers=layers,
    )


def check_conservation(result: LRPResult, rtol: float = 1e-2) -> float:
    """Largest relative relevance change across a layer, and from the output to the input.

    Each rule layer must hand back to its input the relevance it received at its output
    (branches of a residual network are checked layer by layer, so no chain order is
    assumed), and the input must receive the output relevance. Changes are relative to
    ``max(|relevance at the layer output|, |output relevance|)``.

    Returns:
        The largest relative change.

    Raises:
        RelevanceNotConservedError: when a change exceeds ``rtol``, naming the layer.
    """
    if not rtol >= 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    checks = [(layer.name, layer.output_total, layer.input_total) for layer in result.layers]
    checks.append(("whole model (output -> input)", result.output_total, result.input_total))
    worst = 0.0
    for name, r_out, r_in in checks:
        change = abs(r_in - r_out) / max(abs(r_out), abs(result.output_total), 1e-12)
        worst = max(worst, change)
        if change > rtol:
            raise RelevanceNotConservedError(
                f"relevance is not conserved across {name}: {r_out:.6g} reaches its output, {r_in:.6g} leaves its input "
                f"(relative change {change:.3g} > tolerance {rtol})"
            )
    return worst


def lrp(
    model: torch.nn.Module,
    input_tensor: torch.Tensor,
    target: int,
    rule: str = "epsilon",
    *,
    rtol: float | None = 1e-2,
    **options: float,
) -> np.ndarray:
    """LRP heatmap (relevance summed over channels), ``H x W`` float32.

    With ``rtol`` set, relevance conservation is checked layer to layer
    (:func:`check_conservation`); ``options`` are ``epsilon``, ``alpha``, ``beta``.
    """
    result = lrp_relevance(model, input_tensor, target, rule, **options)
    if rtol is not None:
        check_conservation(result, rtol)
    return result.heatmap
