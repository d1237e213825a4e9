"""``facesal bench``: the end-to-end CIS benchmark suite (:mod:`facesal_fast.benchmark`).

The suite ships inside the package, so it runs from an installed wheel; its peer captum
(not a dependency) is imported when first needed. Its options are defined here, once, for
``facesal bench`` and ``python benchmarks/cis_end_to_end.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

__all__ = ["add_bench_arguments", "run_bench"]


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's command-line options."""
    parser.add_argument(
        "--quick", action="store_true", help="smaller sweeps and strides (a few minutes on a quiet machine)"
    )
    parser.add_argument(
        "--models",
        default="gender,expression-fer,expression-kdef,dlib-resnet,resnet50",
        help="comma-separated bundled models (dlib-resnet: image space only), resnet50 and/or vgg16 "
        "(torchvision, random weights; vgg16: exact modes only)",
    )
    parser.add_argument("--photo", default="img1.jpg", help="bundled photo used for every model")
    parser.add_argument("--tau", type=float, default=0.5, help="projective-field threshold of the approximate mode")
    parser.add_argument("--refine", type=float, default=0.2, help="fraction of windows refined by the adaptive mode")
    parser.add_argument("--full-fraction", type=float, default=1.0, help="IncrementalModel full_fraction")
    parser.add_argument(
        "--audit-photos", type=int, default=None, help="photos for the end-to-end audit (default 12 quick, 24)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch (and onnxruntime) CPU threads; 1 avoids OpenMP stalls on a loaded machine",
    )
    parser.add_argument("--json", help="write all measurements to this JSON file")
    parser.add_argument(
        "--tiny", action="store_true", help="only the equality checks on a tiny random network (seconds)"
    )
    parser.add_argument(
        "--shared",
        action="store_true",
        help="only the shared-batches table: --audit-photos photos (default 4) one at a time vs together, per model",
    )
    parser.add_argument(
        "--presets",
        action="store_true",
        help="only the default-path table: cis exact / quality high / fast as a user calls it, per model "
        "(also resnet18: torchvision ResNet-18 without input size, on a 218 x 178 crop)",
    )


def run_bench(args: argparse.Namespace) -> int:
    """Run the suite with parsed options (see :func:`add_bench_arguments`); its exit code."""
    from facesal_fast.benchmark.cis_end_to_end import run  # lazy: keeps torch out of facesal --help

    return int(run(args))
