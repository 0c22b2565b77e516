"""Fastest vlq-layout settings per (K, N) and token count, as `benchmarks/gemm_sweep.py --write-table`
measured them on NVIDIA H100 80GB HBM3 (2026-11-23, fp16, group 128).

`pick_rp_config` takes the entry of the smallest swept token count >= M; other shapes use
`heuristic_rp_config`. Generated file: rerun the sweep rather than editing it.
"""

from vlq.kernels.triton_w4a16 import RpConfig

DEVICE = "NVIDIA H100 80GB HBM3"
TUNED: dict[tuple[int, int], dict[int, RpConfig]] = {
    (4096, 11008): {
        1: RpConfig(block_n=32, split_k=2, num_warps=2),  # 18.4 us; fp16 35.9, AWQ-layout kernels 28.8
        2: RpConfig(block_n=32, split_k=2, num_warps=2),  # 18.4 us; fp16 36.1, AWQ-layout kernels 29.1
        4: RpConfig(block_n=32, split_k=2, num_warps=2),  # 18.5 us; fp16 36.2, AWQ-layout kernels 29.2
        8: RpConfig(block_n=32, split_k=2, num_warps=2),  # 18.7 us; fp16 36.7, AWQ-layout kernels 29.2
        16: RpConfig(block_n=32, split_k=2, num_warps=2),  # 19.5 us; fp16 36.5, AWQ-layout kernels 29.2
        32: RpConfig(block_m=32, split_k=2),  # 20.5 us; fp16 37.3, AWQ-layout kernels 33.6
        64: RpConfig(block_m=32),  # 30.9 us; fp16 35.8, AWQ-layout kernels 32.8
        128: RpConfig(block_m=128, block_n=128, num_warps=8),  # 46.8 us; fp16 37.4, AWQ-layout kernels 56.0
        256: RpConfig(
            block_m=128, block_n=128, split_k=2, num_warps=8
        ),  # 79.0 us; fp16 39.6, AWQ-layout kernels 85.7
        1024: RpConfig(kernel="deq", chunk_mb=32),  # 161.7 us; fp16 126.6, AWQ-layout kernels 180.0
        4096: RpConfig(kernel="deq", chunk_mb=32),  # 532.0 us; fp16 499.2, AWQ-layout kernels 548.5
    },
    (8192, 28672): {
        1: RpConfig(split_k=4),  # 62.2 us; fp16 169.2, AWQ-layout kernels 77.6
        2: RpConfig(split_k=4),  # 61.3 us; fp16 164.0, AWQ-layout kernels 75.3
        4: RpConfig(split_k=4),  # 62.0 us; fp16 163.6, AWQ-layout kernels 79.0
        8: RpConfig(split_k=4),  # 62.6 us; fp16 169.2, AWQ-layout kernels 89.2
        16: RpConfig(split_k=4),  # 66.4 us; fp16 164.6, AWQ-layout kernels 108.1
        32: RpConfig(block_m=32, split_k=4),  # 80.9 us; fp16 167.2, AWQ-layout kernels 139.3
        64: RpConfig(block_m=64, split_k=4),  # 124.3 us; fp16 172.2, AWQ-layout kernels 129.8
        128: RpConfig(
            block_m=128, block_n=128, num_warps=8
        ),  # 193.6 us; fp16 172.7, AWQ-layout kernels 203.4
        256: RpConfig(
            block_m=128, block_n=128, split_k=2, num_warps=8
        ),  # 351.7 us; fp16 197.0, AWQ-layout kernels 415.4
        1024: RpConfig(kernel="deq"),  # 843.4 us; fp16 621.0, AWQ-layout kernels 845.6
        4096: RpConfig(kernel="deq", chunk_mb=32),  # 2656.6 us; fp16 2499.7, AWQ-layout kernels 2698.9
    },
    (11008, 4096): {
        1: RpConfig(block_n=32, split_k=8, num_warps=2),  # 17.8 us; fp16 36.2, AWQ-layout kernels 27.4
        2: RpConfig(block_n=32, split_k=8, num_warps=2),  # 18.1 us; fp16 35.7, AWQ-layout kernels 26.4
        4: RpConfig(block_n=32, split_k=8, num_warps=2),  # 17.8 us; fp16 36.0, AWQ-layout kernels 26.7
        8: RpConfig(block_n=32, split_k=8, num_warps=2),  # 17.7 us; fp16 36.3, AWQ-layout kernels 26.7
        16: RpConfig(block_n=32, split_k=8, num_warps=2),  # 18.8 us; fp16 36.7, AWQ-layout kernels 27.0
        32: RpConfig(block_m=32, split_k=4),  # 22.4 us; fp16 38.0, AWQ-layout kernels 29.8
        64: RpConfig(block_m=64, split_k=4),  # 27.6 us; fp16 38.3, AWQ-layout kernels 26.9
        128: RpConfig(block_m=64, split_k=2),  # 46.0 us; fp16 39.3, AWQ-layout kernels 47.1
        256: RpConfig(
            block_m=128, block_n=128, split_k=2, num_warps=8
        ),  # 67.4 us; fp16 51.6, AWQ-layout kernels 87.8
        1024: RpConfig(kernel="deq"),  # 163.3 us; fp16 118.5, AWQ-layout kernels 155.5
        4096: RpConfig(kernel="deq", chunk_mb=32),  # 504.7 us; fp16 473.7, AWQ-layout kernels 503.8
    },
    (4096, 4096): {
        1: RpConfig(block_n=32, split_k=8, num_warps=2),  # 9.9 us; fp16 16.7, AWQ-layout kernels 13.5
        2: RpConfig(split_k=8),  # 9.8 us; fp16 16.4, AWQ-layout kernels 13.2
        4: RpConfig(split_k=8),  # 10.0 us; fp16 16.3, AWQ-layout kernels 13.5
        8: RpConfig(split_k=8),  # 10.0 us; fp16 14.3, AWQ-layout kernels 13.3
        16: RpConfig(split_k=8),  # 10.2 us; fp16 16.7, AWQ-layout kernels 13.3
        32: RpConfig(block_m=32, split_k=4),  # 11.3 us; fp16 14.8, AWQ-layout kernels 13.9
        64: RpConfig(block_m=64, split_k=4),  # 13.7 us; fp16 15.2, AWQ-layout kernels 13.4
        128: RpConfig(block_m=64, split_k=2),  # 21.5 us; fp16 15.1, AWQ-layout kernels 21.1
        256: RpConfig(
            block_m=128, block_n=128, split_k=2, num_warps=8
        ),  # 29.8 us; fp16 19.1, AWQ-layout kernels 31.5
        1024: RpConfig(kernel="deq", chunk_mb=32),  # 59.2 us; fp16 46.0, AWQ-layout kernels 59.1
        4096: RpConfig(kernel="deq", chunk_mb=32),  # 193.6 us; fp16 180.9, AWQ-layout kernels 191.8
    },
}
