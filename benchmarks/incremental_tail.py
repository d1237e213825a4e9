"""Would onnxruntime run incremental inference's dense tail faster than torch? (issue 20)

Incremental inference (``facesal_fast.speed.IncrementalModel``) recomputes only the boxes an
occluding window changes, until the boxes cover whole feature maps; from there every layer runs
dense on the K occluded copies (the "dense tail"). On a ResNet-18 at 218 x 178 with a 15 px
window the tail starts inside ``layer3`` and takes most of an incremental batch's time. This
script times that tail (``layer3`` + ``layer4`` + pooling + fc, K copies) three ways — torch NCHW,
torch channels-last (what ``IncrementalModel`` uses) and onnxruntime — after asserting that
onnxruntime's output equals torch's.

    python benchmarks/incremental_tail.py [--threads 1] [--copies 64]
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import onnxruntime as ort
import torch
import torchvision
from timing import best_of


def _tail_and_input(copies: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The ResNet-18 tail (layer3 onwards) and K x 128 x 28 x 23 features of 218 x 178 photos."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=2).eval()
    head = torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
    tail = torch.nn.Sequential(net.layer3, net.layer4, net.avgpool, torch.nn.Flatten(), net.fc).eval()
    with torch.no_grad():  # not inference_mode: the ONNX export traces these tensors
        return tail, head(torch.rand(copies, 3, 218, 178))


def _onnx_session(tail: torch.nn.Module, features: torch.Tensor, threads: int) -> ort.InferenceSession:
    buffer = io.BytesIO()
    torch.onnx.export(tail, features[:1], buffer, input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--copies", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tail, features = _tail_and_input(args.copies)
    session = _onnx_session(tail, features, args.threads)
    x = features.numpy()
    with torch.no_grad():
        want = tail(features).numpy()
        np.testing.assert_allclose(session.run(None, {"x": x})[0], want, atol=1e-4)
        tail_cl = tail.to(memory_format=torch.channels_last)
        features_cl = features.contiguous(memory_format=torch.channels_last)
        seconds = {
            "torch NCHW": best_of(lambda: tail(features)),
            "torch channels-last": best_of(lambda: tail_cl(features_cl)),
            "onnxruntime": best_of(lambda: session.run(None, {"x": x})),
        }
    base = seconds["torch channels-last"]
    print(f"dense tail, {tuple(features.shape)}, {args.threads} thread(s); outputs equal")
    for name, s in seconds.items():
        print(f"  {name:20s} {s * 1000:8.1f} ms   {base / s:5.2f}x of channels-last")


if __name__ == "__main__":
    main()
