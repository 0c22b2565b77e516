"""One Triton launch per decoder layer: quantize the new keys/values into the cache, return all of it dequantized.

Why fused: at batch 1 a transformers decode step is bound by kernel launches, not bytes. Doing the
same work with torch ops (min, max, scale, round, clamp, pack, three slice writes, unpack, FMA,
copy of the new states) costs some twenty launches per layer: on an H100, 7B-shaped eager decode
at batch 1 took 13-25 ms a step longer on that path than with this kernel (fp16 cache: ~23 ms). Here one program owns `BLOCK_T` positions of one (key|value, batch, head) row; positions
before `start` are read from the packed cache and dequantized, positions from `start` on are
loaded from the new states, quantized and written to the cache, and returned exactly (the current
chunk attends to itself in full precision, as transformers' quantized caches also do).

The contract is `append_dequantize_torch` in `vlq.kv.cache`: same storage, same codes (divisions
are IEEE round-to-nearest, `div_rn`, as torch's are), same output up to FMA contraction.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vlq.kv.quant import MIN_SCALE, max_code

#: Positions and strides change every step: specializing on them would compile a kernel per divisibility class.
_DYNAMIC = ("start", "total", "cap", "s_kb", "s_kh", "s_kt", "s_vb", "s_vh", "s_vt")


@triton.jit(do_not_specialize=_DYNAMIC)
def _kv_append_dequant_kernel(
    k_new,
    v_new,
    codes,
    scales,
    zeros,
    out,
    heads,
    start,
    total,
    cap,
    s_kb,
    s_kh,
    s_kt,
    s_vb,
    s_vh,
    s_vt,
    BITS: tl.constexpr,
    TOP: tl.constexpr,
    HALF: tl.constexpr,
    HALF_P2: tl.constexpr,
    BLOCK_T: tl.constexpr,
    MIN_S: tl.constexpr,
):
    g = tl.program_id(0)  # (key|value, batch, head) row of the [2, B, H, ...] storage
    rows = tl.num_programs(0) // 2
    kv = g // rows  # 0: keys, 1: values
    bh = g % rows
    b = bh // heads
    h = bh % heads

    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    d = tl.arange(0, HALF_P2)
    d_ok = d < HALF
    is_new = (t >= start) & (t < total)
    is_old = t < start

    # New positions: exact states, read from the key or the value tensor (the other load is masked off).
    tn = (t - start).to(tl.int64)
    k_off = b.to(tl.int64) * s_kb + h * s_kh + tn[:, None] * s_kt + d[None, :]
    v_off = b.to(tl.int64) * s_vb + h * s_vh + tn[:, None] * s_vt + d[None, :]
    m_new = is_new[:, None] & d_ok[None, :]
    # As tensors, not scalars: the interpreter turns `block_mask & scalar_bool` into int32.
    kv_t = tl.zeros([BLOCK_T], dtype=tl.int32) + kv
    m_k = m_new & (kv_t == 0)[:, None]
    m_v = m_new & (kv_t == 1)[:, None]
    x_lo = tl.load(k_new + k_off, mask=m_k, other=0.0).to(tl.float32)
    x_lo += tl.load(v_new + v_off, mask=m_v, other=0.0).to(tl.float32)
    x_hi = tl.load(k_new + k_off + HALF, mask=m_k, other=0.0).to(tl.float32)
    x_hi += tl.load(v_new + v_off + HALF, mask=m_v, other=0.0).to(tl.float32)

    lo = tl.minimum(
        tl.min(tl.where(d_ok[None, :], x_lo, float("inf")), axis=1),
        tl.min(tl.where(d_ok[None, :], x_hi, float("inf")), axis=1),
    )
    hi = tl.maximum(
        tl.max(tl.where(d_ok[None, :], x_lo, float("-inf")), axis=1),
        tl.max(tl.where(d_ok[None, :], x_hi, float("-inf")), axis=1),
    )
    zero16 = lo.to(tl.float16)
    zero_f = zero16.to(tl.float32)
    scale16 = tl.maximum(tl.math.div_rn(hi - zero_f, TOP * 1.0), MIN_S).to(tl.float16)
    scale_f = scale16.to(tl.float32)
    q_lo = tl.minimum(
        tl.maximum(tl.floor(tl.math.div_rn(x_lo - zero_f[:, None], scale_f[:, None]) + 0.5), 0.0), TOP
    )
    q_hi = tl.minimum(
        tl.maximum(tl.floor(tl.math.div_rn(x_hi - zero_f[:, None], scale_f[:, None]) + 0.5), 0.0), TOP
    )
    q_lo = q_lo.to(tl.uint8)
    q_hi = q_hi.to(tl.uint8)

    row = g.to(tl.int64) * cap + t  # position in the [2*B*H, cap] view of scales/zeros
    tl.store(scales + row, scale16, mask=is_new)
    tl.store(zeros + row, zero16, mask=is_new)
    m_old = is_old[:, None] & d_ok[None, :]
    if BITS == 4:
        c_ptr = codes + row[:, None] * HALF + d[None, :]
        tl.store(c_ptr, q_lo | (q_hi << 4), mask=m_new)
        packed = tl.load(c_ptr, mask=m_old, other=0)
        c_lo = packed & 0xF
        c_hi = packed >> 4
    else:
        c_ptr = codes + row[:, None] * (2 * HALF) + d[None, :]
        tl.store(c_ptr, q_lo, mask=m_new)
        tl.store(c_ptr + HALF, q_hi, mask=m_new)
        c_lo = tl.load(c_ptr, mask=m_old, other=0)
        c_hi = tl.load(c_ptr + HALF, mask=m_old, other=0)

    # Old positions: dequantize. (Their codes are loaded only where is_old, so the stores above never race them.)
    s_old = tl.load(scales + row, mask=is_old, other=0.0).to(tl.float32)
    z_old = tl.load(zeros + row, mask=is_old, other=0.0).to(tl.float32)
    y_lo = c_lo.to(tl.float32) * s_old[:, None] + z_old[:, None]
    y_hi = c_hi.to(tl.float32) * s_old[:, None] + z_old[:, None]
    y_lo = tl.where(is_new[:, None], x_lo, y_lo)
    y_hi = tl.where(is_new[:, None], x_hi, y_hi)

    o_ptr = out + (g.to(tl.int64) * total + t)[:, None] * (2 * HALF) + d[None, :]
    m_out = (t < total)[:, None] & d_ok[None, :]
    tl.store(o_ptr, y_lo.to(out.dtype.element_ty), mask=m_out)
    tl.store(o_ptr + HALF, y_hi.to(out.dtype.element_ty), mask=m_out)


def append_dequantize_triton(
    key_states: torch.Tensor,
    value_states: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    start: int,
    bits: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write `key_states`/`value_states [B, H, n, D]` at positions `start:start+n` of the packed cache
    (`codes [2, B, H, cap, D*bits/8]`, `scale`/`zero [2, B, H, cap, 1]`, contiguous) and return the
    keys and values of positions `0:start+n`, `[B, H, start+n, D]` in the states' dtype."""
    batch, heads, n, head_dim = key_states.shape
    cap = codes.shape[3]
    total = start + n
    if key_states.stride(-1) != 1:
        key_states = key_states.contiguous()
    if value_states.stride(-1) != 1:
        value_states = value_states.contiguous()
    out = torch.empty((2, batch, heads, total, head_dim), dtype=key_states.dtype, device=key_states.device)
    half = head_dim // 2
    # 16 positions x 4 warps keeps the kernel at ~110 registers a thread (32 positions: ~226, half the occupancy).
    block_t = 16
    grid = (2 * batch * heads, triton.cdiv(total, block_t))
    _kv_append_dequant_kernel[grid](
        key_states,
        value_states,
        codes,
        scale,
        zero,
        out,
        heads,
        start,
        total,
        cap,
        key_states.stride(0),
        key_states.stride(1),
        key_states.stride(2),
        value_states.stride(0),
        value_states.stride(1),
        value_states.stride(2),
        BITS=bits,
        TOP=max_code(bits),
        HALF=half,
        HALF_P2=triton.next_power_of_2(half),
        BLOCK_T=block_t,
        MIN_S=MIN_SCALE,
        num_warps=4,
    )
    return out[0], out[1]
