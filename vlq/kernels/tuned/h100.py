"""Fastest vlq-layout settings per (K, N) and token count, as `benchmarks/gemm_sweep.py --write-table`
measured them on NVIDIA H100 80GB HBM3 (2026-12-06, fp16, group 128).

`pick_rp_config` takes the entry of the smallest swept token count >= M on GPUs of this model;
other shapes use `heuristic_rp_config`. Generated file: rerun the sweep rather than editing it.

Merged by hand on 2026-12-06 and 2026-12-07, same GPU model: the lines marked `ws-probe` are the
warp-specialized kernel (`vlq.kernels.ws_w4a16`, `benchmarks/ws_probe.py`) where it was timed
faster than this table's pick in the same run. Probe 1 timed the build whose wgmmas ptxas
serialized, probe 2 the fixed one. Probe 3 (`benchmarks/results/2026-12-06-h100-ws-probe-5-early-scales-ab.log`,
the timing code of `gemm_sweep.py`) timed the kernel with a block's scales unpacked before the next
block's loads, one mbarrier per group of four dots, three groups of activations in flight for
256-token tiles: it won at 256, 512 and 1024 tokens on all four shapes. Probe 6
(`benchmarks/results/2026-12-07-h100-ws-probe-6-balanced-tail.log`) added the balanced tail (the
tiles of a part-empty last wave split over K, `balance_tail`): 1.07-1.18x the unbalanced kernel at
512 tokens on the two wide shapes, 1.11x at 768 and 1.08x at 2048 on one, within 1% where it
splits nothing useful. The entries with `balance_tail` balance at the call's own token count, so
the 1024 entries also serve 513-1023 tokens well. Probe 6 also put ws ahead of dequantize +
cuBLAS at 2048 and 4096 tokens on the shapes that still dequantized there (1.02-1.15x), and
128-token tiles ahead at 257-384 tokens on the wide shapes. A 256-token tile costs the same for
129 tokens as for 256, so ws takes the whole 129-256 bucket. Probe 7
(`benchmarks/results/2026-12-07-h100-ws-probe-7-stream-k.log`) timed every tail plan that
`balanced_tail` weighs once its tail could also run stream-K (runs of blocks across tiles): that
filled grids under one wave, so balanced picks now also run at 256 tokens on 4096x11008 and
8192x28672 (1.07x and 1.09x the split and unsplit picks before) and at 384 on 11008x4096 (1.09x),
and the 1024 entry of 11008x4096 runs 768 tokens stream-K (1.16x unsplit). The sweep has ws
candidates (`prefill_candidates`); its next run replaces all of this.
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
        256: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 7: 40.5 us; fp16 39.7, previous pick (split 3) 43.5
        384: RpConfig(kernel='ws', block_m=128, num_stages=16, balance_tail=True),  # ws-probe 6: 56.9 us; fp16 49.1, 256-token tiles 79.0
        512: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 6: 70.1 us; fp16 64.2, unbalanced 83.1
        1024: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 3: 139.0 us; fp16 128.4, previous ws 152.8
        2048: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 6: 254.1 us; fp16 250.9, deq 293.3
        4096: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 6: 525.5 us; fp16 498.1, deq 534.1
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
        256: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 7: 171.8 us; fp16 208.1, previous pick (unsplit) 187.4
        384: RpConfig(kernel='ws', block_m=128, num_stages=16, balance_tail=True),  # ws-probe 6: 298.9 us; fp16 255.2, 256-token tiles 393.8
        512: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 6: 346.6 us; fp16 322.1, unbalanced 371.6
        1024: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 3: 671.9 us; fp16 634.5; ws-probe 6 at 768: 501.7 us, fp16 497.2, unbalanced 556.8
        4096: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 3: 2717.1 us; fp16 2568.9, table pick (deq) 2826.9
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
        256: RpConfig(kernel='ws', block_m=256, num_stages=12, split_k=4),  # ws-probe 3: 36.9 us; fp16 46.3, previous ws 42.2
        384: RpConfig(kernel='ws', block_m=128, num_stages=16, balance_tail=True),  # ws-probe 7: 59.1 us; fp16 69.1, previous pick (256/12 split 2) 64.3
        512: RpConfig(kernel='ws', block_m=256, num_stages=12, split_k=2),  # ws-probe 3: 66.7 us; fp16 64.8, table pick (deq) 107.1
        1024: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 3: 122.8 us; fp16 120.4; ws-probe 6 at 768: 102.9 us (split 4), fp16 92.1, unsplit 113.3
        4096: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 3: 505.4 us; fp16 484.1, table pick (deq) 523.7
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
        256: RpConfig(kernel='ws', block_m=256, num_stages=12, split_k=4),  # ws-probe 6: 19.4 us; fp16 18.8, previous pick (128/16 split 2) 21.2
        512: RpConfig(kernel='ws', block_m=128, num_stages=16, balance_tail=True),  # ws-probe 6: 28.6 us; fp16 25.2, previous pick (256/12 split 2) 29.6
        1024: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 3: 48.8 us; fp16 47.0, previous ws 55.4
        2048: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 6: 94.2 us; fp16 90.1, deq 102.5
        4096: RpConfig(kernel='ws', block_m=256, num_stages=12, balance_tail=True),  # ws-probe 6: 188.8 us; fp16 182.1, deq 197.1
    },
}
