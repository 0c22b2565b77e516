"""Vision-encoder latency and throughput per backend (torch, onnxruntime, tensorrt) and batch size.

Same measurement as `vlq bench vit` (`vlq.export.bench.bench_vit`), as a script that can also
build its own checkpoint: random weights, so only the timings mean anything.

    python benchmarks/vit_bench.py MODEL [--vit-dir DIR] [--batch-sizes 1,4,8]
    python benchmarks/vit_bench.py --build clip-b16 --device cpu --batch-sizes 1,4 --iters 5
    python benchmarks/vit_bench.py --build tiny-qwen2-vl --image-size 224

--build: tiny-llava / tiny-qwen2-vl (vlq's test checkpoints) or clip-b16 (LLaVA with a
CLIP ViT-B/16 224px tower, 86M parameters, and a tiny LLM: a realistic encoder for CPU runs).
TensorRT rows need `pip install 'vlq[trt]'`, a CUDA GPU and an export made with --trt.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlq.export.bench import bench_vit, parse_batch_sizes, vit_table  # noqa: E402
from vlq.tiny import CHAT_TEMPLATE, build_tiny_llava, build_tiny_qwen2_vl, build_tokenizer  # noqa: E402


def build_llava_clip_b16(folder: Path) -> Path:
    """LLaVA-1.5 layout with a CLIP ViT-B/16 (224px) tower and a 2-layer LLM, random weights."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = build_tokenizer()
    config = LlavaConfig(
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
        vision_config=CLIPVisionConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=196,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).eval().save_pretrained(folder)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
        ),
        tokenizer=tokenizer,
        patch_size=16,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return folder


BUILDERS = {
    "tiny-llava": build_tiny_llava,
    "tiny-qwen2-vl": build_tiny_qwen2_vl,
    "clip-b16": build_llava_clip_b16,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", help="VLM checkpoint folder (or use --build)")
    parser.add_argument("--build", choices=sorted(BUILDERS), help="build a random-weight checkpoint to time")
    parser.add_argument("--vit-dir", help="folder from vlq export-vit [default: export to a temp folder]")
    parser.add_argument("--backends", default="torch,onnxruntime,tensorrt")
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--image-size", type=int, help="square side for dynamic-resolution families [448]")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    if (args.model is None) == (args.build is None):
        parser.error("give MODEL or --build, not both")

    console = Console()
    with tempfile.TemporaryDirectory(prefix="vit-bench-") as tmp:
        model = str(BUILDERS[args.build](Path(tmp) / args.build)) if args.build else args.model
        result = bench_vit(
            model,
            args.vit_dir,
            [b for b in args.backends.split(",") if b],
            parse_batch_sizes(args.batch_sizes),
            args.image_size,
            args.warmup,
            args.iters,
            args.device,
            args.dtype,
            on_stage=lambda text: console.print(f"[dim]{escape(text)}[/dim]"),
        )
    console.print(vit_table(result, str(args.build or model)))
    if args.json_out:
        args.json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")


if __name__ == "__main__":
    main()
