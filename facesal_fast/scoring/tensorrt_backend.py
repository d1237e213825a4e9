"""TensorRT backend (optional extra ``facesal_fast[tensorrt]``, CUDA only).

Builds an engine from an ONNX export (FP16 allowed, one optimisation profile over the
batch axis), caches the serialised plan next to the ONNX file, and runs it on device
tensors written by ``occlude_batch`` with ``execute_async_v3`` on torch's current stream:
no host round trip, no extra synchronisation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from facesal_fast.scoring.backends import Backend

__all__ = ["TensorRTBackend", "tensorrt_available"]


def tensorrt_available() -> tuple[bool, str]:
    """``(True, "")`` when ``import tensorrt`` works and a CUDA GPU is present, else ``(False, reason)``."""
    try:
        import tensorrt  # noqa: F401
    except Exception as err:  # placeholder wheels raise at import, not only ImportError
        return False, f"tensorrt is not importable ({type(err).__name__}: {err})"
    if not torch.cuda.is_available():
        return False, "TensorRT needs a CUDA GPU"
    return True, ""


class TensorRTBackend(Backend):
    """TensorRT engine over an NCHW ONNX model with a dynamic batch axis.

    Args:
        onnx_path: ONNX file (input ``N x C x H x W``).
        input_shape: ``(C, H, W)``.
        max_batch: largest batch of the optimisation profile (opt = max).
        device: CUDA device.
        fp16: allow FP16 kernels (inputs stay float32; outputs float32).
        workspace_bytes: builder workspace limit.
    """

    def __init__(
        self,
        onnx_path: str | Path,
        input_shape: tuple[int, int, int],
        max_batch: int,
        device: str | torch.device = "cuda",
        fp16: bool = True,
        workspace_bytes: int = 1 << 30,
    ):
        ok, reason = tensorrt_available()
        if not ok:
            raise ValueError(f"TensorRT backend unavailable: {reason}")
        import tensorrt as trt  # optional extra: tensorrt

        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"TensorRT runs on a CUDA device, got {self.device}")
        self.layout, self.input_dtype, self.name = "nchw", torch.float32, "tensorrt-fp16" if fp16 else "tensorrt-fp32"
        self._logger = trt.Logger(trt.Logger.WARNING)
        plan = Path(onnx_path).with_suffix(f".b{max_batch}.{'fp16' if fp16 else 'fp32'}.trt{trt.__version__}.plan")
        if not plan.exists():
            plan.write_bytes(self._build(trt, Path(onnx_path), input_shape, max_batch, fp16, workspace_bytes))
        with torch.cuda.device(self.device):
            self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(plan.read_bytes())
            if self._engine is None:
                raise ValueError(f"TensorRT could not deserialise {plan}")
            self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._input = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.max_batch = max_batch

    def _build(
        self, trt, onnx_path: Path, input_shape: tuple[int, int, int], max_batch: int, fp16: bool, workspace: int
    ) -> bytes:
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        name = network.get_input(0).name
        profile.set_shape(name, (1, *input_shape), (max_batch, *input_shape), (max_batch, *input_shape))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ValueError(f"TensorRT failed to build an engine from {onnx_path}")
        return bytes(serialized)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] > self.max_batch:
            raise ValueError(f"batch of {batch.shape[0]} exceeds the engine's profile maximum {self.max_batch}")
        batch = batch.contiguous().float()
        self._context.set_input_shape(self._input, tuple(batch.shape))
        out = torch.empty(tuple(self._context.get_tensor_shape(self._output)), dtype=torch.float32, device=self.device)
        self._context.set_tensor_address(self._input, batch.data_ptr())
        self._context.set_tensor_address(self._output, out.data_ptr())
        if not self._context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return out.reshape(out.shape[0], -1)
