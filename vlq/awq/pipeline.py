"""`auto_awq`: checkpoint folder in, AutoAWQ-format 4-bit folder and JSON report out."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from vlq import __version__
from vlq.awq.config import AwqQuantizationConfig
from vlq.awq.layer import LayerReport, LayerSettings, quantize_layer
from vlq.calib.capture import LayerInputs, capture_layer0_inputs, on_device, to_device
from vlq.calib.data import calibration_samples
from vlq.errors import UsageError
from vlq.kernels.linear import AwqLinear
from vlq.models.base import Family, get_module, resolve_groups
from vlq.models.loading import SourceModel, load_source_model
from vlq.output import atomic_dir, check_work_dir, copy_side_files, write_json

SUPPORTED_BITS = (4,)
REPORT_NAME = "vlq_report.json"


@dataclass(frozen=True)
class AutoAwqOptions:
    """Every option of `vlq auto-awq`; names follow LMDeploy's `lite auto_awq`."""

    model: str
    work_dir: str
    calib_dataset: str = "ptb"
    calib_samples: int = 128
    calib_seqlen: int = 2048
    batch_size: int = 1
    w_bits: int = 4
    w_group_size: int = 128
    search_scale: bool = False
    search_clip: bool = True
    device: str = "auto"
    dtype: str = "auto"
    force: bool = False
    seed: int = 0

    def validate(self) -> None:
        if self.w_bits not in SUPPORTED_BITS:
            raise UsageError(f"--w-bits {self.w_bits} is not supported; AutoAWQ's GEMM format holds 4-bit weights")
        if self.w_group_size < 8 or self.w_group_size % 8:
            raise UsageError(f"--w-group-size {self.w_group_size}: use a positive multiple of 8 (usually 128)")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UsageError(f"--device {self.device}: use auto, cuda, cuda:N or cpu")


@dataclass
class AutoAwqResult:
    output_dir: Path
    family: str
    layers: list[LayerReport]
    quantized_linears: int
    modules_to_not_convert: list[str]
    calibration_source: str
    seconds: float
    options: dict = field(default_factory=dict)

    @property
    def report_path(self) -> Path:
        return self.output_dir / REPORT_NAME


def compute_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available")
    return torch.device(name)


def compute_dtype(model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """Calibration arithmetic: the model's dtype on a GPU; float32 on the CPU (16-bit CPU math is slow)."""
    return model_dtype if device.type == "cuda" else torch.float32


def modules_to_not_convert(model: nn.Module, family: Family, quantized: set[str]) -> list[str]:
    """The family's 16-bit name fragments, plus any other linear no fragment covers."""
    keep = list(family.keep_16bit)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name not in quantized and not any(k in name for k in keep):
            keep.append(name)
    return keep


def replace_linears(layer: nn.Module, quantized: dict, scale_dtype: torch.dtype = torch.float16) -> None:
    """Swap each quantized nn.Linear of `layer` for an `AwqLinear` holding its packed weights."""
    for name, q in quantized.items():
        parent_name, _, child = name.rpartition(".")
        parent = get_module(layer, parent_name)
        linear = getattr(parent, child)
        setattr(parent, child, AwqLinear.from_quantized(q, linear.bias, dtype=scale_dtype))


def calibrate_layers(
    source: SourceModel,
    inputs: LayerInputs,
    settings: LayerSettings,
    device: torch.device,
    on_layer: Callable[[LayerReport], None] = lambda report: None,
) -> list[LayerReport]:
    """The layer loop: each decoder layer goes CPU -> device -> CPU, its outputs feed the next."""
    layers = get_module(source.model, source.family.layers)
    dtype = compute_dtype(source.dtype, device)
    hidden = [h.to(device, dtype) for h in inputs.hidden]
    device_inputs = LayerInputs(hidden, to_device(inputs.args, device), _cast_floats(to_device(inputs.kwargs, device), dtype))
    reports = []
    for index, layer in enumerate(layers):
        layer.to(dtype)
        with on_device(layer, device):
            quantized, report, outputs = quantize_layer(layer, source.family, index, device_inputs, settings)
        layer.to(source.dtype)
        replace_linears(layer, quantized)
        device_inputs.hidden = outputs
        reports.append(report)
        on_layer(report)
    return reports


def _cast_floats(value, dtype: torch.dtype):
    """Floating tensors (rotary tables, float masks) in the compute dtype; integer ones untouched."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast_floats(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _cast_floats(v, dtype) for k, v in value.items()}
    return value


def auto_awq(
    options: AutoAwqOptions,
    on_start: Callable[[int], None] = lambda n_layers: None,
    on_layer: Callable[[LayerReport], None] = lambda report: None,
) -> AutoAwqResult:
    """Quantize the language model of a VLM with AWQ and write an AutoAWQ GEMM folder.

    Validates everything (options, output folder, family, every layer's shapes) before any
    calibration work. `on_start`/`on_layer` let a caller draw progress.
    """
    from transformers import AutoTokenizer

    start = time.perf_counter()
    options.validate()
    work_dir = Path(options.work_dir)
    check_work_dir(work_dir, options.force)
    device = compute_device(options.device)
    torch.manual_seed(options.seed)

    source = load_source_model(options.model, options.dtype)
    layers = get_module(source.model, source.family.layers)
    for index, layer in enumerate(layers):
        resolve_groups(source.family, layer, index, options.w_group_size)
    tokenizer = AutoTokenizer.from_pretrained(source.folder, trust_remote_code=True)
    samples, calib_source = calibration_samples(
        options.calib_dataset, tokenizer, options.calib_samples, options.calib_seqlen, options.seed
    )
    inputs = capture_layer0_inputs(source.model, layers, samples, options.batch_size)

    settings = LayerSettings(options.w_bits, options.w_group_size, options.search_scale, options.search_clip)
    on_start(len(layers))
    reports = calibrate_layers(source, inputs, settings, device, on_layer)

    quantized_names = set(source.family.quantized_linear_names(len(layers)))
    skip = modules_to_not_convert(source.model, source.family, quantized_names)
    qconfig = AwqQuantizationConfig(options.w_bits, options.w_group_size, modules_to_not_convert=tuple(skip))
    result = AutoAwqResult(
        output_dir=work_dir,
        family=source.family.name,
        layers=reports,
        quantized_linears=len(quantized_names),
        modules_to_not_convert=skip,
        calibration_source=calib_source,
        seconds=0.0,
        options=asdict(options),
    )
    with atomic_dir(work_dir) as tmp:
        source.model.config.quantization_config = qconfig.to_dict()
        source.model.save_pretrained(tmp, max_shard_size="4GB")
        copy_side_files(source.folder, tmp)
        result.seconds = time.perf_counter() - start
        write_json(tmp / REPORT_NAME, report_dict(result))
    return result


def report_dict(result: AutoAwqResult) -> dict:
    layers = [asdict(r) for r in result.layers]
    return {
        "vlq_version": __version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "family": result.family,
        "calibration_source": result.calibration_source,
        "options": result.options,
        "quantized_linears": result.quantized_linears,
        "modules_to_not_convert": result.modules_to_not_convert,
        "totals": {
            "seconds": result.seconds,
            "layers": len(layers),
            "mean_rtn_error": sum(r["rtn_error"] for r in layers) / max(len(layers), 1),
            "mean_awq_error": sum(r["awq_error"] for r in layers) / max(len(layers), 1),
            "peak_device_mib": max((r["peak_device_mib"] or 0.0 for r in layers), default=0.0) or None,
        },
        "layers": layers,
    }
