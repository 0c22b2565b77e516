"""`vlq bench kv`: cache memory and decode speed of the 16-bit, kv8 and kv4 caches side by side.

The model is a Llama of a named shape with random weights (memory and speed do not depend on
the weights), built straight on the device in 16 bit. Each variant prefills the same random
prompt, then decodes greedily one token a step with plain eager forward calls (no CUDA graphs:
the quantized cache changes shape every step, and transformers' default cache is timed the same
way). Attention runs through SDPA with the cuDNN backend excluded (flash first): with torch 2.11
on an H100, cuDNN attention made the fp16 DynamicCache decode ~4x slower (median 91 vs 23 ms a
step for the 7B shape at batch 1) while the quantized cache's steps stayed fast, which would
flatter kv8/kv4. Memory is counted twice: bytes of the cache tensors themselves, and on CUDA the peak
allocation over the weights during the run, which also holds the dequantized keys/values of the
layer being computed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from rich.table import Table
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from vlq.errors import UsageError
from vlq.kv.cache import QuantizedKVCache, make_quantized_cache
from vlq.kv.quant import cache_bytes_per_token, kv_shape

#: Llama shapes by name. "2b" is the decoder of Mini-InternVL-Chat-2B (InternLM2-1.8B: GQA, head_dim 128).
SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000),
    "2b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=16,
               num_key_value_heads=8, vocab_size=92544),
    "small": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=4, vocab_size=1024),
}  # fmt: skip
GPU_DEFAULTS = (1024, 128)  # prompt tokens, new tokens
CPU_DEFAULTS = (128, 16)


@dataclass(frozen=True)
class KvBenchRow:
    """One (batch, cache) run. Bytes per token are per sequence position over all layers."""

    batch: int
    cache: str  # "fp16" / "bf16" (transformers' DynamicCache), "kv8", "kv4"
    backend: str  # "default" for the 16-bit cache, else the quantized cache's "triton" or "torch" path
    bytes_per_token: float
    ratio: float  # bytes per token / 16-bit bytes per token
    cache_mib: float  # measured: the cache's tensors after the run
    peak_mib: float | None  # CUDA: peak allocation above the weights during the run
    prefill_ms: float
    decode_ms: float  # per step
    tokens_per_s: float  # batch * steps / decode time
    slowdown: float  # decode_ms / the 16-bit cache's decode_ms at this batch


@dataclass(frozen=True)
class KvBenchReport:
    device: str
    shape: str
    layers: int
    kv_heads: int
    head_dim: int
    dtype: str
    prompt_tokens: int
    new_tokens: int
    note: str
    rows: list[KvBenchRow] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def build_llama(shape: str, layers: int | None, device: torch.device, dtype: torch.dtype) -> LlamaForCausalLM:
    """Random-weight Llama of a named shape, allocated directly on `device` in `dtype`."""
    kwargs = dict(SHAPES[shape], max_position_embeddings=8192)
    if layers:
        kwargs["num_hidden_layers"] = layers
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            return LlamaForCausalLM(LlamaConfig(**kwargs)).to(dtype).eval()
    finally:
        torch.set_default_dtype(default_dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cache_bytes(cache) -> int:
    if isinstance(cache, QuantizedKVCache):
        return cache.nbytes()
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


#: Every SDPA backend but cuDNN, in torch's order of preference (see the module docstring).
SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@torch.inference_mode()
def _run_once(
    model, make_cache: Callable, prompt: torch.Tensor, new_tokens: int
) -> tuple[float, float, int, int | None]:
    """(prefill s, decode s, cache bytes, peak bytes above the starting allocation or None)."""
    with sdpa_kernel(SDPA_BACKENDS):
        return _timed_run(model, make_cache(), prompt, new_tokens)


def _timed_run(model, cache, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float, int, int | None]:
    device = prompt.device
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    logits = model(prompt, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
    token = logits[:, -1:].argmax(-1)
    _sync(device)
    t1 = time.perf_counter()
    for _ in range(new_tokens):
        logits = model(token, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        token = logits[:, -1:].argmax(-1)
    _sync(device)
    t2 = time.perf_counter()
    if not torch.isfinite(logits).all():
        raise RuntimeError("non-finite logits during the KV cache benchmark")
    peak = torch.cuda.max_memory_allocated(device) - start_bytes if device.type == "cuda" else None
    return t1 - t0, t2 - t1, _cache_bytes(cache), peak


def run_kv_bench(
    model_shape: str = "7b",
    batches: tuple[int, ...] = (1,),
    new_tokens: int | None = None,
    prompt_tokens: int | None = None,
    layers: int | None = None,
    backend: str = "auto",
    device: str | None = None,
    progress: Callable[[str], None] = lambda _text: None,
) -> KvBenchReport:
    """Run the 16-bit cache, then kv8 and kv4 at each batch size, on one model.

    `backend` "auto" runs both quantized paths on CUDA (fused Triton, torch reference) and the torch
    path on CPU; "triton" or "torch" runs that one only.
    """
    if backend not in ("auto", "triton", "torch"):
        raise UsageError(f"--backend must be auto, triton or torch, got {backend!r}")
    backends = None if backend == "auto" else (backend,)
    if model_shape not in SHAPES:
        raise UsageError(f"--model-shape must be one of {', '.join(SHAPES)}, got {model_shape!r}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    note = "random weights; eager decode (no CUDA graphs), one token a step; SDPA without cuDNN"
    if dev.type == "cpu":
        if model_shape != "small":
            note = (
                f"CPU: ran the 'small' shape instead of {model_shape!r}; CPU speeds say nothing about a GPU. "
                + note
            )
            model_shape = "small"
        default_prompt, default_new = CPU_DEFAULTS
        dtype = torch.bfloat16
        backends = backends or ("torch",)
    else:
        default_prompt, default_new = GPU_DEFAULTS
        dtype = torch.float16
        backends = backends or ("triton", "torch")
    prompt_tokens = prompt_tokens or default_prompt
    new_tokens = new_tokens or default_new
    if layers and layers != SHAPES[model_shape]["num_hidden_layers"]:
        note = f"{layers} of {SHAPES[model_shape]['num_hidden_layers']} layers. " + note

    progress(f"building the {model_shape} Llama on {dev}")
    model = build_llama(model_shape, layers, dev, dtype)
    config = model.config
    n_layers, kv_heads, head_dim = kv_shape(config)
    base_name = "fp16" if dtype == torch.float16 else "bf16"
    variants = [(base_name, "default", lambda: DynamicCache(config=config), 16)]
    for bits in (8, 4):
        for backend in backends:
            variants.append(
                (f"kv{bits}", backend, lambda b=bits, be=backend: make_quantized_cache(b, config, be), bits)
            )

    gen = torch.Generator().manual_seed(0)
    warm = torch.randint(0, config.vocab_size, (1, 32), generator=gen).to(dev)
    for _, _, make_cache, _ in variants:  # compile kernels, warm cuBLAS and the allocator
        _run_once(model, make_cache, warm, 4)

    base_bpt = cache_bytes_per_token(16, config)
    rows: list[KvBenchRow] = []
    for batch in batches:
        prompt = torch.randint(0, config.vocab_size, (batch, prompt_tokens), generator=gen).to(dev)
        base_decode = None
        for name, backend, make_cache, bits in variants:
            progress(f"batch {batch}: {name} ({backend})")
            prefill_s, decode_s, cache_bytes, peak = _run_once(model, make_cache, prompt, new_tokens)
            decode_ms = decode_s / new_tokens * 1e3
            base_decode = base_decode or decode_ms
            bpt = cache_bytes_per_token(bits, config)
            rows.append(
                KvBenchRow(
                    batch=batch,
                    cache=name,
                    backend=backend,
                    bytes_per_token=bpt,
                    ratio=bpt / base_bpt,
                    cache_mib=cache_bytes / 2**20,
                    peak_mib=None if peak is None else peak / 2**20,
                    prefill_ms=prefill_s * 1e3,
                    decode_ms=decode_ms,
                    tokens_per_s=batch * new_tokens / decode_s,
                    slowdown=decode_ms / base_decode,
                )
            )
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    return KvBenchReport(
        device=device_name,
        shape=model_shape,
        layers=n_layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        dtype=base_name,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        note=note,
        rows=rows,
    )


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--batch takes comma-separated integers, got {text!r}") from None
    if not batches or min(batches) < 1:
        raise UsageError(f"--batch takes positive integers, got {text!r}")
    return batches


def kv_table(report: KvBenchReport) -> Table:
    """Rich table: one row per (batch, cache, backend)."""
    table = Table(
        title=f"KV cache on {report.device}: {report.shape} Llama ({report.layers} layers, {report.kv_heads} KV heads, "
        f"head_dim {report.head_dim}, {report.dtype}), {report.prompt_tokens}-token prompt + {report.new_tokens} new",
        caption=f"{report.note}. bytes/token: all layers, keys and values, fp16 scale and zero included; "
        "cache MiB: measured tensors after the run; peak MiB: CUDA peak above the weights",
    )
    columns = ("batch", "cache", "backend", "bytes/token", "vs 16-bit", "cache MiB", "peak MiB")
    columns += ("prefill ms", "decode ms/step", "tokens/s", "decode slowdown")
    for name in columns:
        table.add_column(name, justify="left" if name in ("cache", "backend") else "right")
    for r in report.rows:
        table.add_row(
            str(r.batch),
            r.cache,
            r.backend,
            f"{r.bytes_per_token:,.0f}",
            f"{r.ratio:.3f}x",
            f"{r.cache_mib:,.1f}",
            "-" if r.peak_mib is None else f"{r.peak_mib:,.0f}",
            f"{r.prefill_ms:,.1f}",
            f"{r.decode_ms:.2f}",
            f"{r.tokens_per_s:,.1f}",
            f"{r.slowdown:.2f}x",
        )
    return table
