"""Occlusion scoring throughput per model and backend, against raw forward throughput.

For each model and backend: ``forward`` = images/s of the backend alone on a prebuilt
model-ready batch; ``end-to-end`` = images/s of ``Scorer.score_occluded`` (occlusion +
normalisation + inference + confidence, pipelined) at the same batch size; ``ratio`` =
end-to-end / forward (target >= 0.9). Models: the three bundled mini-XCEPTIONs (64 x 64
grey) and a torchvision ResNet-50 at 224 px with random weights.

    python benchmarks/bench_scoring.py [--device cpu|cuda] [--seconds 1] [--rounds 3]
        [--clock wall|process] [--models gender,resnet50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchvision

from facesal_fast import models
from facesal_fast.scoring import Scorer, auto_batch_size

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build(name: str, requested: str, device: str) -> Scorer:
    """Scorer for ``name`` with the ``requested`` backend (``torch`` = eager NCHW,
    ``torch-channels_last``, ``onnx``, ``auto``)."""
    if name == "resnet50":
        net, size, norm, grey = (
            torchvision.models.resnet50(weights=None).eval(),
            224,
            (IMAGENET_MEAN, IMAGENET_STD),
            False,
        )
    else:
        net, size, norm, grey = models.load_module(name), 64, (0.5, 0.5), True
    backend = "torch" if requested.startswith("torch") else requested
    options = dict(channels_last=requested == "torch-channels_last") if backend == "torch" else {}
    return Scorer.from_torch(
        net, size, mean=norm[0], std=norm[1], grayscale=grey, backend=backend, device=device, **options
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def rate(fn, images_per_call: int, device: torch.device, seconds: float, clock=time.perf_counter) -> float:
    """Images per second of ``fn`` (by ``clock``) over at least ``seconds`` (after one warm-up call)."""
    fn()
    _sync(device)
    calls, start = 0, clock()
    while calls < 2 or clock() - start < seconds:
        fn()
        calls += 1
    _sync(device)
    return calls * images_per_call / (clock() - start)


def measure(name: str, backend: str, device: str, seconds: float, rounds: int, clock=time.perf_counter) -> dict:
    return dict(model=name, **measure_scorer(build(name, backend, device), seconds, rounds, clock))


def measure_scorer(scorer: Scorer, seconds: float, rounds: int, clock=time.perf_counter) -> dict:
    """Bare forward and end-to-end ``score_occluded`` images/s of ``scorer`` at its automatic
    batch size (best of ``rounds`` interleaved timings of at least ``seconds`` each)."""
    h, w = scorer.input_size
    dev = scorer.backend.device
    bs = auto_batch_size((scorer.channels, h, w), dev, None, scorer.backend.cpu_max_batch)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, scorer.channels), dtype=np.uint8)
    centers = rng.uniform(0, w - 1, (2 * bs, 2)).astype(np.float32)
    shape = (bs, h, w, scorer.channels) if scorer.backend.layout == "nhwc" else (bs, scorer.channels, h, w)
    batch = torch.randn(shape, device=dev).to(scorer.backend.input_dtype)
    forward = end_to_end = 0.0
    for _ in range(rounds):  # interleaved, best of each: robust to other load on the machine
        forward = max(forward, rate(lambda: scorer.backend(batch), bs, dev, seconds, clock))
        end_to_end = max(
            end_to_end,
            rate(
                lambda: scorer.score_occluded(image, centers, max(3, h // 8), target=0, batch_size=bs),
                len(centers),
                dev,
                seconds,
                clock,
            ),
        )
    return dict(
        backend=scorer.backend.name, batch=bs, forward=forward, end_to_end=end_to_end, ratio=end_to_end / forward
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum seconds per timing")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="'process': CPU seconds of this process, robust to other load on a shared machine",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best kept)")
    parser.add_argument("--models", default="gender,expression-fer,expression-kdef,resnet50")
    parser.add_argument("--backends", default="torch,torch-channels_last,onnx,auto")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, {args.clock} clock\n")
    print("| model | requested | backend | batch | forward img/s | end-to-end img/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for backend in args.backends.split(","):
            row = measure(name, backend, args.device, args.seconds, args.rounds, CLOCKS[args.clock])
            print(
                f"| {row['model']} | {backend} | {row['backend']} | {row['batch']} | {row['forward']:.0f} | "
                f"{row['end_to_end']:.0f} | {row['end_to_end'] / row['forward']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
