"""16-bit vs kv8 vs kv4 cache: memory and eager decode speed on a random-weight Llama (script form of `vlq bench kv`).

    python benchmarks/kv_bench.py [--model-shape 7b] [--batch 1,16] [--tokens 128] [--prompt-tokens 1024]
                                  [--layers N] [--backend auto|triton|torch] [--json-out FILE]

On CUDA the default is the 7B shape (hidden 4096, 32 layers, 32 heads) in fp16 with a 1024-token
prompt and 128 new tokens; on CPU it runs the 'small' shape and says so.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

from vlq.errors import VlqError
from vlq.kv.bench import SHAPES, kv_table, parse_batches, run_kv_bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-shape", default="7b", choices=sorted(SHAPES), help="Llama shape")
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes")
    parser.add_argument("--tokens", type=int, help="new tokens per run (CUDA 128, CPU 16)")
    parser.add_argument("--prompt-tokens", type=int, help="prompt tokens (CUDA 1024, CPU 128)")
    parser.add_argument("--layers", type=int, help="decoder layers (default: the shape's)")
    parser.add_argument("--backend", default="auto", help="auto, triton or torch")
    parser.add_argument("--json-out", help="also write the results as JSON here")
    args = parser.parse_args()
    console = Console(width=200)
    try:
        report = run_kv_bench(
            args.model_shape,
            parse_batches(args.batch),
            new_tokens=args.tokens,
            prompt_tokens=args.prompt_tokens,
            layers=args.layers,
            backend=args.backend,
            progress=lambda text: console.print(f"[dim]{text}[/dim]"),
        )
    except VlqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    console.print(kv_table(report))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report.to_json(), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
