"""dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1``) in PyTorch.

The network is the ``anet_type`` of dlib's ``dnn_face_recognition_ex.cpp``: a
29-conv ResNet on a 150x150 RGB chip, average pooling and a bias-free 128-d
fully connected layer, trained with a metric loss (two faces match when the
Euclidean distance of their descriptors is below 0.6). The weights (CC0) come
from the ``face-recognition-models`` package; ``scripts/convert_dlib_weights.py``
parses dlib's ``.dat`` file into ``weights/dlib_face_recognition_resnet.npz``,
which is all this module needs: dlib is **not** required at run time.
``DlibReference`` wraps dlib itself (optional dependency) as the black-box
reference used by the tests and for landmarks.

Faithfulness details of the port (all checked against dlib, max abs difference
of descriptors <= 1e-4):

- input: ``(pixel - mean_rgb) / 256`` with dlib's stored means
  ``(122.782, 117.001, 104.298)`` (``input_rgb_image_sized``);
- dlib's ``con_`` uses padding ``k//2`` for stride 1 and **0** for stride 2,
  the pools likewise, so spatial sizes go 150 -> 72 -> 35 -> 17 -> 8 -> 3 -> 1;
- ``add_prev`` adds tensors of different shapes by zero-padding both to the
  larger channel count / height / width (aligned at index 0): the
  channel-doubling shortcuts are zero-padded average pools, and in the 256-ch
  down-sampling unit a 3x3 block output is added into a 4x4 pooled shortcut;
- the batch norms were saved as per-channel ``affine_`` layers; they are
  folded into the preceding convolutions at load time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesal_fast.scoring.preprocessing import Preprocessing

__all__ = [
    "CHIP_PADDING",
    "CHIP_SIZE",
    "DLIB_INPUT_STD",
    "DLIB_MEAN_RGB",
    "DlibFaceResNet",
    "DlibReference",
    "WEIGHTS_PATH",
    "chip_preprocessing",
    "load_dlib_resnet",
    "normalize_chips",
]

WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "dlib_face_recognition_resnet.npz"

#: Per-channel means subtracted by dlib's ``input_rgb_image_sized`` (float32 values stored in the model).
DLIB_MEAN_RGB: tuple[float, float, float] = (122.78199768066406, 117.0009994506836, 104.2979965209961)
#: dlib divides the centred pixel by 256. As ``occlude_batch`` arguments:
#: ``scale=1.0, mean=DLIB_MEAN_RGB, std=DLIB_INPUT_STD``.
DLIB_INPUT_STD: tuple[float, float, float] = (256.0, 256.0, 256.0)

#: Side of the aligned chip the network takes.
CHIP_SIZE = 150
#: Padding dlib's ``compute_face_descriptor`` uses around the landmark template.
CHIP_PADDING = 0.25


def chip_preprocessing(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> Preprocessing:
    """dlib's network input: an RGB ``size x size`` chip aligned on 5 landmarks (``padding``
    around the template), normalised ``(pixel - DLIB_MEAN_RGB) / 256``; its Cydral age and
    gender networks take it at other sizes and paddings."""
    return Preprocessing(size, mean=DLIB_MEAN_RGB, std=DLIB_INPUT_STD, scale=1.0, crop="chip", chip_padding=padding)


# (out_channels, down-sampling) of the 14 residual units, input side first.
_UNITS: tuple[tuple[int, bool], ...] = (
    ((32, False),) * 3
    + ((64, True),)
    + ((64, False),) * 3
    + ((128, True),)
    + ((128, False),) * 2
    + ((256, True),)
    + ((256, False),) * 2
    + ((256, True),)
)
# The layer sequence the converter must have found (checked at load time).
_LAYER_TYPES: tuple[str, ...] = (
    ("con", "affine", "relu", "max_pool")
    + sum(
        (
            ("con", "affine", "relu", "con", "affine") + (("avg_pool",) if down else ()) + ("add_prev", "relu")
            for _, down in _UNITS
        ),
        (),
    )
    + ("avg_pool", "fc")
)


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: sum of two NCHW tensors zero-padded to the larger C, H, W."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _ResidualUnit(nn.Module):
    """``relu(add_prev(block(x), x or avg_pool2x2(x)))`` with block = conv-relu-conv (affines folded)."""

    def __init__(self, in_channels: int, out_channels: int, down: bool) -> None:
        super().__init__()
        stride, padding = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, C_in, H, W) -> (N, C_out, H', W')``."""
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_prev(y, shortcut))


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet: aligned 150x150 RGB chips -> 128-d descriptors.

    Input ``(N, 3, 150, 150)``: ``uint8`` RGB (normalised inside), or float
    already in dlib's normalisation ``(pixel - DLIB_MEAN_RGB) / 256``.
    Output ``(N, 128)`` float32, dlib's descriptor (not L2-normalised; two faces
    match when the Euclidean distance is below 0.6).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 32, 7, 2, 0)
        units = []
        in_channels = 32
        for out_channels, down in _UNITS:
            units.append(_ResidualUnit(in_channels, out_channels, down))
            in_channels = out_channels
        self.units = nn.Sequential(*units)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean_rgb", torch.tensor(DLIB_MEAN_RGB).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, 3, 150, 150)`` uint8 or normalised float -> ``(N, 128)``."""
        if x.dtype == torch.uint8:
            x = normalize_chips(x, self.mean_rgb)
        x = F.max_pool2d(F.relu(self.conv0(x)), 3, 2)
        x = self.units(x)
        return self.fc(x.mean(dim=(2, 3)))

    def traceable(self, size: int = CHIP_SIZE) -> nn.Module:
        """The same network for normalised float ``(N, 3, size, size)`` input with
        ``add_prev``'s zero padding fixed for that size: no Python branch on tensors, so
        ``torch.fx`` can trace it (used by :class:`facesal_fast.speed.IncrementalModel`).
        Shares this model's parameters."""
        return _TraceableDlibResNet(self, size)


def _pad_to(shape: torch.Size, target: tuple[int, int, int]) -> tuple[int, ...]:
    """``F.pad`` amounts taking an NCHW ``shape`` to ``target`` (C, H, W), zeros after the
    data as ``add_prev`` pads; ``()`` when nothing is padded."""
    c, h, w = (target[i] - shape[i + 1] for i in range(3))
    return (0, w, 0, h, 0, c) if c else (0, w, 0, h) if h or w else ()


class _StaticResidualUnit(nn.Module):
    """A :class:`_ResidualUnit` whose ``add_prev`` padding is fixed for one input shape."""

    def __init__(self, unit: _ResidualUnit, in_shape: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv1, self.conv2, self.down = unit.conv1, unit.conv2, unit.down
        with torch.no_grad():
            x = torch.zeros(in_shape)
            y, shortcut = self.conv2(self.conv1(x)), F.avg_pool2d(x, 2, 2) if self.down else x
        target = tuple(max(y.shape[i], shortcut.shape[i]) for i in (1, 2, 3))
        self.pad_y, self.pad_shortcut = _pad_to(y.shape, target), _pad_to(shortcut.shape, target)
        self.out_shape = (1, *target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        if self.pad_y:
            y = F.pad(y, self.pad_y)
        if self.pad_shortcut:
            shortcut = F.pad(shortcut, self.pad_shortcut)
        return F.relu(y + shortcut)


class _TraceableDlibResNet(nn.Module):
    """:meth:`DlibFaceResNet.traceable`: normalised float ``(N, 3, size, size)`` -> ``(N, 128)``."""

    def __init__(self, model: DlibFaceResNet, size: int) -> None:
        super().__init__()
        self.conv0, self.fc = model.conv0, model.fc
        with torch.no_grad():
            shape = tuple(F.max_pool2d(self.conv0(torch.zeros(1, 3, size, size)), 3, 2).shape)
        units = []
        for unit in model.units:
            units.append(_StaticResidualUnit(unit, shape))
            shape = units[-1].out_shape
        self.units = nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv0(x)), 3, 2)
        return self.fc(self.units(x).mean(dim=(2, 3)))


def normalize_chips(chips: torch.Tensor, mean_rgb: torch.Tensor | None = None) -> torch.Tensor:
    """``uint8 (N, 3, H, W)`` RGB -> float32 ``(pixel - DLIB_MEAN_RGB) / 256``."""
    mean = mean_rgb if mean_rgb is not None else torch.tensor(DLIB_MEAN_RGB).view(1, 3, 1, 1)
    return (chips.float() - mean.to(chips.device)) / 256.0


def load_dlib_resnet(path: str | Path = WEIGHTS_PATH, device: str | torch.device = "cpu") -> DlibFaceResNet:
    """Build ``DlibFaceResNet`` from the converted weights (``.npz``), in eval mode.

    The per-channel affines (dlib's frozen batch norms) are folded into the
    preceding convolutions: ``w' = w * gamma``, ``b' = b * gamma + beta``.
    """
    arrays = np.load(path)
    found = tuple(str(t) for t in arrays["layer_types"])
    if found != _LAYER_TYPES:
        raise ValueError(f"{path}: layer sequence does not match dlib's anet_type")
    model = DlibFaceResNet()
    state: dict[str, torch.Tensor] = {}
    # named_modules() yields the 29 convolutions input side first, dlib's file order.
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for i, (name, conv) in enumerate(convs):
        gamma = arrays[f"affine{i}.gamma"].astype(np.float64)
        beta = arrays[f"affine{i}.beta"].astype(np.float64)
        weight = arrays[f"con{i}.weight"].astype(np.float64) * gamma[:, None, None, None]
        bias = arrays[f"con{i}.bias"].astype(np.float64) * gamma + beta
        if tuple(arrays[f"con{i}.stride"]) != conv.stride or tuple(arrays[f"con{i}.padding"]) != conv.padding:
            raise ValueError(f"{path}: stride/padding of con{i} differ from the architecture")
        state[f"{name}.weight"] = torch.from_numpy(weight.astype(np.float32))
        state[f"{name}.bias"] = torch.from_numpy(bias.astype(np.float32))
    state["fc.weight"] = torch.from_numpy(arrays["fc.weight"])
    state["mean_rgb"] = torch.from_numpy(arrays["mean_rgb"].astype(np.float32)).view(1, 3, 1, 1)
    model.load_state_dict(state)
    return model.to(device).eval()


class DlibReference:
    """dlib itself (optional dependency ``facesal_fast[dlib]``): detector, 5-point landmarks, chips, descriptors.

    The black-box reference the port is checked against. Uses only the CC0
    models of ``face-recognition-models`` (never the non-commercial 68-point predictor).
    """

    def __init__(self) -> None:
        # optional extra: dlib
        import dlib
        import face_recognition_models as frm

        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def shapes(self, image: np.ndarray, upsample: int = 1) -> list:
        """dlib ``full_object_detection`` (5 points) of every face found in ``image (H, W, 3) uint8 RGB``."""
        return [self.predictor(image, box) for box in self.detector(image, upsample)]

    def landmarks5(self, image: np.ndarray, upsample: int = 1) -> np.ndarray:
        """``(F, 5, 2)`` float32 ``(x, y)`` landmarks of the F faces found, in dlib's 5-point order."""
        pts = [[(p.x, p.y) for p in s.parts()] for s in self.shapes(image, upsample)]
        return np.asarray(pts, dtype=np.float32).reshape(-1, 5, 2)

    def chip(self, image: np.ndarray, shape: object) -> np.ndarray:
        """dlib's own ``(150, 150, 3) uint8`` chip (``get_face_chip``, padding 0.25)."""
        return self._dlib.get_face_chip(image, shape, CHIP_SIZE, CHIP_PADDING)

    def descriptors(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """dlib's descriptors ``(N, 128)`` float32 of aligned ``(150, 150, 3) uint8`` chips."""
        out = self.net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(d) for d in out], dtype=np.float32).reshape(-1, 128)
