"""A transformers `Cache` whose keys and values are stored as int8 or int4, dequantized on read.

`QuantizedKVLayer` subclasses `DynamicLayer` (so masks, `get_mask_sizes`, generation and the
`Cache` container treat it as a dynamic full-attention layer) but keeps, instead of fp16
`keys`/`values`, three tensors holding keys and values together:

    codes [2, B, H, capacity, D * bits / 8]  uint8
    scale [2, B, H, capacity, 1]             fp16
    zero  [2, B, H, capacity, 1]             fp16

Capacity grows in chunks of `CHUNK_TOKENS`, so a decode step writes one position in place
instead of re-concatenating the whole cache (DynamicLayer's `torch.cat` copies it every step);
the unused tail is at most `CHUNK_TOKENS - 1` positions.

Every update returns the whole context as `[B, H, T, D]` in the model's dtype: past positions
dequantized, the positions being written this call exactly as given. All stored positions are
quantized, as in LMDeploy: there is no fp16 residual window. Per-token parameters need no window
to fill a quantization group (KIVI's reason for one), and on a tiny model a 64-position fp16
window cut kv4's mean logit error by only 11-17% while it costs 64 x 0.5 MiB a sequence at 7B.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.cache_utils import Cache, DynamicLayer

from vlq.errors import UsageError
from vlq.kv.quant import SCALE_DTYPE, check_bits, dequantize_kv, kv_shape, quantize_kv

CHUNK_TOKENS = 256
BACKENDS = ("auto", "torch", "triton")

AppendFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def append_dequantize_torch(
    key_states: torch.Tensor,
    value_states: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    start: int,
    bits: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for the fused Triton kernel: quantize the new states into the cache at `start`,
    return keys and values of positions `0:start+n` (past dequantized, new exact)."""
    end = start + key_states.shape[-2]
    new = torch.stack((key_states, value_states))
    q = quantize_kv(new, bits)
    codes[:, :, :, start:end] = q.codes
    scale[:, :, :, start:end] = q.scale
    zero[:, :, :, start:end] = q.zero
    out = torch.empty(new.shape[:3] + (end, new.shape[-1]), dtype=new.dtype, device=new.device)
    out[:, :, :, :start] = dequantize_kv(
        codes[:, :, :, :start], scale[:, :, :, :start], zero[:, :, :, :start], bits, new.dtype
    )
    out[:, :, :, start:] = new
    return out[0], out[1]


def _append_fn(backend: str, device: torch.device) -> AppendFn:
    if backend == "torch" or (backend == "auto" and device.type != "cuda"):
        return append_dequantize_torch
    try:
        from vlq.kv.triton_kv import append_dequantize_triton
    except ImportError:
        if backend == "triton":
            raise UsageError("the triton KV cache backend needs the triton package") from None
        return append_dequantize_torch
    return append_dequantize_triton


class QuantizedKVLayer(DynamicLayer):
    """One decoder layer's int8/int4 key/value cache (per-token, per-head asymmetric)."""

    def __init__(self, bits: int, backend: str = "auto"):
        super().__init__()
        check_bits(bits)
        if backend not in BACKENDS:
            raise UsageError(f"KV cache backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.bits = bits
        self.backend = backend
        self.length = 0
        self.codes: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None
        self.zero: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        if key_states.shape != value_states.shape:
            raise UsageError(
                f"quantized KV cache needs keys and values of one shape, got {tuple(key_states.shape)} "
                f"and {tuple(value_states.shape)}"
            )
        if key_states.shape[-1] % 2:
            raise UsageError(f"quantized KV cache needs an even head_dim, got {key_states.shape[-1]}")
        self.dtype, self.device = key_states.dtype, key_states.device
        self._append = _append_fn(self.backend, self.device)
        batch, heads, _, head_dim = key_states.shape
        self._allocate(batch, heads, head_dim, capacity=0)
        self.is_initialized = True

    def _allocate(self, batch: int, heads: int, head_dim: int, capacity: int) -> None:
        per_byte = 8 // self.bits
        codes = torch.empty(
            (2, batch, heads, capacity, head_dim // per_byte), dtype=torch.uint8, device=self.device
        )
        scale = torch.empty((2, batch, heads, capacity, 1), dtype=SCALE_DTYPE, device=self.device)
        zero = torch.empty_like(scale)
        if self.codes is not None and self.length:
            codes[:, :, :, : self.length] = self.codes[:, :, :, : self.length]
            scale[:, :, :, : self.length] = self.scale[:, :, :, : self.length]
            zero[:, :, :, : self.length] = self.zero[:, :, :, : self.length]
        self.codes, self.scale, self.zero = codes, scale, zero

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new states quantized; return keys and values of the whole context, `[B, H, T, D]`."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.length
        end = start + key_states.shape[-2]
        if end > self.codes.shape[3]:
            batch, heads, _, head_dim = key_states.shape
            self._allocate(batch, heads, head_dim, capacity=-(-end // CHUNK_TOKENS) * CHUNK_TOKENS)
        keys, values = self._append(
            key_states, value_states, self.codes, self.scale, self.zero, start, self.bits
        )
        self.length = end
        return keys, values

    def get_seq_length(self) -> int:
        return self.length

    def nbytes(self, reserved: bool = False) -> int:
        """Bytes of cache storage: of the stored positions, or of the whole allocated capacity."""
        if self.codes is None:
            return 0
        tensors = (self.codes, self.scale, self.zero)
        if reserved:
            return sum(t.nbytes for t in tensors)
        return sum(t[:, :, :, : self.length].nbytes for t in tensors)

    def reset(self) -> None:
        # Not super(): transformers 5.17's base reset zeroes `keys`, which this layer never holds.
        self.length = 0
        self.codes = self.scale = self.zero = None
        self.is_initialized = False

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last `-tokens_to_remove` positions (transformers' negative convention); storage is kept."""
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of positions to remove")
        self.length = max(0, self.length + tokens_to_remove)

    def _select(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if self.codes is not None:
            self.codes, self.scale, self.zero = fn(self.codes), fn(self.scale), fn(self.zero)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._select(lambda t: t.index_select(1, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._select(lambda t: t.repeat_interleave(repeats, dim=1))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._select(lambda t: t[:, indices])


class QuantizedKVCache(Cache):
    """int8/int4 KV cache for every full-attention decoder layer of `config` (a VLM's config is fine)."""

    def __init__(self, bits: int, config, backend: str = "auto"):
        text_config = config.get_text_config(decoder=True)
        layer_types = set(getattr(text_config, "layer_types", None) or ["full_attention"])
        if layer_types != {"full_attention"}:
            raise UsageError(
                f"quantized KV cache supports full-attention decoders only, this one has {sorted(layer_types)}"
            )
        layers, _, _ = kv_shape(text_config)
        super().__init__(layers=[QuantizedKVLayer(bits, backend) for _ in range(layers)])
        self.bits = bits

    def nbytes(self, reserved: bool = False) -> int:
        """Bytes of all layers' storage (codes, scales, zeros): used positions, or allocated capacity."""
        return sum(layer.nbytes(reserved) for layer in self.layers)


def make_quantized_cache(bits: int, config, backend: str = "auto") -> Cache:
    """The cache to pass as `past_key_values=` for a kv8 (`bits=8`) or kv4 (`bits=4`) run.

    16 bits is not a quantized cache: callers keep transformers' default for it. `backend` picks
    the fused Triton kernel on CUDA ("auto") or forces the torch reference.
    """
    check_bits(bits)
    return QuantizedKVCache(bits, config, backend)
