"""Group-wise asymmetric round-to-nearest quantization: the one definition every other part uses.

Weights are `[out_features, in_features]` (torch's Linear layout); a group is `group_size`
consecutive input channels of one output row, as AWQ and AutoAWQ define it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class QuantizedWeight:
    """Integer codes and per-group affine parameters of one weight matrix.

    `codes` is `[out, in]` with values in `[0, 2**bits - 1]`; `scales` and `zeros` are
    `[out, in // group_size]`; `dequantized = (codes - zeros) * scales` per group.
    """

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    bits: int
    group_size: int


def _grouped(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    out_features, in_features = weight.shape
    if group_size <= 0 or in_features % group_size:
        raise ValueError(f"group size {group_size} does not divide in_features {in_features}")
    return weight.reshape(out_features, in_features // group_size, group_size)


def rounding_dtype(weight: torch.Tensor) -> torch.dtype:
    """The arithmetic of scale, zero and codes: fp16 for fp16 weights (the dtype the scales are
    stored and dequantized in, and AutoAWQ's), fp32 otherwise. Rounding `w / s` in fp16 gives a
    lower layer output error than in fp32 (benchmarks/autoawq_rounding.py, RESULTS.md issue 9)."""
    return torch.float16 if weight.dtype == torch.float16 else torch.float32


def group_params(
    weight: torch.Tensor, bits: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group scale and integer zero point from each group's min and max, as AutoAWQ computes them."""
    grouped = _grouped(weight.to(rounding_dtype(weight)), group_size)
    max_code = 2**bits - 1
    w_max = grouped.amax(dim=-1)
    w_min = grouped.amin(dim=-1)
    scales = ((w_max - w_min).clamp(min=1e-5) / max_code)
    zeros = (-torch.round(w_min / scales)).clamp(0, max_code)
    return scales, zeros


def _grouped_codes(
    weight: torch.Tensor, bits: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scales, zeros = group_params(weight, bits, group_size)
    grouped = _grouped(weight.to(scales.dtype), group_size)
    codes = torch.clamp(torch.round(grouped / scales[..., None]) + zeros[..., None], 0, 2**bits - 1)
    return codes, scales, zeros


def quantize(weight: torch.Tensor, bits: int, group_size: int) -> QuantizedWeight:
    """Round-to-nearest codes for `weight` with per-group min/max affine parameters."""
    codes, scales, zeros = _grouped_codes(weight, bits, group_size)
    return QuantizedWeight(
        codes=codes.reshape(weight.shape).to(torch.int32),
        scales=scales,
        zeros=zeros.to(torch.int32),
        bits=bits,
        group_size=group_size,
    )


def dequantize(q: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Float weight `[out, in]` that the integer codes stand for."""
    grouped = _grouped(q.codes.float(), q.group_size)
    weight = (grouped - q.zeros[..., None].float()) * q.scales[..., None].float()
    return weight.reshape(q.codes.shape).to(dtype)


def fake_quantize(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Quantize then dequantize, in `weight`'s dtype: what the model will compute with.

    Same arithmetic as `dequantize(quantize(...))` without the integer round trip, because the
    scale and clip searches call it many times per layer.
    """
    codes, scales, zeros = _grouped_codes(weight, bits, group_size)
    return ((codes - zeros[..., None]) * scales[..., None]).reshape(weight.shape).to(weight.dtype)
