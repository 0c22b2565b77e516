"""Fastest vlq-layout settings per (K, N) and token count, as `benchmarks/gemm_sweep.py --write-table`
measured them on NVIDIA H200 (2026-12-04, fp16, group 128). Entries for M = 1, 2, 4, 8, 16, 32 are
kept from the earlier table (NVIDIA H100 80GB HBM3).

`pick_rp_config` takes the entry of the smallest swept token count >= M; other shapes use
`heuristic_rp_config`. Generated file: rerun the sweep rather than editing it.
"""

from vlq.kernels.triton_w4a16 import RpConfig

DEVICE = 'NVIDIA H200'
TUNED: dict[tuple[int, int], dict[int, RpConfig]] = {
    (4096, 11008): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=32, num_warps=8, blocks_per_step=2, half_sums=True),  # 12.3 us; fp16 34.8, AWQ-layout kernels 28.8
        2: RpConfig(split_k=3, fold=True),  # 13.2 us; fp16 35.4, AWQ-layout kernels 29.4
        4: RpConfig(split_k=3, fold=True),  # 13.2 us; fp16 35.7, AWQ-layout kernels 29.7
        8: RpConfig(split_k=3, fold=True),  # 13.3 us; fp16 36.2, AWQ-layout kernels 29.8
        16: RpConfig(split_k=3, fold=True),  # 13.4 us; fp16 35.4, AWQ-layout kernels 29.7
        32: RpConfig(block_m=32, split_k=2, fold=True),  # 15.1 us; fp16 36.3, AWQ-layout kernels 34.3
        64: RpConfig(block_m=64, split_k=3, fold=True),  # 20.5 us; fp16 25.7, AWQ-layout kernels 33.2
        128: RpConfig(block_m=128, block_n=128, split_k=3, num_warps=8),  # 33.5 us; fp16 26.7, AWQ-layout kernels 57.8
        256: RpConfig(block_m=128, block_n=128, split_k=3, num_warps=8),  # 59.3 us; fp16 35.7, AWQ-layout kernels 66.9
        1024: RpConfig(kernel='deq'),  # 152.7 us; fp16 127.1, AWQ-layout kernels 159.8
        4096: RpConfig(kernel='deq', chunk_mb=32),  # 532.3 us; fp16 509.9, AWQ-layout kernels 552.1
    },
    (8192, 28672): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=16, num_warps=2, blocks_per_step=1, half_sums=True),  # 48.7 us; fp16 162.7, AWQ-layout kernels 77.3
        2: RpConfig(fold=True),  # 50.7 us; fp16 162.6, AWQ-layout kernels 78.2
        4: RpConfig(fold=True),  # 50.6 us; fp16 162.5, AWQ-layout kernels 80.9
        8: RpConfig(fold=True),  # 51.1 us; fp16 163.3, AWQ-layout kernels 90.7
        16: RpConfig(fold=True),  # 51.4 us; fp16 162.6, AWQ-layout kernels 109.9
        32: RpConfig(block_m=32, split_k=4, fold=True),  # 59.0 us; fp16 167.5, AWQ-layout kernels 142.1
        64: RpConfig(block_m=64, split_k=2, fold=True),  # 83.1 us; fp16 121.2, AWQ-layout kernels 149.3
        128: RpConfig(block_m=128, block_n=128, num_warps=8),  # 137.1 us; fp16 129.4, AWQ-layout kernels 205.7
        256: RpConfig(block_m=128, block_n=128, split_k=2, num_warps=8),  # 255.9 us; fp16 188.2, AWQ-layout kernels 342.1
        1024: RpConfig(kernel='deq'),  # 803.6 us; fp16 641.0, AWQ-layout kernels 795.3
        4096: RpConfig(kernel='deq', chunk_mb=32),  # 2648.4 us; fp16 2579.8, AWQ-layout kernels 2721.3
    },
    (11008, 4096): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=8, half_sums=True),  # 13.0 us; fp16 36.2, AWQ-layout kernels 28.6
        2: RpConfig(split_k=8, fold=True),  # 13.7 us; fp16 36.0, AWQ-layout kernels 27.0
        4: RpConfig(split_k=4, fold=True),  # 14.0 us; fp16 37.4, AWQ-layout kernels 30.8
        8: RpConfig(split_k=8, fold=True),  # 13.7 us; fp16 36.4, AWQ-layout kernels 26.9
        16: RpConfig(split_k=8, fold=True),  # 14.2 us; fp16 36.9, AWQ-layout kernels 27.4
        32: RpConfig(block_m=32, split_k=4, fold=True),  # 15.3 us; fp16 37.5, AWQ-layout kernels 30.5
        64: RpConfig(block_m=64, split_k=4, fold=True),  # 19.1 us; fp16 29.4, AWQ-layout kernels 30.2
        128: RpConfig(block_m=128, block_n=128, split_k=4, num_warps=8),  # 28.4 us; fp16 31.2, AWQ-layout kernels 47.9
        256: RpConfig(block_m=128, block_n=128, split_k=2, num_warps=8),  # 50.0 us; fp16 40.9, AWQ-layout kernels 72.6
        1024: RpConfig(kernel='deq'),  # 149.4 us; fp16 121.4, AWQ-layout kernels 147.5
        4096: RpConfig(kernel='deq'),  # 506.1 us; fp16 483.7, AWQ-layout kernels 514.6
    },
    (4096, 4096): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=8, half_sums=True),  # 6.5 us; fp16 17.0, AWQ-layout kernels 13.7
        2: RpConfig(split_k=4, fold=True),  # 7.9 us; fp16 16.6, AWQ-layout kernels 13.4
        4: RpConfig(split_k=4, fold=True),  # 7.9 us; fp16 16.5, AWQ-layout kernels 13.5
        8: RpConfig(split_k=4, fold=True),  # 8.0 us; fp16 14.3, AWQ-layout kernels 13.5
        16: RpConfig(split_k=4, fold=True),  # 7.9 us; fp16 17.8, AWQ-layout kernels 14.5
        32: RpConfig(block_m=32, split_k=4, fold=True),  # 8.6 us; fp16 14.7, AWQ-layout kernels 14.0
        64: RpConfig(block_m=64, split_k=4, fold=True),  # 10.1 us; fp16 11.9, AWQ-layout kernels 14.5
        128: RpConfig(block_m=128, block_n=128, split_k=4, num_warps=8),  # 14.4 us; fp16 14.1, AWQ-layout kernels 21.2
        256: RpConfig(block_m=128, block_n=128, split_k=2, num_warps=8),  # 22.5 us; fp16 16.0, AWQ-layout kernels 26.0
        1024: RpConfig(kernel='deq'),  # 57.4 us; fp16 47.2, AWQ-layout kernels 57.6
        4096: RpConfig(kernel='deq'),  # 192.7 us; fp16 184.3, AWQ-layout kernels 194.2
    },
}
