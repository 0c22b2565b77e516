"""Warp-specialized w4a16 prefill kernel for Hopper (Gluon), over vlq's load-time layout.

Why: the fused rp kernel (`triton_w4a16.w4a16_rp_kernel`) is written in Triton, which makes every
warp load, unpack and multiply in lockstep: both warpgroups meet at CTA-wide barriers each step
and unpack at the same time while the tensor cores wait (ncu: tensor pipe ~46% busy at 1024
tokens), and its 256-wide K steps keep the token tile at 128. Gluon lets vlq place the work:
- one warp issues the TMA copies: each 256-block's words (`[128 rows, 32]` int32) into a ring of
  `word_stages` (one for 256-token tiles, so that three activation groups fit), and the 32-wide
  activation chunks (`[BLOCK_M tokens, 32]`) in groups of `PER_WAIT` into a ring of `X_GROUPS`
  groups, one mbarrier per group;
- two consumer warpgroups, 64 weight rows each, unpack a chunk of the words straight into the
  wgmma's register operand (`out^T = W x^T`: the weights are the left operand, so they never go
  through shared memory), start its dot and unpack the next chunk while it runs; after a group's
  last dot (the fourth, by default) they wait for all of them (ptxas serializes the wgmmas of any
  other form) and give the group back. Every mbarrier wait or arrive of a warpgroup costs it a
  warpgroup-wide `bar.sync` as Gluon lowers it, so one wait and one release per group, not per
  chunk, took 121 of 633 instructions out of each block's loop (sm_90 SASS).
  The warpgroups share only the rings and release each group on their own, so neither waits for
  the other's unpacking. The scale-and-zero words come a whole block ahead, one load per group,
  and are unpacked before the next block's loads go out (after them, ptxas made the unpack wait
  for those loads: a global-load latency per block, ncu's largest stall after the dots).
One program per SM fits (registers), so a grid of tiles runs in waves of one tile per SM; where
the last wave would be part empty (4096x11008 at 512 tokens: 172 tiles of 256 tokens on 132 SMs)
or the grid is under one wave (11008x4096 at 768 tokens: 96 tiles), `balanced_tail` shares the
last columns' blocks out to programs that fill the SMs, added up atomically beside the tiles
stored whole (one launch: the tail programs start as SMs free up). Each tail program takes an
equal run of the tail's blocks, tile after tile (stream-K): a slice of one tile where the programs
are a multiple of the tiles (split over K), else runs that cross tile boundaries, with one
accumulator and epilogue per tile reached while the copy warp runs on into the next tile.
Chunks are 32 K positions wide because vlq's layout keeps a chunk's neighbouring positions in one
word (`vlq.kernels.repack`); unpacking is one shift and one `lop3` per two weights, as in the rp
kernel. Token tiles of 256 fit: one activation slot is 16 KB instead of the rp kernel's 128 KB.

Needs Triton's Gluon (3.6 on the device; the TMA load's name changed after it) and an sm_90 GPU:
`available()`. Selected through `RpConfig(kernel="ws")` where the GPU's sweep table says so.
"""

from __future__ import annotations

import functools
import heapq

import torch
import triton

from vlq.kernels.triton_w4a16 import _MAGIC, _scale_zero, nonempty_split

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    # Triton 3.6 (the device's) names the TMA load `async_copy_global_to_shared`, later ones `async_load`
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
except ImportError:  # no Gluon in this Triton: the kernel is never offered
    gluon = None

CHUNK = 32  # K positions per dot
BLOCK_N = 128  # weight rows per program: two warpgroups of 64
DOTS_PER_WAIT = 4  # dots issued before each full wait (default of `launch_ws`)


def word_stages(block_m: int) -> int:
    """256-blocks of words in flight: one for 256-token tiles, so that a third group of activation
    chunks fits in shared memory (its lookahead was worth 1-5% on the H100; the words have a whole
    block to arrive), two for smaller tiles."""
    return 1 if block_m == 256 else 2


# What a program of the tail costs beyond its blocks, in 256-blocks (the first copies' latency before
# its first dot, the zero fill and the atomic epilogue), fitted to the H100's probe 6
# (`benchmarks/results/2026-12-07-h100-ws-probe-6-balanced-tail.log`): at 1.5 the model split five of
# its 25 points where that gained under 1%; at 3 it splits where that gained 3% or more, and at one
# point that gained 0.7%
SLICE_OVERHEAD_BLOCKS = 3.0
# What each further tile that a stream-K program's run of blocks reaches into costs it: one more
# atomic epilogue and a fresh accumulator (the copies run on across the boundary). Probe 7
# (`...-ws-probe-7-stream-k.log`, every plan timed) found these two and the 3% threshold as good as
# any of 240 combinations on its points without clock drift
SEGMENT_OVERHEAD_BLOCKS = 1.0


def tail_run(program: int, programs: int, span: int) -> tuple[int, int]:
    """Program `program` of `programs` in the tail: its run `[start, end)` of the tail's `span` blocks
    (tile-major: a tile's blocks, then the next tile's), as the kernel computes it. With `programs` a
    multiple of the tail's tiles every run stays in one tile: an equal split over K."""
    return program * span // programs, (program + 1) * span // programs


def run_tiles(start: int, end: int, blocks: int) -> list[tuple[int, int, int]]:
    """The (tile, first block, last block) parts of the run `[start, end)` over tiles of `blocks`
    blocks, in order: what the kernel's consumers loop over, one accumulator and epilogue each."""
    return [
        (t, max(start - t * blocks, 0), min(end - t * blocks, blocks))
        for t in range(start // blocks, (end - 1) // blocks + 1)
    ]


def _run_time(start: int, end: int, blocks: int) -> float:
    """A tail program's run of blocks, in whole-tile times: its blocks, the fixed cost of a program
    that adds into the tail, and one epilogue more for each further tile the run reaches into."""
    extra_tiles = len(run_tiles(start, end, blocks)) - 1
    return (end - start + SLICE_OVERHEAD_BLOCKS + SEGMENT_OVERHEAD_BLOCKS * extra_tiles) / blocks


def _makespan(whole: int, tail_times: list[float], slots: int) -> float:
    """When the last of `whole` unit-time programs, then the tail's programs (`tail_times`), ends on
    `slots` programs at a time, each starting where one ends (in launch order, as the GPU does)."""
    ends = [whole // slots + 1.0] * (whole % slots) + [float(whole // slots)] * (slots - whole % slots)
    heapq.heapify(ends)
    for time in tail_times:
        heapq.heappush(ends, heapq.heappop(ends) + time)
    return max(ends)


def tail_makespan(whole: int, tail_tiles: int, blocks: int, programs: int, slots: int) -> float:
    """The modelled time of a grid of `whole` whole tiles and `programs` tail programs sharing the
    blocks of `tail_tiles` tiles, in whole-tile times."""
    span = tail_tiles * blocks
    runs = (tail_run(u, programs, span) for u in range(programs))
    return _makespan(whole, [_run_time(start, end, blocks) for start, end in runs], slots)


def tail_plans(cols: int, m_tiles: int, blocks: int, slots: int) -> list[tuple[int, int]]:
    """The (whole columns, tail programs) that `balanced_tail` weighs: the tail is the columns of the
    last part-empty wave (or of the last one and a half), its blocks shared equally over K (2-4
    slices a tile) or stream-K (one run per slot the whole tiles leave free, or per slot; once or
    twice over)."""
    tiles = cols * m_tiles
    plans = []
    for waves in sorted({tiles // slots, tiles // slots - 1} - {-1}):
        tail_cols = min(cols, -(-(tiles - waves * slots) // m_tiles))
        whole, tail_tiles = (cols - tail_cols) * m_tiles, tail_cols * m_tiles
        free = slots - whole % slots  # the slots that the whole tiles' last wave leaves idle
        shares = {tail_tiles * nonempty_split(blocks, split) for split in (2, 3, 4)}
        shares |= {free, slots, free + slots, 2 * slots}
        plans += [(cols - tail_cols, p) for p in sorted(shares) if tail_tiles < p <= tail_tiles * blocks]
    return plans


@functools.cache
def balanced_tail(cols: int, m_tiles: int, blocks: int, slots: int) -> tuple[int, int]:
    """(columns of 128-row tiles run whole, programs that share the other columns' blocks): a grid of
    `cols x m_tiles` tiles whose last wave would leave slots idle (4096x11008 at 512 tokens: 172
    tiles on 132 SMs, two waves for 1.3 waves of work) has its last columns' blocks shared out so
    that the programs fill that wave: split equally over K (each program a slice of one tile), or
    stream-K (one run of blocks per free slot, crossing tile boundaries), which also fills a grid
    of under one wave (11008x4096 at 768 tokens: 96 tiles of 43 blocks). The fastest of
    `tail_plans` by the makespan model, or (cols, 0), nothing shared, where it saves under 3%."""
    best = (float(-(-cols * m_tiles // slots)), cols, 0)
    for whole_cols, programs in tail_plans(cols, m_tiles, blocks, slots):
        time = tail_makespan(whole_cols * m_tiles, (cols - whole_cols) * m_tiles, blocks, programs, slots)
        if time < 0.97 * best[0]:
            best = (time, whole_cols, programs)
    return best[1], best[2]


if gluon is not None:
    _CHUNK = gl.constexpr(CHUNK)

    @gluon.constexpr_function
    def _chunk_ptx(half, chunk, magic):
        """Chunk `4 half + chunk` of a word pair (2p, 2p + 1): its positions 2p, 2p + 1 as two floats."""
        src = "$1" if half == 0 else "$2"
        return f"{{ .reg .b32 t; shr.u32 t, {src}, {4 * chunk}; lop3.b32 $0, t, 0x000F000F, {hex(magic)}, 0xea; }}"

    @gluon.jit
    def _group_slot(q, X_GROUPS: gl.constexpr):
        """Ring slot and mbarrier phase of activation group q."""
        return q % X_GROUPS, (q // X_GROUPS) & 1

    @gluon.jit
    def _chunk(words, R: gl.constexpr, MAGIC: gl.constexpr, dtype: gl.constexpr):
        """`OFFSET + code` of chunk R from a `[rows, 32]` tile of words, `[rows, 32]` in dtype.
        The pair (2p, 2p + 1) must sit in one thread: the wgmma operand layout (two neighbouring K
        positions per register) makes it so."""
        ptx: gl.constexpr = _chunk_ptx(R // 4, R % 4, MAGIC)
        if dtype == gl.float16:
            return gl.inline_asm_elementwise(ptx, "=r,r,r", [words], dtype=gl.float16, is_pure=True, pack=2)
        else:
            return gl.inline_asm_elementwise(ptx, "=r,r,r", [words], dtype=gl.bfloat16, is_pure=True, pack=2)

    @gluon.constexpr_function
    def _group_first_chunk(r, group):
        """The first chunk of the group that chunk r of a block belongs to (the chunks of a group
        share its scale-and-zero word: one load and one unpack serve them all)."""
        return (_CHUNK.value * r // group) * group // _CHUNK.value if group > _CHUNK.value else r

    @gluon.jit
    def _block_scale_words(scale_zeros_ptr, blk, N, rows, mask, GROUP: gl.constexpr):
        """The scale-and-zero words of the eight 32-wide chunks of 256-block blk for `rows` (a word
        no chunk reads, as the repeats within a group, is dropped as dead code)."""
        ptrs = scale_zeros_ptr + rows
        return (
            gl.load(ptrs + ((blk * 256 + 0) // GROUP) * N, mask=mask, other=0),
            gl.load(ptrs + ((blk * 256 + 32) // GROUP) * N, mask=mask, other=0),
            gl.load(ptrs + ((blk * 256 + 64) // GROUP) * N, mask=mask, other=0),
            gl.load(ptrs + ((blk * 256 + 96) // GROUP) * N, mask=mask, other=0),
            gl.load(ptrs + ((blk * 256 + 128) // GROUP) * N, mask=mask, other=0),
            gl.load(ptrs + ((blk * 256 + 160) // GROUP) * N, mask=mask, other=0),
            gl.load(ptrs + ((blk * 256 + 192) // GROUP) * N, mask=mask, other=0),
            gl.load(ptrs + ((blk * 256 + 224) // GROUP) * N, mask=mask, other=0),
        )

    @gluon.jit
    def _tile_origin(t, col0, ncols, BLOCK_M: gl.constexpr):
        """First weight row and first token of tile t of a region of `ncols` columns of tiles from
        column `col0` (columns fastest, then token tiles)."""
        return (col0 + t % ncols) * 128, (t // ncols) * BLOCK_M

    @gluon.jit
    def _loader(
        x_desc, w_desc, x_bufs, w_bufs, x_ready, x_empty, w_ready, w_empty, start, end, blocks, col0, ncols,
        BLOCK_M: gl.constexpr, X_GROUPS: gl.constexpr, W_STAGES: gl.constexpr, PER_WAIT: gl.constexpr,
    ):
        """One warp: the TMA copies of each 256-block's words, and of each group of `PER_WAIT`
        32-wide activation chunks (one mbarrier per group, so the consumers wait and release once
        per group: each mbarrier operation of a warpgroup costs it a warpgroup-wide bar.sync), for
        the program's run of blocks `[start, end)` (tile-major), on across tile boundaries."""
        for pos in range(start, end):
            j = pos - start
            t = pos // blocks
            blk = pos - t * blocks
            row0, m0 = _tile_origin(t, col0, ncols, BLOCK_M)
            ws = j % W_STAGES
            mbarrier.wait(w_empty.index(ws), ((j // W_STAGES) & 1) ^ 1)
            mbarrier.expect(w_ready.index(ws), w_desc.block_type.nbytes)
            _tma_load(w_desc, [row0, blk * 32], w_ready.index(ws), w_bufs.index(ws))
            for g in gl.static_range(8 // PER_WAIT):
                slot, phase = _group_slot((8 // PER_WAIT) * j + g, X_GROUPS)
                mbarrier.wait(x_empty.index(slot), phase ^ 1)
                mbarrier.expect(x_ready.index(slot), PER_WAIT * x_desc.block_type.nbytes)
                for p in gl.static_range(PER_WAIT):
                    _tma_load(
                        x_desc, [m0, blk * 256 + _CHUNK * (PER_WAIT * g + p)], x_ready.index(slot),
                        x_bufs.index(PER_WAIT * slot + p),
                    )

    @gluon.jit
    def _tile_part(
        x_desc, x_bufs, w_bufs, x_ready, x_empty, w_ready, w_empty, row0, m0, first, last, j0,
        HALF: gl.constexpr, BLOCK_M: gl.constexpr, GROUP: gl.constexpr, MAGIC: gl.constexpr,
        X_GROUPS: gl.constexpr, W_STAGES: gl.constexpr, PER_WAIT: gl.constexpr, TAIL: gl.constexpr, out_ptr,
        scale_zeros_ptr, M, N, stride_om, is_tail, tail_ptr, stride_tm, tail_n0,
    ):
        """Blocks `first .. last` of one tile for one consumer warpgroup (rows `row0 + 64 HALF ..`),
        the program's `j0`-th block onwards in the rings, then its epilogue. It unpacks each chunk of
        the words into the wgmma's register operand and runs the dot while unpacking the next; the
        two warpgroups only share the TMA ring (each releases a slot on its own), so neither waits
        for the other's unpacking."""
        dtype: gl.constexpr = x_desc.dtype
        acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_M, 16]
        )
        a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
        rows = row0 + 64 * HALF + gl.arange(0, 64, layout=gl.SliceLayout(1, a_layout))
        mask_rows = rows < N
        # the launcher never makes an empty run; saying so drops the loop's zero-trip path, whose
        # zeroed accumulator would make ptxas serialize every wgmma (warning C7515)
        gl.assume(last > first)
        acc = gl.zeros([64, BLOCK_M], gl.float32, acc_layout)
        # the scale-and-zero words of each chunk, loaded a block ahead so that their latency hides
        # behind a block of dots (a group's word repeats for each of its chunks: L1 hits)
        sz = _block_scale_words(scale_zeros_ptr, first, N, rows, mask_rows, GROUP)
        for blk in range(first, last):
            j = j0 + blk - first
            ws = j % W_STAGES
            mbarrier.wait(w_ready.index(ws), (j // W_STAGES) & 1)
            words = w_bufs.index(ws).slice(64 * HALF, 64, dim=0).load(a_layout)
            mbarrier.arrive(w_empty.index(ws), count=1)
            # unpack this block's scales before the next block's loads: ptxas gives those loads the
            # scoreboards that these words came in on, and an unpack after them waited for them
            # (ncu: a tenth of each warpgroup's time in the first unpack of each block)
            scales = (
                _scale_zero(sz[_group_first_chunk(0, GROUP)], MAGIC, dtype),
                _scale_zero(sz[_group_first_chunk(1, GROUP)], MAGIC, dtype),
                _scale_zero(sz[_group_first_chunk(2, GROUP)], MAGIC, dtype),
                _scale_zero(sz[_group_first_chunk(3, GROUP)], MAGIC, dtype),
                _scale_zero(sz[_group_first_chunk(4, GROUP)], MAGIC, dtype),
                _scale_zero(sz[_group_first_chunk(5, GROUP)], MAGIC, dtype),
                _scale_zero(sz[_group_first_chunk(6, GROUP)], MAGIC, dtype),
                _scale_zero(sz[_group_first_chunk(7, GROUP)], MAGIC, dtype),
            )
            next_sz = _block_scale_words(scale_zeros_ptr, blk + 1, N, rows, mask_rows & (blk + 1 < last), GROUP)
            for r in gl.static_range(8):
                scale, zero = scales[r]
                a = (_chunk(words, r, MAGIC, dtype) - zero[:, None]) * scale[:, None]
                slot, phase = _group_slot((8 // PER_WAIT) * j + r // PER_WAIT, X_GROUPS)
                if r % PER_WAIT == 0:
                    mbarrier.wait(x_ready.index(slot), phase)
                x = x_bufs.index(PER_WAIT * slot + r % PER_WAIT).permute((1, 0))
                acc = warpgroup_mma(a, x, acc, is_async=True)
                if r % PER_WAIT == PER_WAIT - 1:
                    # only full waits: with dots left in flight while the next chunk is unpacked
                    # into the register operand, ptxas serializes every wgmma (C7513, C7514)
                    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
                    mbarrier.arrive(x_empty.index(slot), count=1)
            sz = next_sz
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))

        # the tile is out^T: each thread's accumulator values sit in different output rows. A
        # layout with eight neighbouring outputs of one token per thread stores 16 bytes at a time
        out_layout: gl.constexpr = gl.BlockedLayout([8, 1], [8, 4], [1, 4], [0, 1])
        offs_n = row0 + 64 * HALF + gl.arange(0, 64, layout=gl.SliceLayout(1, out_layout))
        offs_m = m0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, out_layout))
        mask = (offs_n < N)[:, None] & (offs_m < M)[None, :]
        if TAIL and is_tail:
            # part of a tail tile: add into the zeroed tail buffer (fp32 for bf16)
            partial = gl.convert_layout(acc.to(tail_ptr.dtype.element_ty), out_layout)
            tail_ptrs = tail_ptr + offs_m[None, :] * stride_tm + (offs_n - tail_n0)[:, None]
            gl.atomic_add(tail_ptrs, partial, mask=mask, sem="relaxed")
        else:
            value = gl.convert_layout(acc.to(out_ptr.dtype.element_ty), out_layout)
            gl.store(out_ptr + offs_m[None, :] * stride_om + offs_n[:, None], value, mask=mask)

    @gluon.jit
    def _warpgroup(
        x_desc, x_bufs, w_bufs, x_ready, x_empty, w_ready, w_empty, start, end, blocks, col0, ncols,
        HALF: gl.constexpr, BLOCK_M: gl.constexpr, GROUP: gl.constexpr, MAGIC: gl.constexpr,
        X_GROUPS: gl.constexpr, W_STAGES: gl.constexpr, PER_WAIT: gl.constexpr, TAIL: gl.constexpr, out_ptr,
        scale_zeros_ptr, M, N, stride_om, is_tail, tail_ptr, stride_tm, tail_n0,
    ):
        """One consumer warpgroup over the program's run of blocks: a whole tile, or (TAIL) each tile
        that the run reaches into in turn, each with its own accumulator and epilogue (`run_tiles`).
        A launch with no tail has one tile per program, so its build keeps no loop over tiles."""
        if TAIL:
            for t in range(start // blocks, (end - 1) // blocks + 1):
                row0, m0 = _tile_origin(t, col0, ncols, BLOCK_M)
                _tile_part(
                    x_desc, x_bufs, w_bufs, x_ready, x_empty, w_ready, w_empty, row0, m0,
                    gl.maximum(start - t * blocks, 0), gl.minimum(end - t * blocks, blocks),
                    gl.maximum(t * blocks - start, 0), HALF, BLOCK_M, GROUP, MAGIC, X_GROUPS, W_STAGES,
                    PER_WAIT, TAIL, out_ptr, scale_zeros_ptr, M, N, stride_om, is_tail, tail_ptr, stride_tm, tail_n0,
                )
        else:
            row0, m0 = _tile_origin(start // blocks, col0, ncols, BLOCK_M)
            _tile_part(
                x_desc, x_bufs, w_bufs, x_ready, x_empty, w_ready, w_empty, row0, m0, 0, blocks, 0, HALF,
                BLOCK_M, GROUP, MAGIC, X_GROUPS, W_STAGES, PER_WAIT, TAIL, out_ptr, scale_zeros_ptr, M, N,
                stride_om, is_tail, tail_ptr, stride_tm, tail_n0,
            )

    @gluon.jit(do_not_specialize=["M", "whole_cols", "tail_programs"])
    def w4a16_ws_kernel(
        x_desc, w_desc, scale_zeros_ptr, out_ptr, tail_ptr, M, N, K, stride_om, stride_tm, whole_cols,
        tail_programs, MAGIC: gl.constexpr, GROUP: gl.constexpr, BLOCK_M: gl.constexpr,
        X_GROUPS: gl.constexpr, W_STAGES: gl.constexpr, PER_WAIT: gl.constexpr, TAIL: gl.constexpr,
    ):
        """`out[M, N] = x @ W^T`. The first `whole_cols` columns of 128-row tiles run one tile of
        BLOCK_M tokens over all of K per program, stored (columns fastest, then token tiles); with
        TAIL, `tail_programs` programs share the other columns' tiles' blocks (tile-major, each an
        equal run: `tail_run`) and add their partial tiles into the zeroed `tail_ptr` (its column 0
        is weight row `128 whole_cols`)."""
        dtype: gl.constexpr = x_desc.dtype
        blocks = K // 256
        pid = gl.program_id(0)
        m_tiles = gl.cdiv(M, BLOCK_M)
        whole = whole_cols * m_tiles
        is_tail = pid >= whole
        if is_tail:
            col0 = whole_cols
            ncols = gl.cdiv(N, 128) - whole_cols
            span = (ncols * m_tiles * blocks).to(gl.int64)
            program = (pid - whole).to(gl.int64)
            start = (program * span // tail_programs).to(gl.int32)
            end = ((program + 1) * span // tail_programs).to(gl.int32)
        else:
            col0 = pid * 0  # tensors like the other branch's, which Triton's `if` needs
            ncols = whole_cols + col0
            start = pid * blocks
            end = start + blocks

        x_bufs = gl.allocate_shared_memory(dtype, [X_GROUPS * PER_WAIT, BLOCK_M, _CHUNK], x_desc.layout)
        w_bufs = gl.allocate_shared_memory(gl.int32, [W_STAGES, 128, _CHUNK], w_desc.layout)
        x_ready = gl.allocate_shared_memory(gl.int64, [X_GROUPS, 1], mbarrier.MBarrierLayout())
        x_empty = gl.allocate_shared_memory(gl.int64, [X_GROUPS, 1], mbarrier.MBarrierLayout())
        w_ready = gl.allocate_shared_memory(gl.int64, [W_STAGES, 1], mbarrier.MBarrierLayout())
        w_empty = gl.allocate_shared_memory(gl.int64, [W_STAGES, 1], mbarrier.MBarrierLayout())
        for s in gl.static_range(X_GROUPS):
            mbarrier.init(x_ready.index(s), count=1)
            mbarrier.init(x_empty.index(s), count=2)  # each warpgroup releases the slot
        for s in gl.static_range(W_STAGES):
            mbarrier.init(w_ready.index(s), count=1)
            mbarrier.init(w_empty.index(s), count=2)

        gl.warp_specialize(
            [
                (
                    _warpgroup,
                    (x_desc, x_bufs, w_bufs, x_ready, x_empty, w_ready, w_empty, start, end, blocks, col0, ncols, 0,
                     BLOCK_M, GROUP, MAGIC, X_GROUPS, W_STAGES, PER_WAIT, TAIL, out_ptr, scale_zeros_ptr, M, N,
                     stride_om, is_tail, tail_ptr, stride_tm, 128 * whole_cols),
                ),
                (
                    _warpgroup,
                    (x_desc, x_bufs, w_bufs, x_ready, x_empty, w_ready, w_empty, start, end, blocks, col0, ncols, 1,
                     BLOCK_M, GROUP, MAGIC, X_GROUPS, W_STAGES, PER_WAIT, TAIL, out_ptr, scale_zeros_ptr, M, N,
                     stride_om, is_tail, tail_ptr, stride_tm, 128 * whole_cols),
                ),
                (
                    _loader,
                    (x_desc, w_desc, x_bufs, w_bufs, x_ready, x_empty, w_ready, w_empty, start, end, blocks, col0,
                     ncols, BLOCK_M, X_GROUPS, W_STAGES, PER_WAIT),
                ),
            ],
            [4, 1],
            [232, 24],
        )


def available(device: torch.device) -> bool:
    """Whether this kernel can run here: Gluon present and an sm_90 GPU."""
    return gluon is not None and device.type == "cuda" and _is_sm90(device.index or 0)


@functools.cache
def _is_sm90(device_index: int) -> bool:  # cached: `run_rp` asks on every forward of a "ws" pick
    return torch.cuda.get_device_capability(device_index) == (9, 0)


def descriptor_layouts(block_m: int, dtype: torch.dtype) -> tuple:
    """Shared-memory layouts of the TMA tiles (activation chunk, a block's words): the kernel's
    descriptor types, which `launch_ws` builds and the sm_90 compile test names."""
    x_dtype = {torch.float16: gl.float16, torch.bfloat16: gl.bfloat16}[dtype]
    return (
        gl.NVMMASharedLayout.get_default_for([block_m, CHUNK], x_dtype),
        gl.NVMMASharedLayout.get_default_for([BLOCK_N, CHUNK], gl.int32),
    )


def tail_dtype(dtype: torch.dtype) -> torch.dtype:
    """What the tail's K slices add up in: fp32 for bf16 (bf16 atomics would round each slice to 8
    bits), the output's own fp16 columns for fp16."""
    return torch.float32 if dtype == torch.bfloat16 else dtype


def kernel_constexprs(
    dtype: torch.dtype, group_size: int, block_m: int, x_stages: int, dots_per_wait: int, tail: bool
) -> dict:
    """`w4a16_ws_kernel`'s compile-time arguments for these settings, as `launch_ws` passes them and
    the sm_90 compile test builds them."""
    return {
        "MAGIC": _MAGIC[dtype], "GROUP": group_size, "BLOCK_M": block_m, "X_GROUPS": x_stages // dots_per_wait,
        "W_STAGES": word_stages(block_m), "PER_WAIT": dots_per_wait, "TAIL": tail,
    }


def launch_ws(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale_zeros: torch.Tensor,
    group_size: int,
    block_m: int = 256,
    x_stages: int = 12,
    split_k: int = 1,
    dots_per_wait: int = DOTS_PER_WAIT,
    slots: int = 0,
    plan: tuple[int, int] | None = None,
) -> torch.Tensor:
    """`x [M, K] @ W^T` over vlq's layout with `w4a16_ws_kernel`: `block_m` tokens (64, 128 or 256)
    per program, `x_stages` activation chunks in flight, and a full wait after every
    `dots_per_wait` dots (1, 2, 4 or 8: groups tile a 256-block; the ring holds whole groups, so
    `x_stages` is a multiple of it). `split_k` > 1 cuts every tile's K into about that many slices
    (atomically added; `nonempty_split` makes it at most K / 256). With `split_k` 1 and `slots`,
    the programs that run at once (one per SM: the kernel's registers allow no more), the tiles
    that would leave the last wave part empty share their blocks out to fill it
    (`balanced_tail`); `plan` (whole columns, tail programs) sets that split by hand (the probe
    times plans with it)."""
    if dots_per_wait not in (1, 2, 4, 8) or x_stages % dots_per_wait:
        raise ValueError(
            f"dots_per_wait must be 1, 2, 4 or 8 and divide x_stages; got {dots_per_wait} with {x_stages} stages"
        )
    m, k = x.shape
    n = qweight.shape[0]
    cols, m_tiles, blocks = triton.cdiv(n, BLOCK_N), triton.cdiv(m, block_m), k // 256
    if plan is not None:
        whole_cols, tail_programs = plan
    elif split_k > 1:
        whole_cols, tail_programs = 0, cols * m_tiles * nonempty_split(blocks, split_k)
    else:
        whole_cols, tail_programs = balanced_tail(cols, m_tiles, blocks, slots) if slots else (cols, 0)
    tail_tiles = (cols - whole_cols) * m_tiles
    if not 0 <= whole_cols <= cols or not (tail_tiles == tail_programs == 0 or 0 < tail_programs <= tail_tiles * blocks):
        raise ValueError(
            f"no such split of {cols}x{m_tiles} tiles of {blocks} blocks: {whole_cols} whole columns, "
            f"{tail_programs} tail programs (a tail needs programs, each program a block)"
        )
    if not x.is_contiguous() or x.data_ptr() % 16:  # TMA reads whole rows from a 16-byte-aligned base
        x = x.clone(memory_format=torch.contiguous_format)
    x_layout, w_layout = descriptor_layouts(block_m, x.dtype)
    x_desc = TensorDescriptor.from_tensor(x, [block_m, CHUNK], x_layout)
    w_desc = TensorDescriptor.from_tensor(qweight, [BLOCK_N, CHUNK], w_layout)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    has_tail, tail_n0 = tail_programs > 0, BLOCK_N * whole_cols
    if not has_tail:
        tail = out
    elif tail_dtype(x.dtype) == x.dtype:
        tail = out[:, tail_n0:].zero_()
    else:
        tail = torch.zeros((m, n - tail_n0), dtype=tail_dtype(x.dtype), device=x.device)
    grid = (whole_cols * m_tiles + tail_programs,)
    w4a16_ws_kernel[grid](
        x_desc, w_desc, scale_zeros, out, tail, m, n, k, out.stride(0), tail.stride(0), whole_cols, tail_programs,
        **kernel_constexprs(x.dtype, group_size, block_m, x_stages, dots_per_wait, has_tail),
        # 12 warps (two consumer warpgroups, the TMA warp's group): 168 registers each at launch,
        # then 232 for the consumers and 24 for the copy warp
        num_warps=4, maxnreg=168,
    )
    if tail.dtype != out.dtype:
        out[:, tail_n0:] = tail
    return out
