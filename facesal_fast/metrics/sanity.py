"""Model-parameter randomisation test (Adebayo et al., "Sanity checks for saliency maps",
NeurIPS 2018), cascading from the output layer down.

Layers are the modules holding weights (``Conv2d``, ``Linear`` and kin), each weighted
module its own layer and its own step, as in Adebayo et al. (VGG-16: 16 steps, AlexNet: 8),
ordered top (output) to bottom by reversed registration order. The one exception is a
separable convolution (one Keras ``SeparableConv2D`` layer): a depthwise convolution
(``groups == in_channels > 1``) directly followed, in the same parent module, by a 1 x 1
convolution forms one layer (``blocks.separable_conv2d_3.1.0`` and ``...1.1`` are the one
layer ``blocks.separable_conv2d_3``). Modules are never merged because they share a
container: the 13 convolutions of VGG-16's ``features`` are 13 steps. Step k re-draws the
weights and biases of the top k layers
from a normal distribution with each tensor's own mean and standard deviation (seeded),
BatchNorm statistics untouched, and the explanation of each input is compared with the
one of the trained model by Spearman rank correlation and SSIM (maps min-max scaled to
``[0, 1]`` for SSIM). A faithful method's maps must decorrelate as layers are randomised.
"""

from __future__ import annotations

import copy
import re
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from facesal_fast.metrics.explanation import minmax
from facesal_fast.metrics.similarity import spearman, ssim

__all__ = ["randomizable_layers", "randomize_layer", "cascading_randomization"]

_WEIGHTED = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear, torch.nn.ConvTranspose2d)


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _is_depthwise(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def _is_pointwise(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Conv2d) and module.groups == 1 and tuple(module.kernel_size) == (1, 1)


def randomizable_layers(model: torch.nn.Module) -> list[tuple[str, list[str]]]:
    """``[(layer name, [module names])]`` from the output layer down: one entry per weighted
    module, a depthwise + pointwise pair (separable convolution) counted as one layer.

    A layer is named by its first module's name without trailing indices when those short
    names are all distinct (``blocks.conv2d_7``), else by the module's full name
    (``features.28``)."""
    weighted = [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHTED)]
    layers: list[tuple[str, list[str]]] = []  # (name of its first module, modules)
    for i, (name, module) in enumerate(weighted):
        prev_name, prev = weighted[i - 1] if i else ("", None)
        if prev is not None and _is_depthwise(prev) and _is_pointwise(module) and _parent(prev_name) == _parent(name):
            layers[-1][1].append(name)
            continue
        layers.append((name, [name]))
    short = [re.sub(r"(\.\d+)+$", "", name) or name for name, _ in layers]
    unique = len(set(short)) == len(short)  # mini-XCEPTION: "blocks.conv2d_7"; VGG-16: "features.28"
    return [(short[i] if unique else name, mods) for i, (name, mods) in reversed(list(enumerate(layers)))]


def randomize_layer(model: torch.nn.Module, module_names: Sequence[str], generator: torch.Generator) -> None:
    """Re-draw (in place) every parameter of the named modules from N(mean, std) of itself."""
    named = dict(model.named_modules())
    with torch.no_grad():
        for name in module_names:
            for p in named[name].parameters(recurse=False):
                std = float(p.std()) if p.numel() > 1 else 0.0
                std = std if std > 0 else float(p.abs().mean()) or 1e-2
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
                p.copy_((float(p.mean()) + std * noise).to(p.dtype))


def cascading_randomization(
    model: torch.nn.Module,
    explainers: Mapping[str, Callable[[torch.nn.Module, int], np.ndarray]],
    n_inputs: int,
    *,
    layers: Sequence[tuple[str, list[str]]] | None = None,
    seed: int = 0,
    keep_maps: int = 1,
    masks: Mapping[str, np.ndarray] | None = None,
) -> tuple[list[dict], dict[str, list[np.ndarray]]]:
    """Run the cascade.

    Args:
        model: the trained model (not modified; randomised copies are made).
        explainers: method -> ``fn(model, i) -> H x W map`` for input ``i`` in ``range(n_inputs)``.
        layers: the cascade order (default :func:`randomizable_layers`).
        keep_maps: how many inputs' maps to return per method and step (for figures).
        masks: method -> ``H x W`` bool: compare only these pixels (e.g. the canonical face,
            so that the empty background both maps share does not count as agreement).
    Returns:
        ``(rows, maps)``: one row per (method, step, input) with ``method``, ``step``
        (0 = trained), ``layer`` (last layer randomised, ``"none"`` at step 0), ``input``,
        ``spearman``, ``ssim``; and method -> list over steps of the first ``keep_maps``
        inputs' maps (``steps+1`` entries of ``keep_maps x H x W``).
    """
    layers = list(randomizable_layers(model) if layers is None else layers)
    generator = torch.Generator().manual_seed(seed)
    current = copy.deepcopy(model).eval()
    originals = {m: [np.asarray(fn(current, i), np.float64) for i in range(n_inputs)] for m, fn in explainers.items()}
    rows: list[dict] = []
    maps: dict[str, list[np.ndarray]] = {m: [np.stack(v[:keep_maps])] for m, v in originals.items()}
    for m in explainers:
        for i in range(n_inputs):
            rows.append({"method": m, "step": 0, "layer": "none", "input": i, "spearman": 1.0, "ssim": 1.0})
    for step, (layer, modules) in enumerate(layers, start=1):
        randomize_layer(current, modules, generator)
        for m, fn in explainers.items():
            mask = None if masks is None else masks.get(m)
            step_maps = []
            for i in range(n_inputs):
                new = np.asarray(fn(current, i), np.float64)
                step_maps.append(new)
                rows.append(
                    {
                        "method": m,
                        "step": step,
                        "layer": layer,
                        "input": i,
                        "spearman": spearman(originals[m][i], new, mask=mask),
                        "ssim": ssim(minmax(originals[m][i]), minmax(new), mask=mask),
                    }
                )
            maps[m].append(np.stack(step_maps[:keep_maps]))
    return rows, maps
