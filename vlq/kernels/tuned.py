"""Fastest vlq-layout settings per (K, N) and token count, as `benchmarks/gemm_sweep.py --write-table`
measured them on NVIDIA H100 80GB HBM3 (2026-11-23, fp16, group 128).

`pick_rp_config` takes the entry of the smallest swept token count >= M; other shapes use
`heuristic_rp_config`. Generated file: rerun the sweep rather than editing it.
"""

from vlq.kernels.triton_w4a16 import RpConfig

DEVICE = 'NVIDIA H100 80GB HBM3'
TUNED: dict[tuple[int, int], dict[int, RpConfig]] = {
    (4096, 11008): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=32, num_warps=8, blocks_per_step=2, half_sums=True),  # 13.0 us; fp16 33.4, AWQ-layout kernels 28.5
        2: RpConfig(split_k=3, fold=True),  # 15.2 us; fp16 33.4, AWQ-layout kernels 29.2
        4: RpConfig(split_k=3, fold=True),  # 15.2 us; fp16 33.5, AWQ-layout kernels 29.2
        8: RpConfig(split_k=3, fold=True),  # 15.2 us; fp16 36.9, AWQ-layout kernels 29.2
        16: RpConfig(split_k=3, fold=True),  # 14.9 us; fp16 37.0, AWQ-layout kernels 29.5
        32: RpConfig(block_m=32, split_k=3),  # 18.1 us; fp16 34.4, AWQ-layout kernels 33.9
        64: RpConfig(block_m=64, split_k=3),  # 22.8 us; fp16 35.3, AWQ-layout kernels 33.6
        128: RpConfig(block_m=128, block_n=128, split_k=3, num_warps=8),  # 34.9 us; fp16 37.0, AWQ-layout kernels 56.3
        256: RpConfig(block_m=128, block_n=128, split_k=3, num_warps=8),  # 63.6 us; fp16 40.0, AWQ-layout kernels 85.3
        1024: RpConfig(kernel='deq', chunk_mb=32),  # 161.7 us; fp16 128.4, AWQ-layout kernels 181.7
        4096: RpConfig(kernel='deq', chunk_mb=16),  # 533.9 us; fp16 501.9, AWQ-layout kernels 560.9
    },
    (8192, 28672): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=16, num_warps=2, blocks_per_step=1, half_sums=True),  # 50.1 us; fp16 167.9, AWQ-layout kernels 77.4
        2: RpConfig(split_k=6, fold=True),  # 55.9 us; fp16 167.8, AWQ-layout kernels 76.4
        4: RpConfig(split_k=2, fold=True),  # 55.7 us; fp16 166.9, AWQ-layout kernels 80.4
        8: RpConfig(split_k=6, fold=True),  # 56.0 us; fp16 162.4, AWQ-layout kernels 90.1
        16: RpConfig(split_k=2, fold=True),  # 56.5 us; fp16 168.1, AWQ-layout kernels 108.8
        32: RpConfig(block_m=32),  # 75.4 us; fp16 166.7, AWQ-layout kernels 141.1
        64: RpConfig(block_m=64, split_k=2),  # 98.0 us; fp16 174.0, AWQ-layout kernels 133.1
        128: RpConfig(block_m=128, block_n=128, num_warps=8),  # 146.4 us; fp16 170.7, AWQ-layout kernels 206.6
        256: RpConfig(block_m=128, block_n=128, split_k=2, num_warps=8),  # 274.6 us; fp16 196.8, AWQ-layout kernels 414.3
        1024: RpConfig(kernel='deq', chunk_mb=32),  # 839.6 us; fp16 624.3, AWQ-layout kernels 844.3
        4096: RpConfig(kernel='deq'),  # 2730.7 us; fp16 2529.0, AWQ-layout kernels 2736.3
    },
    (11008, 4096): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=8, half_sums=True),  # 14.5 us; fp16 36.3, AWQ-layout kernels 29.3
        2: RpConfig(split_k=16, fold=True),  # 15.8 us; fp16 35.8, AWQ-layout kernels 26.5
        4: RpConfig(split_k=16, fold=True),  # 15.8 us; fp16 35.8, AWQ-layout kernels 26.5
        8: RpConfig(split_k=16, fold=True),  # 15.9 us; fp16 36.0, AWQ-layout kernels 26.5
        16: RpConfig(split_k=4),  # 15.9 us; fp16 36.7, AWQ-layout kernels 26.9
        32: RpConfig(block_m=32, split_k=4),  # 16.9 us; fp16 37.2, AWQ-layout kernels 29.8
        64: RpConfig(block_m=64, block_n=128, split_k=4, num_warps=8),  # 21.8 us; fp16 38.7, AWQ-layout kernels 26.7
        128: RpConfig(block_m=128, split_k=2),  # 35.0 us; fp16 38.2, AWQ-layout kernels 46.7
        256: RpConfig(block_m=128, block_n=128, split_k=2, num_warps=8),  # 52.6 us; fp16 53.2, AWQ-layout kernels 87.7
        1024: RpConfig(kernel='deq'),  # 159.6 us; fp16 119.4, AWQ-layout kernels 156.3
        4096: RpConfig(kernel='deq'),  # 517.2 us; fp16 476.7, AWQ-layout kernels 505.5
    },
    (4096, 4096): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=8, half_sums=True),  # 7.0 us; fp16 16.9, AWQ-layout kernels 13.9
        2: RpConfig(kernel='gemv', block_m=2, block_n=16, blocks_per_step=2, half_sums=True),  # 8.4 us; fp16 16.4, AWQ-layout kernels 13.1
        4: RpConfig(split_k=4, fold=True),  # 8.6 us; fp16 16.3, AWQ-layout kernels 13.2
        8: RpConfig(split_k=4),  # 8.7 us; fp16 14.2, AWQ-layout kernels 13.3
        16: RpConfig(split_k=4),  # 8.7 us; fp16 16.6, AWQ-layout kernels 13.4
        32: RpConfig(block_m=32, split_k=4),  # 9.1 us; fp16 14.5, AWQ-layout kernels 13.7
        64: RpConfig(block_m=64, split_k=4),  # 11.3 us; fp16 15.0, AWQ-layout kernels 13.3
        128: RpConfig(block_m=128, split_k=2),  # 16.5 us; fp16 15.2, AWQ-layout kernels 21.0
        256: RpConfig(block_m=128, block_n=128, split_k=2, num_warps=8),  # 23.1 us; fp16 18.6, AWQ-layout kernels 30.7
        1024: RpConfig(kernel='deq', chunk_mb=32),  # 59.4 us; fp16 46.4, AWQ-layout kernels 59.6
        4096: RpConfig(kernel='deq', chunk_mb=32),  # 194.9 us; fp16 182.3, AWQ-layout kernels 199.7
    },
}
