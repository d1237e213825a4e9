"""A captum-style entry point: ``CanonicalOcclusion(model).attribute(inputs, target=...)``.

captum's ``Occlusion(model).attribute(x, target=c)`` occludes a normalised model input on
a sliding window grid. :class:`CanonicalOcclusion` takes the *photos* instead (what
torchvision's ``ToTensor`` gives: ``N x 3 x H x W`` in ``[0, 1]``, or uint8), aligns each
face, occludes at every point of the dense face mesh (CIS, :func:`facesal_fast.cis`) in
the model's own crop and normalisation, and returns the occlusion map on each photo shaped
like captum's attribution (``N x 3 x H x W``, the same map in every channel, as captum's
Occlusion gives for a window spanning the channels), on the inputs' device. The maps on
the canonical face are kept in :attr:`CanonicalOcclusion.canonical`, the full results in
:attr:`CanonicalOcclusion.results`. :meth:`CanonicalOcclusion.forward` is the model as a
function of the photos, for captum's metrics (``infidelity``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from facesal_fast.align import default_aligner
from facesal_fast.align.image_io import _is_tensor, tensor_images
from facesal_fast.core.options import CISOptions
from facesal_fast.methods.occlusion import to_photo
from facesal_fast.saliency import cis
from facesal_fast.scoring import Scorer
from facesal_fast.scoring.confidence import class_scores
from facesal_fast.scoring.photos import AlignerLike, ScorerLike

__all__ = ["CanonicalOcclusion"]

Target = int | str | None
#: What :meth:`CanonicalOcclusion.attribute` takes as ``target``: one for every photo, or one per photo.
Targets = Target | Sequence[int | str] | torch.Tensor | np.ndarray


class CanonicalOcclusion:
    """Canonical occlusion with captum's calling convention.

    Args:
        model_or_scorer: a :class:`~facesal_fast.scoring.Scorer` (e.g.
            ``facesal_fast.models.load("gender")``), or a torch module taking
            ``N x C x input_size`` normalised input (then ``input_size`` is required and
            ``scorer_options`` go to :meth:`Scorer.from_torch`: ``mean``, ``std``,
            ``grayscale``, ``classes``, ``backend``, ...).
        input_size: the module's input side or ``(H, W)``; only with a module.
        aligner: the aligner (default: :func:`facesal_fast.align.default_aligner`).

    Attributes:
        scorer: the scorer used.
        results: the :class:`~facesal_fast.saliency.CISResult` of each photo of the last
            :meth:`attribute` call.
    """

    def __init__(
        self,
        model_or_scorer: nn.Module | ScorerLike,
        input_size: int | Sequence[int] | None = None,
        *,
        aligner: AlignerLike | None = None,
        **scorer_options: Any,
    ) -> None:
        if isinstance(model_or_scorer, nn.Module):
            if input_size is None:
                raise ValueError("input_size is required with a torch module (its input side, e.g. 224)")
            model_or_scorer = Scorer.from_torch(model_or_scorer, input_size, **scorer_options)
        elif input_size is not None or scorer_options:
            raise ValueError("input_size and scorer options go with a torch module; a scorer has its own")
        if not isinstance(model_or_scorer, ScorerLike):
            raise ValueError(
                f"model_or_scorer must be a torch module or a Scorer, got {type(model_or_scorer).__name__}"
            )
        self.scorer = model_or_scorer
        self.aligner = aligner
        self.results: list = []
        self._faces: OrderedDict[str, Any] = OrderedDict()

    def __repr__(self) -> str:
        return f"CanonicalOcclusion({self.scorer!r}, results={len(self.results)})"

    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor],
        target: Targets = None,
        options: CISOptions | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> torch.Tensor:
        """Occlusion maps of ``inputs`` on the photos, shaped like ``inputs``.

        Args:
            inputs: ``N x 3 x H x W`` (or ``3 x H x W``) photos, float in ``[0, 1]`` or uint8,
                channels first; each must show a face. A 1-tuple of such a tensor (captum's
                tuple form) gives a 1-tuple back.
            target: class index or name for every photo, one per photo (list, tuple, tensor
                or numpy array of ``N``), or None / ``"predicted"`` for each photo's predicted class.
            options: how each map is computed, as :func:`facesal_fast.cis` takes it: a
                :class:`~facesal_fast.core.options.CISOptions`, a mapping of its fields or None.
            overrides: its fields by keyword (``patch``, ``stride``, ``mode``, ``fill``,
                ``face_index``, ...).

        Returns:
            float tensor shaped like ``inputs`` on its device: the score drop ``S``
            (``phi(I, c) - phi(I occluded, c)``, positive where hiding the pixel lowers the
            target's confidence) warped from the model's crop onto the photo, 0 outside the
            crop, repeated over the channels.
        """
        options = CISOptions.build(options, **overrides)
        if isinstance(inputs, tuple) and len(inputs) == 1:
            return (self.attribute(inputs[0], target, options),)
        batch = self._batch(inputs)
        photos = tensor_images(batch, "inputs")
        targets = _targets(target, len(photos))
        self.results = [cis(photo, self.scorer, t, options, aligner=self.aligner) for photo, t in zip(photos, targets)]
        maps = [to_photo(r.occlusion, r.affine, photo.shape[:2]) for r, photo in zip(self.results, photos)]
        out = torch.from_numpy(np.stack(maps))[:, None].expand(-1, batch.shape[1], -1, -1)
        dtype = inputs.dtype if inputs.dtype.is_floating_point else torch.float32
        out = out.to(device=inputs.device, dtype=dtype).contiguous()
        return out if inputs.ndim == 4 else out[0]

    @property
    def canonical(self) -> torch.Tensor:
        """``N x H_F x W_F`` float32 CIS maps of the last :meth:`attribute` call on the
        canonical face (:func:`facesal_fast.align.canonical_face` is its mean face)."""
        if not self.results:
            raise ValueError("no attribution yet: call attribute(inputs, target=...) first")
        return torch.from_numpy(np.stack([np.asarray(r.canonical) for r in self.results]))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model on photos: ``N x D`` confidences of every class (the scorer's softmax
        or logit, what :meth:`attribute` measures drops of) on the inputs' device. Each
        photo is aligned (cached by content) and cropped as the scorer does; for captum's
        ``infidelity(forward_func=co.forward, ...)``."""
        if isinstance(inputs, tuple) and len(inputs) == 1:
            inputs = inputs[0]
        batch = self._batch(inputs)
        rows = []
        for photo in tensor_images(batch, "inputs"):
            prediction = self.scorer.predict_input(self.scorer.prepare(photo, self._face(photo))[0])
            rows.append(torch.as_tensor(prediction.outputs)[None])
        outputs = class_scores(torch.cat(rows), self.scorer.confidence_name, self.scorer.outputs)
        return outputs.to(inputs.device)

    __call__ = forward

    @staticmethod
    def _batch(inputs: Any) -> torch.Tensor:
        if not _is_tensor(inputs) or inputs.ndim not in (3, 4):
            shape = tuple(inputs.shape) if _is_tensor(inputs) else type(inputs).__name__
            raise ValueError(f"inputs must be an N x 3 x H x W (or 3 x H x W) photo tensor, got {shape}")
        return inputs if inputs.ndim == 4 else inputs[None]

    def _face(self, photo: np.ndarray) -> Any:
        """The aligned face of ``photo``, cached by content (captum's metrics repeat inputs)."""
        key = hashlib.blake2b(photo.data, digest_size=16).hexdigest() + str(photo.shape)
        if key not in self._faces:
            self._faces[key] = (self.aligner or default_aligner())(photo)
            while len(self._faces) > 64:
                self._faces.popitem(last=False)
        self._faces.move_to_end(key)
        return self._faces[key]


def _targets(target: Targets, n: int) -> list[Target]:
    """One target per photo from a scalar, a name, None, or a sequence/tensor/numpy array of ``n``."""
    if _is_tensor(target):
        target = target.detach().cpu().numpy()
    if isinstance(target, (np.ndarray, np.generic)):
        target = target.reshape(-1).tolist() if target.size != 1 else target.reshape(-1)[0].item()
    if isinstance(target, (list, tuple)):
        if len(target) != n:
            raise ValueError(f"target has {len(target)} entries for {n} inputs")
        return [t.item() if isinstance(t, np.generic) else t for t in target]
    return [target] * n
