"""Triton kernels for w4a16.

Over vlq's load-time layout (`vlq.kernels.repack`), what `AwqLinear` runs:
- `w4a16_gemv_kernel`: one token (CUDA-core FMAs, several 256-blocks of K in flight per program).
- `w4a16_rp_kernel`: 2 to 384 tokens (tensor cores; one dot per 256-block of K, or per group
  when folded: scale applied after the dot).
- `w4a16_rp_streamk_kernel`: the same tiles over a grid of one or two programs per SM, each an
  equal run of (tile, 256-block) units (stream-K), where the sweep found it faster (wide N, 64 to
  256 tokens).
- `rp_dequantize_kernel`: the dense weight, chunk by chunk, for cuBLAS at many tokens.
Settings per problem size: `pick_rp_config` (the sweep's table for the GPU model in
`vlq.kernels.tuned`, else `heuristic_rp_config`); a setting that needs more shared memory than the
GPU has steps down (`run_rp`).

Over AutoAWQ GEMM tensors read in place (no repacking), the path before the repack:
- `w4a16_gemm_kernel` (tiled): a program owns a `[BLOCK_M, BLOCK_N]` output tile and a
  contiguous slice of K (split-K when the grid would otherwise leave SMs idle); each K step
  unpacks `[BLOCK_K, BLOCK_N / 8]` int32 words, dequantizes them in registers and feeds a
  tensor-core dot. Used from 1 to 255 tokens.
- `w4a16_decode_kernel` (transposed, few tokens, large weights): see its docstring.
- `awq_dequantize_kernel`: the dense weight for cuBLAS from 256 tokens on (`pick_config`).

Why the magic-number unpack: a 4-bit code `q` OR-ed into the bits of OFFSET = 1024.0 (fp16) or
128.0 (bf16) *is* `OFFSET + q` as a float, which skips the slow int->float conversion;
subtracting `OFFSET + zero` (unpacked the same way) gives `q - zero` exactly, and one multiply by
the scale rounds exactly as the torch reference does.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

# Why the pairs: AWQ_PACK_ORDER puts logical columns (0, 1) at bits (0, 16), (2, 3) at (4, 20),
# (4, 5) at (8, 24) and (6, 7) at (12, 28), so one shift and one mask `0x000F000F` lift two
# neighbouring codes at once, and OR-ing `0x64006400` (two fp16 1024.0) makes both floats.


@triton.jit
def _halves(pair, dtype: tl.constexpr):
    """Split an int32 holding two 16-bit floats into (low, high) tensors of `dtype`."""
    low = (pair & 0xFFFF).to(tl.int16).to(dtype, bitcast=True)
    high = (pair >> 16).to(tl.int16).to(dtype, bitcast=True)
    return low, high


@triton.jit
def _unpack_offset(packed, MAGIC: tl.constexpr, dtype: tl.constexpr):
    """AWQ int32 words `[..., C]` -> `OFFSET + code` in `dtype`, `[..., 8C]` in logical column order.

    MAGIC is OFFSET's bit pattern repeated in both halves of an int32.
    """
    c0, c1 = _halves((packed & 0x000F000F) | MAGIC, dtype)
    c2, c3 = _halves(((packed >> 4) & 0x000F000F) | MAGIC, dtype)
    c4, c5 = _halves(((packed >> 8) & 0x000F000F) | MAGIC, dtype)
    c6, c7 = _halves(((packed >> 12) & 0x000F000F) | MAGIC, dtype)
    # interleave(a, b)[2i + j] = (a, b)[j][i]; three levels put c_r at 8i + r.
    even = tl.interleave(tl.interleave(c0, c4), tl.interleave(c2, c6))
    odd = tl.interleave(tl.interleave(c1, c5), tl.interleave(c3, c7))
    return tl.interleave(even, odd)


@triton.jit
def _k_slice(steps, split_k, pid_k):
    """This program's share `[first, last)` of `steps` K steps cut `split_k` ways."""
    per_split = tl.cdiv(steps, split_k)
    first = pid_k * per_split
    return first, tl.minimum(first + per_split, steps)


@triton.jit
def _store(out_ptrs, acc, mask, ATOMIC: tl.constexpr):
    """The result in the output's dtype: stored, or atomically added as one split-K partial."""
    value = acc.to(out_ptrs.dtype.element_ty)
    if ATOMIC:
        tl.atomic_add(out_ptrs, value, mask=mask, sem="relaxed")
    else:
        tl.store(out_ptrs, value, mask=mask)


@triton.jit
def w4a16_gemm_kernel(
    x_ptr,
    qweight_ptr,
    qzeros_ptr,
    scales_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_om,
    packed_n,
    split_k,
    group_size,
    MAGIC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    ATOMIC: tl.constexpr,
):
    """`out[M, N] (+)= x[M, K] @ dequant(W)[K, N]` for one output tile and one K slice.

    `packed_n` is N / 8 (passed so Triton sees its divisibility and vectorizes the row loads).
    `BLOCK_K` divides `group_size`, so one K step sees a single row of scales and zeros.
    ATOMIC: several K slices add into a zeroed `out` (split-K).
    """
    dtype: tl.constexpr = x_ptr.dtype.element_ty
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    # Grouped ordering: GROUP_M row tiles share each column strip, so its weights stay in L2.
    width = GROUP_M * grid_n
    group_first_m = (pid // width) * GROUP_M
    group_rows = tl.minimum(grid_m - group_first_m, GROUP_M)
    pid_m = group_first_m + (pid % width) % group_rows
    pid_n = (pid % width) // group_rows

    PACKED_BLOCK_N: tl.constexpr = BLOCK_N // 8
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_pn = pid_n * PACKED_BLOCK_N + tl.arange(0, PACKED_BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    mask_pn = offs_pn < packed_n

    steps = K // BLOCK_K
    first, last = _k_slice(steps, split_k, pid_k)

    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + (first * BLOCK_K + offs_k)[None, :]
    w_ptrs = qweight_ptr + (first * BLOCK_K + offs_k)[:, None] * packed_n + offs_pn[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(first, last):
        group = (step * BLOCK_K) // group_size
        x = tl.load(x_ptrs, mask=mask_m[:, None], other=0.0)
        packed = tl.load(w_ptrs, mask=mask_pn[None, :], other=0)
        zeros = _unpack_offset(
            tl.load(qzeros_ptr + group * packed_n + offs_pn, mask=mask_pn, other=0), MAGIC, dtype
        )
        scales = tl.load(scales_ptr + group * N + offs_n, mask=mask_n, other=0.0)
        codes = _unpack_offset(packed, MAGIC, dtype)
        acc = tl.dot(x, (codes - zeros[None, :]) * scales[None, :], acc)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K * packed_n

    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    _store(out_ptrs, acc, mask_m[:, None] & mask_n[None, :], ATOMIC)


# Inline PTX for the decode kernel: two AWQ words (rows k and k+1 of one packed column) in, the
# eight logical columns out as packed pairs {code(k), code(k+1)} (OFFSET + code in each half), the
# register layout the tensor-core operand wants. lop3 0xEA is (a & b) | c; prmt 0x5410 / 0x7632
# take the low / high halves of both words.
_UNPACK_PTX = """
{
.reg .b32 p0, p1, t0, t1;
lop3.b32 p0, $8, 0x000F000F, MAGIC, 0xea;
lop3.b32 p1, $9, 0x000F000F, MAGIC, 0xea;
prmt.b32 $0, p0, p1, 0x5410;
prmt.b32 $1, p0, p1, 0x7632;
shr.u32 t0, $8, 4;
shr.u32 t1, $9, 4;
lop3.b32 p0, t0, 0x000F000F, MAGIC, 0xea;
lop3.b32 p1, t1, 0x000F000F, MAGIC, 0xea;
prmt.b32 $2, p0, p1, 0x5410;
prmt.b32 $3, p0, p1, 0x7632;
shr.u32 t0, $8, 8;
shr.u32 t1, $9, 8;
lop3.b32 p0, t0, 0x000F000F, MAGIC, 0xea;
lop3.b32 p1, t1, 0x000F000F, MAGIC, 0xea;
prmt.b32 $4, p0, p1, 0x5410;
prmt.b32 $5, p0, p1, 0x7632;
shr.u32 t0, $8, 12;
shr.u32 t1, $9, 12;
lop3.b32 p0, t0, 0x000F000F, MAGIC, 0xea;
lop3.b32 p1, t1, 0x000F000F, MAGIC, 0xea;
prmt.b32 $6, p0, p1, 0x5410;
prmt.b32 $7, p0, p1, 0x7632;
}
"""
_UNPACK_PTX_F16 = tl.constexpr(_UNPACK_PTX.replace("MAGIC", "0x64006400"))
_UNPACK_PTX_BF16 = tl.constexpr(_UNPACK_PTX.replace("MAGIC", "0x43004300"))


# Inline PTX for vlq's layout (`vlq.kernels.repack`): words 2p and 2p + 1 of a row in, its eight
# chunks out, each as the packed pair {position 2p, position 2p + 1}. The layout keeps a chunk's
# two neighbouring positions in one word, 16 bits apart, so each pair is one shift and one lop3.
# Triton hands a thread's consecutive elements to one instance (pack=2), which for a word tile
# loaded along its contiguous last axis are words 2p and 2p + 1 of one row.
_RP_UNPACK_PTX = """
{
.reg .b32 t0, t1;
lop3.b32 $0, $8, 0x000F000F, MAGIC, 0xea;
lop3.b32 $4, $9, 0x000F000F, MAGIC, 0xea;
shr.u32 t0, $8, 4;
shr.u32 t1, $9, 4;
lop3.b32 $1, t0, 0x000F000F, MAGIC, 0xea;
lop3.b32 $5, t1, 0x000F000F, MAGIC, 0xea;
shr.u32 t0, $8, 8;
shr.u32 t1, $9, 8;
lop3.b32 $2, t0, 0x000F000F, MAGIC, 0xea;
lop3.b32 $6, t1, 0x000F000F, MAGIC, 0xea;
shr.u32 t0, $8, 12;
shr.u32 t1, $9, 12;
lop3.b32 $3, t0, 0x000F000F, MAGIC, 0xea;
lop3.b32 $7, t1, 0x000F000F, MAGIC, 0xea;
}
"""
_RP_UNPACK_PTX_F16 = tl.constexpr(_RP_UNPACK_PTX.replace("MAGIC", "0x64006400"))
_RP_UNPACK_PTX_BF16 = tl.constexpr(_RP_UNPACK_PTX.replace("MAGIC", "0x43004300"))


@triton.jit
def _chunk_pairs(words, C: tl.constexpr, MAGIC: tl.constexpr, dtype: tl.constexpr):
    """Chunk C of a word's four, positions 2p and 2p + 1 side by side (portable `_rp_columns`)."""
    return tl.interleave(_nibble(words, 4 * C, MAGIC, dtype), _nibble(words, 16 + 4 * C, MAGIC, dtype))


@triton.jit
def _rp_columns(words, MAGIC: tl.constexpr, dtype: tl.constexpr, USE_PTX: tl.constexpr):
    """The eight chunks of a `[..., 32]` tile of vlq-layout words, each `[..., 32]`: (OFFSET + code)
    in dtype at the chunk's positions 0..31 (`vlq.kernels.repack`)."""
    if USE_PTX:
        if dtype == tl.float16:
            return tl.inline_asm_elementwise(
                _RP_UNPACK_PTX_F16, "=r,=r,=r,=r,=r,=r,=r,=r,r,r", [words], dtype=(tl.float16,) * 8, is_pure=True, pack=2
            )
        else:
            return tl.inline_asm_elementwise(
                _RP_UNPACK_PTX_BF16, "=r,=r,=r,=r,=r,=r,=r,=r,r,r", [words], dtype=(tl.bfloat16,) * 8, is_pure=True, pack=2
            )
    else:
        low, high = tl.split(tl.reshape(words, words.shape[:-1] + (words.shape[-1] // 2, 2)))
        return (
            _chunk_pairs(low, 0, MAGIC, dtype),
            _chunk_pairs(low, 1, MAGIC, dtype),
            _chunk_pairs(low, 2, MAGIC, dtype),
            _chunk_pairs(low, 3, MAGIC, dtype),
            _chunk_pairs(high, 0, MAGIC, dtype),
            _chunk_pairs(high, 1, MAGIC, dtype),
            _chunk_pairs(high, 2, MAGIC, dtype),
            _chunk_pairs(high, 3, MAGIC, dtype),
        )


@triton.jit
def _nibble(packed, SHIFT: tl.constexpr, MAGIC: tl.constexpr, dtype: tl.constexpr):
    """`OFFSET + code` of the nibble at bit SHIFT of every word, elementwise."""
    return (((packed >> SHIFT) & 0xF) | (MAGIC & 0xFFFF)).to(tl.int16).to(dtype, bitcast=True)


@triton.jit
def _columns(packed, MAGIC: tl.constexpr, dtype: tl.constexpr, USE_PTX: tl.constexpr):
    """The eight logical columns of AWQ words, each the words' shape: (OFFSET + code) in dtype."""
    if USE_PTX:
        if dtype == tl.float16:
            return tl.inline_asm_elementwise(
                _UNPACK_PTX_F16,
                "=r,=r,=r,=r,=r,=r,=r,=r,r,r",
                [packed],
                dtype=(tl.float16,) * 8,
                is_pure=True,
                pack=2,
            )
        else:
            return tl.inline_asm_elementwise(
                _UNPACK_PTX_BF16,
                "=r,=r,=r,=r,=r,=r,=r,=r,r,r",
                [packed],
                dtype=(tl.bfloat16,) * 8,
                is_pure=True,
                pack=2,
            )
    else:
        return (
            _nibble(packed, 0, MAGIC, dtype),
            _nibble(packed, 16, MAGIC, dtype),
            _nibble(packed, 4, MAGIC, dtype),
            _nibble(packed, 20, MAGIC, dtype),
            _nibble(packed, 8, MAGIC, dtype),
            _nibble(packed, 24, MAGIC, dtype),
            _nibble(packed, 12, MAGIC, dtype),
            _nibble(packed, 28, MAGIC, dtype),
        )


@triton.jit
def _column_dot(codes, zeros, scales_ptr, offs_pn, mask_pn, COLUMN: tl.constexpr, x_t, x_sum, acc):
    """acc[p, t] += scale * sum_k (code - zero) * x for logical column 8p + COLUMN.

    The dot takes the raw `OFFSET + code` values; `x @ (OFFSET + code) - sum(x) * (OFFSET + zero)`
    is `x @ (code - zero)`, so zero and scale cost one op per output instead of two per weight.
    """
    scales = tl.load(scales_ptr + offs_pn * 8 + COLUMN, mask=mask_pn, other=0.0)
    partial = tl.dot(codes, x_t)
    return acc + (partial - zeros.to(tl.float32)[:, None] * x_sum[None, :]) * scales.to(tl.float32)[:, None]


@triton.jit
def _store_column(out_ptrs, acc, mask, COLUMN: tl.constexpr, ATOMIC: tl.constexpr):
    _store(out_ptrs + COLUMN, acc, mask, ATOMIC)


@triton.jit
def w4a16_decode_kernel(
    x_ptr,
    qweight_ptr,
    qzeros_ptr,
    scales_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_om,
    packed_n,
    split_k,
    group_size,
    MAGIC: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_PTX: tl.constexpr,
    ATOMIC: tl.constexpr,
):
    """Few-token GEMM computed transposed, `out^T = W^T x^T`, one dot per logical column in a word.

    Why transposed: the dequantized weights become the dot's left operand, which the tensor cores
    read straight from registers, so the weight tile never goes through shared memory; only the
    tiny activation tile does. Why eight dots: logical column 8p + r of packed column p comes from
    the same nibble r of every word, so each dot's operand is an elementwise function of the loaded
    `[BLOCK_P, BLOCK_K]` words and no shuffle is needed; the eight results land in columns 8p + r.
    """
    dtype: tl.constexpr = x_ptr.dtype.element_ty
    pid_p = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_t = tl.program_id(2)
    offs_pn = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    mask_pn = offs_pn < packed_n
    mask_t = offs_t < M

    steps = K // BLOCK_K
    first, last = _k_slice(steps, split_k, pid_k)
    w_ptrs = qweight_ptr + (first * BLOCK_K + offs_k)[None, :] * packed_n + offs_pn[:, None]
    x_ptrs = x_ptr + offs_t[None, :] * stride_xm + (first * BLOCK_K + offs_k)[:, None]
    acc0 = tl.zeros((BLOCK_P, BLOCK_T), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_P, BLOCK_T), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_P, BLOCK_T), dtype=tl.float32)
    acc3 = tl.zeros((BLOCK_P, BLOCK_T), dtype=tl.float32)
    acc4 = tl.zeros((BLOCK_P, BLOCK_T), dtype=tl.float32)
    acc5 = tl.zeros((BLOCK_P, BLOCK_T), dtype=tl.float32)
    acc6 = tl.zeros((BLOCK_P, BLOCK_T), dtype=tl.float32)
    acc7 = tl.zeros((BLOCK_P, BLOCK_T), dtype=tl.float32)
    for step in range(first, last):
        group = (step * BLOCK_K) // group_size
        packed = tl.load(w_ptrs, mask=mask_pn[:, None], other=0)
        x_t = tl.load(x_ptrs, mask=mask_t[None, :], other=0.0)
        x_sum = tl.sum(x_t.to(tl.float32), axis=0)
        zeros = tl.load(qzeros_ptr + group * packed_n + offs_pn, mask=mask_pn, other=0)
        c0, c1, c2, c3, c4, c5, c6, c7 = _columns(packed, MAGIC, dtype, USE_PTX)
        s_ptr = scales_ptr + group * N
        acc0 = _column_dot(c0, _nibble(zeros, 0, MAGIC, dtype), s_ptr, offs_pn, mask_pn, 0, x_t, x_sum, acc0)
        acc1 = _column_dot(c1, _nibble(zeros, 16, MAGIC, dtype), s_ptr, offs_pn, mask_pn, 1, x_t, x_sum, acc1)
        acc2 = _column_dot(c2, _nibble(zeros, 4, MAGIC, dtype), s_ptr, offs_pn, mask_pn, 2, x_t, x_sum, acc2)
        acc3 = _column_dot(c3, _nibble(zeros, 20, MAGIC, dtype), s_ptr, offs_pn, mask_pn, 3, x_t, x_sum, acc3)
        acc4 = _column_dot(c4, _nibble(zeros, 8, MAGIC, dtype), s_ptr, offs_pn, mask_pn, 4, x_t, x_sum, acc4)
        acc5 = _column_dot(c5, _nibble(zeros, 24, MAGIC, dtype), s_ptr, offs_pn, mask_pn, 5, x_t, x_sum, acc5)
        acc6 = _column_dot(c6, _nibble(zeros, 12, MAGIC, dtype), s_ptr, offs_pn, mask_pn, 6, x_t, x_sum, acc6)
        acc7 = _column_dot(c7, _nibble(zeros, 28, MAGIC, dtype), s_ptr, offs_pn, mask_pn, 7, x_t, x_sum, acc7)
        w_ptrs += BLOCK_K * packed_n
        x_ptrs += BLOCK_K

    out_ptrs = out_ptr + offs_t[None, :] * stride_om + offs_pn[:, None] * 8
    mask = mask_pn[:, None] & mask_t[None, :]
    _store_column(out_ptrs, acc0, mask, 0, ATOMIC)
    _store_column(out_ptrs, acc1, mask, 1, ATOMIC)
    _store_column(out_ptrs, acc2, mask, 2, ATOMIC)
    _store_column(out_ptrs, acc3, mask, 3, ATOMIC)
    _store_column(out_ptrs, acc4, mask, 4, ATOMIC)
    _store_column(out_ptrs, acc5, mask, 5, ATOMIC)
    _store_column(out_ptrs, acc6, mask, 6, ATOMIC)
    _store_column(out_ptrs, acc7, mask, 7, ATOMIC)


@triton.jit
def awq_dequantize_kernel(
    qweight_ptr,
    qzeros_ptr,
    scales_ptr,
    out_ptr,
    K,
    N,
    packed_n,
    group_size,
    MAGIC: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Dense `[K, N]` weight in out's dtype, for the prefill path that hands it to cuBLAS.

    `BLOCK_K` divides `group_size`, so a tile has one row of scales and zeros.
    """
    dtype: tl.constexpr = out_ptr.dtype.element_ty
    pid_k = tl.program_id(0)
    pid_n = tl.program_id(1)
    PACKED_BLOCK_N: tl.constexpr = BLOCK_N // 8
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_pn = pid_n * PACKED_BLOCK_N + tl.arange(0, PACKED_BLOCK_N)
    mask_pn = offs_pn < packed_n
    mask_n = offs_n < N
    group = pid_k * BLOCK_K // group_size
    packed = tl.load(
        qweight_ptr + offs_k[:, None] * packed_n + offs_pn[None, :], mask=mask_pn[None, :], other=0
    )
    zeros = _unpack_offset(
        tl.load(qzeros_ptr + group * packed_n + offs_pn, mask=mask_pn, other=0), MAGIC, dtype
    )
    scales = tl.load(scales_ptr + group * N + offs_n, mask=mask_n, other=0.0)
    weight = (_unpack_offset(packed, MAGIC, dtype) - zeros[None, :]) * scales[None, :]
    tl.store(out_ptr + offs_k[:, None] * N + offs_n[None, :], weight, mask=mask_n[None, :])


@triton.jit
def _scale_zero(words, MAGIC: tl.constexpr, dtype: tl.constexpr):
    """vlq's scale-and-zero words -> (scale, `OFFSET + zero`) in dtype: the scale's bits are the low
    half, and the zero code OR-ed into OFFSET's bits is `OFFSET + zero`, as for the weight codes."""
    s = (words & 0xFFFF).to(tl.int16).to(dtype, bitcast=True)
    z = ((words >> 16) | (MAGIC & 0xFFFF)).to(tl.int16).to(dtype, bitcast=True)
    return s, z


@triton.jit
def _group_vectors(scale_zeros_ptr, g, N, offs_n, mask_n, MAGIC: tl.constexpr, dtype: tl.constexpr):
    """Scale and `OFFSET + zero` of group `g` for the rows `offs_n` (vlq layout: `[G, N]` words)."""
    return _scale_zero(tl.load(scale_zeros_ptr + g * N + offs_n, mask=mask_n, other=0), MAGIC, dtype)


@triton.jit
def _block_vectors(
    scale_zeros_ptr, blk, N, offs_n, mask_n, MAGIC: tl.constexpr, GROUP: tl.constexpr, dtype: tl.constexpr
):
    """Scales and `OFFSET + zero` of the groups of 256-block `blk`, `[BLOCK_N, groups per block]` each."""
    GROUPS_PER_BLOCK: tl.constexpr = 256 // GROUP if GROUP < 256 else 1
    groups = (blk * 256 + tl.arange(0, GROUPS_PER_BLOCK) * GROUP) // GROUP
    return _group_vectors(scale_zeros_ptr, groups[None, :], N, offs_n[:, None], mask_n[:, None], MAGIC, dtype)


@triton.jit
def _cat(a, b):
    """`[rows, W]` tiles a, b -> `[rows, 2W]`: a's columns, then b's (a register relabelling, no moves)."""
    t = tl.permute(tl.join(a, b), 0, 2, 1)
    return tl.reshape(t, (t.shape[0], t.shape[1] * t.shape[2]))


@triton.jit
def _cat4(t, FIRST: tl.constexpr):
    return _cat(_cat(t[FIRST], t[FIRST + 1]), _cat(t[FIRST + 2], t[FIRST + 3]))


@triton.jit
def _group_dot(codes, s, x_rows, mask_m, acc, FIRST_K: tl.constexpr, WIDTH: tl.constexpr):
    """acc += s * ((q - z) @ x) over the block's K columns FIRST_K .. + WIDTH, which share one
    group: `codes` already has the zero taken off (exact small integers), and the scale is applied
    once per output instead of once per weight."""
    x = tl.load(x_rows + FIRST_K + tl.arange(0, WIDTH)[None, :], mask=mask_m[:, None], other=0.0)
    return acc + tl.dot(codes, tl.trans(x)) * s.to(tl.float32)[:, None]


@triton.jit
def _rp_slice(
    x_ptr,
    qweight_ptr,
    scale_zeros_ptr,
    out_ptr,
    M,
    N,
    stride_xm,
    stride_om,
    packed_k,
    pid_n,
    pid_m,
    first,
    last,
    MAGIC: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FOLD: tl.constexpr,
    USE_PTX: tl.constexpr,
    ATOMIC: tl.constexpr,
):
    """Output tile (pid_n, pid_m) over the 256-blocks `first .. last` of K (`w4a16_rp_kernel`)."""
    dtype: tl.constexpr = x_ptr.dtype.element_ty
    GROUPS_PER_BLOCK: tl.constexpr = 256 // GROUP if GROUP < 256 else 1
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_j = tl.arange(0, 32)
    mask_n = offs_n < N
    mask_m = offs_m < M

    # The launcher never makes an empty slice (`nonempty_split`). Saying so drops the loop's
    # zero-trip path, whose zeroing of the accumulator LLVM places between the last wgmma and its
    # wait; ptxas then serializes every wgmma of the kernel (warning C7515 in the sm_90 compile of
    # the 8-warp tiles).
    tl.assume(last > first)
    w_ptrs = qweight_ptr + offs_n[:, None] * packed_k + (first * 32 + offs_j)[None, :]
    x_rows = x_ptr + offs_m[:, None] * stride_xm + first * 256
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for blk in range(first, last):
        s, z = _block_vectors(scale_zeros_ptr, blk, N, offs_n, mask_n, MAGIC, GROUP, dtype)
        codes = _rp_columns(tl.load(w_ptrs, mask=mask_n[:, None], other=0), MAGIC, dtype, USE_PTX)
        # per chunk r: the codes less the zero (`(OFFSET + q) - (OFFSET + z)`, exact) and the scale
        ss = _per_chunk(s, GROUPS_PER_BLOCK)
        zz = _per_chunk(z, GROUPS_PER_BLOCK)
        q = (
            codes[0] - zz[0][:, None],
            codes[1] - zz[1][:, None],
            codes[2] - zz[2][:, None],
            codes[3] - zz[3][:, None],
            codes[4] - zz[4][:, None],
            codes[5] - zz[5][:, None],
            codes[6] - zz[6][:, None],
            codes[7] - zz[7][:, None],
        )
        if not FOLD:  # dequantized: the one multiply rounds as the torch reference does
            w = (
                q[0] * ss[0][:, None],
                q[1] * ss[1][:, None],
                q[2] * ss[2][:, None],
                q[3] * ss[3][:, None],
                q[4] * ss[4][:, None],
                q[5] * ss[5][:, None],
                q[6] * ss[6][:, None],
                q[7] * ss[7][:, None],
            )
            x = tl.load(x_rows + tl.arange(0, 256)[None, :], mask=mask_m[:, None], other=0.0)
            acc = tl.dot(_cat(_cat4(w, 0), _cat4(w, 4)), tl.trans(x), acc)
        elif GROUP == 32:
            for r in tl.static_range(8):
                acc = _group_dot(q[r], ss[r], x_rows, mask_m, acc, 32 * r, 32)
        elif GROUP == 64:
            for g in tl.static_range(4):
                acc = _group_dot(_cat(q[2 * g], q[2 * g + 1]), ss[2 * g], x_rows, mask_m, acc, 64 * g, 64)
        elif GROUP == 128:
            for g in tl.static_range(2):
                acc = _group_dot(_cat4(q, 4 * g), ss[4 * g], x_rows, mask_m, acc, 128 * g, 128)
        else:  # one group covers the block
            acc = _group_dot(_cat(_cat4(q, 0), _cat4(q, 4)), ss[0], x_rows, mask_m, acc, 0, 256)
        w_ptrs += 32
        x_rows += 256

    out_ptrs = out_ptr + offs_m[None, :] * stride_om + offs_n[:, None]
    _store(out_ptrs, acc, mask_n[:, None] & mask_m[None, :], ATOMIC)


@triton.jit(do_not_specialize=["M", "split_k"])
def w4a16_rp_kernel(
    x_ptr,
    qweight_ptr,
    scale_zeros_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_om,
    packed_k,
    split_k,
    MAGIC: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FOLD: tl.constexpr,
    USE_PTX: tl.constexpr,
    ATOMIC: tl.constexpr,
):
    """`out^T [N, M] (+)= W^T x^T` over vlq's layout (`vlq.kernels.repack`), one K slice per program.

    Why transposed: the weight is the dot's left operand, which the tensor cores take from
    registers, so only the small activation tile goes through shared memory. Each step reads one
    256-block of K as a `[BLOCK_N, 32]` tile of words (128 contiguous bytes per row); unpacked
    chunk r (`_rp_columns`) is the K slice `32 r ..` of the block, and the eight `[BLOCK_N, 32]` chunks are put
    side by side into one `[BLOCK_N, 256]` operand by register relabelling only, so a step is one
    long dot that the tensor cores run while the next block is unpacked. Triton pipelines the words,
    the activations and the block's scale-and-zero words (32-bit loads; 16- and 8-bit ones it
    leaves in the loop, behind three more barriers per step).
    FOLD: the zero comes off the codes (`(OFFSET + q) - (OFFSET + z)`, exact, one half2 op per two
    weights), one dot per group, and the scale multiplies its `[BLOCK_N, BLOCK_M]` result
    (`_group_dot`): half the instructions per weight of dequantizing, which pays when the tile
    has few tokens, and the dot sees exact integers. `packed_k` is K / 8 (passed so Triton sees
    its divisibility).
    """
    blocks = K // 256
    first, last = _k_slice(blocks, split_k, tl.program_id(1))
    _rp_slice(
        x_ptr, qweight_ptr, scale_zeros_ptr, out_ptr, M, N, stride_xm, stride_om, packed_k,
        tl.program_id(0), tl.program_id(2), first, last, MAGIC, GROUP, BLOCK_M, BLOCK_N, FOLD, USE_PTX, ATOMIC,
    )


@triton.jit(do_not_specialize=["M", "units_per_program"])
def w4a16_rp_streamk_kernel(
    x_ptr,
    qweight_ptr,
    scale_zeros_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_om,
    packed_k,
    row_tiles,
    units_per_program,
    MAGIC: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FOLD: tl.constexpr,
    USE_PTX: tl.constexpr,
):
    """`w4a16_rp_kernel`'s tiles cut stream-K fashion: the (tile, 256-block) units in one line, each
    program an equal run of them, split where the run crosses a tile (each piece atomically added
    into the zeroed output). Why: a grid of about one wave with equal work per program has no
    tail wave and no idle slots, where split-K's grid of tiles x slices leaves a partial wave."""
    blocks = K // 256
    units = row_tiles * tl.cdiv(M, BLOCK_M) * blocks
    unit = tl.program_id(0) * units_per_program
    end = tl.minimum(unit + units_per_program, units)
    while unit < end:
        tile = unit // blocks
        first = unit - tile * blocks
        last = tl.minimum(blocks, first + (end - unit))
        _rp_slice(
            x_ptr, qweight_ptr, scale_zeros_ptr, out_ptr, M, N, stride_xm, stride_om, packed_k,
            tile % row_tiles, tile // row_tiles, first, last, MAGIC, GROUP, BLOCK_M, BLOCK_N, FOLD, USE_PTX, True,
        )
        unit += last - first


@triton.jit
def _chunks(t):
    """The eight `[...]` slices of a `[..., 8]` tensor along its last axis, in order."""
    even, odd = tl.split(tl.reshape(t, t.shape[:-1] + (4, 2)))
    e0, e1 = tl.split(tl.reshape(even, even.shape[:-1] + (2, 2)))
    o0, o1 = tl.split(tl.reshape(odd, odd.shape[:-1] + (2, 2)))
    c0, c4 = tl.split(e0)
    c2, c6 = tl.split(e1)
    c1, c5 = tl.split(o0)
    c3, c7 = tl.split(o1)
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _per_chunk(t, GROUPS_PER_BLOCK: tl.constexpr):
    """`[..., GROUPS_PER_BLOCK]` per-group values of a block -> the eight chunks' `[...]` values."""
    shape: tl.constexpr = t.shape[:-1]
    repeat: tl.constexpr = 8 // GROUPS_PER_BLOCK
    wide = tl.broadcast_to(tl.expand_dims(t, -1), shape + (GROUPS_PER_BLOCK, repeat))
    return _chunks(tl.reshape(wide, shape + (8,)))


@triton.jit(do_not_specialize=["M", "split_k"])
def w4a16_gemv_kernel(
    x_ptr,
    qweight_ptr,
    scale_zeros_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_om,
    packed_k,
    split_k,
    MAGIC: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCKS_PER_STEP: tl.constexpr,
    HALF_SUMS: tl.constexpr,
    USE_PTX: tl.constexpr,
    ATOMIC: tl.constexpr,
):
    """`out [M, N] (+)= x W` over vlq's layout without tensor cores, for a few tokens.

    Why: at decode the time is the weight stream, and `w4a16_rp_kernel` pads the tokens to a
    16-row dot and reads one 256-block per step. Here a step reads BLOCKS_PER_STEP blocks of
    BLOCK_N rows (`[BLOCK_N, BLOCKS_PER_STEP, 32]` words, one contiguous run per row), and the
    next step's words, scales, zeros and activations are loaded before this step's arithmetic,
    so a program always has a step of loads in flight (Triton's pipeliner leaves loads that feed
    no dot alone). Unpacked chunk r is the K slice `32 r ..` of each block, dequantized as
    the rp kernel does (exact OFFSET subtraction, one rounding multiply by the scale: the weights
    `dequantize_awq` gives) and multiplied into a `[BLOCK_M, BLOCK_N, BLOCKS_PER_STEP, 32]` fp32
    accumulator elementwise; the K axes are summed once at the end. HALF_SUMS: the eight chunk
    products of a word are added in the activations' dtype (paired half FMAs) and only their sum
    is widened into the accumulator, which saves a conversion and an FMA per weight.

    Layout: every tensor carries the axes `[tokens, rows, blocks, words]` (plus a last axis of 8
    chunks or of the block's groups), so all take the words' register layout, each thread
    holding its words for every token. The words are loaded last in the loop body because
    Triton resolves a layout conflict towards the last load, so the accumulator gets their
    layout; the activations and scales are then converted once per step. A thread holds its
    activations for all 8 chunks, `32 * BLOCK_M` floats per block it reads, so BLOCK_M above 4
    spills. Blocks past the slice's end (K / 256 need not divide by BLOCKS_PER_STEP) get zero
    scales and activations, so they add nothing.
    """
    dtype: tl.constexpr = x_ptr.dtype.element_ty
    GROUPS_PER_BLOCK: tl.constexpr = 256 // GROUP if GROUP < 256 else 1
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    tokens = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tokens[:, None, None, None]
    offs_n = rows[None, :, None, None]
    offs_b = tl.arange(0, BLOCKS_PER_STEP)[None, None, :, None]
    offs_j = tl.arange(0, 32)[None, None, None, :]
    offs_g = tl.arange(0, GROUPS_PER_BLOCK)[None, None, None, :]
    mask_m = offs_m < M
    mask_n = offs_n < N

    blocks = K // 256
    first, last = _k_slice(blocks, split_k, pid_k)
    w_ptrs = qweight_ptr + offs_n * packed_k + (first + offs_b) * 32 + offs_j
    # activations as [tokens, 1, blocks, words, chunks]: element (j, r) is K position 256 b + 32 r + j
    offs_r = tl.arange(0, 8)[None, None, None, None, :]
    x_ptrs = x_ptr + (offs_m * stride_xm + (first + offs_b) * 256 + offs_j)[:, :, :, :, None] + offs_r * 32

    acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCKS_PER_STEP, 32), dtype=tl.float32)
    x_dtype: tl.constexpr = dtype if HALF_SUMS else tl.float32
    # The first step's operands; the loop loads the next step's the same way, words last.
    # Activations (fp32 sums) turn fp32 as loaded: splitting the chunks then moves whole registers (fp16 would
    # be repacked pair by pair), and each thread converts only the elements it loaded.
    in_slice = first + offs_b < last
    x = tl.load(x_ptrs, mask=(mask_m & in_slice)[:, :, :, :, None], other=0.0).to(x_dtype)
    groups = ((first + offs_b) * 256 + offs_g * GROUP) // GROUP
    s, z = _group_vectors(scale_zeros_ptr, groups, N, offs_n, mask_n & in_slice, MAGIC, dtype)
    words = tl.load(w_ptrs, mask=mask_n & in_slice, other=0)
    for blk in range(first, last, BLOCKS_PER_STEP):
        x_ptrs += 256 * BLOCKS_PER_STEP
        w_ptrs += 32 * BLOCKS_PER_STEP
        in_slice = blk + BLOCKS_PER_STEP + offs_b < last
        next_x = tl.load(x_ptrs, mask=(mask_m & in_slice)[:, :, :, :, None], other=0.0).to(x_dtype)
        groups = ((blk + BLOCKS_PER_STEP + offs_b) * 256 + offs_g * GROUP) // GROUP
        next_s, next_z = _group_vectors(scale_zeros_ptr, groups, N, offs_n, mask_n & in_slice, MAGIC, dtype)
        next_words = tl.load(w_ptrs, mask=mask_n & in_slice, other=0)

        codes = _rp_columns(words, MAGIC, dtype, USE_PTX)
        xs = _chunks(x)
        scales = _per_chunk(s, GROUPS_PER_BLOCK)
        zeros = _per_chunk(z, GROUPS_PER_BLOCK)
        if HALF_SUMS:
            part = tl.zeros((BLOCK_M, BLOCK_N, BLOCKS_PER_STEP, 32), dtype=dtype)
            for r in tl.static_range(8):
                w = (codes[r] - zeros[r][:, :, :, None]) * scales[r][:, :, :, None]
                part += w * xs[r]
            acc += part.to(tl.float32)
        else:
            for r in tl.static_range(8):
                w = (codes[r] - zeros[r][:, :, :, None]) * scales[r][:, :, :, None]
                acc += w.to(tl.float32) * xs[r]
        x, s, z, words = next_x, next_s, next_z, next_words

    total = tl.sum(tl.sum(acc, axis=3), axis=2)
    out_ptrs = out_ptr + tokens[:, None] * stride_om + rows[None, :]
    _store(out_ptrs, total, (tokens < M)[:, None] & (rows < N)[None, :], ATOMIC)


@triton.jit
def _rp_store(out_ptrs, codes, zoff, s, mask_n, R: tl.constexpr):
    tl.store(out_ptrs + R * 32, (codes - zoff[:, None]) * s[:, None], mask=mask_n[:, None])


@triton.jit
def rp_dequantize_kernel(
    qweight_ptr,
    scale_zeros_ptr,
    out_ptr,
    row0,
    row_end,
    N,
    K,
    packed_k,
    MAGIC: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_N: tl.constexpr,
    USE_PTX: tl.constexpr,
):
    """Rows `row0 .. row_end` of the dense `W^T [N, K]` from vlq's layout, written from row 0 of
    `out` (a chunk buffer); one 256-block of K per program."""
    dtype: tl.constexpr = out_ptr.dtype.element_ty
    pid_n = tl.program_id(0)
    blk = tl.program_id(1)
    local_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_n = row0 + local_n
    offs_j = tl.arange(0, 32)
    mask_n = offs_n < row_end
    words = tl.load(
        qweight_ptr + offs_n[:, None] * packed_k + (blk * 32 + offs_j)[None, :], mask=mask_n[:, None], other=0
    )
    codes = _rp_columns(words, MAGIC, dtype, USE_PTX)
    g = (blk * 256) // GROUP
    out_ptrs = out_ptr + local_n[:, None] * K + (blk * 256 + offs_j)[None, :]
    for r in tl.static_range(8):
        if (32 * r) % GROUP == 0:  # chunk r starts a group: its scales and zeros
            s, z = _group_vectors(scale_zeros_ptr, g + 32 * r // GROUP, N, offs_n, mask_n, MAGIC, dtype)
        _rp_store(out_ptrs, codes[r], z, s, mask_n, r)


# Bits of OFFSET (1024.0 in fp16, 128.0 in bf16) in both halves of an int32.
_MAGIC = {torch.float16: 0x64006400, torch.bfloat16: 0x43004300}


@dataclass(frozen=True)
class GemmConfig:
    """Which kernel runs one problem size, with its tile shape and launch settings.

    `kernel` "decode" is `w4a16_decode_kernel` (block_m tokens, block_n = 8 x packed columns);
    "tiled" is `w4a16_gemm_kernel`. `use_ptx` (decode only) unpacks with inline PTX, which the
    Triton interpreter cannot run.
    """

    block_m: int
    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 4
    group_m: int = 8
    kernel: str = "tiled"
    use_ptx: bool = False


def step_size(group_size: int, limit: int = 128) -> int:
    """Largest power of two <= `limit` dividing `group_size` (a K step must not cross a group)."""
    return min(group_size & -group_size, limit)


def launch_gemm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    config: GemmConfig,
) -> torch.Tensor:
    """`x [M, K] @ dequant(W) [K, N]` with one launch of the fused kernel (plus a zero fill for split-K).

    Split-K adds fp16 partials atomically into the output, as AutoAWQ's kernel does; bf16 adds in
    an fp32 buffer instead (bf16 atomics would round each partial to 8 bits).
    """
    m, k = x.shape
    n = scales.shape[1]
    block_k = min(config.block_k, step_size(group_size))
    atomic = config.split_k > 1
    if not atomic:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    elif x.dtype == torch.float16:
        out = torch.zeros((m, n), dtype=x.dtype, device=x.device)
    else:
        out = torch.zeros((m, n), dtype=torch.float32, device=x.device)
    common = (
        x,
        qweight,
        qzeros,
        scales,
        out,
        m,
        n,
        k,
        x.stride(0),
        out.stride(0),
        n // 8,
        config.split_k,
        group_size,
    )
    if config.kernel == "decode":
        grid = (triton.cdiv(n // 8, config.block_n // 8), config.split_k, triton.cdiv(m, config.block_m))
        w4a16_decode_kernel[grid](
            *common,
            MAGIC=_MAGIC[x.dtype],
            BLOCK_T=config.block_m,
            BLOCK_P=config.block_n // 8,
            BLOCK_K=block_k,
            USE_PTX=config.use_ptx,
            ATOMIC=atomic,
            num_warps=config.num_warps,
            num_stages=config.num_stages,
        )
    else:
        grid = (triton.cdiv(m, config.block_m) * triton.cdiv(n, config.block_n), config.split_k)
        w4a16_gemm_kernel[grid](
            *common,
            MAGIC=_MAGIC[x.dtype],
            BLOCK_M=config.block_m,
            BLOCK_N=config.block_n,
            BLOCK_K=block_k,
            GROUP_M=config.group_m,
            ATOMIC=atomic,
            num_warps=config.num_warps,
            num_stages=config.num_stages,
        )
    return out if out.dtype == x.dtype else out.to(x.dtype)


def dequantize(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Dense `[K, N]` weight in `dtype` (fp16 or bf16), one pass over the packed tensors."""
    k = qweight.shape[0]
    n = scales.shape[1]
    out = torch.empty((k, n), dtype=dtype, device=qweight.device)
    block_k = step_size(group_size, limit=32)
    block_n = 256
    scales = scales.to(dtype)
    grid = (k // block_k, triton.cdiv(n, block_n))
    awq_dequantize_kernel[grid](
        qweight,
        qzeros,
        scales,
        out,
        k,
        n,
        n // 8,
        group_size,
        MAGIC=_MAGIC[dtype],
        BLOCK_K=block_k,
        BLOCK_N=block_n,
    )
    return out


# From this many tokens on, dequantizing once and calling cuBLAS beats the fused kernels.
DEQUANT_MIN_M = 256
# K x N from which the transposed decode kernel beats the tiled one at <= 16 tokens
# (H100: 8192x28672 81.6 vs 115 us at M=1; the tiled one wins at 4096x11008 and below).
DECODE_KERNEL_MIN_WEIGHTS = 1 << 26


@functools.cache
def sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _split(steps: int, wanted: int) -> int:
    """`wanted` K slices, halved until each slice has at least four K steps."""
    split = wanted
    while split > 1 and steps < 4 * split:
        split //= 2
    return split


def pick_config(m: int, n: int, k: int, group_size: int, sms: int) -> GemmConfig | None:
    """Kernel settings for an `[m, k] @ [k, n]` problem; None means dequantize + cuBLAS.

    The numbers are the fastest of a sweep on an H100 (fp16, group 128) over the shapes of
    `vlq bench gemm`. Up to 64 tokens the time is the weight stream, so tiles stay narrow and
    split-K multiplies the programs in flight; from 256 tokens the dot dominates and cuBLAS on
    a dequantized copy wins.
    """
    if m >= DEQUANT_MIN_M:
        return None
    block_k = step_size(group_size)
    big = k * n >= DECODE_KERNEL_MIN_WEIGHTS
    if m <= 16 and big:
        block_k = min(block_k, 64)
        tiles = triton.cdiv(n, 512)
        split = 1
        while tiles * split < 1.5 * sms:
            split *= 2
        return GemmConfig(
            block_m=16,
            block_n=512,
            block_k=block_k,
            split_k=_split(k // block_k, split),
            num_stages=3,
            kernel="decode",
            use_ptx=True,
        )
    steps = k // block_k
    if m <= 16:
        return GemmConfig(block_m=16, block_n=128, block_k=block_k, split_k=_split(steps, 8))
    if m <= 64:
        return GemmConfig(
            block_m=32 if m <= 32 else 64, block_n=64, block_k=block_k, split_k=_split(steps, 4)
        )
    if big:
        return GemmConfig(block_m=128, block_n=128, block_k=min(block_k, 64))
    return GemmConfig(block_m=64, block_n=64, block_k=block_k, split_k=_split(steps, 2))


def w4a16_matmul_triton(
    x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> torch.Tensor:
    """`x [M, K] @ dequant(W)`; `x` row-major CUDA fp16/bf16, `scales` in x's dtype, checked by the caller."""
    m, k = x.shape
    n = scales.shape[1]
    if m == 0:
        return x.new_empty((0, n))
    config = pick_config(m, n, k, group_size, sm_count(x.device.index or 0))
    if config is None:
        return x @ dequantize(qweight, qzeros, scales, group_size, x.dtype)
    return launch_gemm(x, qweight, qzeros, scales, group_size, config)


# --- vlq layout (`vlq.kernels.repack`): what `AwqLinear` runs once it has repacked at load. ---


@dataclass(frozen=True)
class RpConfig:
    """One problem size over vlq's layout.

    `kernel` "rp": `w4a16_rp_kernel` with `block_m` tokens x `block_n` outputs per program and
    `split_k` K slices (atomically added). "gemv": `w4a16_gemv_kernel`, the same tiling without
    tensor cores, reading `blocks_per_step` 256-blocks of K per row and step; `half_sums` adds the
    eight products of a word in fp16 before the fp32 accumulator (fp16 activations only: fewer
    instructions per weight; relative error about 5e-4 against 2e-4 with fp32 sums, measured on
    random weights). `fold` (rp): one dot per group of the codes less their zero, the scale applied
    to its result.
    "deq": dequantize
    `chunk_mb` MB of dense weight at a time into one reused buffer and hand each chunk to cuBLAS
    (0: the whole weight at once); a chunk that fits in L2 is written and read back there instead
    of in device memory.
    "streamk": `w4a16_rp_streamk_kernel` with rp's tile settings over `programs_per_sm` programs
    per SM (no `split_k`: the runs cut K where they cross a tile).
    "ws": the warp-specialized Hopper kernel (`vlq.kernels.ws_w4a16`), `block_m` tokens x 128 weight
    rows per program, `num_stages` 32-wide activation chunks in flight, `split_k`, and with
    `balance_tail` (split_k 1) the blocks of a part-empty last wave's tiles (or of a grid under one
    wave) shared out over K or stream-K to fill the SMs (`ws_w4a16.balanced_tail`); where
    Gluon or an sm_90 GPU is missing it runs as "deq".
    """

    kernel: str = "rp"
    block_m: int = 16
    block_n: int = 64
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    chunk_mb: int = 0
    use_ptx: bool = True
    blocks_per_step: int = 4
    half_sums: bool = False
    fold: bool = False
    programs_per_sm: int = 4
    balance_tail: bool = False


def nonempty_split(steps: int, wanted: int) -> int:
    """`wanted` K slices of `steps` steps, fewer where `_k_slice`'s equal shares would leave the last
    slices empty (`w4a16_rp_kernel` assumes that every slice has a step)."""
    wanted = max(1, min(wanted, steps))
    return triton.cdiv(steps, triton.cdiv(steps, wanted))


def _interpreted() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def launch_rp(
    x: torch.Tensor, qweight: torch.Tensor, scale_zeros: torch.Tensor, group_size: int, config: RpConfig
) -> torch.Tensor:
    """`x [M, K] @ W` over vlq's layout with one launch of `w4a16_rp_kernel`, its stream-K grid
    `w4a16_rp_streamk_kernel` or `w4a16_gemv_kernel` (`config.kernel` "rp", "streamk" or "gemv"),
    plus a zero fill where partials add (split-K, stream-K). `scale_zeros` holds scales in x's
    dtype (`vlq.kernels.repack.words_for`)."""
    m, k = x.shape
    n = qweight.shape[0]
    token_tiles, row_tiles = triton.cdiv(m, config.block_m), triton.cdiv(n, config.block_n)
    if config.kernel == "streamk":
        units = row_tiles * token_tiles * (k // 256)
        sms = sm_count(x.device.index or 0) if x.is_cuda else 4
        per_program = triton.cdiv(units, min(units, config.programs_per_sm * sms))
        atomic = True  # a run that crosses a tile adds each piece
        kernel, grid, grid_args = w4a16_rp_streamk_kernel, (triton.cdiv(units, per_program),), (row_tiles, per_program)
        step = {"FOLD": config.fold}
    else:
        split = nonempty_split(k // 256, config.split_k)
        atomic = split > 1
        grid_args = (split,)
        if config.kernel == "gemv":
            # token tiles vary fastest, so the programs reading one weight tile run together (L2 hits)
            kernel, grid = w4a16_gemv_kernel, (token_tiles, row_tiles, split)
            step = {"BLOCKS_PER_STEP": config.blocks_per_step, "HALF_SUMS": config.half_sums and x.dtype == torch.float16}
        else:
            kernel, grid, step = w4a16_rp_kernel, (row_tiles, split, token_tiles), {"FOLD": config.fold}
        step["ATOMIC"] = atomic
    if not atomic:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    elif x.dtype == torch.float16:
        out = torch.zeros((m, n), dtype=x.dtype, device=x.device)
    else:  # bf16 partials add in fp32 (bf16 atomics would round each to 8 bits)
        out = torch.zeros((m, n), dtype=torch.float32, device=x.device)
    kernel[grid](
        x,
        qweight,
        scale_zeros.view(torch.int32),
        out,
        m,
        n,
        k,
        x.stride(0),
        out.stride(0),
        k // 8,
        *grid_args,
        MAGIC=_MAGIC[x.dtype],
        GROUP=group_size,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        USE_PTX=config.use_ptx and not _interpreted(),
        num_warps=config.num_warps,
        num_stages=_stages(config, group_size),
        **step,
    )
    return out if out.dtype == x.dtype else out.to(x.dtype)


def _stages(config: RpConfig, group_size: int) -> int:
    if group_size >= 256 and config.block_m * config.block_n >= 128 * 128:
        return min(config.num_stages, 2)  # sm_90 compile: 3 stages of a 128x128 tile need 256 KB of shared memory here
    return config.num_stages


_DEQ_BLOCK_N = 32


def rp_dequantize(
    qweight: torch.Tensor,
    scale_zeros: torch.Tensor,
    group_size: int,
    dtype: torch.dtype,
    row0: int = 0,
    rows: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rows `row0 .. row0 + rows` of the dense `W^T [N, K]` in `dtype`, into `out` if given."""
    n, packed_k = qweight.shape
    k = packed_k * 8
    rows = n - row0 if rows is None else rows
    if out is None:
        out = torch.empty((rows, k), dtype=dtype, device=qweight.device)
    grid = (triton.cdiv(rows, _DEQ_BLOCK_N), k // 256)
    rp_dequantize_kernel[grid](
        qweight,
        scale_zeros.view(torch.int32),
        out,
        row0,
        row0 + rows,
        n,
        k,
        packed_k,
        MAGIC=_MAGIC[dtype],
        GROUP=group_size,
        BLOCK_N=_DEQ_BLOCK_N,
        USE_PTX=not _interpreted(),
        num_warps=4,
    )
    return out


def rp_dequant_matmul(
    x: torch.Tensor, qweight: torch.Tensor, scale_zeros: torch.Tensor, group_size: int, chunk_mb: int = 0
) -> torch.Tensor:
    """`x @ W` by dequantizing W^T a chunk of output rows at a time and calling cuBLAS per chunk."""
    m, k = x.shape
    n = qweight.shape[0]
    if chunk_mb <= 0:
        return x @ rp_dequantize(qweight, scale_zeros, group_size, x.dtype).t()
    rows = max(_DEQ_BLOCK_N, (chunk_mb << 20) // (2 * k) // 128 * 128)
    if rows >= n:
        return x @ rp_dequantize(qweight, scale_zeros, group_size, x.dtype).t()
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    buffer = torch.empty((rows, k), dtype=x.dtype, device=x.device)
    for row0 in range(0, n, rows):
        part = min(rows, n - row0)
        rp_dequantize(qweight, scale_zeros, group_size, x.dtype, row0, part, buffer)
        torch.mm(x, buffer[:part].t(), out=out[:, row0 : row0 + part])
    return out


# (config, group size, dtype, device) -> the setting that fit there (`run_rp`)
_FITTED: dict[tuple, RpConfig] = {}


def smaller_config(config: RpConfig) -> RpConfig:
    """The next setting to try when `config` needs more shared memory than the GPU has: one
    pipeline stage fewer down to two (rp, stream-K), one group of activation chunks (the dots
    `run_rp` issues per wait) fewer down to two groups (ws: bf16 split-K's fp32 output needs a
    larger epilogue than the table's fp16 timing did), then dequantize + cuBLAS, which always fits."""
    from vlq.kernels.ws_w4a16 import DOTS_PER_WAIT

    if config.kernel in ("rp", "streamk") and config.num_stages > 2:
        return dataclasses.replace(config, num_stages=config.num_stages - 1)
    if config.kernel == "ws" and config.num_stages > 2 * DOTS_PER_WAIT:
        return dataclasses.replace(config, num_stages=config.num_stages - DOTS_PER_WAIT)
    return RpConfig(kernel="deq")


def run_rp(
    x: torch.Tensor, qweight: torch.Tensor, scale_zeros: torch.Tensor, group_size: int, config: RpConfig
) -> torch.Tensor:
    """`x @ W` over vlq's layout as `config.kernel` says: "deq" dequantizes for cuBLAS, "rp",
    "streamk" and "gemv" run the fused kernels.

    Why the fallback: a table or heuristic setting is sized for Hopper's 227 KB of shared memory,
    and some group sizes (more scale words per step) or other GPUs (A100 164 KB, consumer cards
    99 KB) have less room; Triton then refuses the launch before anything runs, so vlq steps down
    (`smaller_config`) and remembers what fit instead of failing the forward."""
    from vlq.kernels import ws_w4a16

    key = (config, group_size, x.dtype, x.device)
    config = _FITTED.get(key, config)
    if config.kernel == "ws" and not ws_w4a16.available(x.device):
        config = _FITTED[key] = RpConfig(kernel="deq")
    while config.kernel != "deq":
        try:
            if config.kernel == "ws":
                slots = sm_count(x.device.index or 0) if config.balance_tail else 0
                return ws_w4a16.launch_ws(
                    x, qweight, scale_zeros, group_size, config.block_m, config.num_stages, config.split_k, slots=slots
                )
            return launch_rp(x, qweight, scale_zeros, group_size, config)
        except OutOfResources:
            config = _FITTED[key] = smaller_config(config)
    return rp_dequant_matmul(x, qweight, scale_zeros, group_size, config.chunk_mb)


def _pow2_at_least(value: float) -> int:
    p = 1
    while p < value:
        p *= 2
    return p


def heuristic_rp_config(m: int, n: int, k: int, sms: int) -> RpConfig:
    """Settings for shapes the sweep did not see (or GPUs without a table), read off the sweeps
    behind `vlq.kernels.tuned` (H100 2026-11-23 and 2026-12-06, H200 2026-12-04; scored against the
    H100 sweep of 2026-12-06, these picks are within 2.1% of the best at every point from 64 tokens
    on its four shapes).

    One token: `w4a16_gemv_kernel`, 8 rows by 4 blocks of K per step, fp16 partial sums, except on
    weights of 2**27 and more, where the rp kernel below streams faster. Up to 64 tokens the time
    is the weight stream: 64 weight rows per program and folded (zero off the codes, scale after
    the dot), with split-K until each program streams at most sixteen 256-blocks of K and the grid
    holds about 1.5 programs per SM; but wide weights (N >= 8192) at 33-64 tokens take 64x256 tiles
    split to about one wave. At 128 tokens, 128x128 tiles split until the grid holds about two
    programs per SM (at most 4). From 256 tokens the dot dominates; past 384, dequantize + cuBLAS.
    Wide weights at 65-384 tokens run the 128x128 tiles stream-K, one program per SM (the tail
    wave of split-K costs more there; on N = 4096 it is the other way round).
    """
    blocks = k // 256
    wide = n >= 8192
    if m == 1 and k * n < 1 << 27:
        return RpConfig(kernel="gemv", block_m=1, block_n=8, blocks_per_step=4, half_sums=True)
    if 32 < m <= 64 and wide:
        split = max(1, round(sms / triton.cdiv(n, 256)))
        return RpConfig(block_m=64, block_n=256, split_k=min(split, 4, blocks), num_warps=8)
    if 64 < m <= 384 and wide:
        return RpConfig(kernel="streamk", block_m=128, block_n=128, num_warps=8, programs_per_sm=1)
    if m <= 64:
        block_m = 16 if m <= 16 else (32 if m <= 32 else 64)
        tiles = triton.cdiv(n, 64)
        split = max(_pow2_at_least(blocks / 16), _pow2_at_least(1.5 * sms / tiles))
        return RpConfig(block_m=block_m, block_n=64, split_k=min(split, 16, blocks), fold=True)
    if m <= 128:
        split = max(1, round(2 * sms / triton.cdiv(n, 128)))
        return RpConfig(block_m=128, block_n=128, split_k=min(split, 4, blocks), num_warps=8)
    if m <= 384:
        return RpConfig(block_m=128, block_n=128, split_k=min(2, blocks), num_warps=8)
    return RpConfig(kernel="deq")


def pick_rp_config(
    m: int, n: int, k: int, group_size: int, sms: int = 132, device_name: str = ""
) -> RpConfig:
    """Settings for `[m, k] @ [k, n]` over vlq's layout: the winner of the sweep on this GPU model
    for a swept (K, N) (`vlq.kernels.tuned.table_for`, the smallest swept token count >= m), else
    `heuristic_rp_config`."""
    from vlq.kernels.tuned import table_for

    per_m = (table_for(device_name) or {}).get((k, n))
    if per_m:
        bucket = min((b for b in per_m if b >= m), default=max(per_m))
        return per_m[bucket]
    return heuristic_rp_config(m, n, k, sms)


@functools.cache
def device_name(device_index: int) -> str:
    return torch.cuda.get_device_name(device_index)


def w4a16_matmul_rp(x: torch.Tensor, qweight: torch.Tensor, scale_zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """`x [M, K] @ W` over vlq's layout; `x` row-major CUDA fp16/bf16, the words' scales in x's dtype."""
    m, k = x.shape
    n = qweight.shape[0]
    if m == 0:
        return x.new_empty((0, n))
    index = x.device.index or 0
    config = pick_rp_config(m, n, k, group_size, sm_count(index), device_name(index))
    return run_rp(x, qweight, scale_zeros, group_size, config)
