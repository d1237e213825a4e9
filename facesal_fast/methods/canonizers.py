"""Graph-aware LRP canonization: BatchNorm merged into its convolution, residual sums made explicit.

zennit's ``SequentialMergeBatchNorm`` pairs a BatchNorm with the module *registered* just
before it, which is the layer feeding it only when the module order follows the data flow.
In the Keras-ported mini-XCEPTIONs it does not (a shortcut convolution is registered before
the separable convolutions of its block, its BatchNorm after them), so 4 of their 14
BatchNorms stayed unmerged and their scaling entered the LRP backward pass as a plain
gradient. :func:`canonize` follows the data flow instead: it traces the model with
``torch.fx`` and, on a copy,

- merges every BatchNorm into the convolution or linear layer that feeds it
  (``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``),
  whatever the module order; a BatchNorm that does not directly follow a convolution or
  linear layer used by it alone is refused with a ``ValueError`` naming it;
- turns every sum of two computed tensors (``a + b``, ``torch.add``, in-place ``+=``) into a
  :class:`ResidualSum` module over the stacked summands, so that an LRP composite can give
  it a rule (``Norm``: each summand receives relevance in proportion to its contribution),
  as zennit's ``ResNetCanonizer`` does for torchvision ResNets. Left as an addition, the
  gradient would copy the whole relevance onto both branches (relevance doubled per block);
- turns functional ReLUs (``torch.relu(x)``, ``F.relu``, ``x.relu()``) into ``nn.ReLU``
  modules, so that the composites' pass rule applies to them: a plain ReLU gradient would
  drop the relevance that reaches a switched-off unit;
- turns functional average pooling (``F.avg_pool2d`` and its 1d / 3d / adaptive twins) into
  the matching ``nn`` pooling module and a mean over axes (``x.mean(dim=...)``,
  ``torch.mean``) into a :class:`Mean` module, so that an LRP composite can give them a
  rule (:class:`facesal_fast.methods.lrp.PoolNorm`: over inputs of one sign, relevance in
  proportion to each). Left as plain gradients they spread relevance evenly over their
  inputs, switched-off ReLU units included; at a residual sum before such a unit's ReLU the
  summands nearly cancel and the sum's ``Norm`` rule multiplies that relevance thousands of
  times (dlib's age network: 34,000 x the logit inside a residual branch, 2 % of it lost
  on the way).

The returned module computes the same function as the original (up to float rounding).
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx
from zennit.layer import Sum

__all__ = ["Mean", "ResidualSum", "canonize", "input_layers", "stack_summands"]

_BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
_MERGEABLE = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
_ADDS = (operator.add, operator.iadd, torch.add)
_RELUS = (torch.relu, torch.relu_, torch.nn.functional.relu)
_F = torch.nn.functional
#: Functional average pooling -> the ``nn`` module taking the same arguments (after the input).
_POOLS = {
    _F.avg_pool1d: torch.nn.AvgPool1d,
    _F.avg_pool2d: torch.nn.AvgPool2d,
    _F.avg_pool3d: torch.nn.AvgPool3d,
    _F.adaptive_avg_pool1d: torch.nn.AdaptiveAvgPool1d,
    _F.adaptive_avg_pool2d: torch.nn.AdaptiveAvgPool2d,
    _F.adaptive_avg_pool3d: torch.nn.AdaptiveAvgPool3d,
}


class ResidualSum(Sum):
    """Sum over the last axis of stacked summands (``... x K -> ...``); the LRP composites
    redistribute relevance through it in proportion to each summand (zennit ``Norm``)."""

    def __init__(self, name: str):
        super().__init__(dim=-1)
        self.source = name

    def extra_repr(self) -> str:
        return f"source={self.source!r}"


class Mean(torch.nn.Module):
    """``x.mean(dim=dim, keepdim=keepdim)`` as a module (a global average pool, e.g.
    ``N x C x H x W -> N x C`` for ``dim=(2, 3)``), so an LRP composite can give it a rule."""

    def __init__(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False):
        super().__init__()
        self.dim, self.keepdim = dim, keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dim, keepdim=self.keepdim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, keepdim={self.keepdim}"


def stack_summands(*summands: torch.Tensor) -> torch.Tensor:
    """The summands broadcast to one shape and stacked on a new last axis (``... x K``)."""
    return torch.stack(torch.broadcast_tensors(*summands), dim=-1)


def _trace(model: torch.nn.Module) -> torch.fx.GraphModule:
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as err:  # data-dependent control flow and the like
        raise ValueError(
            f"LRP canonization could not trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}); "
            "pass zennit canonizers explicitly (canonizers=[...])"
        ) from err


def _source_name(node: torch.fx.Node) -> str:
    """The model's own name for an operation: its innermost module, else the graph node's name."""
    stack = node.meta.get("nn_module_stack") or {}
    return f"{list(stack)[-1]} ({node.name})" if stack else node.name


def _fold(layer: torch.nn.Module, norm: torch.nn.Module) -> None:
    """Merge the eval-mode BatchNorm ``norm`` into ``layer`` (which feeds it), in place."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = norm.weight * scale
    shift = -norm.running_mean * scale + (norm.bias if norm.bias is not None else 0.0)
    weight = layer.weight.data
    bias = layer.bias.data if layer.bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
    layer.weight = torch.nn.Parameter(weight * scale.detach().reshape(-1, *([1] * (weight.ndim - 1))))
    layer.bias = torch.nn.Parameter(bias * scale.detach() + shift.detach())


def _merge_batch_norms(gm: torch.fx.GraphModule) -> int:
    """Merge every BatchNorm of ``gm`` into the convolution / linear layer feeding it."""
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    merged = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), _BATCH_NORMS):
            continue
        producer = node.args[0]
        layer = gm.get_submodule(producer.target) if getattr(producer, "op", None) == "call_module" else None
        if not isinstance(layer, _MERGEABLE) or len(producer.users) != 1 or calls[producer.target] != 1:
            raise ValueError(
                f"BatchNorm {node.target!r} does not directly follow a convolution or linear layer that feeds it alone "
                f"(it follows {_source_name(producer) if isinstance(producer, torch.fx.Node) else producer!r}); "
                "LRP cannot merge it: pass canonizers explicitly"
            )
        _fold(layer, gm.get_submodule(node.target))
        node.replace_all_uses_with(producer)
        gm.graph.erase_node(node)
        merged += 1
    return merged


def _is_residual_sum(node: torch.fx.Node) -> bool:
    return (
        node.op == "call_function"
        and node.target in _ADDS
        and not node.kwargs
        and len(node.args) == 2
        and all(isinstance(a, torch.fx.Node) and a.op != "get_attr" for a in node.args)
    )


def _replace_calls(gm: torch.fx.GraphModule, matches, prefix: str, module_for, inputs_for) -> int:
    """Replace every node ``matches`` accepts by a call of a new submodule ``{prefix}_{i}``.

    ``module_for(node)`` builds the submodule; ``inputs_for(node)`` inserts (before ``node``)
    and returns the submodule's input. Returns the number of nodes replaced.
    """
    count = 0
    for node in list(gm.graph.nodes):
        if not matches(node):
            continue
        name = f"{prefix}_{count}"
        gm.add_submodule(name, module_for(node))
        with gm.graph.inserting_before(node):
            module_call = gm.graph.call_module(name, (inputs_for(node),))
        module_call.meta = dict(node.meta)
        node.replace_all_uses_with(module_call)
        gm.graph.erase_node(node)
        count += 1
    return count


def _explicit_sums(gm: torch.fx.GraphModule) -> int:
    """Replace each ``a + b`` of two computed tensors by ``ResidualSum(stack(a, b))``."""
    return _replace_calls(
        gm,
        _is_residual_sum,
        "lrp_sum",
        lambda node: ResidualSum(_source_name(node)),
        lambda node: gm.graph.call_function(stack_summands, tuple(node.args)),
    )


def _is_relu_call(node: torch.fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in _RELUS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _relu_modules(gm: torch.fx.GraphModule) -> int:
    """Replace functional ReLUs (``torch.relu``, ``F.relu``, ``x.relu()``) by ``nn.ReLU`` modules."""
    return _replace_calls(gm, _is_relu_call, "lrp_relu", lambda node: torch.nn.ReLU(), lambda node: node.args[0])


def _is_mean_call(node: torch.fx.Node) -> bool:
    is_mean = (node.op == "call_method" and node.target == "mean") or (
        node.op == "call_function" and node.target is torch.mean
    )
    return is_mean and set(node.kwargs) <= {"dim", "keepdim"} and len(node.args) <= 3


def _with_source(module: torch.nn.Module, node: torch.fx.Node) -> torch.nn.Module:
    """``module``, its ``source`` set to the model's name for the operation it replaces."""
    module.source = _source_name(node)
    return module


def _mean_module(node: torch.fx.Node) -> torch.nn.Module:
    return _with_source(Mean(**dict(zip(("dim", "keepdim"), node.args[1:]), **node.kwargs)), node)


def _pool_modules(gm: torch.fx.GraphModule) -> int:
    """Replace functional average pools and means over axes by modules (see module doc)."""
    pools = _replace_calls(
        gm,
        lambda node: node.op == "call_function" and node.target in _POOLS,
        "lrp_pool",
        lambda node: _with_source(_POOLS[node.target](*node.args[1:], **node.kwargs), node),
        lambda node: node.args[0],
    )
    return pools + _replace_calls(gm, _is_mean_call, "lrp_mean", _mean_module, lambda node: node.args[0])


def input_layers(gm: torch.fx.GraphModule) -> frozenset[str]:
    """Names of the convolution / linear layers that see the model input (through padding,
    identities, pooling or reshapes only): the layers whose inputs are raw, signed pixels."""
    found: set[str] = set()
    frontier = [n for n in gm.graph.nodes if n.op == "placeholder"]
    seen = set(frontier)
    while frontier:
        for user in frontier.pop().users:
            module = gm.get_submodule(user.target) if user.op == "call_module" else None
            if isinstance(module, _MERGEABLE):
                found.add(user.target)
            elif user not in seen:
                seen.add(user)
                frontier.append(user)
    return frozenset(found)


def canonize(model: torch.nn.Module) -> torch.fx.GraphModule:
    """An LRP-ready copy of ``model`` computing the same function (see module doc).

    Args:
        model: a torch module traceable by ``torch.fx`` (no data-dependent control flow),
            its BatchNorms each directly after a convolution or linear layer. It is not
            modified.

    Returns:
        A ``torch.fx.GraphModule`` in eval mode, same input and output shapes as ``model``;
        its layers keep the model's qualified names (``blocks.conv2d_1.1``), residual sums
        are ``lrp_sum_<k>`` modules, functional ReLUs ``lrp_relu_<k>``, functional average
        pools ``lrp_pool_<k>`` and means ``lrp_mean_<k>``.

    Raises:
        ValueError: the model cannot be traced, or a BatchNorm cannot be merged (naming it).
    """
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    gm = _trace(copy.deepcopy(model).eval())
    _merge_batch_norms(gm)
    _explicit_sums(gm)
    _relu_modules(gm)
    _pool_modules(gm)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()
