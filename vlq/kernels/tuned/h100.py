"""Fastest vlq-layout settings per (K, N) and token count, as `benchmarks/gemm_sweep.py --write-table`
measured them on NVIDIA H100 80GB HBM3 (2026-12-06, fp16, group 128).

`pick_rp_config` takes the entry of the smallest swept token count >= M on GPUs of this model;
other shapes use `heuristic_rp_config`. Generated file: rerun the sweep rather than editing it.

Merged by hand on 2026-12-06, same GPU: the lines marked `ws-probe` are the warp-specialized
kernel (`vlq.kernels.ws_w4a16`) where `benchmarks/ws_probe.py` timed it faster than this table's
pick in the same run. Probe 1 timed the build whose wgmmas ptxas serialized (1024 tokens on three
shapes won); probe 2 the fixed one, which wins at 256 and 1024 tokens on all four shapes and
loses to dequantize + cuBLAS at 4096 (those stay). A 256-token tile costs the same for 129 tokens
as for 256, and so do the earlier picks' two 128-token tiles, so ws takes the whole 129-256
bucket. The 512 lines keep the earlier pick for 257-512 tokens, where ws was not timed. The sweep
has ws candidates (`prefill_candidates`); its next run replaces all of this.
"""

from vlq.kernels.triton_w4a16 import RpConfig

DEVICE = 'NVIDIA H100 80GB HBM3'
TUNED: dict[tuple[int, int], dict[int, RpConfig]] = {
    (4096, 11008): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=32, num_warps=8, blocks_per_step=2, half_sums=True),  # 11.6 us; fp16 33.3, AWQ-layout kernels 28.0
        2: RpConfig(split_k=3, fold=True),  # 12.7 us; fp16 33.7, AWQ-layout kernels 29.0
        4: RpConfig(split_k=3, fold=True),  # 12.5 us; fp16 33.9, AWQ-layout kernels 28.9
        8: RpConfig(split_k=3, fold=True),  # 12.6 us; fp16 34.1, AWQ-layout kernels 29.0
        16: RpConfig(split_k=3, fold=True),  # 12.6 us; fp16 34.3, AWQ-layout kernels 29.3
        32: RpConfig(block_m=32, split_k=2, fold=True),  # 14.4 us; fp16 34.9, AWQ-layout kernels 34.2
        64: RpConfig(block_m=64, block_n=256, split_k=3, num_warps=8),  # 19.7 us; fp16 33.0, AWQ-layout kernels 32.5
        128: RpConfig(kernel='streamk', block_m=128, block_n=128, num_warps=8, programs_per_sm=1),  # 32.1 us; fp16 36.1, AWQ-layout kernels 57.2
        256: RpConfig(kernel='ws', block_m=256, num_stages=8, split_k=3),  # ws-probe 2: 47.1 us; fp16 41.1, table pick (stream-K) 55.1
        512: RpConfig(kernel='deq', chunk_mb=32),  # kept: the sweep's 1024 pick, so 257-512 tokens run as before
        1024: RpConfig(kernel='ws', block_m=256, num_stages=8),  # ws-probe 2: 151.6 us; fp16 127.9, table pick (deq) 157.8
        4096: RpConfig(kernel='deq', chunk_mb=16),  # 555.5 us; fp16 498.5, AWQ-layout kernels 547.8
    },
    (8192, 28672): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=16, num_warps=2, blocks_per_step=1, half_sums=True),  # 45.8 us; fp16 153.0, AWQ-layout kernels 81.0
        2: RpConfig(fold=True),  # 46.9 us; fp16 152.9, AWQ-layout kernels 76.3
        4: RpConfig(fold=True),  # 47.1 us; fp16 153.1, AWQ-layout kernels 79.5
        8: RpConfig(fold=True),  # 47.5 us; fp16 153.8, AWQ-layout kernels 88.8
        16: RpConfig(fold=True),  # 48.0 us; fp16 154.1, AWQ-layout kernels 108.3
        32: RpConfig(block_m=32, split_k=4, fold=True),  # 56.4 us; fp16 156.0, AWQ-layout kernels 136.6
        64: RpConfig(block_m=64, block_n=256, num_warps=8),  # 74.1 us; fp16 161.3, AWQ-layout kernels 131.0
        128: RpConfig(kernel='streamk', block_m=128, block_n=128, num_warps=8, programs_per_sm=1),  # 126.8 us; fp16 161.9, AWQ-layout kernels 204.3
        256: RpConfig(kernel='ws', block_m=256, num_stages=8),  # ws-probe 2: 196.9 us; fp16 210.7, table pick (stream-K) 245.8
        512: RpConfig(kernel='deq'),  # kept: the sweep's 1024 pick, so 257-512 tokens run as before
        1024: RpConfig(kernel='ws', block_m=256, num_stages=8),  # ws-probe 2: 716.3 us; fp16 628.4 (ws-probe 1: 779.0, deq 836.5)
        4096: RpConfig(kernel='deq'),  # 2970.2 us; fp16 2512.0, AWQ-layout kernels 2965.5
    },
    (11008, 4096): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=8, half_sums=True),  # 12.1 us; fp16 34.9, AWQ-layout kernels 29.3
        2: RpConfig(split_k=4, num_stages=4, fold=True),  # 12.6 us; fp16 34.5, AWQ-layout kernels 26.2
        4: RpConfig(split_k=4, num_stages=4, fold=True),  # 12.7 us; fp16 34.6, AWQ-layout kernels 26.3
        8: RpConfig(split_k=4, num_stages=4, fold=True),  # 12.7 us; fp16 35.0, AWQ-layout kernels 26.4
        16: RpConfig(split_k=4, num_stages=4, fold=True),  # 12.8 us; fp16 35.4, AWQ-layout kernels 26.8
        32: RpConfig(block_m=32, split_k=4, fold=True),  # 14.3 us; fp16 36.0, AWQ-layout kernels 30.1
        64: RpConfig(block_m=64, block_n=128, split_k=4, num_warps=8),  # 18.6 us; fp16 37.0, AWQ-layout kernels 26.6
        128: RpConfig(block_m=128, block_n=128, split_k=4, num_warps=8),  # 26.9 us; fp16 36.5, AWQ-layout kernels 46.7
        256: RpConfig(kernel='ws', block_m=256, num_stages=8, split_k=4),  # ws-probe 2: 40.2 us; fp16 50.1, table pick (rp split 2) 48.3
        512: RpConfig(kernel='deq'),  # kept: the sweep's 1024 pick, so 257-512 tokens run as before
        1024: RpConfig(kernel='ws', block_m=256, num_stages=8),  # ws-probe 2: 133.8 us; fp16 119.5 (ws-probe 1: 142.1, deq 159.7)
        4096: RpConfig(kernel='deq', chunk_mb=32),  # 586.6 us; fp16 469.5, AWQ-layout kernels 544.8
    },
    (4096, 4096): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=8, half_sums=True),  # 6.1 us; fp16 17.0, AWQ-layout kernels 14.1
        2: RpConfig(block_n=32, split_k=4, num_warps=2, fold=True),  # 7.5 us; fp16 16.0, AWQ-layout kernels 13.1
        4: RpConfig(split_k=4, fold=True),  # 7.6 us; fp16 16.0, AWQ-layout kernels 13.1
        8: RpConfig(block_n=32, split_k=4, num_warps=2, fold=True),  # 7.6 us; fp16 13.9, AWQ-layout kernels 13.1
        16: RpConfig(split_k=4, fold=True),  # 7.6 us; fp16 16.2, AWQ-layout kernels 13.3
        32: RpConfig(block_m=32, split_k=4, fold=True),  # 8.2 us; fp16 14.2, AWQ-layout kernels 13.8
        64: RpConfig(block_m=64, split_k=4, fold=True),  # 9.8 us; fp16 14.3, AWQ-layout kernels 13.0
        128: RpConfig(block_m=128, block_n=128, split_k=4, num_warps=8),  # 14.1 us; fp16 14.4, AWQ-layout kernels 20.6
        256: RpConfig(kernel='ws', block_m=256, num_stages=8, split_k=4),  # ws-probe 2: 20.6 us; fp16 18.8, table pick (rp split 2) 25.9
        512: RpConfig(kernel='deq'),  # kept: the sweep's 1024 pick, so 257-512 tokens run as before
        1024: RpConfig(kernel='ws', block_m=256, num_stages=8),  # ws-probe 2: 51.8 us; fp16 46.8 (ws-probe 1: 57.6, deq 59.7)
        4096: RpConfig(kernel='deq'),  # 196.6 us; fp16 180.9, AWQ-layout kernels 204.2
    },
}
