"""w4a16 matrix multiply over AutoAWQ GEMM tensors: `x @ dequantize(qweight)`.

This file holds the contract (argument checks) and the dispatch. The torch path (dequantize,
then matmul) runs on every device and is the reference the Triton kernels are tested against;
CUDA tensors in fp16/bf16 go to `vlq.kernels.triton_w4a16`, imported only then, so CPU-only
installs never need Triton. Every function takes either AutoAWQ's GEMM tensors or vlq's
load-time layout (`vlq.kernels.repack`, marked by uint32 `qzeros`); `AwqLinear` switches to the
latter at its first CUDA forward.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from vlq.awq.pack import CODES_PER_INT32, dequantize_awq
from vlq.kernels.repack import is_repacked, repackable, unrepack, words_for

KERNEL_DTYPES = (torch.float16, torch.bfloat16)


def check_w4a16_args(
    x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> None:
    """Raise ValueError naming the first tensor whose shape, dtype or device breaks the AWQ GEMM contract
    (or vlq's layout's, for uint32 `qzeros`)."""
    if is_repacked(qzeros):
        _check_repacked(qweight, qzeros, scales, group_size)
        in_features = qweight.shape[1] * CODES_PER_INT32
    else:
        in_features = _check_awq(qweight, qzeros, scales, group_size)
    if not x.is_floating_point() or x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"x must be a float tensor [..., {in_features}], got {x.dtype} {tuple(x.shape)}")
    devices = {t.device for t in (x, qweight, qzeros, scales)}
    if len(devices) > 1:
        raise ValueError(
            f"x, qweight, qzeros and scales must be on one device, got {sorted(map(str, devices))}"
        )


def _check_repacked(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> None:
    if qweight.dim() != 2 or qweight.dtype != torch.int32:
        raise ValueError(
            f"qweight must be a 2-D int32 tensor [out, in/8], got {qweight.dtype} {tuple(qweight.shape)}"
        )
    out_features, in_features = qweight.shape[0], qweight.shape[1] * CODES_PER_INT32
    if group_size <= 0 or not repackable(in_features, group_size):
        raise ValueError(f"group size {group_size} and in_features {in_features} do not fit vlq's layout")
    groups = in_features // group_size
    if tuple(qzeros.shape) != (groups, out_features):
        raise ValueError(f"qzeros must be uint32 {(groups, out_features)}, got {tuple(qzeros.shape)}")
    if not scales.is_floating_point() or tuple(scales.shape) != (groups, out_features):
        raise ValueError(
            f"scales must be a float tensor {(groups, out_features)} for group size {group_size}, "
            f"got {scales.dtype} {tuple(scales.shape)}"
        )


def _check_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> int:
    if qweight.dim() != 2 or qweight.dtype != torch.int32:
        raise ValueError(
            f"qweight must be a 2-D int32 tensor [in, out/8], got {qweight.dtype} {tuple(qweight.shape)}"
        )
    in_features = qweight.shape[0]
    out_features = qweight.shape[1] * CODES_PER_INT32
    if group_size <= 0 or in_features % group_size:
        raise ValueError(f"group size {group_size} must be positive and divide in_features {in_features}")
    groups = in_features // group_size
    if qzeros.dtype != torch.int32 or tuple(qzeros.shape) != (groups, qweight.shape[1]):
        raise ValueError(
            f"qzeros must be int32 {(groups, qweight.shape[1])} for group size {group_size}, "
            f"got {qzeros.dtype} {tuple(qzeros.shape)}"
        )
    if not scales.is_floating_point() or tuple(scales.shape) != (groups, out_features):
        raise ValueError(
            f"scales must be a float tensor {(groups, out_features)} for group size {group_size}, "
            f"got {scales.dtype} {tuple(scales.shape)}"
        )
    return in_features


def w4a16_matmul_reference(
    x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> torch.Tensor:
    """`x [..., in] @ W [in, out]` with W dequantized in `x`'s dtype."""
    if is_repacked(qzeros):
        qweight, qzeros = unrepack(qweight, qzeros)
    weight = dequantize_awq(qweight, qzeros, scales.to(x.dtype), group_size)
    return x @ weight


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def w4a16_backend(x: torch.Tensor, group_size: int) -> str:
    """`"triton"` for CUDA fp16/bf16 inputs the kernels cover (K steps of 16+), else `"torch"`."""
    if x.is_cuda and x.dtype in KERNEL_DTYPES and group_size % 16 == 0 and _triton_installed():
        return "triton"
    return "torch"


def w4a16_matmul(
    x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> torch.Tensor:
    """`x [..., in] @ dequant(W) [in, out]` on the fastest path for `x`'s device, dtype and token count."""
    check_w4a16_args(x, qweight, qzeros, scales, group_size)
    if w4a16_backend(x, group_size) == "torch":
        return w4a16_matmul_reference(x, qweight, qzeros, scales, group_size)
    from vlq.kernels.triton_w4a16 import w4a16_matmul_rp, w4a16_matmul_triton

    x2d = x.reshape(-1, x.shape[-1])
    if x2d.stride(-1) != 1 or x2d.stride(0) != x2d.shape[1]:
        x2d = x2d.contiguous()
    if is_repacked(qzeros):
        out = w4a16_matmul_rp(x2d, qweight, words_for(qzeros, scales.to(x.dtype)), group_size)
    else:
        out = w4a16_matmul_triton(x2d, qweight, qzeros, scales.to(x.dtype), group_size)
    return out.reshape(*x.shape[:-1], out.shape[-1])
