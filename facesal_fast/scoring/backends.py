"""Inference backends: a model-ready batch (torch tensor) -> model outputs ``K x D``.

Every backend declares the tensor it takes (``layout``: ``"nchw"`` -> ``K x C x H x W``,
``"nhwc"`` -> ``K x H x W x C``; ``input_dtype``; ``device``) so that ``occlude_batch``
writes exactly that, once, with no conversion in between. Outputs are float32 torch
tensors on ``device``.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from facesal_fast.scoring.probe_cache import weights_digest

__all__ = ["Backend", "TorchBackend", "OnnxBackend", "CallableBackend", "export_onnx", "onnx_input_layout"]

_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Backend(ABC):
    """Runs one model on batches. Subclasses set ``name``, ``layout``, ``input_dtype``, ``device``."""

    name: str
    layout: str
    input_dtype: torch.dtype
    device: torch.device
    cpu_max_batch: int = 256  # largest automatic batch on the CPU

    @abstractmethod
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """``batch`` in ``layout`` / ``input_dtype`` on ``device`` -> ``K x D`` float32 outputs."""


def _as_2d(out: torch.Tensor) -> torch.Tensor:
    """A model's outputs ``K x ...`` as float32 ``K x D``; anything but a tensor of real
    numbers with data (e.g. None, strings, a tuple, a meta tensor) is a ``ValueError``."""
    if not isinstance(out, torch.Tensor) or out.is_meta or out.is_complex() or out.ndim == 0:
        what = (
            f"a {'meta' if out.is_meta else str(out.dtype)} tensor of shape {tuple(out.shape)}"
            if isinstance(out, torch.Tensor)
            else type(out).__name__
        )
        raise ValueError(f"the model returned {what}; expected a K x D tensor of real numbers (one row per image)")
    out = out.float()
    return out.reshape(out.shape[0], -1)


class TorchBackend(Backend):
    """PyTorch inference: inference_mode, optional channels_last, autocast, CUDA graphs, compile.

    Args:
        module: ``N x C x H x W`` -> ``N x D`` (or ``N x ...``, flattened) module.
        device: where to run (default: the module's device).
        precision: ``"fp32"``, or ``"fp16"`` / ``"bf16"`` autocast (CUDA only).
        channels_last: take ``nhwc`` batches and run the module in channels_last memory format.
        cuda_graphs: capture one CUDA graph per batch shape and replay it (CUDA only).
        compile: wrap the module in ``torch.compile``.
    """

    # torch eager on 2 cores ran a 64 px mini-XCEPTION at 618 images/s in batches of 64 and
    # at 385 in batches of 256 (onnxruntime is flat between 16 and 256).
    cpu_max_batch = 64

    def __init__(
        self,
        module: nn.Module,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        cuda_graphs: bool = False,
        compile: bool = False,
    ):
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {list(_PRECISIONS)}, got {precision!r}")
        first = next(module.parameters(), None)
        self.device = (
            torch.device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
        )
        if self.device.type != "cuda" and (precision != "fp32" or cuda_graphs):
            raise ValueError(f"precision={precision!r} and cuda_graphs need a CUDA device, got {self.device}")
        module = module.eval().to(self.device)
        if channels_last:  # a copy: Module.to converts in place and the caller may share the module
            module = copy.deepcopy(module).to(memory_format=torch.channels_last)
        self.module = torch.compile(module, dynamic=False) if compile else module
        self.precision = precision
        self.layout = "nhwc" if channels_last else "nchw"
        self.input_dtype = torch.float16 if precision == "fp16" else torch.float32
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        parts = (
            ["torch", precision]
            + (["channels_last"] if channels_last else [])
            + (["cuda_graphs"] if cuda_graphs else [])
            + (["compile"] if compile else [])
        )
        self.name = "-".join(parts)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.permute(0, 3, 1, 2) if self.layout == "nhwc" else batch  # NHWC memory == channels_last
        with torch.autocast(self.device.type, dtype=_PRECISIONS[self.precision], enabled=self.precision != "fp32"):
            return _as_2d(self.module(x))

    def _graph(self, batch: torch.Tensor) -> torch.Tensor:
        key = tuple(batch.shape)
        if key not in self._graphs:
            static_in = batch.clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up outside the graph (allocator, cuDNN autotune)
                    self._forward(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(batch)
        graph.replay()
        return static_out.clone()

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self._graph(batch) if self.cuda_graphs else self._forward(batch)


def _module_digest(module: nn.Module, input_shape: tuple[int, ...]) -> str:
    return hashlib.sha1(f"{input_shape!r} {weights_digest(module)}".encode()).hexdigest()[:16]


def export_onnx(module: nn.Module, input_shape: tuple[int, int, int], cache_dir: str | Path | None = None) -> Path:
    """Export ``module`` (``N x C x H x W`` input) to ONNX with a dynamic batch axis, once.

    The file is named by a digest of the module's structure, weights and input shape,
    so a second call with the same model reuses it. Default cache directory:
    ``<tempdir>/facesal_fast_onnx``.

    Returns:
        Path of the ``.onnx`` file (input ``"input"``, output ``"output"``).
    """
    module = module.eval()
    device = next(module.parameters(), torch.empty(0)).device
    cache = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "facesal_fast_onnx"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"model-{_module_digest(module, input_shape)}.onnx"
    if not path.exists():
        tmp = path.with_suffix(f".{np.random.randint(1 << 30)}.tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (torch.zeros((2, *input_shape), device=device),),
                str(tmp),
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                opset_version=17,
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
        tmp.replace(path)  # atomic: concurrent exports never see a half-written file
    return path


def onnx_input_layout(path: str | Path) -> tuple[str, int, tuple[int, int]]:
    """``(layout "nchw" | "nhwc", channels 1 | 3, (H, W))`` of an ONNX model's single input,
    which must be static except for the batch axis; ``ValueError`` naming ``path`` otherwise."""
    import onnx  # about 2 s to import: only for a model given as an ONNX file

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected one input, got {len(inputs)}")
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        raise ValueError(f"{path}: expected a static N x C x H x W or N x H x W x C input, got {dims}")
    if dims[1] in (1, 3):
        return "nchw", dims[1], (dims[2], dims[3])
    if dims[3] in (1, 3):
        return "nhwc", dims[3], (dims[1], dims[2])
    raise ValueError(f"{path}: cannot find a 1- or 3-channel axis in input shape {dims}")


class OnnxBackend(Backend):
    """onnxruntime inference (CPU, or CUDA provider with device-memory I/O binding).

    Args:
        path: ONNX model with one input and one output, dynamic batch axis.
        device: ``"cpu"`` or a CUDA device (needs ``onnxruntime-gpu``).
        layout: the model input's layout, ``"nchw"`` or ``"nhwc"``.
        threads: CPU intra-op threads (default: torch's thread count).
    """

    def __init__(
        self, path: str | Path, device: str | torch.device = "cpu", layout: str = "nchw", threads: int | None = None
    ):
        import onnxruntime as ort  # about 0.5 s to import: only for an ONNX backend

        if layout not in ("nchw", "nhwc"):
            raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
        self.device, self.layout, self.input_dtype = torch.device(device), layout, torch.float32
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # Worker threads spin while a run is going on, but stop spinning when it returns:
        # between batches the occlusion producer, splatting and alignment need those cores
        # (with spinning left on they ran 5-15x slower on a 2-core machine).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0})]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_shape = inputs[0].shape
        tail = outputs[0].shape[1:]
        if self.device.type == "cuda" and not all(isinstance(d, int) for d in tail):
            raise ValueError(f"{path}: CUDA I/O binding needs a static output shape after the batch axis, got {tail}")
        self._output_tail = tuple(tail)
        self.path = Path(path)
        self.name = f"onnx-{self.device.type}"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cuda":
            out = self.session.run([self.output_name], {self.input_name: batch.contiguous().numpy()})[0]
            return _as_2d(torch.from_numpy(out))
        batch = batch.contiguous()
        torch.cuda.current_stream(self.device).synchronize()  # the batch is written on torch's stream
        binding = self.session.io_binding()
        binding.bind_input(
            self.input_name, "cuda", self.device.index or 0, np.float32, list(batch.shape), batch.data_ptr()
        )
        out = torch.empty((batch.shape[0], *self._output_tail), dtype=torch.float32, device=self.device)
        binding.bind_output(
            self.output_name, "cuda", self.device.index or 0, np.float32, list(out.shape), out.data_ptr()
        )
        self.session.run_with_iobinding(binding)
        return _as_2d(out)


class CallableBackend(Backend):
    """A black-box model: any callable on batches (numpy or torch) returning ``K x D`` scores.

    Args:
        fn: ``batch -> outputs``; receives a float32 numpy array (``array="numpy"``) or
            the torch tensor itself (``array="torch"``), in ``layout``.
        layout: ``"nchw"`` or ``"nhwc"`` (what ``fn`` expects).
        device: where batches are built (``"cpu"`` for numpy callables).
    """

    def __init__(self, fn: Callable, layout: str = "nchw", array: str = "numpy", device: str | torch.device = "cpu"):
        if layout not in ("nchw", "nhwc"):
            raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
        if array not in ("numpy", "torch"):
            raise ValueError(f"array must be 'numpy' or 'torch', got {array!r}")
        self.device = torch.device(device)
        if array == "numpy" and self.device.type != "cpu":
            raise ValueError("a numpy callable runs on the CPU; use array='torch' for device tensors")
        self.fn, self.layout, self.array, self.input_dtype = fn, layout, array, torch.float32
        self.name = "callable"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.fn(batch.numpy() if self.array == "numpy" else batch)
        if not isinstance(out, torch.Tensor):
            array = np.asarray(out)
            if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
                raise ValueError(
                    f"the model callable returned {type(out).__name__} of dtype {array.dtype}; expected K x D numbers"
                )
            out = torch.as_tensor(array)
        out = out if out.is_meta else out.to(self.device)
        if out.ndim == 0 or out.shape[0] != batch.shape[0]:
            raise ValueError(
                f"the model callable must return one row per image ({batch.shape[0]}), got shape {tuple(out.shape)}"
            )
        return _as_2d(out)
