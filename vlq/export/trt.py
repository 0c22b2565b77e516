"""TensorRT: build an engine from the exported ONNX with the Python builder, and run it.

The module takes the `tensorrt` package as an argument where it matters (default: imported on
first use), so everything up to the builder's own work is testable without TensorRT. Input
shapes are checked against the profile by vlq before TensorRT sees them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vlq.errors import InputError
from vlq.export.profile import Profile

INSTALL_HINT = "pip install 'vlq[trt]' (NVIDIA's tensorrt wheels; needs an NVIDIA GPU and driver)"


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise InputError(f"TensorRT is not installed: {INSTALL_HINT}") from None
    return tensorrt


@dataclass
class EngineBuild:
    engine: Path
    timing_cache: Path
    precision: list[str]
    workspace_gb: float
    seconds: float
    tensorrt: str

    def to_dict(self) -> dict:
        return {
            "engine": self.engine.name,
            "timing_cache": self.timing_cache.name,
            "precision": self.precision,
            "workspace_gb": self.workspace_gb,
            "build_seconds": round(self.seconds, 2),
            "tensorrt": self.tensorrt,
        }


def bf16_supported(trt: Any) -> bool:
    """BF16 needs TensorRT >= 9 (the builder flag) and an Ampere or newer GPU."""
    return (
        hasattr(trt.BuilderFlag, "BF16")
        and torch.cuda.is_available()
        and torch.cuda.get_device_capability() >= (8, 0)
    )


def _network_flags(trt: Any) -> int:
    """TensorRT 10 networks are always explicit-batch (the flag is gone); 8.x needs it set."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    return 0 if flag is None or int(trt.__version__.split(".")[0]) >= 10 else 1 << int(flag)


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    profile: Profile,
    workspace_gb: float,
    timing_cache: Path,
    trt: Any = None,
    bf16: bool | None = None,
) -> EngineBuild:
    """Parse the ONNX, set fp16 (+ bf16 where supported), one profile and a timing cache, serialize the engine.

    The timing cache is read when it exists and written back, so a rebuild (another profile,
    the same model) skips most kernel timing.
    """
    trt = trt or import_tensorrt()
    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT could not parse {onnx_path}: {errors}")
    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    if inputs != {r.name for r in profile.inputs}:
        raise InputError(
            f"{onnx_path} has inputs {sorted(inputs)}, the profile names {[r.name for r in profile.inputs]}"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    precision = ["fp32"]
    if getattr(builder, "platform_has_fast_fp16", True):
        config.set_flag(trt.BuilderFlag.FP16)
        precision.append("fp16")
    if bf16_supported(trt) if bf16 is None else bf16:
        config.set_flag(trt.BuilderFlag.BF16)
        precision.append("bf16")
    optimization = builder.create_optimization_profile()
    for r in profile.inputs:
        optimization.set_shape(r.name, r.min, r.opt, r.max)
    config.add_optimization_profile(optimization)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(f"TensorRT failed to build an engine from {onnx_path} (its log above says why)")
    partial = engine_path.with_name(f".{engine_path.name}.partial")
    partial.write_bytes(bytes(serialized))
    partial.replace(engine_path)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return EngineBuild(
        engine_path, timing_cache, precision, workspace_gb, time.perf_counter() - start, trt.__version__
    )


class TrtEncoder:
    """A deserialized engine run on torch CUDA tensors; shapes are checked against the profile first."""

    def __init__(self, engine_path: Path, profile: Profile, trt: Any = None) -> None:
        trt = trt or import_tensorrt()
        self.profile = profile
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)  # must outlive the engine
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise InputError(
                f"TensorRT could not load {engine_path} (built by another TensorRT version or GPU?)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.dtypes = {
            n: torch.from_numpy(np.empty(0, trt.nptype(self.engine.get_tensor_dtype(n)))).dtype for n in names
        }

    def __call__(self, inputs: dict[str, Tensor]) -> Tensor:
        self.profile.check({name: tuple(value.shape) for name, value in inputs.items()})
        stream = torch.cuda.current_stream()
        keep = []
        for name in self.inputs:
            value = inputs[name].to("cuda", self.dtypes[name]).contiguous()
            keep.append(value)
            self.context.set_input_shape(name, tuple(value.shape))
            self.context.set_tensor_address(name, value.data_ptr())
        (name,) = self.outputs
        output = torch.empty(
            tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device="cuda"
        )
        self.context.set_tensor_address(name, output.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise InputError("TensorRT failed to run the engine")
        return output
