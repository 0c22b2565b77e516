"""Launch one GEMM path a few times for a profiler (`ncu`) to catch: the ws kernel, vlq's dispatch or
fp16 cuBLAS, at one shape and token count. Times nothing itself.

python benchmarks/profile_gemm.py --path ws --shape 4096x4096 --m 1024 [--ws 256,12,1,4[,132]] [--launches 4]

Under ncu, skip the warm-up launches (compiles, autotuning) and profile the last one, e.g.
  ncu --clock-control none --set full -k regex:w4a16_ws --launch-skip 3 --launch-count 1 -o rep \
      python3 benchmarks/profile_gemm.py --path ws --shape 4096x4096 --m 1024
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gemm_sweep import _rand_awq, _repacked  # noqa: E402

from vlq.kernels.triton_w4a16 import w4a16_matmul_rp  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", choices=("ws", "vlq", "fp16"), required=True, help="what to launch")
    parser.add_argument("--shape", default="4096x4096", help="K x N of the weight")
    parser.add_argument("--m", type=int, default=1024, help="tokens")
    parser.add_argument(
        "--ws",
        default="256,12,1,4",
        help="ws only: tokens per program, chunks in flight, split-K, dots per wait[, slots: the programs at once "
        "that a balanced tail fills, e.g. 132 on an H100; 0 or left out: none]",
    )
    parser.add_argument("--launches", type=int, default=4, help="launches in all (profile the last)")
    args = parser.parse_args()
    try:
        k, n = (int(v) for v in args.shape.lower().split("x"))
        ws_args = tuple(int(v) for v in args.ws.split(","))
        if len(ws_args) not in (4, 5):
            raise ValueError
    except ValueError:
        parser.error("--shape is KxN and --ws four or five comma-separated integers")
    if not torch.cuda.is_available():
        print("profile_gemm needs a CUDA GPU", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    x = torch.randn(args.m, k, device=dev, dtype=torch.float16)
    if args.path == "fp16":
        dense = torch.randn(n, k, device=dev, dtype=torch.float16)
        call = lambda: x @ dense.t()  # noqa: E731
    else:
        w = _repacked(_rand_awq(k, n, torch.float16, dev))
        if args.path == "ws":
            from vlq.kernels.ws_w4a16 import launch_ws

            call = lambda: launch_ws(x, w["qweight"], w["qzeros"], 128, *ws_args)  # noqa: E731
        else:
            call = lambda: w4a16_matmul_rp(x, w["qweight"], w["qzeros"], 128)  # noqa: E731
    for _ in range(args.launches):
        call()
    torch.cuda.synchronize()
    print(f"{args.path} {k}x{n} M={args.m}: {args.launches} launches done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
