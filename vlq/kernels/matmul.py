"""w4a16 matrix multiply over AutoAWQ GEMM tensors: `x @ dequantize(qweight)`.

This file holds the dispatch; the torch path (dequantize, then matmul) runs on every device and
is the reference the fast kernels are tested against.
"""

from __future__ import annotations

import torch

from vlq.awq.pack import dequantize_awq


def w4a16_matmul_reference(
    x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> torch.Tensor:
    """`x [..., in] @ W [in, out]` with W dequantized in `x`'s dtype."""
    weight = dequantize_awq(qweight, qzeros, scales.to(x.dtype), group_size)
    return x @ weight


def w4a16_matmul(
    x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> torch.Tensor:
    """Dispatch to the fastest available implementation for `x`'s device and shape."""
    return w4a16_matmul_reference(x, qweight, qzeros, scales, group_size)
