"""Convert dlib's ``dlib_face_recognition_resnet_model_v1.dat`` to a numpy ``.npz``.

The ``.dat`` file is dlib's own serialization of the ``anet_type`` network of
``dnn_face_recognition_ex.cpp`` (CC0, shipped in the ``face-recognition-models``
package). It is parsed here in pure Python; dlib itself is not needed.

Layout of the stream (dlib/dnn/core.h, layers.h, input.h, tensor.h):

- ``add_loss_layer``: int version, loss details (``"loss_metric_2"``, margin,
  distance threshold), then the sub-network.
- every ``add_layer`` writes its int version, then its *sub-network* (so the
  recursion reaches the input layer before any layer details are written),
  then its own details and state: 3 bools + ``x_grad`` + ``cached_output``
  (+ ``params_grad`` for version 2; + ``grad_final`` and the sample
  expansion factor for the version-3 layer that sits on the input layer).
- ``add_tag_layer`` / ``add_skip_layer`` write only an int version (1) and
  their sub-network; tag ids are not stored (the architecture is fixed, see
  ``facesal_fast.models.dlib_resnet``).

So the file holds one leading block of version ints (output side first), the
input layer, then the layer details from the input side to the output side.

Primitive encodings (dlib/serialize.h): an int is one byte ``b`` (low nibble =
number of magnitude bytes, bit 7 = negative) followed by the magnitude in
little-endian; a bool is the character ``'1'``/``'0'``; a string is an int
length followed by the bytes; a float/double is two ints (mantissa, exponent);
a tensor (version 2) is its version, ``num_samples, k, nr, nc`` and the data
as raw little-endian float32. Batch norms were converted to ``affine_`` layers
(``params = [gamma | beta]``, ``y = gamma * x + beta`` per channel) before the
model was saved; the parser rejects anything else.

Usage::

    python scripts/convert_dlib_weights.py [path/to/model.dat] [out.npz]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEFAULT_OUT = (
    Path(__file__).resolve().parents[1] / "facesal_fast" / "models" / "weights" / "dlib_face_recognition_resnet.npz"
)


class _Reader:
    """Sequential reader of dlib's serialization primitives."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self) -> int:
        head = self.data[self.pos]
        size = head & 0x0F
        magnitude = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -magnitude if head & 0x80 else magnitude

    def real(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return float(mantissa) * 2.0**exponent

    def bool(self) -> bool:
        char = self.data[self.pos : self.pos + 1]
        self.pos += 1
        if char not in (b"0", b"1"):
            raise ValueError(f"bad bool {char!r} at byte {self.pos - 1}")
        return char == b"1"

    def string(self) -> str:
        length = self.int()
        text = self.data[self.pos : self.pos + length].decode("ascii")
        self.pos += length
        return text

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"tensor version {version} at byte {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += 4 * count
        return values.reshape(shape).astype(np.float32)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        if self.int() != 1:
            raise ValueError(f"alias_tensor version at byte {self.pos}")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


def _parse_details(r: _Reader) -> dict:
    """Parse one layer's details; returns ``{"type": ..., ...}``."""
    name = r.string()
    if name == "con_4":
        params = r.tensor().reshape(-1)
        num_filters, nr, nc = r.int(), r.int(), r.int()
        stride_y, stride_x, pad_y, pad_x = r.int(), r.int(), r.int(), r.int()
        filters = r.alias_tensor()
        biases = r.alias_tensor()
        for _ in range(4):  # learning-rate / weight-decay multipliers
            r.real()
        n_w = int(np.prod(filters))
        return {
            "type": "con",
            "weight": params[:n_w].reshape(filters),
            "bias": params[n_w : n_w + int(np.prod(biases))].copy(),
            "num_filters": num_filters,
            "kernel": (nr, nc),
            "stride": (stride_y, stride_x),
            "padding": (pad_y, pad_x),
        }
    if name == "affine_":
        params = r.tensor().reshape(-1)
        gamma = r.alias_tensor()
        beta = r.alias_tensor()
        mode = r.int()
        if mode != 0:  # CONV_MODE: one gamma/beta per channel
            raise ValueError(f"affine_ mode {mode}, expected CONV_MODE")
        k = int(np.prod(gamma))
        if int(np.prod(beta)) != k or params.size != 2 * k:
            raise ValueError("affine_ params do not split into gamma|beta")
        return {"type": "affine", "gamma": params[:k].copy(), "beta": params[k:].copy()}
    if name == "relu_":
        return {"type": "relu"}
    if name == "add_prev_":
        return {"type": "add_prev"}
    if name in ("max_pool_2", "avg_pool_2"):
        geometry = tuple(r.int() for _ in range(6))  # nr, nc, stride_y, stride_x, pad_y, pad_x
        # The architecture's pools: max 3x3/2, avg 2x2/2 (shortcuts), avg over everything (nr = nc = 0).
        allowed = {"max_pool_2": [(3, 3, 2, 2, 0, 0)], "avg_pool_2": [(2, 2, 2, 2, 0, 0), (0, 0, 1, 1, 0, 0)]}
        if geometry not in allowed[name]:
            raise ValueError(f"unexpected {name} geometry {geometry}")
        return {"type": name[:-2]}
    if name == "fc_2":
        num_outputs = r.int()
        num_inputs = r.int()
        params = r.tensor().reshape(-1)
        weights = r.alias_tensor()
        r.alias_tensor()  # biases (empty for fc_no_bias)
        bias_mode = r.int()  # FC_HAS_BIAS = 0, FC_NO_BIAS = 1
        for _ in range(4):
            r.real()
        if bias_mode != 1 or params.size != num_inputs * num_outputs:
            raise ValueError("expected fc_no_bias")
        # dlib: out = in (N x num_inputs) * W (num_inputs x num_outputs).
        return {"type": "fc", "weight": params.reshape(weights[0], weights[1]).T.copy()}
    raise ValueError(f"unsupported dlib layer {name!r} at byte {r.pos}")


def parse_dlib_resnet(data: bytes) -> tuple[dict, list[dict]]:
    """Parse the whole ``.dat`` stream.

    Returns ``(meta, layers)``: ``meta`` holds the input mean and size and the
    loss's margin / distance threshold; ``layers`` lists the computational
    layers from the input side to the output side.
    """
    r = _Reader(data)
    if r.int() != 1 or r.string() != "loss_metric_2":
        raise ValueError("not a dlib loss_metric network")
    meta: dict = {"margin": r.real(), "distance_threshold": r.real()}
    versions: list[int] = []  # outermost first
    while r.data[r.pos] == 0x01 and r.data[r.pos + 1] in (1, 2, 3):
        versions.append(r.int())
    if r.string() != "input_rgb_image_sized":
        raise ValueError("expected input_rgb_image_sized")
    meta["mean_rgb"] = (r.real(), r.real(), r.real())
    meta["size"] = (r.int(), r.int())
    layers: list[dict] = []
    for version in reversed(versions):  # innermost first
        if version == 1:  # tag / skip layer: nothing after its sub-network
            continue
        layers.append(_parse_details(r))
        for _ in range(3):
            r.bool()
        r.tensor()  # x_grad
        r.tensor()  # cached_output
        if version == 2:
            r.tensor()  # params_grad
        else:  # version 3: the layer on top of the input layer
            r.tensor()  # grad_final
            r.int()  # sample expansion factor
    if r.pos != len(data):
        raise ValueError(f"{len(data) - r.pos} trailing bytes")
    return meta, layers


def to_arrays(meta: dict, layers: list[dict]) -> dict[str, np.ndarray]:
    """Flatten the parsed network into named arrays (input side first).

    ``con{i}.weight (O,I,kh,kw)``, ``con{i}.bias (O,)``, ``con{i}.stride (2,)``,
    ``affine{i}.gamma/.beta (O,)`` for the affine following ``con{i}``,
    ``fc.weight (128, 256)``, ``mean_rgb (3,)``, ``layer_types`` (the layer
    sequence as a string array, checked by the loader against the architecture).
    """
    out: dict[str, np.ndarray] = {
        "mean_rgb": np.asarray(meta["mean_rgb"], dtype=np.float64),
        "distance_threshold": np.asarray(meta["distance_threshold"]),
        "layer_types": np.asarray([layer["type"] for layer in layers]),
    }
    n_con = 0
    for layer in layers:
        if layer["type"] == "con":
            out[f"con{n_con}.weight"] = layer["weight"]
            out[f"con{n_con}.bias"] = layer["bias"]
            out[f"con{n_con}.stride"] = np.asarray(layer["stride"])
            out[f"con{n_con}.padding"] = np.asarray(layer["padding"])
            n_con += 1
        elif layer["type"] == "affine":
            out[f"affine{n_con - 1}.gamma"] = layer["gamma"]
            out[f"affine{n_con - 1}.beta"] = layer["beta"]
        elif layer["type"] == "fc":
            out["fc.weight"] = layer["weight"]
    return out


def default_dat_path() -> Path:
    """Location of the model inside the ``face-recognition-models`` package."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("pip install face-recognition-models==0.3.0")
    return Path(spec.origin).parent / "models" / "dlib_face_recognition_resnet_model_v1.dat"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dat", nargs="?", type=Path, default=None)
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    dat = args.dat or default_dat_path()
    meta, layers = parse_dlib_resnet(dat.read_bytes())
    arrays = to_arrays(meta, layers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    n_params = sum(a.size for k, a in arrays.items() if k.endswith(("weight", "bias", "gamma", "beta")))
    print(f"{dat} -> {args.out}: {len(layers)} layers, {n_params} parameters, meta {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
