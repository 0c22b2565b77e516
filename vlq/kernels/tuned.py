"""Fastest vlq-layout settings per (K, N) and token count, as `benchmarks/gemm_sweep.py --write-table`
measured them on NVIDIA H100 80GB HBM3 (2026-11-23, fp16, group 128).

`pick_rp_config` takes the entry of the smallest swept token count >= M; other shapes use
`heuristic_rp_config`. Generated file: rerun the sweep rather than editing it.
"""

from vlq.kernels.triton_w4a16 import RpConfig

DEVICE = 'NVIDIA H100 80GB HBM3'
TUNED: dict[tuple[int, int], dict[int, RpConfig]] = {
    (4096, 11008): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=32, num_warps=8, blocks_per_step=2, half_sums=True),  # 12.9 us; fp16 34.5, AWQ-layout kernels 28.4
        2: RpConfig(split_k=2, fold=True),  # 16.0 us; fp16 34.9, AWQ-layout kernels 28.9
        4: RpConfig(split_k=2, fold=True),  # 16.0 us; fp16 35.4, AWQ-layout kernels 28.9
        8: RpConfig(split_k=2, fold=True),  # 16.2 us; fp16 35.5, AWQ-layout kernels 29.2
        16: RpConfig(split_k=2),  # 16.1 us; fp16 35.5, AWQ-layout kernels 29.5
        32: RpConfig(block_m=32, split_k=2, fold=True),  # 19.7 us; fp16 36.3, AWQ-layout kernels 34.0
        64: RpConfig(block_m=64, split_k=2),  # 25.6 us; fp16 34.6, AWQ-layout kernels 33.1
        128: RpConfig(block_m=128, block_n=128, num_warps=8),  # 37.5 us; fp16 36.9, AWQ-layout kernels 55.5
        256: RpConfig(block_m=128, block_n=128, split_k=2, num_warps=8),  # 63.4 us; fp16 39.6, AWQ-layout kernels 87.4
        1024: RpConfig(kernel='deq', chunk_mb=32),  # 162.8 us; fp16 128.2, AWQ-layout kernels 180.0
        4096: RpConfig(kernel='deq', chunk_mb=32),  # 546.1 us; fp16 505.9, AWQ-layout kernels 561.9
    },
    (8192, 28672): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=16, num_warps=2, blocks_per_step=1, half_sums=True),  # 48.8 us; fp16 160.7, AWQ-layout kernels 82.0
        2: RpConfig(split_k=2, fold=True),  # 55.9 us; fp16 161.0, AWQ-layout kernels 77.0
        4: RpConfig(split_k=2, fold=True),  # 56.0 us; fp16 160.8, AWQ-layout kernels 80.1
        8: RpConfig(split_k=2, fold=True),  # 56.5 us; fp16 169.2, AWQ-layout kernels 89.4
        16: RpConfig(split_k=2, fold=True),  # 57.2 us; fp16 161.3, AWQ-layout kernels 108.4
        32: RpConfig(block_m=32),  # 74.2 us; fp16 163.5, AWQ-layout kernels 139.9
        64: RpConfig(block_m=64, split_k=2),  # 97.0 us; fp16 171.2, AWQ-layout kernels 132.8
        128: RpConfig(block_m=128, block_n=128, num_warps=8),  # 147.1 us; fp16 170.1, AWQ-layout kernels 204.4
        256: RpConfig(block_m=128, block_n=128, split_k=2, num_warps=8),  # 274.6 us; fp16 196.8, AWQ-layout kernels 412.1
        1024: RpConfig(kernel='deq', chunk_mb=32),  # 834.6 us; fp16 629.3, AWQ-layout kernels 846.4
        4096: RpConfig(kernel='deq'),  # 2760.7 us; fp16 2544.3, AWQ-layout kernels 2747.3
    },
    (11008, 4096): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=8, half_sums=True),  # 14.6 us; fp16 36.8, AWQ-layout kernels 29.3
        2: RpConfig(split_k=4),  # 15.7 us; fp16 35.7, AWQ-layout kernels 26.5
        4: RpConfig(split_k=4),  # 15.8 us; fp16 35.9, AWQ-layout kernels 26.5
        8: RpConfig(split_k=4),  # 15.9 us; fp16 36.1, AWQ-layout kernels 26.5
        16: RpConfig(split_k=4, fold=True),  # 15.9 us; fp16 36.4, AWQ-layout kernels 26.9
        32: RpConfig(block_m=32, split_k=4),  # 16.9 us; fp16 37.2, AWQ-layout kernels 30.2
        64: RpConfig(block_m=64, block_n=128, split_k=4, num_warps=8),  # 21.8 us; fp16 38.4, AWQ-layout kernels 26.5
        128: RpConfig(block_m=128, split_k=2),  # 35.1 us; fp16 38.2, AWQ-layout kernels 46.7
        256: RpConfig(block_m=128, block_n=128, split_k=2, num_warps=8),  # 53.3 us; fp16 50.8, AWQ-layout kernels 87.1
        1024: RpConfig(kernel='deq'),  # 162.8 us; fp16 120.2, AWQ-layout kernels 156.6
        4096: RpConfig(kernel='deq', chunk_mb=32),  # 522.4 us; fp16 482.9, AWQ-layout kernels 524.4
    },
    (4096, 4096): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=8, half_sums=True),  # 7.0 us; fp16 17.0, AWQ-layout kernels 14.6
        2: RpConfig(kernel='gemv', block_m=2, block_n=16, blocks_per_step=2, half_sums=True),  # 8.4 us; fp16 16.3, AWQ-layout kernels 13.1
        4: RpConfig(split_k=4),  # 8.6 us; fp16 16.6, AWQ-layout kernels 13.4
        8: RpConfig(split_k=4),  # 8.6 us; fp16 14.1, AWQ-layout kernels 13.2
        16: RpConfig(split_k=4, fold=True),  # 8.7 us; fp16 16.7, AWQ-layout kernels 13.3
        32: RpConfig(block_m=32, split_k=4),  # 9.2 us; fp16 14.7, AWQ-layout kernels 13.8
        64: RpConfig(block_m=64, split_k=4),  # 11.1 us; fp16 14.7, AWQ-layout kernels 13.1
        128: RpConfig(block_m=128, split_k=2),  # 16.1 us; fp16 15.1, AWQ-layout kernels 20.8
        256: RpConfig(block_m=128, block_n=128, split_k=2, num_warps=8),  # 23.8 us; fp16 18.6, AWQ-layout kernels 30.3
        1024: RpConfig(kernel='deq'),  # 59.8 us; fp16 46.7, AWQ-layout kernels 59.4
        4096: RpConfig(kernel='deq'),  # 196.8 us; fp16 185.0, AWQ-layout kernels 195.2
    },
}
