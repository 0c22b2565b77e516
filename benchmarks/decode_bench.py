"""End-to-end greedy decode tokens/s of a 7B-shaped Llama: fp16 vs vlq w4a16.

Random weights; `LlamaConfig` with hidden 4096, intermediate 11008, 32 heads and (by default)
all 32 layers, built in fp16 straight on the GPU. The w4a16 model is the same model with every
decoder linear replaced by an `AwqLinear` of its RTN-quantized weight (group 128). Each decode
step is one CUDA graph replay (see `vlq.kernels.decode`), so the numbers measure GPU work.

    python benchmarks/decode_bench.py [--layers 32] [--batch 1,16] [--new-tokens 128] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from rich.console import Console
from rich.table import Table
from transformers import LlamaConfig, LlamaForCausalLM

from vlq.kernels.decode import linear_weight_bytes, quantize_decoder_linears, time_decode


def build_model(layers: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
    )
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device("cuda"):
            return LlamaForCausalLM(config).to(torch.float16).eval()
    finally:
        torch.set_default_dtype(default_dtype)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32, help="decoder layers (7B has 32)")
    parser.add_argument("--batch", default="1,16", help="comma-separated batch sizes")
    parser.add_argument("--new-tokens", type=int, default=128, help="greedy steps timed per batch size")
    parser.add_argument("--prompt-len", type=int, default=16, help="prompt tokens prefilled before timing")
    parser.add_argument("--group-size", type=int, default=128, help="AWQ group size of the w4a16 model")
    parser.add_argument("--json-out", help="also write the results as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: decode_bench needs a CUDA device", file=sys.stderr)
        return 2
    batches = [int(b) for b in args.batch.split(",")]
    console = Console(width=160)
    started = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(args.layers)
    vocab = model.config.vocab_size
    results: dict[str, dict] = {}
    for variant in ("fp16", "w4a16"):
        if variant == "w4a16":
            quantize_decoder_linears(model, group_size=args.group_size)
            torch.cuda.empty_cache()
        timings = [time_decode(model, b, args.prompt_len, args.new_tokens, vocab) for b in batches]
        results[variant] = {
            "linear_weight_gb": linear_weight_bytes(model) / 1e9,
            "timings": {t.batch: t for t in timings},
        }
        console.print(f"{variant}: done after {time.perf_counter() - started:.0f} s")

    table = Table(
        title=f"Greedy decode, 7B-shaped Llama ({args.layers} layers, random weights) on "
        f"{torch.cuda.get_device_name()}: {args.prompt_len}-token prompt, {args.new_tokens} new tokens",
        caption=f"decoder linear weights: fp16 {results['fp16']['linear_weight_gb']:.2f} GB, "
        f"w4a16 {results['w4a16']['linear_weight_gb']:.2f} GB (group {args.group_size})",
    )
    for name in ("batch", "fp16 tok/s", "w4a16 tok/s", "w4a16 / fp16", "CUDA graph"):
        table.add_column(name, justify="right")
    rows = []
    for b in batches:
        fp16, w4 = results["fp16"]["timings"][b], results["w4a16"]["timings"][b]
        ratio = w4.tokens_per_second / fp16.tokens_per_second
        graphs = (
            "yes" if fp16.cuda_graph and w4.cuda_graph else f"fp16 {fp16.cuda_graph}, w4a16 {w4.cuda_graph}"
        )
        table.add_row(
            str(b), f"{fp16.tokens_per_second:.1f}", f"{w4.tokens_per_second:.1f}", f"{ratio:.2f}x", graphs
        )
        rows.append(
            {
                "batch": b,
                "fp16_tokens_per_s": fp16.tokens_per_second,
                "w4a16_tokens_per_s": w4.tokens_per_second,
                "ratio": ratio,
                "cuda_graph": fp16.cuda_graph and w4.cuda_graph,
            }
        )
    console.print(table)
    if args.json_out:
        payload = {
            "device": torch.cuda.get_device_name(),
            "layers": args.layers,
            "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens,
            "group_size": args.group_size,
            "linear_weight_gb": {v: results[v]["linear_weight_gb"] for v in results},
            "rows": rows,
        }
        with open(args.json_out, "w") as f:
            json.dump(payload, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
