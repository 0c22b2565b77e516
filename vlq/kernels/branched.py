"""Int4 weights for linears that carry extra branches (XComposer2's PLoRA) without rewriting them.

PLoRA is an `nn.Linear` subclass whose forward calls `super().forward(x)` for the main weight and
adds a low-rank branch on image tokens. Swapping the object's class for a subclass that puts an
int4 forward between PLoRA and `nn.Linear` in the method resolution order keeps PLoRA's own
forward, its children (`Plora_A`, `Plora_B`, 16 bit) and its state-dict names, while the main
weight becomes AutoAWQ GEMM buffers.
"""

from __future__ import annotations

import torch
from torch import nn

from vlq.awq.pack import CODES_PER_INT32
from vlq.kernels.linear import AwqLinear

_INT4_CLASSES: dict[type, type] = {}


class _Int4Forward(nn.Linear):
    """Where a subclass calls `nn.Linear.forward`, run the int4 matmul instead."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return AwqLinear.forward(self, x)


def _int4_class(cls: type) -> type:
    if cls not in _INT4_CLASSES:
        _INT4_CLASSES[cls] = type(f"Int4{cls.__name__}", (cls, _Int4Forward), {"__module__": cls.__module__})
    return _INT4_CLASSES[cls]


def to_int4(
    module: nn.Linear, group_size: int, scale_dtype: torch.dtype, tensors: dict | None = None
) -> nn.Module:
    """The int4 replacement of `module`: a new `AwqLinear` for a plain Linear, the same object
    re-classed for a subclass. `tensors` (qweight, qzeros, scales) fill it; None leaves empty meta
    buffers for a checkpoint to load into."""
    if type(module) is nn.Linear:
        replacement = AwqLinear(
            module.in_features, module.out_features, group_size, module.bias is not None, scale_dtype, "meta"
        )
        if module.bias is not None and tensors is not None:
            replacement.bias = module.bias.detach().to(scale_dtype).clone()
    else:
        replacement = module
        del replacement._parameters["weight"]
        packed_out = module.out_features // CODES_PER_INT32
        groups = module.in_features // group_size
        replacement.register_buffer(
            "qweight", torch.empty(module.in_features, packed_out, dtype=torch.int32, device="meta")
        )
        replacement.register_buffer(
            "qzeros", torch.empty(groups, packed_out, dtype=torch.int32, device="meta")
        )
        replacement.register_buffer(
            "scales", torch.empty(groups, module.out_features, dtype=scale_dtype, device="meta")
        )
        replacement.group_size = group_size
        replacement.__class__ = _int4_class(type(module))
    for name, tensor in (tensors or {}).items():
        setattr(replacement, name, tensor)
    return replacement
