"""Confidence functions phi (eq. 1 of the CSM paper): model outputs -> one score per image.

A confidence is any callable ``outputs (K x D float32 torch tensor) -> scores (K,)``; it
runs on the backend's device, right after the forward pass. Classification confidences
are built here; identification (eq. 7) and verification (eq. 8) confidences live in
:mod:`facesal_fast.scoring.embedding` and plug in through ``Scorer.with_confidence``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from facesal_fast.core.validate import one_target

__all__ = ["Confidence", "check_class_outputs", "class_confidence", "class_scores", "resolve_class"]

Confidence = Callable[[torch.Tensor], torch.Tensor]

_KINDS = ("softmax", "logit")
_OUTPUTS = ("logits", "probabilities")


def resolve_class(target: int | str, classes: Sequence[str] | None, num_outputs: int) -> int:
    """Class index for ``target`` given by index or by name.

    Raises:
        ValueError: unknown name, names without a class list, or index out of range.
    """
    target = one_target(target)
    if isinstance(target, str):
        if classes is None:
            raise ValueError(f"target {target!r} given by name but this scorer has no class names")
        if target not in classes:
            raise ValueError(f"unknown class {target!r}; classes are {list(classes)}")
        return list(classes).index(target)
    if isinstance(target, bool) or not isinstance(target, int) and not hasattr(target, "__index__"):
        raise ValueError(f"target must be a class index, a class name or None, got {target!r}")
    index = int(target)
    if not 0 <= index < num_outputs:
        raise ValueError(f"target index {index} out of range for {num_outputs} outputs")
    return index


def class_confidence(target: int, kind: str = "softmax", outputs: str = "logits") -> Confidence:
    """phi(I, c) for classification.

    Args:
        target: class index c.
        kind: ``"softmax"`` (probability of c, the default) or ``"logit"`` (the raw score
            of c; for models that output probabilities, its log-probability).
        outputs: what the model returns, ``"logits"`` or ``"probabilities"``.

    Returns:
        ``fn(outputs K x D) -> K`` scores (float32).
    """
    if kind not in _KINDS:
        raise ValueError(f"confidence kind must be one of {_KINDS}, got {kind!r}")
    if outputs not in _OUTPUTS:
        raise ValueError(f"model outputs must be one of {_OUTPUTS}, got {outputs!r}")

    def confidence(out: torch.Tensor) -> torch.Tensor:
        if out.ndim != 2 or not 0 <= target < out.shape[1]:
            raise ValueError(f"class confidence needs K x D outputs with D > {target}, got shape {tuple(out.shape)}")
        return class_scores(out, kind, outputs)[:, target]

    return confidence


def class_scores(out: torch.Tensor, kind: str, outputs: str) -> torch.Tensor:
    """``K x D`` confidences of every class (see :func:`class_confidence`), float32."""
    out = out.float()
    if kind == "softmax":
        return torch.softmax(out, dim=1) if outputs == "logits" else out
    return out if outputs == "logits" else torch.log(out)


#: How far ``outputs="probabilities"`` may stray from [0, 1] and from rows summing to 1
#: (float16 rounding, a softmax computed in reduced precision).
PROBABILITY_TOLERANCE = 1e-2


def check_probabilities(out: torch.Tensor) -> None:
    """``ValueError`` unless every row of ``out`` (``K x D``) is a probability distribution:
    values in [0, 1] and rows summing to 1, within :data:`PROBABILITY_TOLERANCE`."""
    if not out.numel():
        return
    values = out.detach().double()
    low, high = float(values.min()), float(values.max())
    sums = values.sum(dim=1)
    worst = float((sums - 1.0).abs().max())
    tol = PROBABILITY_TOLERANCE
    if low >= -tol and high <= 1.0 + tol and worst <= tol:
        return
    raise ValueError(
        f"outputs='probabilities' but the model returned values in [{low:.4g}, {high:.4g}] with row sums "
        f"{float(sums.min()):.4g} to {float(sums.max()):.4g} (probabilities lie in [0, 1] and sum to 1); "
        "if the model returns logits (scores before a softmax), build the scorer with outputs='logits'"
    )


def check_class_outputs(
    outputs: torch.Tensor, classes: Sequence[str] | None, confidence: str, model_outputs: str
) -> torch.Tensor:
    """``outputs`` (``K x D``) if a class confidence (``confidence`` ``"softmax"`` / ``"logit"``
    of a model returning ``model_outputs`` ``"logits"`` / ``"probabilities"``) can use them.

    Raises ``ValueError`` naming the expected shape when ``D`` differs from the number of
    ``classes``, or when ``D`` is 1 under a softmax of logits (the probability of the only
    class is always 1: every occlusion drop would be 0, an all-zero map), or when the model
    returns probabilities and a row is no probability distribution (:func:`check_probabilities`)."""
    k, d = int(outputs.shape[0]), int(outputs.shape[1])
    if classes is not None and d != len(classes):
        raise ValueError(
            f"the model returned outputs of shape {(k, d)} (a 1-D (K,) output reads as (K, 1)); expected "
            f"({k}, {len(classes)}): one score per class of classes={classes}"
        )
    if d == 1 and confidence == "softmax" and model_outputs == "logits":
        raise ValueError(
            f"the model returned one score per image (shape {(k, d)}); a softmax over one logit is always 1. "
            f"Return ({k}, D) scores with D >= 2 classes, or use confidence='logit' for a single score"
        )
    if model_outputs == "probabilities":
        check_probabilities(outputs)
    return outputs
