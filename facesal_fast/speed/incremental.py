"""Incremental inference for occlusion (Krypton, Nakandala et al., SIGMOD 2019).

An occluded copy of an image differs from the unoccluded image only inside the patch.
Through a convolutional network that difference spreads to a box in each layer's output,
its *projective field*. :class:`IncrementalModel` runs a batch of K occluded copies by
computing, in every local layer, only that box (read from the cached unoccluded
activations with the copy's changed values pasted in), and falls back to ordinary full
inference from the first layer where the box is no longer small or the operation is not
local (global pooling, flatten, linear, anything unknown). The result equals full
inference up to float summation order.

Supported local operations (traced with ``torch.fx``): ``Conv2d`` (zero padding, any
groups, stride; dilation 1), max and average pooling (modules or ``F.max_pool2d`` /
``F.avg_pool2d``; no ceil mode, dilation 1), constant ``F.pad`` (spatial, and of the
channels), eval ``BatchNorm2d``, ReLU (module, ``torch.relu``, ``F.relu``), ``Identity``,
``Dropout`` (eval), and ``+`` of two feature maps (residual blocks). That covers
mini-XCEPTION (depthwise-separable blocks), VGG, ResNet and dlib's face ResNet. A model
whose ``forward`` has Python control flow on tensors (which ``torch.fx`` cannot trace) may
offer a ``traceable()`` method returning an equivalent traceable module; it is used instead.

Approximate mode (Krypton's projective-field threshold ``tau``): each layer's box is
capped at ``ceil(tau x side)`` around the centre of the change, so changes that spread
further are dropped (the cached value is used there).

This module traces the model and runs it node by node; the changed boxes and the local
operations on them are :mod:`~facesal_fast.speed.boxes`.

:class:`IncrementalScorer` wraps a torch-backed :class:`~facesal_fast.scoring.Scorer`
with the same ``score_occluded`` interface, so ``cis(image, IncrementalScorer(scorer))``
works unchanged.
"""

from __future__ import annotations

import copy
import operator
from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from facesal_fast.scoring.backends import TorchBackend
from facesal_fast.scoring.progress import step_bar
from facesal_fast.speed.boxes import Changed, box_output, box_windows, materialized, patch_boxes

__all__ = ["IncrementalModel", "IncrementalScorer", "patch_boxes"]


@torch.no_grad()
def weights_digest(module: nn.Module) -> tuple[tuple[int, float, float], ...]:
    """A cheap fingerprint of a module's parameters and buffers (address, sum, sum of
    squares of each), which changes when weights are replaced or edited in place (even
    through ``.data``, which bypasses torch's version counters)."""
    return tuple(
        (t.data_ptr(), float(t.sum(dtype=torch.float64)), float(torch.square(t).sum(dtype=torch.float64)))
        for t in module.state_dict(keep_vars=False).values()
        if t.is_floating_point()
    )


class IncrementalModel:
    """A traced torch module that scores batches of locally changed inputs incrementally.

    Args:
        module: ``N x C x H x W`` -> outputs; eval mode is used, in-place ops are avoided
            (the module is copied, not modified).
        tau: ``None`` for exact incremental inference, else Krypton's projective-field
            threshold in ``(0, 1]`` (approximate).
        full_fraction: a local layer is computed on its box only while the input window
            it reads is at most this fraction of its input map; from the first larger one on,
            that branch runs in full.

    Attributes:
        graph: the ``torch.fx`` graph module.
        multiply_adds: running count of the multiply-adds of ``Conv2d`` and ``Linear``
            modules in :meth:`cache` and :meth:`run` (box-wise where a box was computed);
            reset it to 0 before counting.
    """

    def __init__(self, module: nn.Module, *, tau: float | None = None, full_fraction: float = 1.0):
        if tau is not None and not 0 < tau <= 1:
            raise ValueError(f"tau must be in (0, 1] or None, got {tau!r}")
        if not 0 < full_fraction <= 1:
            raise ValueError(f"full_fraction must be in (0, 1], got {full_fraction!r}")
        self.tau, self.full_fraction = tau, full_fraction
        self.multiply_adds = 0
        self._trace(module)

    def _trace(self, module: nn.Module) -> None:
        """Trace a private copy of ``module`` (in-place ops turned off) and plan when each
        value can be freed; the copy is traced again when ``module``'s weights change."""
        self._source, self._source_digest = module, weights_digest(module)
        twin = callable(getattr(module, "traceable", None))
        self._checked_against = copy.deepcopy(module).eval() if twin else None
        module = copy.deepcopy(module.traceable() if twin else module).eval()
        for m in module.modules():
            if hasattr(m, "inplace"):
                m.inplace = False
        self.graph = fx.symbolic_trace(module).to(memory_format=torch.channels_last)
        self.channels_last = True
        self._nodes = list(self.graph.graph.nodes)
        last_use: dict[fx.Node, int] = {}
        for i, node in enumerate(self._nodes):
            for arg in node.all_input_nodes:
                last_use[arg] = i
        self._free_after: list[list[fx.Node]] = [[] for _ in self._nodes]
        for node, i in last_use.items():
            self._free_after[i].append(node)

    # ------------------------------------------------------------------ plain inference

    def _call(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        if node.op == "call_module":
            return self.graph.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_function":
            target = operator.add if node.target is operator.iadd else node.target
            return target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "get_attr":
            return getattr(self.graph, node.target)
        raise ValueError(f"unsupported fx node {node.op}")

    @torch.inference_mode()
    def cache(self, x: torch.Tensor) -> dict[fx.Node, Any]:
        """Every node's value for the unoccluded input ``x`` (1 x C x H x W).

        The traced copy runs channels-last (measured 1.2-1.7x faster box-wise on 2 CPU cores
        for ResNet-18 and mini-XCEPTION, same outputs up to float error), unless the model
        needs NCHW strides (e.g. ``.view`` of a feature map): then it runs NCHW from then on.
        With a ``traceable()`` twin, its output is first checked against the module's own on
        ``x`` (a twin may hold only for one input size): ``ValueError`` if they differ.
        """
        if weights_digest(self._source) != self._source_digest:  # weights changed since the trace
            self._trace(self._source)
        if self.channels_last:
            try:
                return self._cache(x.contiguous(memory_format=torch.channels_last))
            except RuntimeError:  # e.g. a .view() that needs NCHW strides
                self.channels_last = False
                self.graph.to(memory_format=torch.contiguous_format)
        return self._cache(x)

    def _cache(self, x: torch.Tensor) -> dict[fx.Node, Any]:
        values: dict[fx.Node, Any] = {}
        try:
            for node in self._nodes:
                if node.op == "placeholder":
                    values[node] = x
                elif node.op == "output":
                    values[node] = fx.node.map_arg(node.args[0], lambda n: values[n])
                else:
                    args = fx.node.map_arg(node.args, lambda n: values[n])
                    kwargs = fx.node.map_arg(node.kwargs, lambda n: values[n])
                    values[node] = self._call(node, args, kwargs)
                    self._count(node, values[node])
        except RuntimeError as err:  # e.g. a size that only the twin's fixed padding rejects
            if self._checked_against is None:
                raise
            raise ValueError(f"the model's traceable() twin does not accept input {tuple(x.shape)}: {err}") from err
        if self._checked_against is not None:
            self._check_twin(x, values[self._nodes[-1]])
        return values

    def _check_twin(self, x: torch.Tensor, twin_out: Any) -> None:
        expected = self._checked_against(x)
        if twin_out.shape != expected.shape or not torch.allclose(twin_out, expected, rtol=1e-4, atol=1e-5):
            raise ValueError(
                f"the model's traceable() twin disagrees with the model on input {tuple(x.shape)} "
                "(a twin may hold for one input size only)"
            )

    def _count(self, node: fx.Node, out: Any) -> None:
        """Add the multiply-adds of a ``Conv2d`` / ``Linear`` module node's output ``out``."""
        if node.op != "call_module":
            return
        module = self.graph.get_submodule(node.target)
        per_output = (
            module.weight[0].numel()
            if isinstance(module, nn.Conv2d)
            else module.in_features
            if isinstance(module, nn.Linear)
            else 0
        )
        if per_output:
            self.multiply_adds += (out.values if isinstance(out, Changed) else out).numel() * per_output

    @torch.inference_mode()
    def run(self, cache: dict[fx.Node, Any], values: torch.Tensor, start: np.ndarray) -> Any:
        """Outputs of K inputs equal to the cached input except in one box each.

        Args:
            cache: :meth:`cache` of the unoccluded input (1 x C x H x W).
            values: K x C x h x w, each copy's input inside its box.
            start: K x 2 int64 top-left ``(row, col)`` of each box.

        Returns:
            The module's output for the K inputs (e.g. K x D logits).
        """
        env: dict[fx.Node, Any] = {}
        result: Any = None
        for i, node in enumerate(self._nodes):
            if node.op == "placeholder":
                env[node] = Changed(cache[node], values, np.asarray(start, np.int64))
            elif node.op == "get_attr":
                env[node] = cache[node]
            elif node.op == "output":
                result = fx.node.map_arg(node.args[0], lambda n: materialized(env[n]))
            else:
                args = fx.node.map_arg(node.args, lambda n: env[n])
                kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
                out = box_output(self.graph, node, args, kwargs, cache[node], self.tau, self.full_fraction)
                if out is None:
                    out = self._call(
                        node, tuple(materialized(a) for a in args), {k: materialized(v) for k, v in kwargs.items()}
                    )
                env[node] = out
                self._count(node, out)
            for done in self._free_after[i]:
                env.pop(done, None)
        return result


class IncrementalScorer:
    """A :class:`~facesal_fast.scoring.Scorer` whose occluded batches run incrementally.

    Same interface for ``cis`` (``prepare``, ``predict``, ``base_score``,
    ``score_occluded``; other attributes come from the wrapped scorer), same scores up to
    float error (exact mode). Needs the scorer's torch module (``scorer.module``, kept by
    ``Scorer.from_torch`` and ``models.load``, or a torch backend's) and a backend that
    takes fp32 NCHW batches; the occluded boxes then run in torch eager whatever the backend.

    Args:
        scorer: the scorer to speed up.
        tau, full_fraction: see :class:`IncrementalModel`.
        model: an already traced :class:`IncrementalModel` of the scorer's module (then
            ``tau`` and ``full_fraction`` are the model's).
    """

    #: Its requests are scored one at a time, never in shared batches with other photos
    #: (``scoring.batching.SharedBatchScorer``; read on the class, not forwarded to the scorer).
    shares_batches = False

    def __init__(
        self,
        scorer: Any,
        *,
        tau: float | None = None,
        full_fraction: float = 1.0,
        model: IncrementalModel | None = None,
    ):
        backend = scorer.backend
        module = getattr(scorer, "module", None)
        if module is None and isinstance(backend, TorchBackend):
            module = getattr(backend.module, "_orig_mod", backend.module)
        if module is None or backend.layout != "nchw" or backend.input_dtype != torch.float32:
            raise ValueError(
                "incremental inference needs the scorer's torch module and a backend taking fp32 NCHW "
                f"batches (e.g. Scorer.from_torch(..., backend='torch')), got backend {backend.name!r}"
            )
        self.scorer = scorer
        self.model = model or IncrementalModel(module, tau=tau, full_fraction=full_fraction)

    def __getattr__(self, name: str) -> Any:
        if "scorer" not in self.__dict__:  # during copy / unpickling
            raise AttributeError(name)
        return getattr(self.__dict__["scorer"], name)

    def score_occluded(
        self,
        input_image: np.ndarray | torch.Tensor,
        centers: np.ndarray | torch.Tensor,
        patch: int,
        fill: Any = "black",
        target: int | str | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """phi(I with a ``patch`` window at each of the K ``centers`` (K x 2 ``(x, y)``), c) -> (K,) float32.

        As :meth:`Scorer.score_occluded`; the occluded copies are built by the same kernel and
        only their patch boxes are fed to the incremental model.
        """
        s = self.scorer
        img = s.input_tensor(input_image)
        pts = torch.as_tensor(np.asarray(centers.cpu() if isinstance(centers, torch.Tensor) else centers, np.float32))
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"centers must be K x 2 (x, y), got shape {tuple(pts.shape)}")
        cache = self.model.cache(s.unoccluded_batch(img))
        base_out = cache[self.model._nodes[-1]].float()
        confidence: Callable = s.confidence_for(img, target, base_outputs=base_out.reshape(1, -1))
        shape = (s.channels, int(img.shape[0]), int(img.shape[1]))
        size = s.batch_size_for(shape, len(pts), batch_size, boxes=True)  # batches of patch boxes
        starts, (h, w) = patch_boxes(pts.numpy(), int(patch), shape[1:])
        scores = []
        batches = range(0, len(pts), size)
        for lo in step_bar(batches, desc="occlusion", unit="batch"):
            hi = min(lo + size, len(pts))
            batch = s.occluded_batch(img, pts[lo:hi].to(img.device), patch, fill)
            values = box_windows(batch, starts[lo:hi], (h, w))
            out = self.model.run(cache, values, starts[lo:hi])
            scores.append(confidence(out.float().reshape(out.shape[0], -1)).float().cpu())
        return torch.cat(scores).numpy() if scores else np.zeros(0, np.float32)
