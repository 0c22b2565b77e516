"""Where vlq's 3% layer-error gap to AutoAWQ on the GPU comes from (issue 9; see RESULTS.md).

Runs AutoAWQ 0.2.9's per-layer pipeline on calib_bench's 7B-shaped layer (a small one on the
CPU), then recomposes its scales and clipping on a fresh copy and compares each step: scaled
weights, clip inputs, clip thresholds, and the layer error with AutoAWQ's final rounding
(`pseudo_quantize_tensor`) vs vlq's (`fake_quantize`) on the same weights.

    PYTHONPATH=$PWD:/tmp/site python benchmarks/autoawq_rounding.py [--dtype float16]

On the CPU the layer is hidden 256 in float32 by default; `--dtype float16` runs it at hidden 1024
in fp16, where the difference between the two roundings shows up on the CPU too.
"""

from __future__ import annotations

import argparse
import copy
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calib_bench import (  # noqa: E402
    _patch_cpu_snapshot,
    build_layer,
    import_autoawq,
    layer_output,
    make_inputs,
    output_error,
)

from vlq.awq.quantize import fake_quantize  # noqa: E402


def quantized_state(module, device, rounding) -> dict:
    """`module`'s state with every linear weight rounded to 4 bits by `rounding`."""
    from awq.utils.module import get_named_linears

    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    for name, linear in get_named_linears(module).items():
        state[f"{name}.weight"] = rounding(linear.weight.data.to(device)).cpu()
    return state


def captured_inputs(module, states, kwargs) -> dict[str, torch.Tensor]:
    """Every linear's input over all tokens, `[tokens, in_features]` on the host."""
    from awq.utils.module import get_named_linears

    captured: dict[str, list] = {}
    handles = [
        linear.register_forward_pre_hook(
            lambda mod, args, name=name: captured.setdefault(name, []).append(
                args[0].reshape(-1, args[0].shape[-1]).cpu()
            )
        )
        for name, linear in get_named_linears(module).items()
    ]
    for chunk in states.split(8):
        module(chunk, **kwargs)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(parts) for name, parts in captured.items()}


@torch.no_grad()
def main() -> None:
    AwqQuantizer, layers_for_scaling, apply_scale, apply_clip = import_autoawq()
    from awq.utils.module import get_named_linears

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", choices=("auto", "float16", "float32"), default="auto")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, args.dtype)
    if device.type == "cuda":
        hidden, intermediate, heads, samples, seqlen = 4096, 11008, 32, 128, 512
    elif dtype == torch.float16:
        hidden, intermediate, heads, samples, seqlen = 1024, 2816, 16, 16, 128
    else:
        hidden, intermediate, heads, samples, seqlen = 256, 512, 4, 8, 64
    layer, rotary, _ = build_layer(hidden, intermediate, heads, device)
    layer.to(dtype)
    states, kwargs = make_inputs(samples, seqlen, hidden, rotary, dtype, device)
    reference = [layer_output(layer(chunk, **kwargs)).cpu() for chunk in states.split(8)]
    layer.cpu()

    q = AwqQuantizer.__new__(AwqQuantizer)  # as calib_bench.run_autoawq sets it up
    q.w_bit, q.group_size, q.zero_point, q.version = 4, 128, True, "gemm"
    q.duo_scaling, q.apply_clip, q.export_compatible = True, True, False
    q.n_parallel_calib_samples, q.max_chunk_memory = None, 1024**3
    q.modules_to_not_convert, q.awq_model = [], types.SimpleNamespace(model_type="llama")
    if device.type == "cpu":
        _patch_cpu_snapshot(q)

    def awq_rounding(weight):
        return q.pseudo_quantize_tensor(weight)[0]

    def vlq_rounding(weight):
        return fake_quantize(weight, 4, 128)

    def awq_rounding_in_fp32(weight):
        return q.pseudo_quantize_tensor(weight.float())[0].to(weight.dtype)

    def error(module, rounding) -> float:
        return output_error(layer, quantized_state(module, device, rounding), states, kwargs, reference)

    # AutoAWQ's pipeline, as its quantizer runs it
    pipeline = copy.deepcopy(layer).to(device)
    q.inps, q.module_kwargs = states, dict(kwargs)
    linears = get_named_linears(pipeline)
    features = q._get_input_feat(pipeline, linears)
    scales = [q._search_best_scale(pipeline, **c) for c in layers_for_scaling(pipeline, features, q.module_kwargs)]
    apply_scale(pipeline, scales, input_feat_dict=features)
    scaled = {name: linear.weight.detach().float().cpu().clone() for name, linear in linears.items()}
    clips = q._search_best_clip(pipeline, linears, features)
    apply_clip(pipeline, clips)
    print("pipeline, AutoAWQ rounding", error(pipeline, awq_rounding))
    print("pipeline, vlq rounding    ", error(pipeline, vlq_rounding))
    print("pipeline, AutoAWQ rounding computed in fp32", error(pipeline, awq_rounding_in_fp32))

    # the same scales recomposed on a fresh copy, clip inputs recaptured from it
    recomposed = copy.deepcopy(layer).to(device)
    apply_scale(recomposed, [(p, n, s.to(device)) for p, n, s in scales])
    recomposed.to(device)
    for name, linear in get_named_linears(recomposed).items():
        print("scaled weight max |diff|", name, (linear.weight.detach().float().cpu() - scaled[name]).abs().max().item())
    inputs = captured_inputs(recomposed, states, kwargs)
    for name, x in inputs.items():
        original = features[name].reshape(-1, x.shape[-1]).float()
        print("clip input relative diff", name, ((original - x.float()).norm() / x.float().norm()).item())
    clips_again = q._search_best_clip(recomposed, get_named_linears(recomposed), inputs)
    for (name, first), (_, again) in zip(clips, clips_again):
        print("clip thresholds identical", name, (first.to(again.device) == again).float().mean().item())
    with_pipeline_clips = copy.deepcopy(recomposed)
    apply_clip(with_pipeline_clips, clips)
    with_pipeline_clips.to(device)
    apply_clip(recomposed, clips_again)
    recomposed.to(device)
    print("recomposed, own clipping, AutoAWQ rounding     ", error(recomposed, awq_rounding))
    print("recomposed, pipeline clipping, AutoAWQ rounding", error(with_pipeline_clips, awq_rounding))


if __name__ == "__main__":
    main()
