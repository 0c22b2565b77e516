"""Online int8/int4 quantization of key and value vectors: the one definition the cache and kernels share.

Granularity is LMDeploy's (`quant_policy` 8 / 4): asymmetric, one scale and one zero point for each
`(batch, head, token)` vector over `head_dim`, computed from that vector alone as it enters the
cache, with no calibration. Per-token parameters are what make the cache appendable: a new token
never changes how older tokens were quantized, so nothing is ever re-quantized and there is no
need for the fp16 "residual" window that per-channel schemes (KIVI, transformers' QuantizedCache)
keep while a group of tokens fills up.

`zero` is the vector's minimum as a float (LMDeploy stores `-min / scale` in code units; the two
are the same affine map), so dequantization is one fused multiply-add: `x = code * scale + zero`.
Both are stored in fp16, and codes are computed against the *stored* fp16 values, which is why the
round-trip error of every element stays within `scale / 2` (see `quantize_kv`).

int4 packing puts element `j` of the first half of `head_dim` in the low nibble and element
`j + head_dim/2` in the high nibble of byte `j` (the "halves" layout LMDeploy uses): both
halves unpack into contiguous slices, with no interleave in torch or in the Triton kernel.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from vlq.errors import UsageError

KV_BITS = (8, 4)
SCALE_DTYPE = torch.float16
#: Smallest normal fp16. Scales are floored here so they never divide by zero (constant vectors)
#: and never fall into fp16's subnormal range, where rounding the scale could lose up to half of it.
MIN_SCALE = 2.0**-14


class QuantizedKV(NamedTuple):
    """Codes and per-vector affine parameters: `x ~= codes * scale + zero`.

    `codes` is uint8 `[..., head_dim]` for 8 bits and `[..., head_dim // 2]` (two codes a byte)
    for 4 bits; `scale` and `zero` are fp16 `[..., 1]`.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor


def check_bits(bits: int) -> None:
    """Raise a one-line `UsageError` unless `bits` is a supported KV cache width."""
    if bits not in KV_BITS:
        raise UsageError(f"KV cache bits must be 8 or 4 (16 means the default fp16 cache), got {bits}")


def max_code(bits: int) -> int:
    return (1 << bits) - 1


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes `[..., D]` in `[0, 15]` -> bytes `[..., D // 2]`: low nibble first half, high nibble second."""
    half = codes.shape[-1] // 2
    if codes.shape[-1] != 2 * half:
        raise ValueError(f"int4 packing needs an even last dimension, got {codes.shape[-1]}")
    return codes[..., :half] | (codes[..., half:] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_int4`: bytes `[..., D // 2]` -> uint8 codes `[..., D]`."""
    return torch.cat((packed & 0xF, packed >> 4), dim=-1)


def quantize_kv(x: torch.Tensor, bits: int) -> QuantizedKV:
    """Quantize each vector of `x [..., head_dim]` on its own min/max.

    Why the error bound holds: `zero` is the minimum rounded to fp16 (exact for fp16/bf16 inputs in
    fp16's range, which is what a KV cache sees), the scale is rounded to a normal fp16 (relative
    error <= 2**-11), and codes are rounded against those stored values. An element inside
    `[zero, zero + max_code * scale]` is then within `scale / 2` of its dequantized value, and the
    maximum, which the rounded scale may leave just outside, overshoots by less than
    `max_code * 2**-11 * scale < scale / 2` before the clamp.
    Rounding is half-up (`floor(v + 0.5)`), as LMDeploy's and vlq's Triton kernels round.
    """
    check_bits(bits)
    top = max_code(bits)
    xf = x.float()
    zero = xf.amin(dim=-1, keepdim=True).to(SCALE_DTYPE)
    zero_f = zero.float()
    scale = ((xf.amax(dim=-1, keepdim=True) - zero_f) / top).clamp_(min=MIN_SCALE).to(SCALE_DTYPE)
    codes = torch.floor((xf - zero_f) / scale.float() + 0.5).clamp_(0, top).to(torch.uint8)
    if bits == 4:
        codes = pack_int4(codes)
    return QuantizedKV(codes, scale, zero)


def dequantize_kv(
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    dtype: torch.dtype = torch.float16,
) -> torch.Tensor:
    """`codes * scale + zero` in fp32, returned as `dtype` `[..., head_dim]`."""
    check_bits(bits)
    q = unpack_int4(codes) if bits == 4 else codes
    return torch.addcmul(zero.float(), q.float(), scale.float()).to(dtype)


def kv_shape(text_config) -> tuple[int, int, int]:
    """(decoder layers, key/value heads, head_dim) of a decoder config, with the usual fallbacks."""
    layers = text_config.num_hidden_layers
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return layers, kv_heads, head_dim


def vector_bytes(bits: int, head_dim: int) -> float:
    """Bytes one cached key (or value) vector takes: codes, plus fp16 scale and zero when quantized."""
    if bits == 16:
        return head_dim * 2.0
    check_bits(bits)
    return head_dim * bits / 8 + 2 * SCALE_DTYPE.itemsize


def cache_bytes_per_token(bits: int, config) -> float:
    """Cache bytes one sequence position costs over all layers, keys and values, scales and zeros included.

    `bits` is 16 (the default fp16/bf16 cache), 8 or 4. With head_dim 128: kv8 is (128 + 4) / 256 =
    0.516x of fp16 and kv4 (64 + 4) / 256 = 0.266x. `config` may be a VLM's: its decoder is used.
    """
    text_config = config.get_text_config(decoder=True)
    layers, kv_heads, head_dim = kv_shape(text_config)
    return 2 * layers * kv_heads * vector_bytes(bits, head_dim)
