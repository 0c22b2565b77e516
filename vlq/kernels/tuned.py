"""Fastest vlq-layout settings per (K, N) and token count, as `benchmarks/gemm_sweep.py --write-table`
measured them on NVIDIA H100 80GB HBM3 (2026-11-23, fp16, group 128).

`pick_rp_config` takes the entry of the smallest swept token count >= M; other shapes use
`heuristic_rp_config`. Generated file: rerun the sweep rather than editing it.
"""

from vlq.kernels.triton_w4a16 import RpConfig

DEVICE = "NVIDIA H100 80GB HBM3"
TUNED: dict[tuple[int, int], dict[int, RpConfig]] = {
    (4096, 11008): {
        1: RpConfig(
            kernel="gemv", block_m=1, block_n=16, blocks_per_step=2
        ),  # 14.9 us; fp16 34.7, AWQ-layout kernels 28.3
        2: RpConfig(block_n=32, split_k=2, num_warps=2),  # 18.5 us; fp16 34.6, AWQ-layout kernels 29.1
        4: RpConfig(block_n=32, split_k=2, num_warps=2),  # 18.5 us; fp16 35.5, AWQ-layout kernels 29.0
        8: RpConfig(block_n=32, split_k=2, num_warps=2),  # 19.0 us; fp16 35.5, AWQ-layout kernels 29.6
        16: RpConfig(block_n=32, split_k=2, num_warps=2),  # 19.4 us; fp16 35.3, AWQ-layout kernels 29.2
        32: RpConfig(block_m=32, split_k=2),  # 20.6 us; fp16 36.5, AWQ-layout kernels 34.7
        64: RpConfig(block_m=32),  # 31.3 us; fp16 34.5, AWQ-layout kernels 33.0
        128: RpConfig(block_m=128, block_n=128, num_warps=8),  # 47.9 us; fp16 37.2, AWQ-layout kernels 56.0
        256: RpConfig(
            block_m=128, block_n=128, split_k=2, num_warps=8
        ),  # 80.5 us; fp16 39.9, AWQ-layout kernels 86.8
        1024: RpConfig(kernel="deq", chunk_mb=32),  # 162.0 us; fp16 129.0, AWQ-layout kernels 179.5
        4096: RpConfig(kernel="deq", chunk_mb=32),  # 547.5 us; fp16 508.0, AWQ-layout kernels 568.5
    },
    (8192, 28672): {
        1: RpConfig(
            kernel="gemv", block_m=1, block_n=16, num_warps=2, blocks_per_step=1
        ),  # 54.9 us; fp16 161.1, AWQ-layout kernels 82.4
        2: RpConfig(split_k=4),  # 62.3 us; fp16 160.7, AWQ-layout kernels 77.1
        4: RpConfig(split_k=4),  # 63.1 us; fp16 161.4, AWQ-layout kernels 80.2
        8: RpConfig(split_k=4),  # 65.2 us; fp16 163.4, AWQ-layout kernels 91.3
        16: RpConfig(split_k=4),  # 66.1 us; fp16 161.3, AWQ-layout kernels 110.0
        32: RpConfig(block_m=32, split_k=4),  # 81.9 us; fp16 165.0, AWQ-layout kernels 140.8
        64: RpConfig(block_m=64, split_k=4),  # 123.6 us; fp16 171.1, AWQ-layout kernels 132.0
        128: RpConfig(
            block_m=128, block_n=128, num_warps=8
        ),  # 194.2 us; fp16 171.0, AWQ-layout kernels 207.1
        256: RpConfig(
            block_m=128, block_n=128, split_k=2, num_warps=8
        ),  # 353.1 us; fp16 196.3, AWQ-layout kernels 415.2
        1024: RpConfig(kernel="deq", chunk_mb=32),  # 840.9 us; fp16 632.0, AWQ-layout kernels 858.8
        4096: RpConfig(kernel="deq", chunk_mb=32),  # 2747.4 us; fp16 2555.1, AWQ-layout kernels 2745.6
    },
    (11008, 4096): {
        1: RpConfig(kernel="gemv", block_m=1, block_n=8),  # 14.9 us; fp16 36.0, AWQ-layout kernels 28.5
        2: RpConfig(block_n=32, split_k=8, num_warps=2),  # 18.0 us; fp16 35.9, AWQ-layout kernels 26.9
        4: RpConfig(block_n=32, split_k=8, num_warps=2),  # 17.9 us; fp16 36.0, AWQ-layout kernels 26.5
        8: RpConfig(block_n=32, split_k=8, num_warps=2),  # 18.2 us; fp16 36.4, AWQ-layout kernels 26.8
        16: RpConfig(split_k=8),  # 18.3 us; fp16 36.7, AWQ-layout kernels 27.0
        32: RpConfig(block_m=32, split_k=4),  # 22.4 us; fp16 37.3, AWQ-layout kernels 30.3
        64: RpConfig(block_m=64, split_k=4),  # 27.0 us; fp16 38.6, AWQ-layout kernels 27.3
        128: RpConfig(block_m=64, split_k=2),  # 46.4 us; fp16 39.2, AWQ-layout kernels 47.4
        256: RpConfig(
            block_m=128, block_n=128, split_k=2, num_warps=8
        ),  # 71.0 us; fp16 50.2, AWQ-layout kernels 86.7
        1024: RpConfig(kernel="deq"),  # 162.0 us; fp16 120.6, AWQ-layout kernels 158.6
        4096: RpConfig(kernel="deq", chunk_mb=32),  # 519.1 us; fp16 483.9, AWQ-layout kernels 515.5
    },
    (4096, 4096): {
        1: RpConfig(kernel="gemv", block_m=1, block_n=8),  # 7.4 us; fp16 16.8, AWQ-layout kernels 13.7
        2: RpConfig(kernel="gemv", block_m=2, block_n=8),  # 9.5 us; fp16 16.5, AWQ-layout kernels 13.3
        4: RpConfig(split_k=8),  # 9.8 us; fp16 16.5, AWQ-layout kernels 13.3
        8: RpConfig(split_k=8),  # 9.9 us; fp16 14.3, AWQ-layout kernels 13.4
        16: RpConfig(split_k=8),  # 10.0 us; fp16 16.8, AWQ-layout kernels 13.4
        32: RpConfig(block_m=32, split_k=4),  # 11.2 us; fp16 14.6, AWQ-layout kernels 13.9
        64: RpConfig(block_m=64, split_k=4),  # 13.3 us; fp16 14.8, AWQ-layout kernels 13.3
        128: RpConfig(
            block_m=64, block_n=128, split_k=2, num_warps=8
        ),  # 21.1 us; fp16 15.2, AWQ-layout kernels 21.1
        256: RpConfig(
            block_m=128, block_n=128, split_k=2, num_warps=8
        ),  # 29.2 us; fp16 18.7, AWQ-layout kernels 30.4
        1024: RpConfig(kernel="deq"),  # 59.6 us; fp16 47.1, AWQ-layout kernels 59.6
        4096: RpConfig(kernel="deq"),  # 197.3 us; fp16 185.3, AWQ-layout kernels 195.7
    },
}
