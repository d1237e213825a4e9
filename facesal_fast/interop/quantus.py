"""Quantus, the XAI evaluation toolkit, on facesal_fast's maps: a model and an ``explain_func``.

    model = quantus_model(scorer)                  # a torch.nn.Module, as Quantus asks
    x_batch = model.inputs(photos, space="crop")   # N x C x h x w in [0, 1] (or space="photo")
    y_batch = model(torch.from_numpy(x_batch)).argmax(1).numpy()
    quantus.Sparseness()(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=None,
                         explain_func=quantus_explain, explain_func_kwargs={"stride": 4})

Two spaces. ``"crop"``: Quantus sees what the network sees, the model's crop of each face
(``h x w`` = the scorer's ``input_size``), and the maps cover all of it. ``"photo"``: Quantus
sees the photos; the maps are warped onto them and are 0 outside the model's crop (a
complexity metric then also counts the background as "not relevant").

Faces: finding the face is part of the model's preprocessing and happens once per photo, in
:meth:`QuantusModel.inputs`. An input Quantus has perturbed (noise, pixels replaced by a
baseline) keeps the face of the input it came from: the input of the same size given to
:meth:`~QuantusModel.inputs` nearest to it (mean absolute difference at most
:data:`SAME_FACE`). Photos never given to :meth:`~QuantusModel.inputs` are aligned when first
seen (photo space only). Inputs are clamped to ``[0, 1]``, the range of photos, when
``clamp=True`` (Quantus's noise leaves it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from torch import nn

from facesal_fast.align import default_aligner
from facesal_fast.align.image_io import load_image
from facesal_fast.core.options import CISOptions
from facesal_fast.methods.occlusion import to_photo
from facesal_fast.saliency.cis import apply_affine, cis
from facesal_fast.scoring import Scorer
from facesal_fast.scoring.backends import TorchBackend
from facesal_fast.scoring.preprocessing import Preprocessing

if TYPE_CHECKING:
    from collections.abc import Sequence

    from facesal_fast.align.face import AlignedFace
    from facesal_fast.scoring.photos import AlignerLike

__all__ = ["SAME_FACE", "QuantusModel", "quantus_explain", "quantus_model"]

#: Largest mean absolute difference (pixel values in ``[0, 1]``) between a perturbed input and
#: the input it came from for it to keep that input's face.
SAME_FACE = 0.25
SPACES = ("crop", "photo")


class QuantusModel(nn.Module):
    """A scorer's network as a function of ``N x C x H x W`` float inputs in ``[0, 1]``
    (channels first): ``N x D`` outputs (the network's own: logits, or probabilities with
    ``outputs="probabilities"``). Inputs of the model's own shape (``C x input_size``) are
    its crops (normalised and run); others are photos (their face found, cropped and
    normalised as the scorer does). The network is
    ``self.net``, a registered submodule, so Quantus's randomisation metrics randomise it.

    Args:
        scorer: a :class:`~facesal_fast.scoring.Scorer` built from a torch module with a
            fixed input size (``Scorer.from_torch``, ``facesal_fast.models.load``).
        aligner: the aligner (default: :func:`facesal_fast.align.default_aligner`).
    """

    def __init__(self, scorer: Scorer, aligner: AlignerLike | None = None):
        super().__init__()
        if getattr(scorer, "module", None) is None or scorer.input_size is None:
            raise ValueError(
                "quantus_model needs a scorer built from a torch module with a fixed input_size "
                "(Scorer.from_torch(net, input_size, ...) or facesal_fast.models.load(name))"
            )
        if scorer.crop == "chip":
            raise ValueError("quantus_model takes face-crop scorers; a dlib chip scorer (crop='chip') is not supported")
        self.net = scorer.module
        self.spec, self.classes, self.outputs = scorer.spec, scorer.classes, scorer.outputs
        self.kind = scorer.confidence_name
        self.aligner = aligner
        self._known: list[tuple[str, np.ndarray, AlignedFace]] = []  # (space, C x H x W input, its face)
        self.eval()  # Quantus asks for a module in evaluation mode

    def scorer(self, space: str = "photo") -> Scorer:
        """A scorer of the current ``self.net`` (randomised or not) on torch eager: the
        scorer's preprocessing for photos, no crop for the model's crops."""
        spec = self.spec if space == "photo" else Preprocessing.of(self.spec, crop="none")
        return Scorer(
            _eager(self.net),
            spec,
            classes=self.classes,
            outputs=self.outputs,
            confidence=self.kind,
            module=self.net,
        )

    def inputs(self, photos: Sequence[Any], space: str = "crop") -> np.ndarray:
        """The photos (paths or ``H x W x 3`` uint8 arrays, one face each) as Quantus's
        ``x_batch``: ``N x C x h x w`` model crops (``space="crop"``; ``C`` the model's
        channels) or ``N x 3 x H x W`` photos (``space="photo"``, all of one size), float32 in
        ``[0, 1]``. Each face is found once and remembered for :func:`quantus_explain`."""
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        rows = []
        for photo in photos:
            image = load_image(photo) if isinstance(photo, (str, bytes)) or hasattr(photo, "__fspath__") else photo
            face = (self.aligner or default_aligner())(np.asarray(image))
            if space == "crop":
                crop, affine = self.scorer("photo").prepare(face.image, face)
                face = _crop_face(face, crop, affine)
                rows.append(np.moveaxis(crop, 2, 0).astype(np.float32) / 255)
            else:
                rows.append(np.moveaxis(face.image, 2, 0).astype(np.float32) / 255)
            self._known.append((space, rows[-1], face))
        if len({row.shape for row in rows}) > 1:
            raise ValueError(f"photos of one batch must have one size, got {sorted({r.shape for r in rows})}")
        return np.stack(rows)

    def face_of(self, x: np.ndarray) -> tuple[str, AlignedFace]:
        """(space, face) of one ``C x H x W`` input in ``[0, 1]``: the face of the known input
        nearest to it (see the module doc), or, for a photo never seen, its face found now."""
        same = [
            (float(np.abs(known - x).mean()), space, face)
            for space, known, face in self._known
            if known.shape == x.shape
        ]
        if same:
            distance, space, face = min(same, key=lambda row: row[0])
            if distance <= SAME_FACE:
                return space, replace(face, image=_rgb_uint8(x))
        if x.shape[0] == self.spec.channels and x.shape[1:] == self.spec.input_size:
            raise ValueError(
                f"an input of the model's size {x.shape} that is no perturbation of one given to model.inputs() "
                f"(nearest mean |difference| {min((row[0] for row in same), default='none')}): its face is unknown"
            )
        face = (self.aligner or default_aligner())(_rgb_uint8(x))
        self._known.append(("photo", x.copy(), face))
        return "photo", face

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x C x H x W`` inputs in ``[0, 1]`` -> ``N x D`` outputs of ``self.net``."""
        x = x.detach().float().clamp(0, 1)
        crops = [self._crop(image) for image in x.cpu().numpy()]
        batch = torch.from_numpy(np.stack(crops)).to(_device(self.net))
        mean = torch.tensor(self.spec.mean, dtype=torch.float32, device=batch.device).reshape(1, -1, 1, 1)
        std = torch.tensor(self.spec.std, dtype=torch.float32, device=batch.device).reshape(1, -1, 1, 1)
        return self.net((batch * 255 * self.spec.scale - mean) / std)

    def _crop(self, x: np.ndarray) -> np.ndarray:
        """One input as the model's ``C x h x w`` crop in ``[0, 1]`` (an input of that shape is one)."""
        if x.shape == (self.spec.channels, *self.spec.input_size):
            return x
        _, face = self.face_of(x)
        crop, _ = self.scorer("photo").prepare(face.image, face)
        return np.moveaxis(crop, 2, 0).astype(np.float32) / 255


def quantus_model(scorer: Scorer, aligner: AlignerLike | None = None) -> QuantusModel:
    """``scorer``'s network as the ``torch.nn.Module`` Quantus takes (see :class:`QuantusModel`)."""
    return QuantusModel(scorer, aligner)


def quantus_explain(
    model: QuantusModel,
    inputs: np.ndarray,
    targets: Any,
    *,
    clamp: bool = True,
    options: CISOptions | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> np.ndarray:
    """Quantus's ``explain_func``: CIS occlusion maps of ``inputs`` for ``targets``.

    Args:
        model: a :class:`QuantusModel` (as given to the metric, or Quantus's randomised copy).
        inputs: ``N x C x H x W`` float inputs (model crops or photos, see :class:`QuantusModel`).
        targets: class index per input (a numpy array or list of ``N``, or one for all).
        clamp: clip ``inputs`` to ``[0, 1]`` first (Quantus's noise leaves it; without it an
            input outside is a ``ValueError``).
        options: how each map is computed, as :func:`facesal_fast.cis` takes it: a
            :class:`~facesal_fast.core.options.CISOptions`, a mapping of its fields or None.
        overrides: its fields by keyword (``patch``, ``stride``, ``mode``, ...; Quantus passes
            ``explain_func_kwargs`` so).

    Returns:
        ``N x 1 x H x W`` float32: the score drop ``S`` of each pixel of the crop, or warped
        onto the photo (0 outside the model's crop).
    """
    options = CISOptions.build(options, **overrides)
    if not isinstance(model, QuantusModel):
        raise ValueError(f"model must be the QuantusModel from quantus_model(scorer), got {type(model).__name__}")
    x = np.asarray(inputs, np.float32)
    if x.ndim != 4:
        raise ValueError(f"inputs must be N x C x H x W, got shape {x.shape}")
    if clamp:
        x = np.clip(x, 0.0, 1.0)
    elif x.min() < 0 or x.max() > 1:
        raise ValueError(f"inputs must lie in [0, 1] (got {x.min():.3g} .. {x.max():.3g}); pass clamp=True")
    labels = np.broadcast_to(np.asarray(targets).reshape(-1), (len(x),)) if np.size(targets) in (1, len(x)) else None
    if labels is None:
        raise ValueError(f"targets must hold one class per input ({len(x)}), got {np.size(targets)}")
    maps = [_explain_one(model, image, int(label), options) for image, label in zip(x, labels)]
    return np.stack(maps)[:, None].astype(np.float32)


def _explain_one(model: QuantusModel, x: np.ndarray, target: int, options: CISOptions) -> np.ndarray:
    """``H x W`` map of one input (``C x H x W`` in ``[0, 1]``)."""
    space, face = model.face_of(x)
    result = cis(face.image, model.scorer(space), target, options, face=face)
    if space == "crop":
        return np.asarray(result.occlusion, np.float32)
    return to_photo(result.occlusion, result.affine, x.shape[1:])


def _crop_face(face: AlignedFace, crop: np.ndarray, affine: np.ndarray) -> AlignedFace:
    """``face`` seen in the model's crop (``h x w x C`` uint8): points, box and scale moved
    through the photo -> crop ``affine``; points outside the crop not visible."""
    h, w = crop.shape[:2]
    verts = apply_affine(affine, np.asarray(face.verts_image, np.float32)[:, :2]).astype(np.float32)
    inside = (verts[:, 0] > -0.5) & (verts[:, 0] < w - 0.5) & (verts[:, 1] > -0.5) & (verts[:, 1] < h - 0.5)
    corners = apply_affine(affine, np.asarray(face.face_box, np.float32).reshape(2, 2))
    scale = float(np.sqrt(abs(np.linalg.det(np.asarray(affine)[:, :2]))))
    return replace(
        face,
        image=_rgb_uint8(np.moveaxis(crop, 2, 0).astype(np.float32) / 255),
        verts_image=verts,
        visible=np.asarray(face.visible, bool) & inside,
        face_box=tuple(float(v) for v in corners.reshape(-1)),
        face_scale=float(face.face_scale) * scale,
        landmarks=None,
        mesh=None,
    )


def _rgb_uint8(x: np.ndarray) -> np.ndarray:
    """``C x H x W`` in ``[0, 1]`` (C = 1 or 3) -> ``H x W x 3`` uint8 RGB."""
    image = np.rint(np.clip(np.moveaxis(x, 0, 2), 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image)


def _device(net: nn.Module) -> torch.device:
    first = next(net.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _eager(net: nn.Module) -> TorchBackend:
    """Torch eager inference of ``net`` (no probe: Quantus calls with the network it randomised)."""
    return TorchBackend(net, _device(net))
