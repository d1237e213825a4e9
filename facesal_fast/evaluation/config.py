"""Settings of one ``facesal evaluate`` run (:class:`EvalConfig`, all written to ``summary.json``)."""

from __future__ import annotations

from dataclasses import dataclass

from facesal_fast.core.options import CISOptions
from facesal_fast.methods import registry
from facesal_fast.methods.guided_backprop import OUTPUTS
from facesal_fast.metrics import BLURS, TIES

__all__ = ["DELETION_FILLS", "EVALUATION_METHODS", "EvalConfig"]

DELETION_FILLS = ("grey", "black")
#: The methods an evaluation runs: every registry method that needs no extra option.
EVALUATION_METHODS = registry.names()


@dataclass
class EvalConfig:
    """Settings of one evaluation run.

    Attributes:
        model: bundled model name.
        methods: method names or aliases (:data:`EVALUATION_METHODS`, see
            :mod:`facesal_fast.methods.registry`).
        patch: CIS occlusion window in the model's input pixels, as in ``facesal audit`` and
            :func:`facesal_fast.cis` (None: the papers' 15 px at 224 px scaled to the input
            and made odd, :func:`facesal_fast.saliency.cis.default_patch`).
        mode, grid_step, stride, fill: CIS settings (:class:`~facesal_fast.core.options.CISOptions`,
            :meth:`cis_options`); the ``occlusion`` method uses the same window, ``grid_step`` and fill.
        budget: the equal mass ``s`` as a fraction of the input pixels.
        steps: chunks of the deletion / insertion curves.
        ablation_images, sanity_images: how many images (the first ones) the ablations and
            the randomisation check use; 0 switches them off.
        max_images: use at most this many images (None: all).
        backend: scorer backend for M(.) and occlusion (``"auto"``: timed probe, as audit);
            the gradient methods use the model's torch module whatever the backend.
        gb_output: Guided Backprop from ``"probability"`` (Sun et al.) or ``"logit"``.
        ties, tie_draws: deletion / insertion tie order (``"random"``: mean over
            ``tie_draws`` seeded orders; ``"row-major"``: pixel order, one draw).
        deletion_fill: ``"grey"`` (the value that normalises to 0, RISE) or ``"black"``.
        insertion_blur: ``"rise"`` (11 x 11, sigma 5) or ``"wide"`` (sigma side / 8).
    """

    model: str = "gender"
    methods: tuple[str, ...] = ("cms", "cis", "gradcam", "gradcam++", "scorecam", "guided-backprop", "lrp-epsilon")
    patch: int | None = None
    mode: str = "grid"
    grid_step: int = 2
    stride: int = 1
    fill: str = "black"
    budget: float = 0.2
    steps: int = 16
    ablation_images: int = 8
    sanity_images: int = 2
    max_images: int | None = None
    backend: str = "auto"
    seed: int = 0
    gb_output: str = "probability"
    ties: str = "random"
    tie_draws: int = 3
    deletion_fill: str = "grey"
    insertion_blur: str = "rise"

    def method_names(self) -> tuple[str, ...]:
        """The methods' canonical names, in the order given, each once; ValueError naming an
        unknown one or one that an evaluation cannot run."""
        found = tuple(dict.fromkeys(registry.resolve(m).name for m in self.methods))
        unusable = [m for m in found if m not in EVALUATION_METHODS]
        if unusable:
            raise ValueError(f"methods: {unusable} cannot be evaluated; choose from {', '.join(EVALUATION_METHODS)}")
        return found

    def cis_options(self) -> CISOptions:
        """The CIS settings as one checked record (``ValueError`` naming a bad one)."""
        return CISOptions(
            patch=self.patch, mode=self.mode, grid_step=self.grid_step, stride=self.stride, fill=self.fill
        )

    def check(self) -> CISOptions:
        """The CIS settings as one checked record (:meth:`cis_options`); ValueError naming the
        setting when one is out of range or unknown."""
        self.method_names()
        options = self.cis_options()
        if not 0 < self.budget < 1:
            raise ValueError(f"budget must be in (0, 1), got {self.budget}")
        for name, value, allowed in (
            ("gb_output", self.gb_output, OUTPUTS),
            ("ties", self.ties, TIES),
            ("deletion_fill", self.deletion_fill, DELETION_FILLS),
            ("insertion_blur", self.insertion_blur, BLURS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if not isinstance(self.tie_draws, int) or self.tie_draws < 1:
            raise ValueError(f"tie_draws must be an integer >= 1, got {self.tie_draws!r}")
        return options

    def curve_conventions(self) -> str:
        """The deletion / insertion choices in words."""
        ties = (
            f"random tie order (mean of {self.tie_draws} seeded draws)" if self.ties == "random" else "row-major ties"
        )
        fill = "mean grey (normalised 0)" if self.deletion_fill == "grey" else "black"
        blur = "11 x 11 sigma 5 blur (RISE)" if self.insertion_blur == "rise" else "Gaussian blur sigma side/8"
        return f"{ties}, deleted pixels {fill}, insertion from {blur}"

    def conventions(self) -> str:
        """One line naming the conventions the tables use."""
        return (
            f"maps: positive part, equal mass; GB from {self.gb_output}; deletion/insertion: {self.curve_conventions()}"
        )
