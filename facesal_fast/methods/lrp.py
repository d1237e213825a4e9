"""Layer-wise Relevance Propagation through zennit (Arbabzadah et al., Bach et al. 2015).

Relevance entering the output layer is the target logit; biases are left out of the rules
(``zero_params="bias"``, the paper's ``z_ij = a_i w_ij``), so every rule below hands back to
a layer's inputs the relevance it received (the paper's eq. (1), ``f(x) = sum_p R_p``).

The model is first canonized by :func:`facesal_fast.methods.canonizers.canonize` (traced
graph: every BatchNorm merged into the convolution feeding it, residual sums made explicit
modules). Rules:

- ReLUs pass relevance on; max pools route it to the winner (plain gradient); residual sums
  redistribute it in proportion to their summands (zennit ``Norm``). Average pools
  (functional ones and means over axes included, made modules by the canonizer) do the same
  where a window's inputs share one sign (:class:`PoolNorm`), so a switched-off ReLU unit
  receives none, and split it evenly (the flat rule) where they mix signs, where the
  proportions would cancel (a global average pool over signed class maps).
- ``"alpha-beta"`` (every convolution and linear layer): ``R_i = sum_j (alpha z+_ij / z+_j -
  beta z-_ij / z-_j) R_j`` with ``z_ij = a_i w_ij`` split by sign. The paper writes the
  negative weight as ``beta = -1`` in ``alpha z+/z+ + beta z-/z-``; zennit (and this module)
  write it with a minus sign, so the paper's ``alpha = 2, beta = -1`` is ``alpha=2.0,
  beta=1.0`` here. The rule conserves (``alpha - beta = 1``) only for a neuron with
  contributions of both signs; a neuron with one sign only (frequent in depthwise 3 x 3 and
  1 x 1 convolutions, whose neurons see few inputs) would hand back ``alpha R_j`` or
  ``-beta R_j``. Such a neuron passes ``R_j`` in proportion to the contributions it has
  (``z_ij / z_j``, the limit of LRP-0), and a neuron with no contribution at all (every
  input zero, its output bias only) by the ``w^2`` rule (Montavon et al. 2017, Deep Taylor
  decomposition), so relevance is conserved at every neuron (:class:`SignSplit`).
- ``"epsilon"``: ``R_i = sum_j z_ij / (z_j + eps * sign(z_j)) R_j`` at the spatial (k x k,
  depthwise) convolutions and linear layers; at the pointwise and shortcut 1 x 1
  convolutions, whose inputs (a depthwise output, a residual sum) are signed so that ``z_j``
  often nearly cancels and the ratios explode (1e8-fold relevance on the bundled
  mini-XCEPTIONs), the z+ rule (:class:`SignSplit` with ``alpha=1, beta=0``; Montavon et al.
  2017; the layer-dependent choice of rules of Montavon et al. 2019 and Kohlbrenner et al.
  2020, "Towards best practice in explaining neural network decisions with LRP").

:func:`lrp_relevance` reports the relevance totals leaving and entering every rule layer
(convolutions, linear layers, residual sums, average pools), and :func:`check_conservation`
checks that each of them, and the model as a whole, conserves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np
import torch
from zennit.canonizers import Canonizer
from zennit.core import BasicHook, Composite, ParamMod
from zennit.layer import Sum
from zennit.rules import ClampMod, NoMod, Norm, Pass, zero_bias
from zennit.types import Activation, AvgPool, Convolution, Linear

from facesal_fast.methods._common import check_input, check_logits, check_target, eval_mode
from facesal_fast.methods.canonizers import Mean, ResidualSum, canonize, input_layers

__all__ = [
    "GuardedEpsilon",
    "LayerRelevance",
    "LRPResult",
    "PoolNorm",
    "RelevanceNotConservedError",
    "SignSplit",
    "lrp_composite",
    "lrp_relevance",
    "check_conservation",
    "lrp",
]

RULES = ("epsilon", "alpha-beta")
#: Layers with a relevance rule, whose conservation :func:`lrp_relevance` records.
_RULE_LAYERS = (Convolution, Linear, Sum, AvgPool, Mean)
#: A neuron's contributions "cancel" when ``|z_j| < CANCEL * sum_i |z_ij|`` (epsilon rule).
CANCEL = 0.01


class RelevanceNotConservedError(RuntimeError):
    """Relevance totals of consecutive layers differ by more than the tolerance."""


def _split_mapper(alpha: float, beta: float):
    """Output-gradient weights of :class:`SignSplit`: ``alpha / z+_j``, ``beta / z-_j`` for a
    two-signed neuron, ``1 / z_j`` for a one-signed one, ``1 / sum_i w_ij^2`` for an empty one."""

    def mapper(out_grad: torch.Tensor, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        pos, neg, square = outputs[0] + outputs[1], outputs[2] + outputs[3], outputs[4]
        has_pos, has_neg = pos > 0, neg < 0
        empty = ~(has_pos | has_neg) & (square > 0)
        pos_weight = torch.where(has_neg, alpha, 1.0) * has_pos
        neg_weight = torch.where(has_pos, beta, -1.0) * has_neg
        grad_pos = out_grad * pos_weight / torch.where(has_pos, pos, 1.0)
        grad_neg = out_grad * neg_weight / torch.where(has_neg, neg, -1.0)
        grad_square = out_grad * empty / torch.where(empty, square, 1.0)
        return [grad_pos, grad_pos, grad_neg, grad_neg, grad_square]

    return mapper


def _guarded_epsilon_mapper(epsilon: float, cancel: float):
    """Output-gradient weights of :class:`GuardedEpsilon`: ``1 / (z_j + eps sign z_j)`` on every
    contribution of a neuron whose contributions do not cancel, z+ weights on one that does."""
    zplus = _split_mapper(1.0, 0.0)

    def mapper(out_grad: torch.Tensor, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        pos, neg = outputs[0] + outputs[1], outputs[2] + outputs[3]
        z = pos + neg
        plain = z.abs() >= cancel * (pos - neg)
        grad = out_grad / torch.where(plain, z + epsilon * torch.where(z >= 0, 1.0, -1.0), 1.0)
        grad_pos, _, grad_neg, _, grad_square = zplus(out_grad, outputs)
        grad_pos, grad_neg = torch.where(plain, grad, grad_pos), torch.where(plain, -grad, grad_neg)
        grad_square = torch.where(plain, 0.0, grad_square)
        return [grad_pos, grad_pos, grad_neg, grad_neg, grad_square]

    return mapper


def _square_weights(param: torch.Tensor, name: str) -> torch.Tensor:
    return param * param if name == "weight" else torch.zeros_like(param)


class _SplitHook(BasicHook):
    """Contributions ``z_ij = a_i w_ij`` split by sign (four passes) plus ``w_ij^2`` (fifth), so a
    ``mapper`` can weigh each neuron's parts; the reducer adds positive and subtracts negative parts."""

    def __init__(self, mapper, zero_params: str | list[str] | None):
        keep, no_bias = {"zero_params": zero_params}, {"zero_params": zero_bias(zero_params)}
        super().__init__(
            input_modifiers=[
                lambda a: a.clamp(min=0),
                lambda a: a.clamp(max=0),
                lambda a: a.clamp(min=0),
                lambda a: a.clamp(max=0),
                torch.ones_like,
            ],
            param_modifiers=[
                ClampMod(min=0.0, **keep),
                ClampMod(max=0.0, **no_bias),
                ClampMod(max=0.0, **keep),
                ClampMod(min=0.0, **no_bias),
                ParamMod(_square_weights),
            ],
            output_modifiers=[lambda z: z] * 5,
            gradient_mapper=mapper,
            reducer=lambda a, g: a[0] * g[0] + a[1] * g[1] - a[2] * g[2] - a[3] * g[3] + a[4] * g[4],
        )


class SignSplit(_SplitHook):
    """Conserving alpha-beta rule for a convolution or linear layer (see module doc).

    ``R_i = sum_j (alpha z+_ij / z+_j - beta z-_ij / z-_j) R_j`` where neuron ``j`` has
    contributions of both signs, ``z_ij / z_j R_j`` where it has one sign only, and
    ``w_ij^2 / sum_i w_ij^2 R_j`` where it has none; ``z_ij = a_i w_ij`` without bias.
    ``alpha=1, beta=0`` is the z+ rule. Needs ``alpha - beta = 1``, ``beta >= 0``.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, zero_params: str | list[str] | None = "bias"):
        if not (beta >= 0 and abs(alpha - beta - 1) < 1e-9):
            raise ValueError(
                f"alpha-beta needs alpha - beta = 1 with alpha >= 1, beta >= 0, got alpha={alpha}, beta={beta}"
            )
        super().__init__(_split_mapper(alpha, beta), zero_params)


class GuardedEpsilon(_SplitHook):
    """The epsilon rule, ``R_i = sum_j z_ij / (z_j + eps sign z_j) R_j``, at neurons whose
    contributions do not cancel (``|z_j| >= cancel * sum_i |z_ij|``); the z+ rule of
    :class:`SignSplit` at the others, where the ratios would explode and ``eps`` absorb
    relevance (see module doc)."""

    def __init__(self, epsilon: float = 1e-6, cancel: float = CANCEL, zero_params: str | list[str] | None = "bias"):
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        if not 0 <= cancel < 1:
            raise ValueError(f"cancel must be in [0, 1), got {cancel}")
        super().__init__(_guarded_epsilon_mapper(epsilon, cancel), zero_params)


def _pool_mapper(out_grad: torch.Tensor, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Output-gradient weights of :class:`PoolNorm`: ``1 / z_j`` on both signed parts of a
    one-signed window, ``1 / sum_i w_ij`` on the flat part of a mixed or all-zero one."""
    pos, neg, weights = outputs
    one_signed = (pos > 0) != (neg < 0)
    grad = out_grad * one_signed / torch.where(one_signed, pos + neg, 1.0)
    return [grad, grad, out_grad * ~one_signed / weights]


class PoolNorm(BasicHook):
    """Rule of an average pool (or mean): ``R_i = a_i w_ij / z_j R_j`` (zennit ``Norm``,
    LRP-0) at a window whose inputs share one sign, ``R_i = w_ij / sum_i w_ij R_j`` (the flat
    rule; for the pool's equal weights also the ``w^2`` rule) at a window whose inputs mix
    signs or are all zero. Conserves at every window (see module doc)."""

    def __init__(self) -> None:
        super().__init__(
            input_modifiers=[lambda a: a.clamp(min=0), lambda a: a.clamp(max=0), torch.ones_like],
            param_modifiers=[NoMod(param_keys=[])] * 3,
            output_modifiers=[lambda z: z] * 3,
            gradient_mapper=_pool_mapper,
            reducer=lambda a, g: a[0] * g[0] + a[1] * g[1] + a[2] * g[2],
        )


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
        layers: relevance totals of every rule layer (convolution, linear layer, residual
            sum, average pool), in backward order.
    """

    relevance: np.ndarray
    output_total: float
    input_total: float
    layers: list[LayerRelevance]

    @property
    def heatmap(self) -> np.ndarray:
        """``H x W`` float32 relevance summed over channels."""
        return self.relevance.sum(axis=0).astype(np.float32)


def _is_pointwise(module: torch.nn.Module) -> bool:
    """A 1 x 1 convolution mixing channels (pointwise half of a separable conv, or a shortcut)."""
    return isinstance(module, Convolution) and module.groups == 1 and all(k == 1 for k in module.kernel_size)


def lrp_composite(
    rule: str = "epsilon",
    *,
    epsilon: float = 1e-6,
    alpha: float = 2.0,
    beta: float = 1.0,
    zero_params: str | None = "bias",
    canonizers: Sequence[Canonizer] = (),
    input_layers: Collection[str] = (),
) -> Composite:
    """The zennit composite of ``rule`` (see module doc for the rule of each layer type).

    ``input_layers``: names of the layers that see the model input (the epsilon rule gives
    them the z+ rule, see module doc)."""
    if rule == "epsilon":
        layer_rule = GuardedEpsilon(epsilon, CANCEL, zero_params)
        pointwise_rule = SignSplit(1.0, 0.0, zero_params)
    elif rule == "alpha-beta":
        layer_rule = pointwise_rule = SignSplit(alpha, beta, zero_params)
    else:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    by_type = [
        (Activation, Pass()),
        (Sum, Norm()),
        (AvgPool, PoolNorm()),
        (Mean, PoolNorm()),
        (Convolution, layer_rule),
        (Linear, layer_rule),
    ]

    def module_map(ctx: dict, name: str, module: torch.nn.Module) -> BasicHook | None:
        if _is_pointwise(module) or (name in input_layers and isinstance(module, (Convolution, Linear))):
            return pointwise_rule
        return next((r for kind, r in by_type if isinstance(module, kind)), None)

    return Composite(module_map=module_map, canonizers=list(canonizers))


def _layer_name(name: str, module: torch.nn.Module) -> str:
    """``name``, for a module the canonizer made also the model's name for the operation."""
    if not hasattr(module, "source"):
        return name
    return f"{name} ({'residual sum' if isinstance(module, ResidualSum) else 'average pool'} {module.source})"


def _tap_relevance(model: torch.nn.Module, totals: dict[str, dict[str, torch.Tensor]]) -> list:
    """Hooks recording the relevance total at the output and input of every rule layer
    (convolution, linear, sum, average pool), registered so that they run outside zennit's own hooks."""

    def keep(name: str, side: str):
        return lambda grad: totals.setdefault(name, {}).__setitem__(side, grad.detach().double().sum())

    def pre_hook(name: str):
        # A fresh node in front of the layer, whose gradient is exactly the relevance the
        # layer's rule hands back to its input.
        def hook(module: torch.nn.Module, inputs: tuple) -> tuple:
            if not inputs[0].requires_grad:
                return inputs
            tapped = inputs[0] + 0
            tapped.register_hook(keep(name, "input"))
            return (tapped, *inputs[1:])

        return hook

    def forward_hook(name: str):
        def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(keep(name, "output"))

        return hook

    layers = [(_layer_name(n, m), m) for n, m in model.named_modules() if isinstance(m, _RULE_LAYERS)]
    return [m.register_forward_pre_hook(pre_hook(n), prepend=True) for n, m in layers] + [
        m.register_forward_hook(forward_hook(n)) for n, m in layers
    ]


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
        model: torch model ``1 x C x H x W -> 1 x num_classes`` of convolutions (also
            depthwise / separable), linear layers, BatchNorm, ReLU, pooling and residual
            sums; run in eval mode, not modified.
        input_tensor: ``1 x C x H x W`` float.
        target: class index.
        rule: ``"epsilon"`` or ``"alpha-beta"`` (see module doc).
        canonizers: None (default): the model is canonized by
            :func:`~facesal_fast.methods.canonizers.canonize` (traced graph); otherwise these
            zennit canonizers are applied to the model itself (``[]``: none).

    Raises:
        ValueError: bad input or target, or a model the default canonization cannot handle.
    """
    x = check_input(input_tensor)
    first: Collection[str] = ()
    if canonizers is None:
        model, canonizers = canonize(model), []
        first = input_layers(model)
    composite = lrp_composite(
        rule, epsilon=epsilon, alpha=alpha, beta=beta, canonizers=list(canonizers), input_layers=first
    )
    totals: dict[str, dict[str, torch.Tensor]] = {}
    with eval_mode(model), torch.enable_grad(), composite.context(model) as modified:
        handles = _tap_relevance(modified, totals)
        try:
            out = check_logits(modified(x))
            t = check_target(target, out.shape[1])
            seed = torch.zeros_like(out)
            seed[0, t] = out[0, t].detach()
            (relevance,) = torch.autograd.grad(out, x, grad_outputs=seed)
        finally:
            for handle in handles:
                handle.remove()
    layers = [LayerRelevance(n, float(s["output"]), float(s["input"])) for n, s in totals.items() if len(s) == 2]
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
                f"relevance is not conserved across {name}: {r_out:.6g} reaches its output, {r_in:.6g} leaves its "
                "input "
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
