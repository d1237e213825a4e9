"""``facesal bench``: run the occlusion benchmark suite (``benchmarks/occlusion.py``).

The suite lives in the source checkout (it compares against captum and the published
CSM algorithm, which the package does not depend on); this runner finds it next to the
package and calls its ``run``. Its options are defined here, once, for both entry points.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

__all__ = ["add_bench_arguments", "find_suite", "run_bench"]

SUITE_PATH = Path("benchmarks") / "occlusion.py"


def find_suite() -> Path:
    """``benchmarks/occlusion.py`` of the source checkout: beside the package (editable
    install) or in the current directory or one of its parents."""
    here = Path.cwd().resolve()
    for root in (Path(__file__).resolve().parents[1], here, *here.parents):
        if (root / SUITE_PATH).is_file():
            return root / SUITE_PATH
    raise FileNotFoundError(
        f"{SUITE_PATH} not found: the benchmark suite ships with the source checkout; run facesal bench inside it"
    )


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
        "--presets",
        action="store_true",
        help="only the default-path table: cis exact / quality high / fast as a user calls it, per model "
        "(also resnet18: torchvision ResNet-18 without input size, on a 218 x 178 crop)",
    )


def run_bench(args: argparse.Namespace) -> int:
    """Run the suite with parsed options (see :func:`add_bench_arguments`); its exit code."""
    spec = importlib.util.spec_from_file_location("facesal_occlusion_benchmark", find_suite())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.run(args))
