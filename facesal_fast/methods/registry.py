"""The one registry of saliency methods: canonical names, aliases, options, one call signature.

Every method that computes a map here is run as ``compute(name, model_input, target,
**options)`` on one image in the model's input geometry (:class:`ModelInput`) and returns
an ``h x w`` float32 map of that input. :func:`facesal_fast.methods.explain`, ``facesal
evaluate`` and the CLI's help take their names from :data:`METHODS`. The canonical-face
methods ``cis`` and ``cms`` are listed (kind ``"canonical"``) so that every name a user types
is here, but they are computed by :mod:`facesal_fast.saliency`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from facesal_fast import ops
from facesal_fast.core.renamed import renamed
from facesal_fast.methods import cams, guided_backprop, lrp, occlusion

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "ALIASES",
    "KINDS",
    "METHODS",
    "OPTIONS",
    "RENAMED_OPTIONS",
    "Method",
    "ModelInput",
    "compute",
    "names",
    "resolve",
]

#: How a method computes its map (:attr:`Method.kind`, its one meaning): ``"gradient"``
#: back-propagates through the torch module, ``"occlusion"`` scores occluded inputs,
#: ``"canonical"`` is a map of the canonical face (computed by :mod:`facesal_fast.saliency`).
KINDS = ("gradient", "occlusion", "canonical")


@dataclass(frozen=True)
class ModelInput:
    """One image as the model sees it, with what the methods need to score it.

    Attributes:
        image: ``h x w x C`` uint8 model-input pixels (``C``: the model's channels).
        model: the torch module (needed by the gradient methods; None: occlusion with a scorer).
        mean, std, scale: the normalisation ``(v * scale - mean) / std``.
        scorer: a :class:`facesal_fast.scoring.Scorer` that scores occluded and masked
            inputs (None: ``model`` scores them).
        photo: ``H x W x 3`` uint8 photo the input was prepared from (the skin colour of
            ``occlusion-skin``; None: ``image`` itself).
        face_box: ``(x0, y0, x1, y1)`` of the face in ``photo``, or None.
    """

    image: np.ndarray
    model: torch.nn.Module | None = None
    mean: float | Sequence[float] = 0.0
    std: float | Sequence[float] = 1.0
    scale: float = 1.0 / 255.0
    scorer: Any = None
    photo: np.ndarray | None = None
    face_box: Sequence[float] | None = None

    @classmethod
    def from_scorer(
        cls,
        scorer: Any,
        image: np.ndarray,
        *,
        model: torch.nn.Module | None = None,
        photo: np.ndarray | None = None,
        face_box: Sequence[float] | None = None,
    ) -> ModelInput:
        """``image`` (``h x w x C`` uint8, already prepared by ``scorer``) with the scorer's
        normalisation; ``model`` defaults to the scorer's torch module, if it has one."""
        if model is None:
            model = getattr(scorer, "module", None) or getattr(getattr(scorer, "backend", None), "module", None)
        return cls(image, model, scorer.mean, scorer.std, scorer.scale, scorer, photo, face_box)

    def tensor(self) -> torch.Tensor:
        """``1 x C x h x w`` normalised model input (the occlusion kernel with nothing occluded)."""
        return torch.from_numpy(ops.unoccluded(self.image, self.mean, self.std, scale=self.scale))

    def torch_model(self, method: str) -> torch.nn.Module:
        """The torch module, or a ValueError saying that ``method`` needs one."""
        if not isinstance(self.model, torch.nn.Module):
            raise ValueError(f"{method} needs gradients: pass a torch module or a Scorer with a torch .module")
        return self.model


@dataclass(frozen=True)
class Method:
    """One saliency method.

    Attributes:
        name: canonical name; aliases: other names accepted for it.
        kind: how the method computes its map, one of :data:`KINDS`: ``"gradient"``
            (back-propagation through the torch module), ``"occlusion"`` (scores of occluded
            inputs) or ``"canonical"`` (maps of the canonical face, computed by
            :mod:`facesal_fast.saliency`: no ``run``).
        summary: one line for help texts.
        run: ``(model_input, target, **options) -> h x w`` map (None for ``"canonical"``).
        defaults: the options ``run`` takes, with their default values.
        required: options without a default.
    """

    name: str
    kind: str
    summary: str
    run: Callable[..., np.ndarray] | None = None
    aliases: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS or (self.run is None) != (self.kind == "canonical"):
            raise ValueError(f"method {self.name!r}: kind must be one of {KINDS}, with a run unless 'canonical'")


def _guided_backprop(inp: ModelInput, target: int, *, output: str) -> np.ndarray:
    return guided_backprop.guided_backprop(inp.torch_model("guided-backprop"), inp.tensor(), target, output)


def _saliency_difference(inp: ModelInput, target: int, *, other: int, output: str) -> np.ndarray:
    model = inp.torch_model("saliency-difference")
    return guided_backprop.saliency_difference(model, inp.tensor(), target, other, output)


def _lrp(rule: str) -> Callable[..., np.ndarray]:
    def run(inp: ModelInput, target: int, *, lrp_rtol: float | None) -> np.ndarray:
        return lrp.lrp(inp.torch_model(f"lrp-{rule}"), inp.tensor(), target, rule, rtol=lrp_rtol)

    return run


def _cam(function: Callable[..., np.ndarray], name: str) -> Callable[..., np.ndarray]:
    def run(inp: ModelInput, target: int, *, target_layer: torch.nn.Module | str | None) -> np.ndarray:
        return function(inp.torch_model(name), inp.tensor(), target, target_layer)

    return run


def _scorecam(inp: ModelInput, target: int, *, target_layer: torch.nn.Module | str | None) -> np.ndarray:
    scorer = inp.scorer
    score_batch = None if scorer is None else (lambda batch: torch.from_numpy(scorer.score(batch, target)))
    return cams.scorecam(inp.torch_model("scorecam"), inp.tensor(), target, target_layer, score_batch=score_batch)


def _occlusion(inp: ModelInput, target: int, *, patch: int, step: int, fill: Any) -> np.ndarray:
    window = dict(patch=patch, step=step, fill=fill)
    if inp.scorer is not None:
        return occlusion.occlusion(inp.scorer, inp.image, target, **window)
    norm = dict(mean=inp.mean, std=inp.std, scale=inp.scale)
    return occlusion.occlusion(inp.torch_model("occlusion"), inp.image, target, **window, **norm)


def _occlusion_skin(inp: ModelInput, target: int, *, patch: int, step: int) -> np.ndarray:
    fill = occlusion.skin_colour(inp.image if inp.photo is None else inp.photo, inp.face_box)
    return _occlusion(inp, target, patch=patch, step=step, fill=fill)


_LAYER = {"target_layer": None}
_WINDOW = {"patch": 8, "step": 4}  # image-space occlusion: window side and grid step (input px)
_RTOL = {"lrp_rtol": 1e-2}  # relevance conservation checked (None: unchecked)

#: Canonical name -> :class:`Method`, in the order help texts list them.
METHODS: Mapping[str, Method] = MappingProxyType(
    {
        m.name: m
        for m in (
            Method("cms", "canonical", "the model's CMS reprojected onto each photo"),
            Method("cis", "canonical", "each photo's own CIS reprojected"),
            Method(
                "occlusion", "occlusion", "image-space occlusion, black", _occlusion, (), {**_WINDOW, "fill": "black"}
            ),
            Method("occlusion-skin", "occlusion", "image-space occlusion, skin colour", _occlusion_skin, (), _WINDOW),
            Method("gradcam", "gradient", "GradCAM", _cam(cams.gradcam, "gradcam"), (), _LAYER),
            Method(
                "gradcam++", "gradient", "GradCAM++", _cam(cams.gradcam_plus_plus, "gradcam++"), ("gradcampp",), _LAYER
            ),
            Method("scorecam", "gradient", "ScoreCAM", _scorecam, (), _LAYER),
            Method("guided-backprop", "gradient", "Guided Backprop", _guided_backprop, ("gb",), {"output": "logit"}),
            Method(
                "saliency-difference",
                "gradient",
                "ReLU(GB(target) - GB(other))",
                _saliency_difference,
                (),
                {"output": "logit"},
                ("other",),
            ),
            Method("lrp-epsilon", "gradient", "LRP, epsilon rule", _lrp("epsilon"), ("lrp",), _RTOL),
            Method("lrp-alpha-beta", "gradient", "LRP, alpha-beta rule", _lrp("alpha-beta"), (), _RTOL),
        )
    }
)
#: Alias -> canonical name.
ALIASES = {alias: m.name for m in METHODS.values() for alias in m.aliases}
#: Every option some method takes.
OPTIONS = frozenset(o for m in METHODS.values() for o in (*m.defaults, *m.required))
#: Former option names (old -> new), still taken for one release with a DeprecationWarning.
RENAMED_OPTIONS = {"stride": "step"}


def resolve(name: str) -> Method:
    """The :class:`Method` called ``name`` (canonical or alias); ValueError naming the choices."""
    method = METHODS.get(ALIASES.get(name, name))
    if method is None:
        aliases = ", ".join(f"{a} = {n}" for a, n in ALIASES.items())
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)} (aliases: {aliases})")
    return method


def names(*, needing: Sequence[str] = ()) -> tuple[str, ...]:
    """Canonical names of the methods that need no option beyond ``needing``."""
    return tuple(m.name for m in METHODS.values() if set(m.required) <= set(needing))


def compute(name: str, model_input: ModelInput, target: int, **options: Any) -> np.ndarray:
    """Run method ``name`` on ``model_input``; ``h x w`` float32 map of the model input.

    ``options`` may hold any of :data:`OPTIONS` (or a former name of :data:`RENAMED_OPTIONS`,
    warned); each method takes those in its ``defaults`` / ``required`` and leaves the others,
    so one set of options can be passed to every method. An option no method takes is a ValueError.
    """
    options = renamed(options, RENAMED_OPTIONS, stacklevel=3)
    method = resolve(name)
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {name!r}; options: {sorted(OPTIONS)}")
    if method.run is None:
        raise ValueError(f"{method.name} is a canonical-face map: compute it with facesal_fast.cis / facesal_fast.cms")
    missing = [o for o in method.required if options.get(o) is None]
    if missing:
        raise ValueError(f"{method.name} needs {', '.join(f'{o}=' for o in missing)}")
    taken = {k: options.get(k, default) for k, default in method.defaults.items()}
    taken.update({k: options[k] for k in method.required})
    return np.asarray(method.run(model_input, target, **taken), np.float32)
