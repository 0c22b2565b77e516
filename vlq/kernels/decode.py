"""Greedy decode of a Hugging Face Llama with static KV buffers, for end-to-end w4a16 timing.

Why not `generate()`: at batch 1 a 32-layer eager step spends far more time launching kernels
from Python than reading weights, so it would hide any GEMM speed-up. This loop runs the model's
own modules (embedding, RMSNorm, rotary, q/k/v/o and MLP projections, lm_head) but keeps the KV
cache, positions and mask in fixed device buffers, so one decode step is captured once as a CUDA
graph and replayed; the tokens/s it gives are bound by the GPU work of the step.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from vlq.awq.quantize import quantize
from vlq.kernels.linear import AwqLinear

DECODER_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def quantize_decoder_linears(model: nn.Module, group_size: int = 128) -> int:
    """Replace every decoder-layer linear by an `AwqLinear` of its RTN-quantized weight; returns the count.

    Frees each fp16 weight as it goes, so peak memory stays near the fp16 model's.
    """
    count = 0
    for layer in model.model.layers:
        for path in DECODER_LINEARS:
            parent_name, name = path.split(".")
            parent = getattr(layer, parent_name)
            linear = getattr(parent, name)
            q = quantize(linear.weight.detach(), bits=4, group_size=group_size)
            setattr(parent, name, AwqLinear.from_quantized(q, linear.bias, dtype=linear.weight.dtype))
            del linear, q
            count += 1
    return count


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes the decoder layers' linear weights hold in memory, in the layout they are in now
    (AwqLinear's load-time layout once it has run on CUDA); tensors sharing storage count once."""
    storages = {}
    for layer in model.model.layers:
        for path in DECODER_LINEARS:
            module = layer.get_submodule(path)
            for t in itertools.chain(module.parameters(), module.buffers()):
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


class StaticLlamaDecoder:
    """Greedy decoding over a `LlamaForCausalLM` with preallocated KV buffers of `max_len` positions."""

    def __init__(self, model: nn.Module, batch: int, max_len: int):
        config = model.config
        self.model = model
        self.batch = batch
        self.max_len = max_len
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.gqa = config.num_key_value_heads != config.num_attention_heads
        param = next(model.parameters())
        shape = (batch, config.num_key_value_heads, max_len, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in model.model.layers]
        self.values = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in model.model.layers]
        self.slots = torch.arange(max_len, device=param.device)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits `[batch, vocab]` of the last token; writes the tokens' K/V at `positions` ([T])."""
        inner = self.model.model
        batch, length = tokens.shape
        hidden = inner.embed_tokens(tokens)
        cos, sin = inner.rotary_emb(hidden, positions[None].expand(batch, length))
        mask = self.slots[None, :] <= positions[:, None]  # [T, max_len]: causal over the filled slots
        for layer, keys, values in zip(inner.layers, self.keys, self.values):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            keys.index_copy_(2, positions, k)
            values.index_copy_(2, positions, v)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=self.gqa)
            hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.model.lm_head(inner.norm(hidden[:, -1]))


@dataclass(frozen=True)
class DecodeTiming:
    batch: int
    new_tokens: int
    seconds: float
    cuda_graph: bool

    @property
    def tokens_per_second(self) -> float:
        return self.batch * self.new_tokens / self.seconds


def time_decode(model: nn.Module, batch: int, prompt_len: int, new_tokens: int, vocab: int) -> DecodeTiming:
    """Prefill a random prompt, then time `new_tokens` greedy steps (one CUDA graph replay each)."""
    device = next(model.parameters()).device
    decoder = StaticLlamaDecoder(model, batch, prompt_len + new_tokens)
    prompt = torch.randint(vocab, (batch, prompt_len), device=device)
    token = decoder.forward(prompt, torch.arange(prompt_len, device=device)).argmax(-1, keepdim=True)
    position = torch.full((1,), prompt_len, device=device)

    def step() -> None:
        token.copy_(decoder.forward(token, position).argmax(-1, keepdim=True))
        position.add_(1)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # compile kernels and create library handles before capture
            step()
    torch.cuda.current_stream().wait_stream(side)
    run, cuda_graph = step, True
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        run = graph.replay
    except RuntimeError:  # something in the step cannot be captured: time it eagerly instead
        cuda_graph = False
    for _ in range(3):
        run()
    position.fill_(prompt_len)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(new_tokens):
        run()
    torch.cuda.synchronize()
    return DecodeTiming(
        batch=batch, new_tokens=new_tokens, seconds=time.perf_counter() - start, cuda_graph=cuda_graph
    )
