"""Quantized (int8 / int4) KV cache for transformers generation: LMDeploy's online per-token, per-head scheme."""

from vlq.kv.cache import QuantizedKVCache, QuantizedKVLayer, make_quantized_cache
from vlq.kv.quant import QuantizedKV, cache_bytes_per_token, dequantize_kv, quantize_kv

__all__ = [
    "QuantizedKV",
    "QuantizedKVCache",
    "QuantizedKVLayer",
    "cache_bytes_per_token",
    "dequantize_kv",
    "make_quantized_cache",
    "quantize_kv",
]
