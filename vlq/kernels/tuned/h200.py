"""Fastest vlq-layout settings per (K, N) and token count, as `benchmarks/gemm_sweep.py --write-table`
measured them on NVIDIA H200 (2026-12-04, fp16, group 128). Entries for M = 1, 2, 4, 8, 16, 32, 4096
are kept from the earlier table (NVIDIA H200).

`pick_rp_config` takes the entry of the smallest swept token count >= M on GPUs of this model;
other shapes use `heuristic_rp_config`. Generated file: rerun the sweep rather than editing it.
"""

from vlq.kernels.triton_w4a16 import RpConfig

DEVICE = 'NVIDIA H200'
TUNED: dict[tuple[int, int], dict[int, RpConfig]] = {
    (4096, 11008): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=32, num_warps=8, blocks_per_step=2, half_sums=True),  # 11.3 us; fp16 23.9, AWQ-layout kernels 27.6
        2: RpConfig(split_k=3, fold=True),  # 11.4 us; fp16 24.4, AWQ-layout kernels 28.3
        4: RpConfig(split_k=3, fold=True),  # 11.5 us; fp16 24.6, AWQ-layout kernels 28.4
        8: RpConfig(split_k=3, fold=True),  # 11.4 us; fp16 25.0, AWQ-layout kernels 28.5
        16: RpConfig(split_k=3, fold=True),  # 11.5 us; fp16 24.5, AWQ-layout kernels 28.4
        32: RpConfig(block_m=32, split_k=2, fold=True),  # 14.2 us; fp16 24.9, AWQ-layout kernels 34.2
        64: RpConfig(block_m=64, block_n=256, split_k=3, num_warps=8),  # 19.9 us; fp16 24.9, AWQ-layout kernels 33.5
        128: RpConfig(block_m=128, block_n=128, split_k=3, num_warps=8),  # 32.5 us; fp16 26.1, AWQ-layout kernels 57.4
        256: RpConfig(block_m=128, block_n=128, split_k=3, num_warps=8),  # 57.8 us; fp16 35.4, AWQ-layout kernels 67.2
        1024: RpConfig(kernel='deq'),  # 151.1 us; fp16 125.8, AWQ-layout kernels 161.7
        4096: RpConfig(kernel='deq'),  # 539.4 us; fp16 504.0, AWQ-layout kernels 548.4
    },
    (8192, 28672): {
        1: RpConfig(split_k=2, fold=True),  # 39.6 us; fp16 108.1, AWQ-layout kernels 82.9
        2: RpConfig(split_k=2, fold=True),  # 39.8 us; fp16 106.1, AWQ-layout kernels 75.7
        4: RpConfig(split_k=2, fold=True),  # 39.8 us; fp16 107.7, AWQ-layout kernels 80.0
        8: RpConfig(split_k=2, fold=True),  # 40.0 us; fp16 106.8, AWQ-layout kernels 87.9
        16: RpConfig(split_k=2, fold=True),  # 40.5 us; fp16 113.4, AWQ-layout kernels 107.2
        32: RpConfig(block_m=32, split_k=2, fold=True),  # 52.1 us; fp16 113.1, AWQ-layout kernels 137.7
        64: RpConfig(block_m=64, block_n=256, num_warps=8),  # 75.2 us; fp16 119.8, AWQ-layout kernels 133.2
        128: RpConfig(block_m=128, block_n=128, num_warps=8),  # 130.8 us; fp16 129.3, AWQ-layout kernels 206.3
        256: RpConfig(block_m=128, block_n=128, split_k=2, num_warps=8),  # 248.2 us; fp16 187.4, AWQ-layout kernels 344.0
        1024: RpConfig(kernel='deq', chunk_mb=32),  # 790.8 us; fp16 633.1, AWQ-layout kernels 793.1
        4096: RpConfig(kernel='deq'),  # 2656.2 us; fp16 2502.9, AWQ-layout kernels 2688.3
    },
    (11008, 4096): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=8, half_sums=True),  # 11.6 us; fp16 27.9, AWQ-layout kernels 27.4
        2: RpConfig(split_k=8, fold=True),  # 12.1 us; fp16 27.4, AWQ-layout kernels 26.1
        4: RpConfig(split_k=8, fold=True),  # 12.0 us; fp16 27.7, AWQ-layout kernels 26.1
        8: RpConfig(split_k=8, fold=True),  # 12.1 us; fp16 28.1, AWQ-layout kernels 26.1
        16: RpConfig(split_k=4, num_stages=4, fold=True),  # 12.1 us; fp16 28.4, AWQ-layout kernels 26.4
        32: RpConfig(block_m=32, split_k=4, fold=True),  # 13.8 us; fp16 29.4, AWQ-layout kernels 30.4
        64: RpConfig(block_m=64, split_k=4, fold=True),  # 18.8 us; fp16 29.8, AWQ-layout kernels 27.4
        128: RpConfig(block_m=128, block_n=128, split_k=4, num_warps=8),  # 27.3 us; fp16 31.1, AWQ-layout kernels 48.0
        256: RpConfig(block_m=128, block_n=128, split_k=2, num_warps=8),  # 48.3 us; fp16 40.6, AWQ-layout kernels 71.8
        1024: RpConfig(kernel='deq'),  # 147.0 us; fp16 119.8, AWQ-layout kernels 146.2
        4096: RpConfig(kernel='deq'),  # 508.8 us; fp16 477.2, AWQ-layout kernels 511.0
    },
    (4096, 4096): {
        1: RpConfig(kernel='gemv', block_m=1, block_n=8, half_sums=True),  # 5.9 us; fp16 13.9, AWQ-layout kernels 13.8
        2: RpConfig(split_k=4, fold=True),  # 7.2 us; fp16 13.7, AWQ-layout kernels 12.9
        4: RpConfig(split_k=8, fold=True),  # 7.2 us; fp16 13.7, AWQ-layout kernels 12.8
        8: RpConfig(split_k=4, fold=True),  # 7.1 us; fp16 13.5, AWQ-layout kernels 12.6
        16: RpConfig(split_k=4, fold=True),  # 7.2 us; fp16 13.3, AWQ-layout kernels 12.7
        32: RpConfig(block_m=32, split_k=4, fold=True),  # 7.9 us; fp16 13.6, AWQ-layout kernels 13.7
        64: RpConfig(block_m=64, split_k=4, fold=True),  # 9.8 us; fp16 12.0, AWQ-layout kernels 13.5
        128: RpConfig(block_m=128, block_n=128, split_k=4, num_warps=8),  # 14.4 us; fp16 13.8, AWQ-layout kernels 21.4
        256: RpConfig(block_m=64, fold=True),  # 21.9 us; fp16 17.0, AWQ-layout kernels 26.0
        1024: RpConfig(kernel='deq'),  # 56.7 us; fp16 46.4, AWQ-layout kernels 57.6
        4096: RpConfig(kernel='deq'),  # 191.5 us; fp16 182.2, AWQ-layout kernels 191.3
    },
}
