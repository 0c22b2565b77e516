"""`auto_awq`: checkpoint folder in, AutoAWQ-format 4-bit folder and JSON report out.

Memory model. A safetensors checkpoint is streamed: the model is built without weights, the
embeddings are read for the layer-0 capture only, each decoder layer is read from the shards
when it is its turn (the next one is read on a background thread meanwhile), quantized on the
device, written as its own output shard into `<work-dir>.partial/` and dropped. Host memory is
then a few layers plus the calibration activations, whatever the depth; device memory is one
layer, its inputs and outputs, and per-layer statistics (see `vlq.awq.layer`). A checkpoint
without safetensors is loaded whole and saved with `save_pretrained`.

`--resume` continues a killed run after its last finished layer (`vlq.awq.partial`); `--gpus N`
(or `torchrun`) splits the calibration samples over N processes (`vlq.awq.distributed`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlq import __version__
from vlq.awq.config import AwqQuantizationConfig
from vlq.awq.distributed import (
    LOCAL,
    ProcessGroupReducer,
    Reducer,
    init_process_group,
    launch,
    rank_device,
    shard_bounds,
    torchrun_world,
)
from vlq.awq.layer import LayerReport, LayerSettings, forward_layer, install_linears, quantize_layer
from vlq.awq.partial import PartialOutput, fingerprint, partial_dir
from vlq.calib.capture import LayerInputs, capture_layer0_inputs, to_device
from vlq.calib.data import calibration_samples
from vlq.calib.stream import LayerPrefetcher, StreamedModel, open_streamed
from vlq.errors import UsageError
from vlq.models.base import Family, get_module, resolve_groups
from vlq.models.loading import load_source_model, read_config, resolve_device
from vlq.output import atomic_dir, check_work_dir, copy_side_files, write_json

SUPPORTED_BITS = (4,)
REPORT_NAME = "vlq_report.json"
#: Options that change the result: a resumed run must share them with the interrupted one.
RESULT_OPTIONS = (
    "calib_dataset",
    "calib_samples",
    "calib_seqlen",
    "batch_size",
    "w_bits",
    "w_group_size",
    "search_scale",
    "search_clip",
    "dtype",
    "seed",
    "gpus",
)


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
    #: Continue an interrupted run from `<work-dir>.partial/` (same checkpoint and options).
    resume: bool = False
    #: Data-parallel processes (one per GPU; on --device cpu, CPU processes talking gloo).
    gpus: int = 1

    def validate(self) -> None:
        if self.w_bits not in SUPPORTED_BITS:
            raise UsageError(
                f"--w-bits {self.w_bits} is not supported; AutoAWQ's GEMM format holds 4-bit weights"
            )
        if self.w_group_size < 8 or self.w_group_size % 8:
            raise UsageError(
                f"--w-group-size {self.w_group_size}: use a positive multiple of 8 (usually 128)"
            )
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UsageError(f"--device {self.device}: use auto, cuda, cuda:N or cpu")
        if self.gpus < 1:
            raise UsageError("--gpus must be at least 1")
        if self.gpus > self.calib_samples:
            raise UsageError(f"--gpus {self.gpus} is more than --calib-samples {self.calib_samples}")
        if self.gpus > 1 and self.device.startswith("cuda:"):
            raise UsageError("--gpus uses cuda:0 .. cuda:N-1; pass --device cuda (or auto), not one GPU")


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
    #: Read layer by layer from safetensors shards (False: the whole model was loaded).
    streamed: bool = False
    #: Layers taken from an interrupted run's partial folder (`--resume`).
    resumed_layers: int = 0
    #: Data-parallel processes that calibrated.
    world_size: int = 1

    @property
    def report_path(self) -> Path:
        return self.output_dir / REPORT_NAME


def compute_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available")
    return resolve_device(name)


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


def _cast_floats(value, dtype: torch.dtype):
    """Floating tensors (rotary tables, float masks) in the compute dtype; integer ones untouched."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast_floats(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _cast_floats(v, dtype) for k, v in value.items()}
    return value


def _device_inputs(inputs: LayerInputs, device: torch.device, dtype: torch.dtype) -> LayerInputs:
    return LayerInputs(
        [h.to(device, dtype) for h in inputs.hidden],
        to_device(inputs.args, device),
        _cast_floats(to_device(inputs.kwargs, device), dtype),
    )


class _Layers:
    """Where the decoder layers come from and go to: streamed from shards, or a model in memory."""

    def __init__(self, model: nn.Module, family: Family, dtype: torch.dtype, streamed: StreamedModel | None):
        self.model, self.family, self.dtype, self.streamed = model, family, dtype, streamed
        self.layers = get_module(model, family.layers)
        self.prefetch: LayerPrefetcher | None = None

    def take(self, index: int) -> nn.Module:
        if self.streamed is None:
            return self.layers[index]
        if self.prefetch is None:
            self.prefetch = LayerPrefetcher(self.streamed, index)
        return self.streamed.load_layer(index, self.prefetch.take(index))

    def checkpoint_tensors(self, index: int, layer: nn.Module) -> dict[str, torch.Tensor]:
        """The finished layer's tensors under their checkpoint names (host memory)."""
        assert self.streamed is not None
        return {self.streamed.layer_key(index, k): v.to("cpu") for k, v in layer.state_dict().items()}

    def give_back(self, index: int, layer: nn.Module) -> None:
        if self.streamed is None:
            layer.to("cpu")
        else:
            self.streamed.release_layer(index)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        if self.prefetch is not None:
            self.prefetch.close()


def calibrate_layers(
    source: _Layers,
    inputs: LayerInputs,
    settings: LayerSettings,
    device: torch.device,
    reducer: Reducer = LOCAL,
    partial: PartialOutput | None = None,
    first: int = 0,
    on_layer: Callable[[LayerReport], None] = lambda report: None,
) -> list[LayerReport]:
    """The layer loop: each decoder layer goes to the device, is quantized, and leaves; its 16-bit
    outputs feed the next. Layers before `first` (done by an interrupted run) only run forward."""
    dtype = compute_dtype(source.dtype, device)
    device_inputs = _device_inputs(inputs, device, dtype)
    reports = list(partial.reports[:first]) if partial is not None else []
    for index in range(len(source.layers)):
        layer = source.take(index).to(device, dtype)
        try:
            if index < first:
                with torch.no_grad():
                    device_inputs.hidden = forward_layer(layer, device_inputs, device)
                continue
            packed, report, outputs = quantize_layer(
                layer, source.family, index, device_inputs, settings, reducer
            )
            layer.to(source.dtype)
            install_linears(layer, packed)
            del packed
            device_inputs.hidden = outputs
            if partial is not None:
                partial.write_layer(report, source.checkpoint_tensors(index, layer))
            reports.append(report)
            on_layer(report)
        finally:
            source.give_back(index, layer)
    return reports


def _settings_stamp(options: AutoAwqOptions, device: torch.device) -> dict:
    data = {name: getattr(options, name) for name in RESULT_OPTIONS}
    data["device"] = device.type
    return data


def _run(options: AutoAwqOptions, emit: Callable[[str, Any], None]) -> AutoAwqResult:
    """One process's whole job (one of several ranks under `--gpus`/torchrun); rank 0 writes."""
    start = time.perf_counter()
    ranks = torchrun_world()
    if ranks is None:
        device, reducer_world, rank = compute_device(options.device), 1, 0
    else:
        rank, reducer_world, local_rank = ranks
        device = torch.device(rank_device(options.device, local_rank))
        if device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // reducer_world))
        init_process_group(str(device), rank, reducer_world)
    try:
        return _run_rank(options, emit, device, rank, reducer_world, start)
    finally:
        if ranks is not None:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run_rank(
    options: AutoAwqOptions,
    emit: Callable[[str, Any], None],
    device: torch.device,
    rank: int,
    world: int,
    start: float,
) -> AutoAwqResult:
    from transformers import AutoTokenizer

    work_dir = Path(options.work_dir)
    torch.manual_seed(options.seed)
    streamed = open_streamed(options.model, options.dtype)
    if streamed is None:
        if options.resume:
            raise UsageError(
                "--resume needs a safetensors checkpoint (this one has none): rerun without --resume"
            )
        source = load_source_model(options.model, options.dtype)
        model, folder, family, dtype = source.model, source.folder, source.family, source.dtype
    else:
        model, folder, family, dtype = streamed.model, streamed.folder, streamed.family, streamed.dtype
    layers = get_module(model, family.layers)
    for index, layer in enumerate(layers):
        resolve_groups(family, layer, index, options.w_group_size)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    samples, calib_source = calibration_samples(
        options.calib_dataset, tokenizer, options.calib_samples, options.calib_seqlen, options.seed
    )
    counts = [b - a for a, b in (shard_bounds(len(samples), world, r) for r in range(world))]
    reducer = LOCAL if world == 1 else ProcessGroupReducer(rank, world, counts)
    begin, end = shard_bounds(len(samples), world, rank)

    partial = None
    if streamed is not None and rank == 0:
        stamp = fingerprint(folder, _settings_stamp(options, device))
        partial = PartialOutput(
            work_dir,
            streamed.checkpoint,
            streamed.non_layer_keys(),
            len(layers),
            dtype,
            stamp,
            options.resume,
        )
    first = reducer.broadcast(partial.finished if partial is not None else 0)

    with streamed.embeddings_loaded() if streamed is not None else contextlib.nullcontext():
        text_model = get_module(model, family.text_model)
        inputs = capture_layer0_inputs(text_model, layers, samples[begin:end], options.batch_size)

    settings = LayerSettings(options.w_bits, options.w_group_size, options.search_scale, options.search_clip)
    emit("start", len(layers))
    for report in partial.reports[:first] if partial is not None else []:
        emit("layer", report)
    source = _Layers(model, family, dtype, streamed)
    try:
        reports = calibrate_layers(
            source, inputs, settings, device, reducer, partial, first, on_layer=lambda r: emit("layer", r)
        )
    finally:
        source.close()

    quantized_names = set(family.quantized_linear_names(len(layers)))
    skip = modules_to_not_convert(model, family, quantized_names)
    qconfig = AwqQuantizationConfig(options.w_bits, options.w_group_size, modules_to_not_convert=tuple(skip))
    result = AutoAwqResult(
        output_dir=work_dir,
        family=family.name,
        layers=reports,
        quantized_linears=len(quantized_names),
        modules_to_not_convert=skip,
        calibration_source=calib_source,
        seconds=0.0,
        options=asdict(options),
        streamed=streamed is not None,
        resumed_layers=first,
        world_size=world,
    )
    if rank != 0:
        return result

    def write_extras(folder_out: Path) -> None:
        if streamed is not None:
            # The source config.json as the checkpoint wrote it, plus quantization_config: going
            # through transformers would rewrite it (and refuses remote configs such as
            # XComposer2's, which carry generation keys); generation_config.json is copied below.
            write_json(folder_out / "config.json", {**read_config(folder), "quantization_config": qconfig.to_dict()})
        else:
            model.config.quantization_config = qconfig.to_dict()
            model.save_pretrained(folder_out, max_shard_size="4GB")
        copy_side_files(folder, folder_out)
        result.seconds = time.perf_counter() - start
        write_json(folder_out / REPORT_NAME, report_dict(result))

    if partial is not None:
        partial.finalize(write_extras)
    else:
        with atomic_dir(work_dir) as tmp:
            write_extras(tmp)
    return result


def auto_awq(
    options: AutoAwqOptions,
    on_start: Callable[[int], None] = lambda n_layers: None,
    on_layer: Callable[[LayerReport], None] = lambda report: None,
) -> AutoAwqResult:
    """Quantize the language model of a VLM with AWQ and write an AutoAWQ GEMM folder.

    Validates everything (options, output folder, family, every layer's shapes) before any
    calibration work. `on_start`/`on_layer` let a caller draw progress (rank 0's, when several
    processes calibrate).
    """
    options.validate()
    work_dir = Path(options.work_dir)
    check_work_dir(work_dir, options.force)
    if options.resume and not partial_dir(work_dir).is_dir():
        options = replace(options, resume=False)

    def emit(kind: str, value: Any) -> None:
        if kind == "start":
            on_start(value)
        elif kind == "layer":
            on_layer(value)

    ranks = torchrun_world()
    if options.gpus > 1 and ranks is None:
        if options.device != "cpu":
            rank_device(options.device, options.gpus - 1)
        return launch(options.gpus, _run, options, emit)
    if ranks is not None and ranks[1] != options.gpus and options.gpus != 1:
        raise UsageError(f"--gpus {options.gpus} disagrees with torchrun's {ranks[1]} processes")
    if ranks is not None and ranks[0] != 0:
        emit = _silent
    return _run(options, emit)


def _silent(kind: str, value: Any) -> None:
    return None


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
        "streamed": result.streamed,
        "resumed_layers": result.resumed_layers,
        "world_size": result.world_size,
        "totals": {
            "seconds": result.seconds,
            "layers": len(layers),
            "mean_rtn_error": sum(r["rtn_error"] for r in layers) / max(len(layers), 1),
            "mean_awq_error": sum(r["awq_error"] for r in layers) / max(len(layers), 1),
            "peak_device_mib": max((r["peak_device_mib"] or 0.0 for r in layers), default=0.0) or None,
        },
        "layers": layers,
    }
