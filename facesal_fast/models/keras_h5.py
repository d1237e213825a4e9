"""Read a legacy Keras (2.x) HDF5 model file with h5py alone: layer graph and weights.

No TensorFlow and no Keras are needed. Only functional ``Model`` files whose layers have a
single inbound node are supported (that covers every sequential-or-DAG CNN saved with
``model.save``); anything else raises ``ValueError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

__all__ = ["KerasLayer", "KerasModelFile", "read_keras_h5"]


@dataclass(frozen=True)
class KerasLayer:
    """One layer of the stored graph.

    Attributes:
        name: layer name (unique in the model).
        kind: Keras class name, e.g. ``"Conv2D"``.
        config: the layer's stored config dict.
        inputs: names of the layers feeding it, in order.
        weights: the layer's arrays in Keras order (e.g. ``[kernel, bias]``), Keras layout.
    """

    name: str
    kind: str
    config: dict
    inputs: tuple[str, ...]
    weights: tuple[np.ndarray, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class KerasModelFile:
    """A parsed model file.

    Attributes:
        layers: layers in stored (topological) order.
        input_name / output_name: graph input and output layer names.
        input_shape: ``(H, W, C)`` of the single input.
        keras_version: version that saved the file.
    """

    layers: tuple[KerasLayer, ...]
    input_name: str
    output_name: str
    input_shape: tuple[int, int, int]
    keras_version: str


def _decode(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_keras_h5(path: str | Path) -> KerasModelFile:
    """Parse ``path`` (a Keras 2 ``model.save`` HDF5 file).

    Raises:
        ValueError: not a functional Keras model file, or a shape/graph this reader
            does not handle (several inputs/outputs, shared layers).
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise ValueError(f"{path}: not a Keras HDF5 model file (no model_config / model_weights)")
        config = json.loads(_decode(f.attrs["model_config"]))
        if config.get("class_name") not in ("Model", "Functional"):
            raise ValueError(f"{path}: expected a functional Keras Model, got {config.get('class_name')!r}")
        body = config["config"]
        if len(body["input_layers"]) != 1 or len(body["output_layers"]) != 1:
            raise ValueError(f"{path}: only single-input, single-output models are supported")
        group = f["model_weights"]
        layers = []
        for spec in body["layers"]:
            name = spec["config"]["name"]
            nodes = spec.get("inbound_nodes") or []
            if len(nodes) > 1:
                raise ValueError(f"{path}: layer {name!r} is shared ({len(nodes)} inbound nodes); not supported")
            inputs = tuple(node[0] for node in nodes[0]) if nodes else ()
            weights: tuple[np.ndarray, ...] = ()
            if name in group:
                names = [_decode(n) for n in group[name].attrs.get("weight_names", [])]
                weights = tuple(np.asarray(group[name][n], dtype=np.float32) for n in names)
            layers.append(KerasLayer(name, spec["class_name"], spec["config"], inputs, weights))
        input_name = body["input_layers"][0][0]
        in_cfg = next(layer.config for layer in layers if layer.name == input_name)
        shape = in_cfg.get("batch_input_shape") or in_cfg.get("batch_shape")
        if shape is None or len(shape) != 4 or any(s is None for s in shape[1:]):
            raise ValueError(f"{path}: expected a fixed N x H x W x C input, got {shape}")
        return KerasModelFile(
            layers=tuple(layers),
            input_name=input_name,
            output_name=body["output_layers"][0][0],
            input_shape=(int(shape[1]), int(shape[2]), int(shape[3])),
            keras_version=_decode(f.attrs.get("keras_version", "unknown")),
        )
