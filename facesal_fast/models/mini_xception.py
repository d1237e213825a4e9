"""PyTorch port of Keras CNN graphs such as mini-XCEPTION (oarriaga/face_classification).

:func:`from_keras_h5` builds a :class:`KerasGraphNet` from a Keras 2 HDF5 file: one torch
layer per Keras layer (same names), Keras weights transposed to torch layout, and
TensorFlow's asymmetric ``"same"`` padding reproduced exactly. The net takes
``N x C x H x W`` float32 and returns the **logits** (the pre-softmax output) unless
``softmax=True``; :meth:`KerasGraphNet.layer_outputs` gives every layer's output for
checking a port layer by layer against Keras.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from facesal_fast.models.keras_h5 import KerasLayer, KerasModelFile, read_keras_h5

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["KerasGraphNet", "from_keras_h5"]

_SUPPORTED = (
    "InputLayer",
    "Conv2D",
    "SeparableConv2D",
    "BatchNormalization",
    "Activation",
    "MaxPooling2D",
    "Add",
    "GlobalAveragePooling2D",
)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``"same"`` padding (before, after) along one axis; the extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Pad(nn.Module):
    """Constant pad of an N x C x H x W tensor, (left, right, top, bottom)."""

    def __init__(self, pads: tuple[int, int, int, int], value: float):
        super().__init__()
        self.pads, self.value = pads, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads, value=self.value) if any(self.pads) else x


class _Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class _GlobalAveragePool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class _Activation(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        if kind not in ("linear", "relu", "softmax"):
            raise ValueError(f"unsupported Keras activation {kind!r} (linear, relu, softmax)")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "relu":
            return torch.relu(x)
        if self.kind == "softmax":
            return torch.softmax(x, dim=1)
        return x


def _spatial(cfg: dict, key: str) -> tuple[int, int]:
    v = cfg[key]
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


def _padding(
    cfg: dict, hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int, int, int]:
    if cfg["padding"] == "valid":
        return (0, 0, 0, 0)
    if cfg["padding"] != "same":
        raise ValueError(f"layer {cfg['name']!r}: unsupported padding {cfg['padding']!r}")
    top, bottom = _same_padding(hw[0], kernel[0], stride[0])
    left, right = _same_padding(hw[1], kernel[1], stride[1])
    return (left, right, top, bottom)


def _out_hw(
    hw: tuple[int, int], pads: tuple[int, int, int, int], kernel: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int]:
    h = (hw[0] + pads[2] + pads[3] - kernel[0]) // stride[0] + 1
    w = (hw[1] + pads[0] + pads[1] - kernel[1]) // stride[1] + 1
    return h, w


def _with_activation(layer: nn.Module, cfg: dict) -> nn.Module:
    act = cfg.get("activation", "linear")
    return layer if act == "linear" else nn.Sequential(layer, _Activation(act))


def _convert(layer: KerasLayer, shape: tuple[int, int, int]) -> tuple[nn.Module, tuple[int, int, int]]:
    """Torch module for one Keras layer, and its output shape (C, H, W) ((C, 1, 1) once pooled)."""
    cfg, w = layer.config, layer.weights
    c, h, wd = shape
    if layer.kind == "InputLayer":
        return nn.Identity(), shape
    if layer.kind in ("Conv2D", "SeparableConv2D"):
        kernel, stride = _spatial(cfg, "kernel_size"), _spatial(cfg, "strides")
        if tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1):
            raise ValueError(f"layer {layer.name!r}: dilation is not supported")
        pads = _padding(cfg, (h, wd), kernel, stride)
        filters, bias = int(cfg["filters"]), bool(cfg["use_bias"])
        if layer.kind == "Conv2D":
            conv = nn.Conv2d(c, filters, kernel, stride, bias=bias)
            conv.weight.data.copy_(torch.from_numpy(w[0]).permute(3, 2, 0, 1))
            body: nn.Module = conv
        else:
            mult = int(cfg.get("depth_multiplier", 1))
            depth = nn.Conv2d(c, c * mult, kernel, stride, groups=c, bias=False)
            # Keras depthwise kernel kh x kw x C x M -> torch (C*M) x 1 x kh x kw, channel-major.
            depth.weight.data.copy_(torch.from_numpy(w[0]).permute(2, 3, 0, 1).reshape(c * mult, 1, *kernel))
            conv = nn.Conv2d(c * mult, filters, 1, bias=bias)
            conv.weight.data.copy_(torch.from_numpy(w[1]).permute(3, 2, 0, 1))
            body = nn.Sequential(depth, conv)
        if bias:
            conv.bias.data.copy_(torch.from_numpy(w[-1]))
        module = nn.Sequential(_Pad(pads, 0.0), body)
        return _with_activation(module, cfg), (filters, *_out_hw((h, wd), pads, kernel, stride))
    if layer.kind == "BatchNormalization":
        if cfg.get("axis", -1) not in (-1, 3, [3], [-1]):
            raise ValueError(f"layer {layer.name!r}: only channel-axis batch normalisation is supported")
        bn = nn.BatchNorm2d(c, eps=float(cfg["epsilon"]))
        arrays = list(w)
        if cfg.get("scale", True):
            bn.weight.data.copy_(torch.from_numpy(arrays.pop(0)))
        if cfg.get("center", True):
            bn.bias.data.copy_(torch.from_numpy(arrays.pop(0)))
        bn.running_mean.copy_(torch.from_numpy(arrays[0]))
        bn.running_var.copy_(torch.from_numpy(arrays[1]))
        return bn.eval(), shape
    if layer.kind == "Activation":
        return _Activation(cfg["activation"]), shape
    if layer.kind == "MaxPooling2D":
        kernel, stride = _spatial(cfg, "pool_size"), _spatial(cfg, "strides")
        pads = _padding(cfg, (h, wd), kernel, stride)
        module = nn.Sequential(_Pad(pads, float("-inf")), nn.MaxPool2d(kernel, stride))
        return module, (c, *_out_hw((h, wd), pads, kernel, stride))
    if layer.kind == "Add":
        return _Add(), shape
    if layer.kind == "GlobalAveragePooling2D":
        return _GlobalAveragePool(), (c, 1, 1)
    raise ValueError(
        f"layer {layer.name!r}: unsupported Keras layer {layer.kind!r} (supported: {', '.join(_SUPPORTED)})"
    )


class KerasGraphNet(nn.Module):
    """A Keras layer graph run in PyTorch (NCHW), built by :func:`from_keras_h5`.

    Input ``N x C x H x W`` float32 (already normalised as the Keras model expects);
    output ``N x D``: logits, or probabilities when built with ``softmax=True``.
    """

    def __init__(self, model: KerasModelFile, softmax: bool = False):
        super().__init__()
        h, w, c = model.input_shape
        self.input_shape_chw = (c, h, w)
        layers = list(model.layers)
        last = layers[-1]
        if not softmax and last.kind == "Activation" and last.config.get("activation") == "softmax":
            layers = layers[:-1]  # keep the logits; the confidence function applies softmax
        self.layer_names: list[str] = []
        self.layer_inputs: list[tuple[str, ...]] = []
        self.blocks = nn.ModuleDict()
        shapes: dict[str, tuple[int, int, int]] = {}
        for layer in layers:
            in_shape = (c, h, w) if not layer.inputs else shapes[layer.inputs[0]]
            if layer.kind == "Add" and len({shapes[i] for i in layer.inputs}) != 1:
                raise ValueError(f"layer {layer.name!r}: Add of different shapes {[shapes[i] for i in layer.inputs]}")
            module, shapes[layer.name] = _convert(layer, in_shape)
            self.blocks[layer.name] = module
            self.layer_names.append(layer.name)
            self.layer_inputs.append(layer.inputs)
        self.output_name = self.layer_names[-1]
        self._last_use = {name: step for step, inputs in enumerate(self.layer_inputs) for name in inputs}
        self.num_outputs = shapes[self.output_name][0]
        self.eval()

    def layer_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every layer's output for input ``x`` (``N x C x H x W``), keyed by Keras layer name.

        Feature maps are ``N x C x H x W`` (transpose to compare with Keras' NHWC).
        """
        outs: dict[str, torch.Tensor] = {}
        for name, inputs in zip(self.layer_names, self.layer_inputs):
            args = [outs[i] for i in inputs] if inputs else [x]
            outs[name] = self.blocks[name](*args)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x C x H x W`` -> ``N x D`` logits (or probabilities with ``softmax=True``).

        Unlike :meth:`layer_outputs`, frees each activation after its last use.
        """
        live: dict[str, torch.Tensor] = {}
        for step, (name, inputs) in enumerate(zip(self.layer_names, self.layer_inputs)):
            args = [live[i] for i in inputs] if inputs else [x]
            live[name] = self.blocks[name](*args)
            for i in inputs:
                if self._last_use[i] == step:
                    del live[i]
        return live[self.output_name]


def from_keras_h5(path: str | Path, softmax: bool = False) -> KerasGraphNet:
    """Build the PyTorch twin of a Keras 2 HDF5 model (weights from h5py, no TensorFlow)."""
    return KerasGraphNet(read_keras_h5(path), softmax=softmax)
