"""AWQ on one decoder layer: statistics, scale search, fold, clip, quantize. Orchestration only.

The layer's outputs passed on to the next layer are those of the 16-bit layer (as AutoAWQ and
LMDeploy do): each layer is calibrated on the activations it will see in the quantized model
up to its own error, errors don't compound through the calibration statistics, and every layer's
result depends only on its own inputs, which is what makes `--resume` exact.

What is kept, and why it is fast and small (a 7B layer at 128 x 512 tokens: 2.7 s and 3.3 GiB on
an H100 with --batch-size 8, AutoAWQ 27.3 s and 7.3 GiB; see benchmarks/calib_bench.py):

- One 16-bit pass records, per linear input, statistics instead of the activations: mean and
  max |x| per channel, the group-size blocks of the Gram matrix `sum x x^T` (all the clip search
  needs, see `gram.py`) and, for scale groups scored at a linear (o_proj, down_proj), the full
  Gram matrix. Nothing of the 11008-wide down_proj input is stored.
- A scale group scored at a module (attention, MLP) captures that module's inputs chunk by chunk
  (running the layer only up to it), computes the 16-bit reference once, then scores each grid
  point by re-running the module alone. Candidate weights are fake-quantized once per grid point.
- Every reduction is per calibration sample and in sample order (float64 where it is a sum of
  errors), so `--batch-size` changes memory, not results; a `Reducer` makes the same sums across
  data-parallel ranks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vlq.awq.distributed import LOCAL, Reducer
from vlq.awq.fold import fold_scales
from vlq.awq.gram import (
    add_block_gram,
    add_gram,
    quadratic_error,
    scale_block_gram,
    search_clip_gram,
)
from vlq.awq.pack import pack_awq
from vlq.awq.quantize import fake_quantize, quantize
from vlq.awq.search import ScaleSearchResult, apply_clip, balanced_scales, statistic_scales
from vlq.calib.capture import LayerInputs, layer_output
from vlq.kernels.branched import to_int4
from vlq.models.base import Family, ResolvedGroup, get_module, resolve_groups

#: Rows (fake-)quantized at once, and input columns packed at once: bound the float32 and int64
#: temporaries of the largest linears to tens of MiB.
_QUANT_ROWS = 2048
_PACK_COLUMNS = 1024
#: AutoAWQ's GEMM format stores fp16 scales whatever the model's dtype.
SCALE_DTYPE = torch.float16


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


class _StopForward(Exception):
    pass


def _fake_quantize(
    weight: torch.Tensor, bits: int, group_size: int, scales: torch.Tensor | None = None
) -> torch.Tensor:
    """`fake_quantize` (of `W * s`, divided back by `s` when scales are given), a few rows at a time."""
    s = None if scales is None else scales.to(weight.device, weight.dtype)
    out = torch.empty_like(weight)
    for start in range(0, weight.shape[0], _QUANT_ROWS):
        rows = weight[start : start + _QUANT_ROWS]
        if s is None:
            out[start : start + _QUANT_ROWS] = fake_quantize(rows, bits, group_size)
        else:
            out[start : start + _QUANT_ROWS] = fake_quantize(rows * s, bits, group_size) / s
    return out


def _weight_channel_means(weights: list[torch.Tensor], group_size: int) -> torch.Tensor:
    """`search.weight_channel_means` (mean over rows of |w| / its group's max), a few rows at a time."""
    total = torch.zeros(weights[0].shape[1], dtype=torch.float64, device=weights[0].device)
    rows = 0
    for weight in weights:
        for part in weight.split(_QUANT_ROWS):
            grouped = part.float().abs().reshape(part.shape[0], -1, group_size)
            normalized = grouped / (grouped.amax(dim=-1, keepdim=True) + 1e-6)
            total += normalized.reshape(part.shape).sum(dim=0, dtype=torch.float64)
            rows += part.shape[0]
    return (total / rows).float()


def pack_linear(linear: nn.Module, bits: int, group_size: int) -> nn.Module:
    """The int4 form of `linear` (`AwqLinear`, or the module re-classed where it carries branches
    such as PLoRA) holding its weight quantized (RTN), packed a few input columns at a time."""
    weight = linear.weight.data
    out_features, in_features = weight.shape
    step = max(group_size, _PACK_COLUMNS // group_size * group_size)
    parts = [
        pack_awq(quantize(weight[:, start : start + step], bits, group_size), SCALE_DTYPE)
        for start in range(0, in_features, step)
    ]
    tensors = {name: torch.cat([part[name] for part in parts]) for name in ("qweight", "qzeros", "scales")}
    return to_int4(linear, group_size, SCALE_DTYPE, tensors)


def search_ratio(
    x_mean: torch.Tensor,
    w_mean: torch.Tensor,
    output_error: Callable[[torch.Tensor], float],
    n_grid: int = 20,
) -> ScaleSearchResult:
    """AutoAWQ's grid: `balanced_scales(x_mean, w_mean, r)` for `r` in `0, 1/n_grid, ...`, lowest error wins.

    The error of all-ones scales (plain RTN) is measured for the report, not offered as a
    candidate: it wins a group scored at its linear (o_proj, down_proj) by a hair where that
    input has no salient channels, and the layer's final error then comes out higher (measured
    on Llama layers with planted outliers: 5 of 6 seeds, by up to 2%).
    """
    loss_unscaled = output_error(torch.ones_like(x_mean, dtype=torch.float32))
    best: tuple[torch.Tensor, float, float] | None = None
    for step in range(n_grid):
        scales = balanced_scales(x_mean, w_mean, step / n_grid)
        loss = output_error(scales)
        if best is None or loss < best[2]:
            best = (scales, step / n_grid, loss)
    assert best is not None
    return ScaleSearchResult(best[0], best[1], best[2], loss_unscaled)


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


def _chunks(inputs: LayerInputs, device: torch.device):
    """(hidden, args, kwargs) per chunk, hidden moved to the compute device (it may live on the host)."""
    for hidden, args, kwargs in zip(inputs.hidden, inputs.args, inputs.kwargs):
        yield hidden.to(device, non_blocking=True), args, kwargs


def forward_layer(layer: nn.Module, inputs: LayerInputs, device: torch.device) -> list[torch.Tensor]:
    """The layer's outputs per chunk, each stored where that chunk's input lives."""
    return [
        layer_output(layer(h, *args, **kwargs)).to(home.device)
        for home, (h, args, kwargs) in zip(inputs.hidden, _chunks(inputs, device))
    ]


def _sample_errors(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Squared error summed per sample (dim 0), float64."""
    diff = output.float() - reference.to(output.device).float()
    return diff.pow(2).reshape(diff.shape[0], -1).sum(dim=1, dtype=torch.float64)


def _mean_error(per_sample: list[torch.Tensor], elements: int, reducer: Reducer) -> float:
    """Mean squared error over all samples of all ranks, summed in global sample order."""
    total = float(reducer.gather_samples(torch.cat(per_sample)).sum())
    return total / reducer.sum_int(elements)


class _InputStats:
    """Per-channel statistics of one linear input, accumulated per sample as the layer runs."""

    def __init__(self, channels: int, group_size: int, device: torch.device, blocks: bool, full: bool):
        self.group_size = group_size
        self.abs_sum = torch.zeros(channels, dtype=torch.float64, device=device)
        self.abs_max = torch.zeros(channels, dtype=torch.float32, device=device)
        self.tokens = 0
        g = group_size
        self.blocks = torch.zeros(channels // g, g, g, dtype=torch.float64, device=device) if blocks else None
        self.gram = torch.zeros(channels, channels, dtype=torch.float32, device=device) if full else None
        self.batch = 1  # samples in the chunk being run, set by the caller

    def hook(self, module: nn.Module, args: tuple) -> None:
        x = args[0]
        per_sample = x.reshape(self.batch, -1, x.shape[-1])
        for sample in per_sample:
            magnitude = sample.abs()
            self.abs_sum += magnitude.sum(dim=0, dtype=torch.float64)
            torch.maximum(self.abs_max, magnitude.amax(dim=0).float(), out=self.abs_max)
            if self.blocks is not None:
                add_block_gram(self.blocks, sample, self.group_size)
            if self.gram is not None:
                add_gram(self.gram, sample)
        self.tokens += per_sample.shape[0] * per_sample.shape[1]

    def reduce(self, reducer: Reducer) -> None:
        reducer.sum_(self.abs_sum)
        reducer.max_(self.abs_max)
        self.tokens = reducer.sum_int(self.tokens)
        if self.blocks is not None:
            reducer.sum_(self.blocks)
        if self.gram is not None:
            reducer.sum_(self.gram)

    @property
    def abs_mean(self) -> torch.Tensor:
        return (self.abs_sum / self.tokens).float()


def _capture_calls(
    layer: nn.Module, module: nn.Module, inputs: LayerInputs, device: torch.device
) -> list[tuple[tuple, dict[str, Any]]]:
    """The (args, kwargs) `module` is called with, per chunk, running the layer only up to it."""
    calls: list[tuple[tuple, dict[str, Any]]] = []

    def stop(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append((args, kwargs))
        raise _StopForward

    handle = module.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        for h, args, kwargs in _chunks(inputs, device):
            try:
                layer(h, *args, **kwargs)
            except _StopForward:
                continue
            raise RuntimeError(f"{type(module).__name__} was not called by the decoder layer")
    finally:
        handle.remove()
    return calls


def _module_search(
    resolved: ResolvedGroup,
    layer: nn.Module,
    inputs: LayerInputs,
    device: torch.device,
    settings: LayerSettings,
    x_mean: torch.Tensor,
    w_mean: torch.Tensor,
    reducer: Reducer,
):
    """Grid search scored by the output of the inspected module (attention, MLP) on all tokens."""
    calls = _capture_calls(layer, resolved.inspect, inputs, device)
    references = [layer_output(resolved.inspect(*a, **k)) for a, k in calls]
    elements = sum(r.numel() for r in references)
    original = [lin.weight.data for lin in resolved.linears]

    def output_error(scales: torch.Tensor) -> float:
        candidates = [_fake_quantize(w, settings.bits, settings.group_size, scales) for w in original]
        with _SwappedWeights(resolved.linears, candidates):
            errors = [
                _sample_errors(layer_output(resolved.inspect(*a, **k)), ref)
                for (a, k), ref in zip(calls, references)
            ]
        return _mean_error(errors, elements, reducer)

    return search_ratio(x_mean, w_mean, output_error, settings.n_grid)


def _linear_search(
    resolved: ResolvedGroup,
    stats: _InputStats,
    settings: LayerSettings,
    x_mean: torch.Tensor,
    w_mean: torch.Tensor,
):
    """Grid search scored at the linears themselves, from their input's Gram matrix (no forward runs)."""
    original = [lin.weight.data for lin in resolved.linears]
    elements = stats.tokens * sum(w.shape[0] for w in original)

    def output_error(scales: torch.Tensor) -> float:
        total = 0.0
        for w in original:
            candidate = _fake_quantize(w, settings.bits, settings.group_size, scales)
            total += quadratic_error(candidate.float() - w.float(), stats.gram)
        return total / elements

    return search_ratio(x_mean, w_mean, output_error, settings.n_grid)


def _input_keys(family: Family, groups: list[ResolvedGroup]) -> dict[str, str]:
    """Each quantized linear -> the linear whose input it shares (first of its scale group)."""
    keys = {name: name for name in family.quantized_linears()}
    for resolved in groups:
        for name in resolved.group.linears:
            keys[name] = resolved.group.linears[0]
    return keys


def _layer_error(
    layer: nn.Module,
    linears: list[nn.Module],
    weights: list[torch.Tensor],
    inputs: LayerInputs,
    references: list[torch.Tensor],
    device: torch.device,
    reducer: Reducer,
) -> float:
    with _SwappedWeights(linears, weights):
        outputs = forward_layer(layer, inputs, device)
    errors = [_sample_errors(o, r) for o, r in zip(outputs, references)]
    return _mean_error(errors, sum(r.numel() for r in references), reducer)


@torch.no_grad()
def quantize_layer(
    layer: nn.Module,
    family: Family,
    index: int,
    inputs: LayerInputs,
    settings: LayerSettings,
    reducer: Reducer = LOCAL,
) -> tuple[dict[str, nn.Module], LayerReport, list[torch.Tensor]]:
    """AWQ one layer already on its compute device (inputs' hidden states may be on the host).

    Returns the packed 4-bit modules by linear name (for `install_linears`; the layer's float
    weights are left scaled and clipped), the report, and the 16-bit outputs for the next layer.
    With a distributed `reducer`, `inputs` are this rank's samples and every decision is made on
    statistics and errors summed over all ranks.
    """
    start = time.perf_counter()
    device = next(layer.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bits, group_size = settings.bits, settings.group_size
    groups = resolve_groups(family, layer, index, group_size)
    linears = {name: get_module(layer, name) for name in family.quantized_linears()}
    keys = _input_keys(family, groups)
    clipped = [
        name for name in linears if settings.search_clip and name.rsplit(".", 1)[-1] not in family.no_clip
    ]
    gram_keys = {g.group.linears[0] for g in groups if settings.search_scale and not g.group.inspect}

    # 1. The 16-bit pass: outputs for the next layer, and statistics of every linear input.
    stats = {
        key: _InputStats(
            linears[key].in_features,
            group_size,
            device,
            blocks=any(keys[name] == key for name in clipped),
            full=key in gram_keys,
        )
        for key in dict.fromkeys(keys.values())
    }
    handles = [linears[key].register_forward_pre_hook(s.hook) for key, s in stats.items()]
    try:
        outputs = []
        for home, (h, args, kwargs) in zip(inputs.hidden, _chunks(inputs, device)):
            for s in stats.values():
                s.batch = h.shape[0]
            outputs.append(layer_output(layer(h, *args, **kwargs)).to(home.device))
    finally:
        for handle in handles:
            handle.remove()
    for s in stats.values():
        s.reduce(reducer)

    names = list(linears)
    modules = [linears[n] for n in names]
    rtn = [_fake_quantize(m.weight.data, bits, group_size) for m in modules]
    rtn_error = _layer_error(layer, modules, rtn, inputs, outputs, device, reducer)
    del rtn

    # 2. Scales, group by group; each is folded before the next group runs.
    reports = []
    for resolved in groups:
        key = resolved.group.linears[0]
        w_mean = _weight_channel_means([lin.weight.data for lin in resolved.linears], group_size)
        if not settings.search_scale:
            scales = statistic_scales(stats[key].abs_max, w_mean)
            report = GroupReport(resolved.group.prev, resolved.group.linears, 0.5, None, None)
        else:
            x_mean = stats[key].abs_mean
            if resolved.group.inspect:
                result = _module_search(resolved, layer, inputs, device, settings, x_mean, w_mean, reducer)
            else:
                result = _linear_search(resolved, stats[key], settings, x_mean, w_mean)
            scales = result.scales
            report = GroupReport(
                resolved.group.prev, resolved.group.linears, result.ratio, result.loss_unscaled, result.loss
            )
        fold_scales(resolved.prev, resolved.linears, scales, family)
        if stats[key].blocks is not None:
            stats[key].blocks = scale_block_gram(stats[key].blocks, scales)
        stats[key].gram = None
        reports.append(report)

    # 3. Clipping, on the scaled weights and the statistics of the scaled inputs.
    for name in clipped:
        lin = linears[name]
        thresholds = search_clip_gram(lin.weight.data, stats[keys[name]].blocks, bits, group_size)
        lin.weight.data = apply_clip(lin.weight.data, thresholds)
    del stats

    final = [_fake_quantize(m.weight.data, bits, group_size) for m in modules]
    awq_error = _layer_error(layer, modules, final, inputs, outputs, device, reducer)
    del final
    packed = {name: pack_linear(lin, bits, group_size) for name, lin in linears.items()}

    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    report = LayerReport(index, time.perf_counter() - start, rtn_error, awq_error, peak, reports)
    return packed, report, outputs


def install_linears(layer: nn.Module, packed: dict[str, nn.Module]) -> None:
    """Put each packed module in place of the linear of the same name."""
    for name, module in packed.items():
        parent_name, _, child = name.rpartition(".")
        setattr(get_module(layer, parent_name), child, module)
