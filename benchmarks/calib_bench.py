"""Calibration of one decoder layer, vlq vs AutoAWQ side by side: seconds, peak GPU memory, output error.

Both quantize the same 7B-shaped Llama decoder layer (hidden 4096, intermediate 11008, 32 heads;
random weights) on the same inputs: random hidden states with a few planted outlier channels
(random weights have no outliers, and without them the scale search has nothing to do), w4 g128,
scale search and clipping on. AutoAWQ (0.2.9, when importable) is driven through its own
per-layer pieces in the order its `AwqQuantizer.quantize` runs them: `_get_input_feat`,
`_search_best_scale` per group of `LlamaAWQForCausalLM.get_layers_for_scaling`, `apply_scale`,
`_search_best_clip`, `apply_clip`, `_apply_quant` (packing; timed apart as well).

Error: the mean squared difference between the layer's output with its final 4-bit weights
(vlq: dequantized from the packed tensors; AutoAWQ: `pseudo_quantize_tensor`, what its packed
tensors hold) and the 16-bit layer's output, over all calibration tokens, by one shared function.

    python benchmarks/calib_bench.py                          # GPU: 128 x 512 and 128 x 2048
    python benchmarks/calib_bench.py --hidden 256 --intermediate 512 --heads 4 --samples 8 --seqlens 64

On the CPU AutoAWQ's `.cpu()` returns the very tensor it is given, so `_compute_best_scale`
restores weights from a "snapshot" that is the live weights; the CPU run patches that (clone).

`--hybrids` also scores each method's scales with the other's clipping (scales applied to a fresh
copy with AutoAWQ's `apply_scale`, clipping searched on inputs recaptured from it), to tell which
half of a difference in error comes from where.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vlq.awq.layer as layer_module  # noqa: E402
from vlq.awq.gram import add_block_gram, search_clip_gram  # noqa: E402
from vlq.awq.layer import LayerSettings, quantize_layer  # noqa: E402
from vlq.awq.pack import dequantize_awq  # noqa: E402
from vlq.awq.quantize import fake_quantize  # noqa: E402
from vlq.awq.search import apply_clip as vlq_apply_clip  # noqa: E402
from vlq.calib.capture import LayerInputs, layer_output  # noqa: E402
from vlq.models.llama_like import LLAVA  # noqa: E402


def build_layer(hidden: int, intermediate: int, heads: int, device: torch.device, seed: int = 0):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=8192,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    layer = LlamaDecoderLayer(config, 0).to(device, torch.float16).eval()
    return layer, LlamaRotaryEmbedding(config).to(device), config


def make_inputs(
    samples: int, seqlen: int, hidden: int, rotary, dtype, device, seed: int = 1, outliers: int = 16
):
    """Random residual-stream states with `outliers` channels 30x larger (as real LLMs have)."""
    g = torch.Generator(device=device).manual_seed(seed)
    states = torch.randn(samples, seqlen, hidden, generator=g, device=device, dtype=dtype)
    channels = torch.randperm(hidden, generator=g, device=device)[:outliers]
    states[..., channels] *= 30.0
    positions = torch.arange(seqlen, device=device)[None]
    cos, sin = rotary(states[:1], positions)
    kwargs = {
        "position_embeddings": (cos.to(dtype), sin.to(dtype)),
        "attention_mask": None,
        "position_ids": positions,
    }
    return states, kwargs


def layer_inputs(states: torch.Tensor, kwargs: dict, batch_size: int) -> LayerInputs:
    chunks = list(states.split(batch_size))
    return LayerInputs(chunks, [() for _ in chunks], [dict(kwargs) for _ in chunks])


@torch.no_grad()
def output_error(layer, state: dict, states, kwargs, reference: list[torch.Tensor], batch: int = 8) -> float:
    """Mean squared error of `layer` with `state` loaded vs the 16-bit outputs (one shared definition)."""
    probe = copy.deepcopy(layer).to(states.device)
    probe.load_state_dict({k: v.to(states.device) for k, v in state.items()}, strict=True)
    total, count = 0.0, 0
    for chunk, ref in zip(states.split(batch), reference):
        out = layer_output(probe(chunk, **kwargs))
        total += float((out.float() - ref.to(out.device).float()).pow(2).sum(dtype=torch.float64))
        count += ref.numel()
    del probe
    return total / count


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


@torch.no_grad()
def run_vlq(layer, states, kwargs, batch_size: int, device, offload: bool = False) -> dict:
    work = copy.deepcopy(layer).to(device)
    inputs = layer_inputs(states.cpu() if offload else states, kwargs, batch_size)
    _reset(device)
    _sync(device)
    start = time.perf_counter()
    folded = []
    fold = layer_module.fold_scales
    layer_module.fold_scales = lambda prev, linears, scales, family=None: (
        folded.append(scales.detach().cpu()),
        fold(prev, linears, scales, family),
    )[1]
    try:
        packed, report, outputs = quantize_layer(
            work, LLAVA, 0, inputs, LayerSettings(search_scale=True, search_clip=True)
        )
    finally:
        layer_module.fold_scales = fold
    _sync(device)
    seconds = time.perf_counter() - start
    peak = _peak_gib(device)
    state = {k: v.detach().cpu() for k, v in work.state_dict().items()}
    for name, module in packed.items():
        tensors = module.awq_tensors()  # AutoAWQ's layout, whatever a CUDA forward repacked
        weight = dequantize_awq(tensors["qweight"], tensors["qzeros"], tensors["scales"], module.group_size).t()
        state[f"{name}.weight"] = weight.to(torch.float16).cpu()
    del work, packed, outputs
    return {
        "seconds": seconds,
        "peak_gib": peak,
        "state": state,
        "vlq_rtn_error": report.rtn_error,
        "vlq_awq_error": report.awq_error,
        "ratios": [g.ratio for g in report.groups],
        "scales": folded,
    }


def llama_layers_for_scaling(module, input_feat, module_kwargs):
    """AutoAWQ 0.2.9's `LlamaAWQForCausalLM.get_layers_for_scaling`, used when `awq.models` won't import."""
    attn, mlp = module.self_attn, module.mlp
    layers = [
        dict(
            prev_op=module.input_layernorm,
            layers=[attn.q_proj, attn.k_proj, attn.v_proj],
            inp=input_feat["self_attn.q_proj"],
            module2inspect=attn,
            kwargs=module_kwargs,
        )
    ]
    if attn.v_proj.weight.shape == attn.o_proj.weight.shape:
        layers.append(dict(prev_op=attn.v_proj, layers=[attn.o_proj], inp=input_feat["self_attn.o_proj"]))
    layers.append(
        dict(
            prev_op=module.post_attention_layernorm,
            layers=[mlp.gate_proj, mlp.up_proj],
            inp=input_feat["mlp.gate_proj"],
            module2inspect=mlp,
        )
    )
    layers.append(dict(prev_op=mlp.up_proj, layers=[mlp.down_proj], inp=input_feat["mlp.down_proj"]))
    return layers


def import_autoawq():
    """AutoAWQ's quantizer pieces. Its package `__init__` imports every model file, which may not
    import under a newer transformers; then the package is entered without running it."""
    import importlib.util
    import warnings

    try:
        import datasets  # noqa: F401
    except ImportError:  # AutoAWQ's calib_data imports it at module level; not used here
        sys.modules["datasets"] = types.SimpleNamespace(load_dataset=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from awq.models.llama import LlamaAWQForCausalLM

            layers_for_scaling = LlamaAWQForCausalLM.get_layers_for_scaling
        except Exception:
            for name in [n for n in sys.modules if n == "awq" or n.startswith("awq.")]:
                del sys.modules[name]
            spec = importlib.util.find_spec("awq")
            if spec is None:
                raise
            package = types.ModuleType("awq")
            package.__path__ = list(spec.submodule_search_locations)
            sys.modules["awq"] = package
            layers_for_scaling = llama_layers_for_scaling
        from awq.quantize import quantizer
        from awq.quantize.scale import apply_clip, apply_scale
    return quantizer.AwqQuantizer, layers_for_scaling, apply_scale, apply_clip


@torch.no_grad()
def run_autoawq(layer, states, kwargs, device) -> dict:
    AwqQuantizer, layers_for_scaling, apply_scale, apply_clip = import_autoawq()
    from awq.utils.module import get_named_linears

    q = AwqQuantizer.__new__(AwqQuantizer)  # the per-layer pieces only: no model, no calibration loading
    q.w_bit, q.group_size, q.zero_point, q.version = 4, 128, True, "gemm"
    q.duo_scaling, q.apply_clip, q.export_compatible = True, True, False
    q.n_parallel_calib_samples, q.max_chunk_memory = None, 1024 * 1024 * 1024
    q.modules_to_not_convert = []
    q.awq_model = types.SimpleNamespace(model_type="llama")
    if device.type == "cpu":  # see the module docstring: AutoAWQ's snapshot aliases CPU weights
        _patch_cpu_snapshot(q)
    work = copy.deepcopy(layer).to(device)
    q.inps = states
    q.module_kwargs = dict(kwargs)
    _reset(device)
    _sync(device)
    start = time.perf_counter()
    named_linears = get_named_linears(work)
    input_feat = q._get_input_feat(work, named_linears)
    module_config = layers_for_scaling(work, input_feat, q.module_kwargs)
    scales_list = [q._search_best_scale(work, **cfg) for cfg in module_config]
    apply_scale(work, scales_list, input_feat_dict=input_feat)
    clip_list = q._search_best_clip(work, named_linears, input_feat)
    apply_clip(work, clip_list)
    _sync(device)
    search_seconds = time.perf_counter() - start
    state = {k: v.detach().cpu() for k, v in work.state_dict().items()}
    for name, linear in named_linears.items():
        state[f"{name}.weight"] = q.pseudo_quantize_tensor(linear.weight.data.to(device))[0].cpu()
    pack_start = time.perf_counter()
    q._apply_quant(work, named_linears)
    _sync(device)
    pack_seconds = time.perf_counter() - pack_start
    peak = _peak_gib(device)
    del work, input_feat, q
    return {
        "seconds": search_seconds + pack_seconds,
        "search_seconds": search_seconds,
        "pack_seconds": pack_seconds,
        "peak_gib": peak,
        "state": state,
        "ratios": None,
        "scales": [(prev, names, scales.detach().cpu()) for prev, names, scales in scales_list],
    }


def _patch_cpu_snapshot(q) -> None:
    original = q._compute_best_scale

    def compute(x, w_mean, x_mean, module2inspect, linears2scale, fp16_output, kwargs={}):  # noqa: B006
        state_dict = module2inspect.state_dict

        def cloned(*a, **k):
            return {key: value.clone() for key, value in state_dict(*a, **k).items()}

        module2inspect.state_dict = cloned
        try:
            return original(x, w_mean, x_mean, module2inspect, linears2scale, fp16_output, kwargs)
        finally:
            del module2inspect.state_dict

    q._compute_best_scale = compute


@torch.no_grad()
def hybrid_state(layer, awq_scales, scales, clip: str, states, kwargs, device) -> dict:
    """A fresh copy with `scales` applied to AutoAWQ's groups, clipped by `clip` ("vlq" or "autoawq")
    on inputs recaptured from that copy, then fake-quantized: one method's scales, the other's clip."""
    _, _, apply_scale, apply_clip = import_autoawq()
    work = copy.deepcopy(layer).to(device)
    apply_scale(work, [(p, n, s.to(device)) for (p, n, _), s in zip(awq_scales, scales)])
    work.to(device)
    linears = {n: m for n, m in work.named_modules() if isinstance(m, torch.nn.Linear)}
    clipped = {n: m for n, m in linears.items() if not n.endswith(("q_proj", "k_proj"))}
    blocks = {
        n: torch.zeros(m.in_features // 128, 128, 128, dtype=torch.float64, device=device)
        for n, m in clipped.items()
    }
    feats: dict[str, list] = {n: [] for n in clipped}

    def record(name):
        def hook(module, args):
            x = args[0].reshape(-1, args[0].shape[-1])
            if clip == "vlq":
                add_block_gram(blocks[name], x, 128)
            else:
                feats[name].append(x)

        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in clipped.items()]
    for chunk in states.split(8):
        work(chunk, **kwargs)
    for handle in handles:
        handle.remove()
    if clip == "vlq":
        for name, m in clipped.items():
            m.weight.data = vlq_apply_clip(
                m.weight.data, search_clip_gram(m.weight.data, blocks[name], 4, 128)
            )
    else:
        AwqQuantizer = import_autoawq()[0]
        q = AwqQuantizer.__new__(AwqQuantizer)
        q.w_bit, q.group_size, q.zero_point = 4, 128, True
        apply_clip(work, q._search_best_clip(work, clipped, {n: torch.cat(v) for n, v in feats.items()}))
        work.to(device)
    state = {k: v.detach().cpu() for k, v in work.state_dict().items()}
    for name, m in linears.items():
        state[f"{name}.weight"] = fake_quantize(m.weight.data, 4, 128).cpu()
    return state


def rtn_state(layer, group_size: int = 128) -> dict:
    state = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    for name, module in layer.named_modules():
        if isinstance(module, torch.nn.Linear):
            state[f"{name}.weight"] = fake_quantize(module.weight.data, 4, group_size)
    return state


def layer_dtype(args, device: torch.device) -> torch.dtype:
    """fp16 on the GPU; fp32 on the CPU unless `--dtype float16` (slow, but shows fp16 rounding effects)."""
    if args.dtype != "auto":
        return getattr(torch, args.dtype)
    return torch.float16 if device.type == "cuda" else torch.float32


def bench_seqlen(args, seqlen: int, device: torch.device, emit) -> None:
    layer, rotary, _ = build_layer(args.hidden, args.intermediate, args.heads, device)
    dtype = layer_dtype(args, device)
    states, kwargs = make_inputs(args.samples, seqlen, args.hidden, rotary, dtype, device)
    layer.to(dtype)
    with torch.no_grad():  # the 16-bit outputs wait in host memory, so no run's peak counts them
        reference = [layer_output(layer(chunk, **kwargs)).cpu() for chunk in states.split(8)]
    shape = f"{args.samples}x{seqlen}"
    rtn = output_error(layer, rtn_state(layer), states, kwargs, reference)
    emit({"shape": shape, "method": "rtn", "error": rtn})
    layer.cpu()  # the master copy waits in host memory too: each run copies it to the device
    runs = [("vlq", b, False) for b in args.batch_sizes] + (
        [("vlq", args.batch_sizes[-1], True)] if args.offload else []
    )
    for method, batch, offload in runs:
        try:
            result = run_vlq(layer, states, kwargs, batch, device, offload)
        except Exception as exc:  # report and go on: one failure must not lose the other figures
            emit(
                {
                    "shape": shape,
                    "method": method,
                    "batch_size": batch,
                    "offload": offload,
                    "failed": repr(exc),
                }
            )
            continue
        state = result.pop("state")
        vlq_scales = result.pop("scales")
        result["error"] = output_error(layer, state, states, kwargs, reference)
        emit({"shape": shape, "method": method, "batch_size": batch, "offload": offload, **result})
    if not args.no_autoawq:
        try:
            result = run_autoawq(layer, states, kwargs, device)
        except Exception as exc:
            emit({"shape": shape, "method": "autoawq", "failed": repr(exc)})
        else:
            state = result.pop("state")
            awq_scales = result.pop("scales")
            result["error"] = output_error(layer, state, states, kwargs, reference)
            emit({"shape": shape, "method": "autoawq", **result})
            if args.hybrids and runs:
                for scales_from, scales in (("vlq", vlq_scales), ("autoawq", [x[2] for x in awq_scales])):
                    for clip in ("vlq", "autoawq"):
                        hybrid = hybrid_state(layer, awq_scales, scales, clip, states, kwargs, device)
                        error = output_error(layer, hybrid, states, kwargs, reference)
                        emit({"shape": shape, "method": f"{scales_from}-scales+{clip}-clip", "error": error})
    del layer, states, reference
    _reset(device)


def warmup(args, device) -> None:
    """One small run of each method first: CUDA context, cuBLAS handles and kernel caches."""
    small = argparse.Namespace(
        **{**vars(args), "samples": 2, "batch_sizes": [1], "offload": False, "hybrids": False}
    )
    bench_seqlen(small, 64, device, emit=lambda row: None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seqlens", default="512,2048", help="Comma-separated tokens per sample.")
    parser.add_argument("--samples", type=int, default=128, help="Calibration samples.")
    parser.add_argument(
        "--batch-sizes", default="1", help="vlq --batch-size values to run (comma-separated)."
    )
    parser.add_argument(
        "--offload", action="store_true", help="Also run vlq with hidden states in host memory."
    )
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--no-autoawq", action="store_true", help="Skip AutoAWQ even when importable.")
    parser.add_argument(
        "--dtype", choices=("auto", "float16", "float32"), default="auto",
        help="Layer dtype (auto: float16 on the GPU, float32 on the CPU).",
    )
    parser.add_argument(
        "--hybrids", action="store_true", help="Also score each method's scales with the other's clipping."
    )
    parser.add_argument("--json-out", type=Path, help="Append one JSON line per result to this file.")
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if not args.no_autoawq:
        try:
            import_autoawq()
        except Exception as exc:
            print(f"AutoAWQ not importable ({type(exc).__name__}: {exc}); vlq only", file=sys.stderr)
            args.no_autoawq = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        line = json.dumps(row, default=str)
        print(line, flush=True)
        if args.json_out:
            with open(args.json_out, "a") as f:
                f.write(line + "\n")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    emit(
        {
            "device": name,
            "torch": torch.__version__,
            "hidden": args.hidden,
            "intermediate": args.intermediate,
            "heads": args.heads,
        }
    )
    warmup(args, device)
    for seqlen in (int(s) for s in args.seqlens.split(",")):
        bench_seqlen(args, seqlen, device, emit)
    print_table(rows)
    return 0


def print_table(rows: list[dict]) -> None:
    print(f"\n{'shape':>10} {'method':>8} {'batch':>5} {'s/layer':>8} {'peak GiB':>9} {'error':>11}")
    for row in rows:
        if "method" not in row or "failed" in row:
            continue
        peak = f"{row['peak_gib']:.2f}" if row.get("peak_gib") is not None else "-"
        seconds = f"{row['seconds']:.2f}" if "seconds" in row else "-"
        batch = str(row.get("batch_size", "")) + ("+off" if row.get("offload") else "")
        print(
            f"{row['shape']:>10} {row['method']:>8} {batch:>5} {seconds:>8} {peak:>9} {row['error']:>11.4e}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
