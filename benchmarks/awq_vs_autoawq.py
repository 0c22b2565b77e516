"""Whole-model quality, vlq vs AutoAWQ vs RTN: wikitext-2 test perplexity and held-out accuracy.

`calib_bench.py` compares one random 7B-shaped layer; this compares what a user gets from a model
with real structure (the shipped reference VLM by default, or any LLaVA-style folder): its
language model quantized w4 g128 by

- RTN (round to nearest, no calibration),
- `vlq auto-awq` with and without `--search-scale` (the real command, written out and loaded back),
- AutoAWQ 0.2.9's own per-layer pieces (`_search_best_scale`, `apply_scale`, `_search_best_clip`,
  `apply_clip`, `pseudo_quantize_tensor`, through `calib_bench.run_autoawq`) on the same
  calibration samples, layer by layer with 16-bit outputs fed forward as AutoAWQ does,

then scored with the same perplexity protocol (non-overlapping 2048-token windows of the shipped
wikitext-2 `test.txt`) and the held-out circular MMBench accuracy.

    PYTHONPATH=$PWD:/tmp/site python benchmarks/awq_vs_autoawq.py [--model DIR] [--json-out F]

AutoAWQ runs on the CPU too: `run_autoawq` patches its snapshot aliasing (see calib_bench.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calib_bench import run_autoawq  # noqa: E402

from vlq.awq.pipeline import AutoAwqOptions, auto_awq  # noqa: E402
from vlq.calib.capture import capture_layer0_inputs, layer_output  # noqa: E402
from vlq.calib.data import calibration_samples, shipped_text_path  # noqa: E402
from vlq.loading import load_vlm  # noqa: E402
from vlq.models.base import get_module  # noqa: E402
from vlq.models.registry import detect_family  # noqa: E402
from vlq.reference import reference_model_dir  # noqa: E402
from vlq.reference.data import heldout_items  # noqa: E402
from vlq.reference.evaluate import mcq_accuracy, perplexity, rtn_quantize_  # noqa: E402


def evaluate(model, processor, test_ids, windows: int | None) -> dict:
    accuracy = mcq_accuracy(model, processor, heldout_items())
    return {
        "wikitext2_test_ppl": perplexity(model, test_ids, 2048, windows),
        "circular": accuracy.circular,
        "vanilla": accuracy.vanilla,
    }


@torch.no_grad()
def autoawq_quantize_(model, tokenizer, options: AutoAwqOptions, device: torch.device) -> None:
    """AutoAWQ on every decoder layer of `model`'s language model, in place (fake-quantized weights)."""
    family = detect_family(model)
    layers = get_module(model, family.layers)
    samples, _ = calibration_samples(
        options.calib_dataset, tokenizer, options.calib_samples, options.calib_seqlen, options.seed
    )
    inputs = capture_layer0_inputs(model, layers, samples.to(device), batch_size=options.calib_samples)
    states, kwargs = inputs.hidden[0], inputs.kwargs[0]
    assert not inputs.args[0], "positional layer arguments are not supported here"
    for layer in layers:
        outputs = layer_output(layer(states, **kwargs))  # the 16-bit outputs feed the next layer
        result = run_autoawq(layer, states, kwargs, device)
        layer.load_state_dict(result["state"])
        states = outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="LLaVA-style folder (default: the reference VLM).")
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--calib-seqlen", type=int, default=512)
    parser.add_argument("--ppl-windows", type=int, default=None, help="At most this many 2048-token windows.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    from transformers import AutoProcessor

    model_dir = args.model or reference_model_dir()
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    processor = AutoProcessor.from_pretrained(model_dir)
    test_ids = processor.tokenizer(
        shipped_text_path("wikitext2", "test").read_text(), add_special_tokens=False
    )["input_ids"]
    base = load_vlm(model_dir, device=device.type).model.to(dtype).eval()
    rows: dict[str, dict] = {}

    def record(name: str, make) -> None:
        start = time.perf_counter()
        model, seconds = make()
        rows[name] = {**evaluate(model, processor, test_ids, args.ppl_windows), "quantize_seconds": seconds}
        rows[name]["total_seconds"] = round(time.perf_counter() - start, 1)
        print(name, json.dumps(rows[name]), flush=True)

    def timed(work):
        start = time.perf_counter()
        model = work()
        return model, round(time.perf_counter() - start, 1)

    def options(work_dir: str, search_scale: bool = False) -> AutoAwqOptions:
        return AutoAwqOptions(
            model=str(model_dir), work_dir=work_dir, w_group_size=128, search_scale=search_scale,
            calib_samples=args.calib_samples, calib_seqlen=args.calib_seqlen, device=device.type,
        )

    def rtn():
        model = copy.deepcopy(base)
        rtn_quantize_(model, 4, 128)
        return model

    def autoawq():
        model = copy.deepcopy(base)
        autoawq_quantize_(model, processor.tokenizer, options("unused"), device)
        return model

    record("fp16" if dtype == torch.float16 else "fp32", lambda: (base, 0.0))
    record("rtn_w4g128", lambda: timed(rtn))
    with tempfile.TemporaryDirectory() as tmp:
        for name, search in (("vlq_awq", False), ("vlq_awq_search_scale", True)):
            def vlq(search=search, name=name):
                result = auto_awq(options(f"{tmp}/{name}", search))
                return load_vlm(result.output_dir, device=device.type).model.eval()

            record(name, lambda vlq=vlq: timed(vlq))
    record("autoawq_0.2.9", lambda: timed(autoawq))

    print(f"\n{'method':<22}{'wikitext2 ppl':>14}{'circular':>10}{'vanilla':>9}{'quantize s':>12}")
    for name, row in rows.items():
        print(
            f"{name:<22}{row['wikitext2_test_ppl']:>14.3f}{row['circular']:>10.3f}"
            f"{row['vanilla']:>9.3f}{row['quantize_seconds']:>12.1f}"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps({"model": str(model_dir), "device": str(device), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
