"""`AwqLinear`: an nn.Linear replacement that holds AutoAWQ GEMM tensors and runs them."""

from __future__ import annotations

import torch
from torch import nn

from vlq.awq.pack import CODES_PER_INT32, pack_awq
from vlq.awq.quantize import QuantizedWeight
from vlq.kernels.matmul import w4a16_backend, w4a16_matmul
from vlq.kernels.repack import is_repacked, repack_awq, repackable, scales_view, unrepack, words_for


class AwqLinear(nn.Module):
    """4-bit group-wise linear layer whose state dict matches AutoAWQ's `WQLinear_GEMM`.

    Buffers: `qweight` int32 [in, out/8], `qzeros` int32 [in/group, out/8], `scales`
    [in/group, out], optional `bias` [out].

    Load-time repack: the first forward that runs the Triton kernels rewrites the buffers in place
    into vlq's layout (`vlq.kernels.repack`: `qweight` [out, in/8], `qzeros` uint32 [in/group, out]
    words of scale and zero, `scales` a view of them), which the fast kernels read: 4.25 bits per
    weight at group 128. `state_dict()` still gives AutoAWQ's tensors, loading one restores them,
    and a forward on the CPU turns the layout back (`awq_tensors()` reads it either way).
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

    def awq_tensors(self) -> dict[str, torch.Tensor]:
        """AutoAWQ's `qweight`, `qzeros`, `scales`, whichever layout the module holds now."""
        qweight, qzeros, scales = self.qweight, self.qzeros, self.scales
        if is_repacked(qzeros):
            qweight, qzeros = unrepack(qweight, qzeros)
            scales = scales.contiguous()
        return {"qweight": qweight, "qzeros": qzeros, "scales": scales}

    def _set_layout(self, x: torch.Tensor) -> None:
        """Repack for the Triton kernels when `x` will run them; back to AutoAWQ's layout otherwise."""
        if self.qweight.device != x.device:
            return
        fast = (
            w4a16_backend(x, self.group_size) == "triton"
            and repackable(self.in_features, self.group_size)
            and self.scales.dtype == x.dtype
        )
        if fast and not is_repacked(self.qzeros):
            self.qweight, self.qzeros, self.scales = repack_awq(self.qweight, self.qzeros, self.scales)
        elif fast:
            words = words_for(self.qzeros, self.scales)
            if words is not self.qzeros:  # a cast or move separated the scales from the words
                self.qzeros, self.scales = words, scales_view(words, self.scales.dtype)
        elif is_repacked(self.qzeros):
            self._to_awq_layout()

    def _to_awq_layout(self) -> None:
        self.qweight, self.qzeros = unrepack(self.qweight, self.qzeros)
        self.scales = self.scales.contiguous()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if is_repacked(self.qzeros):
            for name, tensor in self.awq_tensors().items():
                destination[prefix + name] = tensor

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if is_repacked(self.qzeros):  # take AutoAWQ's shapes again before the copy
            self._to_awq_layout()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self, AwqLinear) and not (x.is_cuda and torch.cuda.is_current_stream_capturing()):
            self._set_layout(x)
        out = w4a16_matmul(x, self.qweight, self.qzeros, self.scales, self.group_size)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bits=4, group_size={self.group_size}, bias={self.bias is not None}"
        )
