"""vlq's int4 layout, made once at load time from AutoAWQ GEMM tensors (torch only, any device).

AutoAWQ packs eight output columns into a word (`qweight` int32 `[K, N/8]`), so a kernel that
streams the weight for one block of outputs reads short runs from K rows far apart. vlq stores
the transpose, eight *input* positions per word:

- `qweight` int32 `[N, K/8]`: row n holds output n's codes along K. K is cut into blocks of
  `BLOCK_K_PACK` = 256; word `32 b + j` of a row holds positions `256 b + 32 r + j` for
  r = 0..7, position r at bit `NIBBLE_SHIFTS[r]`. Unpacking nibble r of a `[rows, 32]` tile of
  words therefore gives the contiguous K slice `32 r .. 32 r + 31` of the block, which a kernel
  feeds straight to one tensor-core dot (the K order inside a dot does not matter, the slices
  only have to line up with the activations), and a program streaming one block of rows reads
  one contiguous run per row.
- `qzeros` uint8 `[K/group, N]`: the zero points, one byte each (a uint8 dtype marks the layout).
- `scales` are AutoAWQ's `[K/group, N]` as they are.

Bits per weight: 4 + (16 + 8) / group, 4.19 at group 128 (AutoAWQ's is 4.16).
"""

from __future__ import annotations

import torch

from vlq.awq.pack import pack_int4, unpack_int4

BLOCK_K_PACK = 256
CHUNK = 32
# Bit of chunk r in a word: the same nibble order AutoAWQ uses for columns, so one shift and the
# mask 0x000F000F lift chunks (0, 1), (2, 3), ... together.
NIBBLE_SHIFTS = (0, 16, 4, 20, 8, 24, 12, 28)
_ROWS_PER_PASS = 2048


def repackable(in_features: int, group_size: int) -> bool:
    """Whether vlq's layout holds this weight: K in whole 256-blocks, each 32-slice inside a group."""
    return (
        in_features % BLOCK_K_PACK == 0
        and group_size >= CHUNK
        and (BLOCK_K_PACK % group_size == 0 or group_size % BLOCK_K_PACK == 0)
    )


def is_repacked(qzeros: torch.Tensor) -> bool:
    return qzeros.dtype == torch.uint8


def _pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """int codes `[rows, K]` (0..15) -> int32 `[rows, K/8]` in vlq's word order."""
    rows, k = codes.shape
    nib = codes.to(torch.int64).reshape(rows, k // BLOCK_K_PACK, 8, CHUNK)
    shifts = torch.tensor(NIBBLE_SHIFTS, dtype=torch.int64, device=codes.device).view(1, 1, 8, 1)
    words = ((nib & 0xF) << shifts).sum(dim=2)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32).reshape(rows, k // 8)


def _unpack_codes(words: torch.Tensor) -> torch.Tensor:
    """Inverse of `_pack_codes`: int32 `[rows, K/8]` -> int32 codes `[rows, K]`."""
    rows, packed_k = words.shape
    w = words.reshape(rows, packed_k // CHUNK, 1, CHUNK)
    shifts = torch.tensor(NIBBLE_SHIFTS, dtype=torch.int32, device=words.device).view(1, 1, 8, 1)
    return ((w >> shifts) & 0xF).reshape(rows, packed_k * 8)


def repack_awq(qweight: torch.Tensor, qzeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """AutoAWQ `(qweight, qzeros)` -> vlq's `(qweight [N, K/8] int32, qzeros [G, N] uint8)`."""
    k = qweight.shape[0]
    n = qweight.shape[1] * 8
    out = torch.empty((n, k // 8), dtype=torch.int32, device=qweight.device)
    step = _ROWS_PER_PASS // 8
    for start in range(0, n // 8, step):  # a few packed columns at a time bounds the temporaries
        codes = unpack_int4(qweight[:, start : start + step]).t()
        out[start * 8 : start * 8 + codes.shape[0]] = _pack_codes(codes)
    return out, unpack_int4(qzeros).to(torch.uint8)


def unrepack(qweight: torch.Tensor, qzeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """vlq's `(qweight, qzeros)` -> AutoAWQ's, bit for bit what `repack_awq` was given."""
    n = qweight.shape[0]
    k = qweight.shape[1] * 8
    out = torch.empty((k, n // 8), dtype=torch.int32, device=qweight.device)
    for start in range(0, n, _ROWS_PER_PASS):
        codes = _unpack_codes(qweight[start : start + _ROWS_PER_PASS])
        out[:, start // 8 : start // 8 + codes.shape[0] // 8] = pack_int4(codes.t())
    return out, pack_int4(qzeros.to(torch.int32))
