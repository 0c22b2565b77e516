"""AWQ on one decoder layer: record, search scales, fold, clip, quantize. Orchestration only.

The layer's outputs passed on to the next layer are those of the 16-bit layer (as AutoAWQ and
LMDeploy do): each layer is calibrated on the activations it will see in the quantized model
up to its own error, errors don't compound through the calibration statistics, and every layer's
result depends only on its own inputs, which is what makes `--resume` exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vlq.awq.fold import fold_scales
from vlq.awq.quantize import QuantizedWeight, fake_quantize, quantize
from vlq.awq.search import (
    apply_clip,
    scaled_fake_quantize,
    search_clip,
    search_scales,
    statistic_scales,
    weight_channel_means,
)
from vlq.calib.capture import LayerInputs, layer_output
from vlq.models.base import Family, ResolvedGroup, get_module, resolve_groups


@dataclass(frozen=True)
class LayerSettings:
    bits: int = 4
    group_size: int = 128
    search_scale: bool = False
    search_clip: bool = True
    n_grid: int = 20


@dataclass
class GroupReport:
    prev: str
    linears: tuple[str, ...]
    ratio: float | None
    loss_unscaled: float | None
    loss: float | None


@dataclass
class LayerReport:
    index: int
    seconds: float
    rtn_error: float
    awq_error: float
    peak_device_mib: float | None
    groups: list[GroupReport] = field(default_factory=list)


class _Recorder:
    """Forward hooks that keep a module's call (args, kwargs) and output, one entry per chunk."""

    def __init__(self, module: nn.Module, keep_call: bool, keep_output: bool):
        self.calls: list[tuple[tuple, dict]] = []
        self.outputs: list[torch.Tensor] = []
        self._handle = module.register_forward_hook(self._hook, with_kwargs=True)
        self.keep_call, self.keep_output = keep_call, keep_output

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.keep_call:
            self.calls.append((args, kwargs))
        if self.keep_output:
            self.outputs.append(layer_output(output).detach())

    def remove(self) -> None:
        self._handle.remove()


def _squared_error(outputs: list[torch.Tensor], references: list[torch.Tensor]) -> float:
    total = sum(float((o.double() - r.double()).pow(2).sum()) for o, r in zip(outputs, references))
    return total / sum(r.numel() for r in references)


def run_layer(layer: nn.Module, inputs: LayerInputs, hidden: list[torch.Tensor]) -> list[torch.Tensor]:
    return [
        layer_output(layer(h, *args, **kwargs)) for h, args, kwargs in zip(hidden, inputs.args, inputs.kwargs)
    ]


class _SwappedWeights:
    """Temporarily give linears other weights (the fake-quantized candidates), restoring after."""

    def __init__(self, linears: list[nn.Module], weights: list[torch.Tensor]):
        self.linears, self.weights = linears, weights

    def __enter__(self) -> None:
        self.saved = [lin.weight.data for lin in self.linears]
        for lin, w in zip(self.linears, self.weights):
            lin.weight.data = w

    def __exit__(self, *exc: object) -> None:
        for lin, w in zip(self.linears, self.saved):
            lin.weight.data = w


def _group_scales(
    resolved: ResolvedGroup, inputs: list[torch.Tensor], recorder: _Recorder | None, settings: LayerSettings
) -> tuple[torch.Tensor, GroupReport]:
    group = resolved.group
    w_mean = weight_channel_means([lin.weight for lin in resolved.linears], settings.group_size)
    channels = inputs[0].shape[-1]
    if not settings.search_scale:
        absmax = torch.stack([x.reshape(-1, channels).abs().amax(0).float() for x in inputs]).amax(0)
        return statistic_scales(absmax, w_mean), GroupReport(group.prev, group.linears, 0.5, None, None)

    x_mean = sum(x.reshape(-1, channels).abs().double().sum(0) for x in inputs) / sum(
        x.reshape(-1, channels).shape[0] for x in inputs
    )
    assert recorder is not None
    original = [lin.weight.data for lin in resolved.linears]

    def output_error(scales: torch.Tensor) -> float:
        candidates = [scaled_fake_quantize(w, scales, settings.bits, settings.group_size) for w in original]
        with _SwappedWeights(resolved.linears, candidates):
            outputs = [layer_output(resolved.inspect(*a, **k)) for a, k in recorder.calls]
        return _squared_error(outputs, recorder.outputs)

    result = search_scales(x_mean.float(), w_mean, output_error, settings.n_grid)
    return result.scales, GroupReport(group.prev, group.linears, result.ratio, result.loss_unscaled, result.loss)


@torch.no_grad()
def quantize_layer(
    layer: nn.Module,
    family: Family,
    index: int,
    inputs: LayerInputs,
    settings: LayerSettings,
) -> tuple[dict[str, QuantizedWeight], LayerReport, list[torch.Tensor]]:
    """AWQ one layer already on its compute device, with inputs on that device.

    Returns the quantized weights by linear name (the layer's float weights are left scaled and
    clipped, for the caller to replace), the report, and the 16-bit outputs for the next layer.
    """
    start = time.perf_counter()
    device = next(layer.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    groups = resolve_groups(family, layer, index, settings.group_size)
    linears = {name: get_module(layer, name) for name in family.quantized_linears()}

    # One 16-bit pass records every linear's input and, for the search, the inspected modules' calls.
    input_recorders = {name: _Recorder(lin, keep_call=True, keep_output=False) for name, lin in linears.items()}
    inspect_recorders = [
        _Recorder(g.inspect, keep_call=True, keep_output=True) if settings.search_scale else None for g in groups
    ]
    try:
        fp_outputs = run_layer(layer, inputs, inputs.hidden)
    finally:
        for rec in [*input_recorders.values(), *(r for r in inspect_recorders if r)]:
            rec.remove()
    inputs_of = {name: [args[0] for args, _ in rec.calls] for name, rec in input_recorders.items()}

    originals = [lin.weight.data.clone() for lin in linears.values()]
    rtn = [fake_quantize(w, settings.bits, settings.group_size) for w in originals]
    with _SwappedWeights(list(linears.values()), rtn):
        rtn_error = _squared_error(run_layer(layer, inputs, inputs.hidden), fp_outputs)

    reports = []
    for resolved, recorder in zip(groups, inspect_recorders):
        x = inputs_of[resolved.group.linears[0]]
        scales, report = _group_scales(resolved, x, recorder, settings)
        fold_scales(resolved.prev, resolved.linears, scales, family.input_sharers)
        s = scales.to(x[0].device, x[0].dtype)
        scaled_inputs = [chunk / s for chunk in x]  # what the linears now read
        for name in resolved.group.linears:
            inputs_of[name] = scaled_inputs
        reports.append(report)

    if settings.search_clip:
        for name, lin in linears.items():
            if name.rsplit(".", 1)[-1] in family.no_clip:
                continue
            x = torch.cat([chunk.reshape(-1, chunk.shape[-1]) for chunk in inputs_of[name]])
            thresholds = search_clip(lin.weight.data, x, settings.bits, settings.group_size)
            lin.weight.data = apply_clip(lin.weight.data, thresholds)

    quantized = {name: quantize(lin.weight.data, settings.bits, settings.group_size) for name, lin in linears.items()}
    awq_weights = [fake_quantize(lin.weight.data, settings.bits, settings.group_size) for lin in linears.values()]
    with _SwappedWeights(list(linears.values()), awq_weights):
        awq_error = _squared_error(run_layer(layer, inputs, inputs.hidden), fp_outputs)

    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    report = LayerReport(index, time.perf_counter() - start, rtn_error, awq_error, peak, reports)
    return quantized, report, fp_outputs
