"""vlq's int4 layout, made once at load time from AutoAWQ GEMM tensors (torch only, any device).

AutoAWQ packs eight output columns into a word (`qweight` int32 `[K, N/8]`), so a kernel that
streams the weight for one block of outputs reads short runs from K rows far apart. vlq stores
the transpose, eight *input* positions per word:

- `qweight` int32 `[N, K/8]`: row n holds output n's codes along K. K is cut into blocks of
  `BLOCK_K_PACK` = 256, a block into eight 32-wide chunks (chunk r is positions `32 r .. 32 r + 31`).
  Words `32 b + 2 p` and `32 b + 2 p + 1` of a row hold the positions `2 p` and `2 p + 1` of every
  chunk of block b: the first word chunks 0-3, the second chunks 4-7, chunk `4 h + c`'s position
  `2 p + e` at bit `4 c + 16 e`. One shift and the mask 0x000F000F then lift a chunk's two
  neighbouring positions into the two halves of a register, which is how the tensor cores take
  their operand, so unpacking is a shift and one `lop3` per two weights. Unpacking chunk r of a
  `[rows, 32]` tile of words gives the contiguous K slice of the block that a kernel feeds to one
  tensor-core dot (the K order inside a dot does not matter, the slices only have to line up with
  the activations), and a program streaming one block of rows reads one contiguous run per row.
- `qzeros` uint32 `[K/group, N]` (the dtype marks the layout): one word per group and output, the
  scale's 16 bits (fp16 or bf16, the activations' dtype) low and the zero code at bits 16-23. Why one
  word: a kernel then loads a group's scale and zero as one 32-bit value, which Triton pipelines
  (cp.async) with the weights; 16- and 8-bit loads it does not, and their layout conversions cost
  the sm_90 rp kernel three of its five barriers per 256-block (measured on the H200: 1-6 % faster
  at the same settings).
- `scales` is a view of the words' low halves (`scales_view`), so the scales are stored once.

Bits per weight: 4 + 32 / group, 4.25 at group 128 (AutoAWQ's is 4.16). The words assume a
little-endian machine (CPUs and GPUs that torch runs on are).
"""

from __future__ import annotations

import torch

from vlq.awq.pack import pack_int4, unpack_int4

BLOCK_K_PACK = 256
CHUNK = 32
# Bit of (chunk 4 h + c, position 2 p + e) in word 2 p + h: `4 c + 16 e`, indexed [c, e].
_NIBBLE_SHIFTS = ((0, 16), (4, 20), (8, 24), (12, 28))
_ROWS_PER_PASS = 2048


def repackable(in_features: int, group_size: int) -> bool:
    """Whether vlq's layout holds this weight: K in whole 256-blocks, each 32-slice inside a group."""
    return (
        in_features % BLOCK_K_PACK == 0
        and group_size >= CHUNK
        and (BLOCK_K_PACK % group_size == 0 or group_size % BLOCK_K_PACK == 0)
    )


def is_repacked(qzeros: torch.Tensor) -> bool:
    return qzeros.dtype == torch.uint32


def pack_scale_zeros(scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """16-bit float `scales` and int zero codes (0..255), both `[G, N]` -> uint32 words `[G, N]`."""
    if scales.element_size() != 2 or not scales.is_floating_point():
        raise ValueError(f"vlq's layout holds fp16 or bf16 scales, got {scales.dtype}")
    bits = scales.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF
    return (bits | (zeros.to(torch.int32) << 16)).view(torch.uint32)


def zero_codes(scale_zeros: torch.Tensor) -> torch.Tensor:
    """The zero codes of the words, int32 `[G, N]`."""
    return (scale_zeros.view(torch.int32) >> 16) & 0xFF


def scales_view(scale_zeros: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The scales the words hold, as a `[G, N]` view in `dtype` (no copy)."""
    return scale_zeros.view(torch.int16)[:, 0::2].view(dtype)


def words_for(scale_zeros: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Words holding `scales` (16-bit floats) and the zeros of `scale_zeros`: `scale_zeros` itself
    when `scales` is its view, else new words. `scales` is the truth: a module cast or moved
    with `.to()` converts its scales apart from the words, and the kernels must not read stale bits."""
    is_view = (
        scales.element_size() == 2
        and scales.data_ptr() == scale_zeros.data_ptr()
        and scales.stride() == (2 * scale_zeros.shape[1], 2)
    )
    return scale_zeros if is_view else pack_scale_zeros(scales, zero_codes(scale_zeros))


def _shifts(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(_NIBBLE_SHIFTS, dtype=dtype, device=device)


def _pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """int codes `[rows, K]` (0..15) -> int32 `[rows, K/8]` in vlq's word order."""
    rows, k = codes.shape
    # [rows, block, h, c, p, e] -> [rows, block, p, h, c, e]: chunk 4 h + c, position 2 p + e
    nib = codes.to(torch.int64).reshape(rows, k // BLOCK_K_PACK, 2, 4, CHUNK // 2, 2).permute(0, 1, 4, 2, 3, 5)
    words = ((nib & 0xF) << _shifts(codes.device, torch.int64)).sum(dim=(4, 5))
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32).reshape(rows, k // 8)


def _unpack_codes(words: torch.Tensor) -> torch.Tensor:
    """Inverse of `_pack_codes`: int32 `[rows, K/8]` -> int32 codes `[rows, K]`."""
    rows, packed_k = words.shape
    w = words.reshape(rows, packed_k // CHUNK, CHUNK // 2, 2, 1, 1)  # [rows, block, p, h, 1, 1]
    nib = (w >> _shifts(words.device, torch.int32)) & 0xF  # [rows, block, p, h, c, e]
    return nib.permute(0, 1, 3, 4, 2, 5).reshape(rows, packed_k * 8)


def repack_awq(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AutoAWQ `(qweight, qzeros, scales)` -> vlq's `(qweight [N, K/8] int32, qzeros [G, N] uint32,
    scales)`, the scales now a view of the words (`scales_view`)."""
    k = qweight.shape[0]
    n = qweight.shape[1] * 8
    out = torch.empty((n, k // 8), dtype=torch.int32, device=qweight.device)
    step = _ROWS_PER_PASS // 8
    for start in range(0, n // 8, step):  # a few packed columns at a time bounds the temporaries
        codes = unpack_int4(qweight[:, start : start + step]).t()
        out[start * 8 : start * 8 + codes.shape[0]] = _pack_codes(codes)
    words = pack_scale_zeros(scales, unpack_int4(qzeros))
    return out, words, scales_view(words, scales.dtype)


def unrepack(qweight: torch.Tensor, qzeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """vlq's `(qweight, qzeros)` -> AutoAWQ's, bit for bit what `repack_awq` was given (the scales
    stay where they are: `scales_view`)."""
    n = qweight.shape[0]
    k = qweight.shape[1] * 8
    out = torch.empty((k, n // 8), dtype=torch.int32, device=qweight.device)
    for start in range(0, n, _ROWS_PER_PASS):
        codes = _unpack_codes(qweight[start : start + _ROWS_PER_PASS])
        out[:, start // 8 : start // 8 + codes.shape[0] // 8] = pack_int4(codes.t())
    return out, pack_int4(zero_codes(qzeros))
