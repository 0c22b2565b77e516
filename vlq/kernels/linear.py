"""`AwqLinear`: an nn.Linear replacement that holds AutoAWQ GEMM tensors and runs them."""

from __future__ import annotations

import torch
from torch import nn

from vlq.awq.pack import CODES_PER_INT32, pack_awq
from vlq.awq.quantize import QuantizedWeight
from vlq.kernels.matmul import w4a16_matmul


class AwqLinear(nn.Module):
    """4-bit group-wise linear layer whose state dict matches AutoAWQ's `WQLinear_GEMM`.

    Buffers: `qweight` int32 [in, out/8], `qzeros` int32 [in/group, out/8], `scales`
    [in/group, out], optional `bias` [out].
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: int,
        bias: bool,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if in_features % group_size or out_features % CODES_PER_INT32:
            raise ValueError(
                f"AwqLinear needs in_features ({in_features}) divisible by group size ({group_size}) "
                f"and out_features ({out_features}) divisible by {CODES_PER_INT32}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        groups = in_features // group_size
        packed_out = out_features // CODES_PER_INT32
        self.register_buffer(
            "qweight", torch.zeros(in_features, packed_out, dtype=torch.int32, device=device)
        )
        self.register_buffer("qzeros", torch.zeros(groups, packed_out, dtype=torch.int32, device=device))
        self.register_buffer("scales", torch.zeros(groups, out_features, dtype=dtype, device=device))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device))
        else:
            self.bias = None

    @classmethod
    def from_quantized(
        cls, q: QuantizedWeight, bias: torch.Tensor | None, dtype: torch.dtype = torch.float16
    ) -> AwqLinear:
        out_features, in_features = q.codes.shape
        module = cls(in_features, out_features, q.group_size, bias is not None, dtype=dtype, device="meta")
        for name, tensor in pack_awq(q, scale_dtype=dtype).items():
            setattr(module, name, tensor)
        if bias is not None:
            module.bias = bias.detach().to(dtype).clone()
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = w4a16_matmul(x, self.qweight, self.qzeros, self.scales, self.group_size)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bits=4, group_size={self.group_size}, bias={self.bias is not None}"
        )
