"""AutoAWQ's GEMM layout: eight 4-bit codes per int32, interleaved in `AWQ_PACK_ORDER`.

`qweight` is int32 `[in, out // 8]`, `qzeros` int32 `[in // group, out // 8]`, `scales`
`[in // group, out]`. Nibble `i` (bits `4*i .. 4*i+3`) of packed column `c` holds output
column `8*c + AWQ_PACK_ORDER[i]`; every AutoAWQ-format loader (AutoAWQ, vLLM, transformers,
LMDeploy) reads this order.
"""

from __future__ import annotations

import torch

from vlq.awq.quantize import QuantizedWeight

PACK_BITS = 4
CODES_PER_INT32 = 32 // PACK_BITS
AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
AWQ_UNPACK_ORDER = tuple(AWQ_PACK_ORDER.index(i) for i in range(CODES_PER_INT32))
_SHIFTS = torch.arange(0, 32, PACK_BITS, dtype=torch.int32)
#: The shift of each output column's nibble, so unpacking needs no gather (6x faster on the CPU).
_UNPACK_SHIFTS = _SHIFTS[list(AWQ_UNPACK_ORDER)]


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack `[rows, cols]` codes in 0..15 into int32 `[rows, cols // 8]` in AWQ order."""
    rows, cols = codes.shape
    if cols % CODES_PER_INT32:
        raise ValueError(f"{cols} columns is not a multiple of {CODES_PER_INT32}")
    nibbles = codes.to(torch.int64).reshape(rows, cols // CODES_PER_INT32, CODES_PER_INT32)
    nibbles = nibbles[..., list(AWQ_PACK_ORDER)] & 0xF
    packed = (nibbles << _SHIFTS.to(codes.device, torch.int64)).sum(dim=-1)
    # Sum of disjoint nibbles fits 32 bits unsigned; wrap into int32's signed range.
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_int4`: int32 `[rows, cols // 8]` -> int32 codes `[rows, cols]`."""
    rows, packed_cols = packed.shape
    nibbles = (packed[..., None] >> _UNPACK_SHIFTS.to(packed.device)) & 0xF
    return nibbles.reshape(rows, packed_cols * CODES_PER_INT32)


def pack_awq(q: QuantizedWeight, scale_dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """`qweight`, `qzeros`, `scales` tensors of a quantized `[out, in]` weight in AutoAWQ's GEMM layout."""
    if q.bits != PACK_BITS:
        raise ValueError(f"the AWQ GEMM layout holds {PACK_BITS}-bit codes, not {q.bits}-bit")
    return {
        "qweight": pack_int4(q.codes.t().contiguous()),
        "qzeros": pack_int4(q.zeros.t().contiguous()),
        "scales": q.scales.t().contiguous().to(scale_dtype),
    }


def unpack_awq(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> QuantizedWeight:
    """`QuantizedWeight` (torch `[out, in]` orientation) from AutoAWQ GEMM tensors."""
    return QuantizedWeight(
        codes=unpack_int4(qweight).t().contiguous(),
        scales=scales.t().float().contiguous(),
        zeros=unpack_int4(qzeros).t().contiguous(),
        bits=PACK_BITS,
        group_size=group_size,
    )


def dequantize_awq(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> torch.Tensor:
    """Float weight `[in, out]` (the layout AWQ GEMM kernels multiply by) in `scales`' dtype.

    The plain torch reference that every int4 kernel is tested against.
    """
    groups, out_features = scales.shape
    codes = unpack_int4(qweight).view(groups, group_size, out_features)
    zeros = unpack_int4(qzeros)[:, None, :]
    weight = (codes - zeros).to(scales.dtype) * scales[:, None, :]
    return weight.view(groups * group_size, out_features)
