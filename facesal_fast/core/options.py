"""The option records: how a CIS is computed (:class:`CISOptions`) and how groups are tested
(:class:`StatsOptions`).

Each is frozen, built and checked once where a call enters (the Python API, the CLI, a Ray
driver) and handed down whole; no floor below checks its fields again. The CLI takes its
choices from the names here (:data:`MODES`, :data:`FILLS`, :data:`QUALITIES`,
:data:`CORRECTIONS`, :data:`TEST_METHODS`), so a mode or fill is spelled in one place. numpy
only: ``facesal --help`` builds its options from this module without torch.

    options = CISOptions(quality="fast")            # checked here, or ValueError naming the field
    options.replace(stride=2)                         # a checked copy
    CISOptions.build(None, mode="grid", grid_step=4)  # a record from keyword overrides
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping

from facesal_fast.core.validate import fraction, non_negative_int, positive_int

__all__ = [
    "CORRECTIONS",
    "CORRECTION_TEXT",
    "FILLS",
    "MODES",
    "QUALITIES",
    "QUALITY_TARGETS",
    "TEST_METHODS",
    "TEST_METHOD_TEXT",
    "CISOptions",
    "StatsOptions",
    "quality_target",
]

#: How the occlusion windows are scored: every distinct window, a grid read bilinearly, or that
#: grid refined where its drops are largest.
MODES = ("exact", "grid", "adaptive")
#: Named occlusion fills (an RGB colour or an image-sized array is a fill too).
FILLS = ("black", "mean", "blur")
#: The SSIM against exact each named quality promises per photo.
QUALITY_TARGETS = {"high": 0.95, "fast": 0.90}
#: Named qualities (a target SSIM in (0, 1] is a quality too).
QUALITIES = ("exact", *QUALITY_TARGETS)
#: Multiple-testing corrections -> what they are (max-T family-wise error, false discovery rate).
CORRECTION_TEXT = {"fwer": "max-T family-wise", "fdr": "Benjamini-Hochberg"}
CORRECTIONS = tuple(CORRECTION_TEXT)
#: Group tests -> their null: studentised bootstrap (equal means), permutation (interchangeable groups).
TEST_METHOD_TEXT = {"bootstrap": "equal means, any spread", "permutation": "interchangeable groups"}
TEST_METHODS = tuple(TEST_METHOD_TEXT)


def quality_target(quality: Any) -> float | None:
    """The SSIM a ``quality`` promises: ``"high"`` 0.95, ``"fast"`` 0.90, a float in (0, 1)
    itself, ``"exact"`` (or a target of 1) ``None``: the exact map.

    Raises:
        ValueError: naming ``quality`` and what it accepts.
    """
    if isinstance(quality, str) and quality in QUALITIES:
        return QUALITY_TARGETS.get(quality)
    if isinstance(quality, Real) and not isinstance(quality, bool) and 0.0 < float(quality) <= 1.0:
        return None if float(quality) == 1.0 else float(quality)
    raise ValueError(
        f"quality must be 'exact', 'high' (SSIM >= 0.95 against exact), 'fast' (>= 0.90) or a target SSIM "
        f"in (0, 1], got {quality!r}"
    )


def _one_of(value: Any, choices: tuple[str, ...], name: str) -> None:
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _described(value: Any, texts: Mapping[str, str], name: str) -> None:
    """``ValueError`` naming ``name`` and each choice with what it is, unless ``value`` is one."""
    if not (isinstance(value, str) and value in texts):
        choices = " or ".join(f"{choice!r} ({text})" for choice, text in texts.items())
        raise ValueError(f"{name} must be {choices}, got {value!r}")


class _Record:
    """What both records share: checked copies and construction from overrides."""

    def replace(self, **overrides: Any) -> Any:
        """A checked copy with ``overrides`` (``TypeError`` naming an unknown field)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown {type(self).__name__} field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **overrides)

    @classmethod
    def build(cls, options: Any = None, **overrides: Any) -> Any:
        """``options`` (a record, a mapping of its fields or ``None``: the defaults) with
        ``overrides`` applied, checked."""
        if options is None:
            return cls(**overrides)
        if isinstance(options, Mapping):
            return cls().replace(**{**options, **overrides})
        if not isinstance(options, cls):
            raise TypeError(f"options must be a {cls.__name__}, a mapping or None, got {type(options).__name__}")
        return options.replace(**overrides) if overrides else options

    def as_dict(self) -> dict[str, Any]:
        """Every field by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class CISOptions(_Record):
    """How one photo's CIS is computed (Algorithm 1; docs/saliency.md, docs/performance.md).

    Attributes:
        patch: occlusion window in the scorer's input pixels (``None``: 15 px at 224 px,
            scaled to the input and made odd).
        canonical_patch: splat window on the canonical face (``None``: ``patch`` scaled by
            canonical face size / face size in the input).
        stride: keep every ``stride``-th correspondence point (the paper's vertex stride).
        fill: occlusion fill: one of :data:`FILLS`, an RGB colour or an image-sized array.
        mode: one of :data:`MODES`.
        grid_step: the grid's step in input pixels (``grid`` / ``adaptive``).
        refine: fraction of windows ``adaptive`` scores exactly.
        quality: instead of ``mode``: one of :data:`QUALITIES` or a target SSIM in (0, 1].
        certify: approximate results estimate their own error (``settings["estimated_ssim"]``).
        incremental: ``"auto"``, ``True`` or ``False`` (incremental inference).
        face_index: on photos with several faces, the ``face_index``-th in the face-choice order.
        faces: ``"all"``: every face of each photo.
        batch_size: occluded images per forward pass (``None``: the scorer's own).
    """

    patch: int | None = None
    canonical_patch: int | None = None
    stride: int = 1
    fill: Any = "black"
    mode: str = "exact"
    grid_step: int = 2
    refine: float = 0.2
    quality: str | float | None = None
    certify: bool = True
    incremental: bool | str = "auto"
    face_index: int | None = None
    faces: str | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("patch", "canonical_patch", "batch_size"):
            if getattr(self, name) is not None:
                positive_int(getattr(self, name), name)
        positive_int(self.stride, "stride")
        positive_int(self.grid_step, "grid_step")
        if isinstance(self.fill, str) and self.fill not in FILLS:
            names = ", ".join(map(repr, FILLS))
            raise ValueError(f"fill must be {names}, a colour or an image, got {self.fill!r}")
        _one_of(self.mode, MODES, "mode")
        fraction(self.refine, "refine", "0.2", closed=True)
        if self.quality is not None:
            quality_target(self.quality)
            if self.mode != "exact":
                raise ValueError(f"pass either quality ({self.quality!r}) or mode ({self.mode!r}), not both")
        if not isinstance(self.certify, bool):
            raise ValueError(f"certify must be True or False, got {self.certify!r}")
        if self.incremental not in (True, False, "auto"):
            raise ValueError(f"incremental must be 'auto', True or False, got {self.incremental!r}")
        self._check_face_choice()

    def _check_face_choice(self) -> None:
        if self.faces not in (None, "all"):
            raise ValueError(f"faces must be 'all' or None, got {self.faces!r}")
        if self.face_index is not None:
            non_negative_int(self.face_index, "face_index")
            if self.faces is not None:
                raise ValueError("pass face_index= or faces='all', not both")

    @property
    def target_ssim(self) -> float | None:
        """The SSIM against exact that :attr:`quality` promises; ``None``: no promise (a mode)."""
        return None if self.quality is None else quality_target(self.quality)

    def per_face(self) -> CISOptions:
        """These options for one face a caller has already aligned and chosen: the face choice
        and ``batch_size`` cleared (what :func:`facesal_fast.cis` takes with ``face=``)."""
        return self.replace(face_index=None, faces=None, batch_size=None)

    @property
    def approximate(self) -> bool:
        """True when the map may differ from exact (a grid mode or a quality below 1)."""
        return self.mode != "exact" or self.target_ssim is not None


@dataclass(frozen=True)
class StatsOptions(_Record):
    """How groups' maps are tested against each other (docs/saliency.md).

    Attributes:
        permutations: resampling draws per test (bootstrap draws or permutations / sign flips).
        level: a region or pixel counts when its adjusted p < 1 - ``level``; the confidence
            level of every interval (called ``confidence`` before 0.2: a confidence is the
            model's score phi, :mod:`facesal_fast.scoring.confidence`).
        correction: one of :data:`CORRECTIONS`.
        min_group: fewest images (persons) per group for any significance.
        method: one of :data:`TEST_METHODS`.
        seed: seed of every random draw (results are reproducible).
    """

    permutations: int = 2000
    level: float = 0.95
    correction: str = "fwer"
    min_group: int = 10
    method: str = "bootstrap"
    seed: int = 0

    def __post_init__(self) -> None:
        positive_int(self.permutations, "permutations")
        positive_int(self.min_group, "min_group")
        fraction(self.level, "level", "0.95")
        _described(self.correction, CORRECTION_TEXT, "correction")
        _described(self.method, TEST_METHOD_TEXT, "method")
        non_negative_int(self.seed, "seed")
