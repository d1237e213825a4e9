"""The ``facesal`` command's shared options: one help formatter, and the options every command
that computes maps takes (``audit``, ``demo``, ``evaluate``, ``tasks``), built by one function
so that their names, choices, defaults and help are the same everywhere.

The choices of ``--mode``, ``--fill`` and ``--quality`` are those of
:mod:`facesal_fast.core.options` (the one list of each); :func:`cis_options` turns a command's
arguments into one checked :class:`~facesal_fast.core.options.CISOptions`. No torch here:
``facesal --help`` builds these.
"""

from __future__ import annotations

import argparse
from typing import Iterable

from facesal_fast.audit.options import command_options
from facesal_fast.core.options import FILLS, MODES, QUALITIES, QUALITY_TARGETS, CISOptions, quality_target

__all__ = [
    "MAP_OPTIONS",
    "HelpFormatter",
    "add_backend",
    "add_face_choice",
    "add_map_options",
    "cis_options",
    "examples_epilog",
    "positive_int",
    "quality",
]

#: The map-computing options, by destination name, in the order ``--help`` lists them.
MAP_OPTIONS = (
    "patch",
    "stride",
    "mode",
    "grid_step",
    "fill",
    "device",
    "backend",
    "quality",
    "incremental",
    "max_images",
)
#: The arguments of a command that are CIS options (:class:`~facesal_fast.core.options.CISOptions` fields).
CIS_ARGUMENTS = ("patch", "stride", "mode", "grid_step", "fill", "quality", "incremental", "face_index", "faces")
BACKENDS = ("auto", "torch", "onnx", "tensorrt")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help, once: not for a required option, a flag, a default
    of ``None`` (no value), or a help text that already says its default; the examples epilog
    kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0
        if shown and not action.required and "default" not in text and action.option_strings:
            return f"{text} (default: %(default)s)"
        return text


def examples_epilog(*lines: str) -> str:
    """An ``example:`` epilog of command lines."""
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def quality(text: str) -> str | float:
    """``--quality``: a preset name (:data:`~facesal_fast.core.options.QUALITIES`) or a target SSIM in (0, 1]."""
    if text in QUALITIES:
        return text
    try:
        value = float(text)
        quality_target(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {', '.join(QUALITIES)} or a target SSIM in (0, 1], got {text!r}"
        ) from None
    return value


def cis_options(args: argparse.Namespace) -> CISOptions:
    """The CIS options a command was given (those of :data:`CIS_ARGUMENTS` it has), checked
    once; ``ValueError`` naming the option (``--quality``)."""
    return command_options(**{name: getattr(args, name) for name in CIS_ARGUMENTS if hasattr(args, name)})


def add_backend(
    parser: argparse.ArgumentParser,
    text: str = "inference backend; auto: the fastest one that agrees with torch eager, by a timed probe",
) -> None:
    """``--backend`` with the help ``text``: one default (``auto``) and one set of choices in every command."""
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help=text)


def _face_index(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 0 (the largest face), 1, 2, ..., got {text!r}")
    return int(text)


def add_face_choice(parser: argparse.ArgumentParser) -> None:
    """``--face-index K`` or ``--faces all``: which face of a photo with several is explained."""
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--face-index",
        type=_face_index,
        default=None,
        metavar="K",
        help="on photos with several faces explain the K-th in the face-choice order (0: the default, "
        "the largest face whose detector score is within 0.2 of the photo's best); by default that face, "
        "named with its box and score in a warning",
    )
    choice.add_argument(
        "--faces",
        choices=["all"],
        default=None,
        help="explain every face of each photo, each stored as PHOTO#faceK (K = 1 for the default face)",
    )


def _map_option_specs(mode: str, why: str) -> dict[str, tuple[tuple[str, ...], dict]]:
    """Destination name -> (option strings, ``add_argument`` keywords) of :data:`MAP_OPTIONS`."""
    mode_help = f"{MODES[0]}: every occlusion window; {' / '.join(MODES[1:])}: a grid of windows, interpolated"
    promises = ", ".join(f"{name} = >= {target:.2f}" for name, target in QUALITY_TARGETS.items())
    return {
        "patch": (
            ("--patch",),
            dict(
                type=positive_int,
                default=None,
                help="occlusion window in model-input pixels (default: 15 px at 224 px, scaled to the input "
                "and made odd)",
            ),
        ),
        "stride": (("--stride",), dict(type=positive_int, default=1, help="keep every STRIDE-th correspondence point")),
        "mode": (("--mode",), dict(default=mode, choices=MODES, help=mode_help + (f" ({why})" if why else ""))),
        "grid_step": (
            ("--grid-step",),
            dict(type=positive_int, default=2, help="grid step in model-input pixels of the modes but exact"),
        ),
        "fill": (("--fill",), dict(default="black", choices=FILLS, help="what an occlusion window is filled with")),
        "device": (("--device",), dict(default="cpu", help="cpu, cuda or cuda:N")),
        "backend": ((), {}),  # add_backend
        "quality": (
            ("--quality",),
            dict(
                default=None,
                type=quality,
                help=f"instead of --mode, a promise checked per photo: the estimated SSIM against exact, {promises}, "
                "or a target SSIM such as 0.97 (docs/performance.md)",
            ),
        ),
        "incremental": (
            ("--no-incremental",),
            dict(
                dest="incremental",
                action="store_const",
                const=False,
                default="auto",
                help="never use incremental inference (default: where the model traces and it pays)",
            ),
        ),
        "max_images": (
            ("--max-images",),
            dict(type=positive_int, default=None, help="use the first N photos (default: all)"),
        ),
    }


def add_map_options(
    parser: argparse.ArgumentParser,
    *,
    mode: str = "exact",
    why: str = "",
    without: Iterable[str] = (),
    backend_help: str | None = None,
) -> None:
    """Add :data:`MAP_OPTIONS` (but those named in ``without``) to ``parser``, the same in every
    command; ``mode``: the ``--mode`` default, ``why`` says why a command's default differs from
    ``exact``; ``backend_help``: a command's own ``--backend`` help."""
    left_out = set(without)
    unknown = left_out - set(MAP_OPTIONS)
    if unknown:
        raise ValueError(f"without: unknown map options {sorted(unknown)}")
    for name, (flags, keywords) in _map_option_specs(mode, why).items():
        if name in left_out:
            continue
        if name == "backend":
            add_backend(parser, *([backend_help] if backend_help else []))
        else:
            parser.add_argument(*flags, **keywords)
