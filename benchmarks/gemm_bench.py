"""w4a16 GEMM table: vlq kernel vs fp16 cuBLAS vs the 4-bit bandwidth floor vs AutoAWQ (script form of `vlq bench gemm`).

python benchmarks/gemm_bench.py [--shapes 4096x4096,...] [--m 1,2,4,...] [--dtype float16] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

from vlq.errors import VlqError
from vlq.kernels.bench import (
    DEFAULT_MS,
    DEFAULT_SHAPES,
    DTYPES,
    gemm_table,
    parse_ms,
    parse_shapes,
    run_gemm_bench,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes", default=",".join(f"{k}x{n}" for k, n in DEFAULT_SHAPES), help="KxN list (in x out)"
    )
    parser.add_argument("--m", default=",".join(map(str, DEFAULT_MS)), help="token counts")
    parser.add_argument("--dtype", default="float16", choices=sorted(DTYPES), help="activation dtype")
    parser.add_argument("--group-size", type=int, default=128, help="AWQ group size")
    parser.add_argument("--json-out", help="also write the results as JSON here")
    args = parser.parse_args()
    console = Console(width=200)
    try:
        report = run_gemm_bench(
            parse_shapes(args.shapes),
            parse_ms(args.m),
            dtype=DTYPES[args.dtype],
            group_size=args.group_size,
            progress=lambda text: console.print(f"[dim]{text}[/dim]"),
        )
    except VlqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    console.print(gemm_table(report))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report.to_json(), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
