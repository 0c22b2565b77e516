"""kv8 / kv4 cache: the quantization math against a plain per-vector reference, then the cache inside
real transformers generation on tiny random models (Llama, Qwen2-VL text path, LLaVA with an image).

Bounds are measured on these seeded models and set with ~3x margin; they are stated relative to
the standard deviation of the reference logits, as a random model's logits are small:
kv8 max |logit error| <= 3% of std (measured 0.7% to 1.4%), kv4 <= 40% (measured 17% to 25%: int4
per-token quantization leaves ~9% relative noise in each key/value element at head_dim 32).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from vlq.errors import UsageError
from vlq.kv import cache_bytes_per_token, dequantize_kv, make_quantized_cache, quantize_kv
from vlq.kv.cache import CHUNK_TOKENS, append_dequantize_torch
from vlq.kv.quant import MIN_SCALE, max_code, pack_int4, unpack_int4

KV8_LOGIT_BOUND = 0.03
KV4_LOGIT_BOUND = 0.40


# --- pure math ---------------------------------------------------------------------------------


def _reference_quantize(vec: torch.Tensor, bits: int) -> tuple[list[int], float, float]:
    """One vector, written out plainly: fp16 min as zero, fp16 (max - zero) / max_code as scale."""
    values = vec.float().tolist()
    zero = float(torch.tensor(min(values)).half())
    scale = float(torch.tensor(max((max(values) - zero) / max_code(bits), MIN_SCALE)).half())
    codes = [
        min(max(int(torch.floor(torch.tensor((v - zero) / scale + 0.5))), 0), max_code(bits)) for v in values
    ]
    return codes, scale, zero


@settings(max_examples=60, deadline=None)
@given(
    bits=st.sampled_from([8, 4]),
    head_dim=st.sampled_from([2, 8, 32, 128]),
    dtype=st.sampled_from([torch.float16, torch.bfloat16]),
    magnitude=st.sampled_from([1e-3, 1.0, 30.0, 1000.0]),
    offset=st.sampled_from([0.0, 5.0, -200.0]),
    seed=st.integers(0, 2**16),
)
def test_round_trip_within_half_a_scale(bits, head_dim, dtype, magnitude, offset, seed):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(2, 3, 5, head_dim, generator=gen) * magnitude + offset).to(dtype)
    q = quantize_kv(x, bits)
    assert q.codes.dtype == torch.uint8 and q.codes.shape[-1] == head_dim * bits // 8
    assert q.scale.dtype == q.zero.dtype == torch.float16 and q.scale.shape == x.shape[:-1] + (1,)
    back = dequantize_kv(q.codes, q.scale, q.zero, bits, torch.float32)
    err = (back - x.float()).abs()
    bound = q.scale.float() / 2 * (1 + 1e-5) + x.float().abs() * 1e-6
    assert bool((err <= bound).all()), (err - bound).max()
    # Codes agree with the plain per-vector reference.
    codes = unpack_int4(q.codes) if bits == 4 else q.codes
    for idx in [(0, 0, 0), (1, 2, 4), (0, 1, 3)]:
        ref_codes, ref_scale, ref_zero = _reference_quantize(x[idx], bits)
        assert codes[idx].tolist() == ref_codes
        assert float(q.scale[idx]) == ref_scale and float(q.zero[idx]) == ref_zero


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    half=st.integers(1, 64),
    seed=st.integers(0, 999),
)
def test_int4_pack_round_trip(shape, half, seed):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (*shape, 2 * half), generator=gen, dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape[-1] == half and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), codes)
    assert torch.equal(packed & 0xF, codes[..., :half])  # the documented "halves" layout


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("value", [0.0, 3.25, -1000.0])
def test_constant_vectors_do_not_divide_by_zero(bits, value):
    x = torch.full((2, 2, 3, 64), value, dtype=torch.float16)
    q = quantize_kv(x, bits)
    assert torch.all(q.scale.float() == MIN_SCALE)
    back = dequantize_kv(q.codes, q.scale, q.zero, bits)
    assert torch.isfinite(back).all() and torch.equal(back, x)


@pytest.mark.parametrize("bits", [16, 2, 3, 0])
def test_unsupported_bits_are_a_usage_error(bits):
    with pytest.raises(UsageError):
        make_quantized_cache(bits, LlamaConfig(num_hidden_layers=1))
    with pytest.raises(UsageError):
        quantize_kv(torch.zeros(1, 4), bits)


def test_bytes_per_token_ratios_for_head_dim_128():
    config = LlamaConfig(
        hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, num_hidden_layers=32
    )
    fp16 = cache_bytes_per_token(16, config)
    assert fp16 == 2 * 32 * 32 * 128 * 2  # 0.5 MiB a token for Llama-2-7B
    assert (
        cache_bytes_per_token(8, config) / fp16 == pytest.approx((128 + 4) / 256) and (128 + 4) / 256 <= 0.55
    )
    assert cache_bytes_per_token(4, config) / fp16 == pytest.approx((64 + 4) / 256) and (64 + 4) / 256 <= 0.3


# --- the cache in transformers ------------------------------------------------------------------


def _llama_config(**overrides) -> LlamaConfig:
    kwargs = dict(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,  # head_dim 32
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=None,
        bos_token_id=None,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(_llama_config()).eval()


def _cache(bits: int, config, backend: str = "auto"):
    return DynamicCache(config=config) if bits == 16 else make_quantized_cache(bits, config, backend)


def _generate(model, ids, bits, new_tokens, **kwargs):
    cache = _cache(bits, model.config)
    out = model.generate(
        ids,
        past_key_values=cache,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        **kwargs,
    )
    return out, cache


@pytest.mark.parametrize("bits,bound", [(8, KV8_LOGIT_BOUND), (4, KV4_LOGIT_BOUND)])
@torch.no_grad()
def test_decode_logits_close_to_fp16(llama, bits, bound):
    ids = torch.randint(1, 256, (2, 48), generator=torch.Generator().manual_seed(1))
    ref = llama(ids).logits[:, 24:]
    cache = make_quantized_cache(bits, llama.config)
    first = llama(ids[:, :24], past_key_values=cache).logits
    # The prompt attends to itself exactly: prefill logits are fp16's.
    torch.testing.assert_close(first, llama(ids[:, :24]).logits)
    steps = [llama(ids[:, i : i + 1], past_key_values=cache).logits for i in range(24, 40)]
    chunk = llama(ids[:, 40:], past_key_values=cache).logits  # a multi-token chunk over a quantized past
    got = torch.cat([*steps, chunk], dim=1)
    err = (got - ref).abs().max().item() / ref.std().item()
    assert err <= bound
    assert err > 0  # the past really is read back quantized


@torch.no_grad()
def test_kv8_greedy_matches_fp16_for_32_tokens(llama):
    ids = torch.randint(1, 256, (1, 16), generator=torch.Generator().manual_seed(2))
    ref, _ = _generate(llama, ids, 16, 32)
    got, cache = _generate(llama, ids, 8, 32)
    assert torch.equal(got, ref)
    assert cache.get_seq_length() == 16 + 32 - 1


@torch.no_grad()
def test_long_kv4_generation_stays_finite_and_close():
    torch.manual_seed(0)
    model = LlamaForCausalLM(_llama_config(num_key_value_heads=4)).eval()
    ids = torch.randint(1, 256, (1, 8), generator=torch.Generator().manual_seed(3))
    out = model.generate(
        ids,
        past_key_values=make_quantized_cache(4, model.config),
        max_new_tokens=300,
        min_new_tokens=300,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    scores = torch.stack(out.scores, dim=1)
    assert scores.shape[:2] == (1, 300)
    assert torch.isfinite(scores).all()
    # Rescore the same sequence with full-precision attention: the error must not grow with length.
    ref = model(out.sequences).logits[:, 7:-1]
    err = (scores - ref).abs().amax(dim=-1)[0] / ref.std()
    assert err.max() <= KV4_LOGIT_BOUND
    assert err[-100:].mean() <= 2 * err[:100].mean() + 0.01


@pytest.mark.parametrize("bits", [8, 4])
@torch.no_grad()
def test_left_padded_batch_equals_per_sample(llama, bits):
    gen = torch.Generator().manual_seed(4)
    prompts = [torch.randint(1, 256, (n,), generator=gen) for n in (5, 9, 12)]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    batched, _ = _generate(llama, ids, bits, 16, attention_mask=mask)
    for row, prompt in enumerate(prompts):
        single, _ = _generate(llama, prompt[None], bits, 16)
        assert torch.equal(batched[row, width:], single[0, len(prompt) :])


@pytest.mark.parametrize("bits", [8, 4])
@torch.no_grad()
def test_measured_bytes_match_formula(llama, bits):
    batch, tokens = 3, 37
    cache = make_quantized_cache(bits, llama.config)
    llama(torch.randint(1, 256, (batch, tokens)), past_key_values=cache)
    # Count the real tensors: per layer codes [2, B, H, cap, D*bits/8] uint8, scale and zero [2, B, H, cap, 1] fp16.
    stored = 0
    for layer in cache.layers:
        for t in (layer.codes, layer.scale, layer.zero):
            stored += t[:, :, :, :tokens].numel() * t.element_size()
    assert stored == cache.nbytes() == cache_bytes_per_token(bits, llama.config) * batch * tokens
    assert cache.nbytes(reserved=True) <= cache.nbytes() / tokens * CHUNK_TOKENS
    fp16 = DynamicCache(config=llama.config)
    llama.half()(torch.randint(1, 256, (batch, tokens)), past_key_values=fp16)
    llama.float()
    fp16_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in fp16.layers)
    assert fp16_bytes == cache_bytes_per_token(16, llama.config) * batch * tokens
    assert cache.nbytes() / fp16_bytes == pytest.approx((32 * bits / 8 + 4) / 64)


@torch.no_grad()
def test_crop_beam_search_and_reset(llama):
    ids = torch.randint(1, 256, (1, 10), generator=torch.Generator().manual_seed(5))
    cache = make_quantized_cache(8, llama.config)
    llama(ids, past_key_values=cache)
    cache.crop(-4)
    assert cache.get_seq_length() == 6
    again = llama(ids[:, 6:], past_key_values=cache).logits
    fresh = make_quantized_cache(8, llama.config)
    llama(ids[:, :6], past_key_values=fresh)
    torch.testing.assert_close(again, llama(ids[:, 6:], past_key_values=fresh).logits)
    cache.reset()
    assert cache.get_seq_length() == 0 and cache.nbytes() == 0
    beams, _ = _generate(llama, ids, 8, 6, num_beams=3)
    ref_beams, _ = _generate(llama, ids, 16, 6, num_beams=3)
    assert beams.shape == ref_beams.shape and torch.equal(beams[:, :11], ref_beams[:, :11])


@torch.no_grad()
def test_w4a16_weights_make_no_difference_to_the_cache():
    """The cache only sees keys and values: a model with AwqLinear (4-bit) weights runs it as is."""
    from vlq.awq.quantize import quantize
    from vlq.kernels.linear import AwqLinear

    torch.manual_seed(0)
    model = LlamaForCausalLM(_llama_config()).eval()
    for layer in model.model.layers:
        for parent, names in (
            (layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
            (layer.mlp, ("gate_proj", "up_proj", "down_proj")),
        ):
            for name in names:
                linear = getattr(parent, name)
                q = quantize(linear.weight.detach(), bits=4, group_size=32)
                setattr(parent, name, AwqLinear.from_quantized(q, linear.bias, dtype=torch.float32))
    assert sum(isinstance(m, AwqLinear) for m in model.modules()) == 14
    ids = torch.randint(1, 256, (2, 12), generator=torch.Generator().manual_seed(9))
    ref, _ = _generate(model, ids, 16, 16)
    got8, _ = _generate(model, ids, 8, 16)
    got4, cache4 = _generate(model, ids, 4, 16)
    assert torch.equal(got8, ref)
    assert got4.shape == ref.shape and cache4.get_seq_length() == 12 + 16 - 1


@torch.no_grad()
def test_qwen2_vl_text_path():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=256,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]},
            eos_token_id=None,
        ),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=128, num_heads=2, mlp_ratio=2, patch_size=14),
        image_token_id=250,
        video_token_id=251,
        vision_start_token_id=252,
        vision_end_token_id=253,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    ids = torch.randint(1, 200, (1, 12), generator=torch.Generator().manual_seed(6))
    ref, _ = _generate(model, ids, 16, 12)
    got, cache = _generate(model, ids, 8, 12)
    assert torch.equal(got, ref)
    assert cache.get_seq_length() == 12 + 12 - 1


@torch.no_grad()
def test_llava_with_an_image():
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    image_token = 255
    config = LlavaConfig(
        text_config=_llama_config(),
        vision_config=CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        image_token_id=image_token,
        image_seq_length=16,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    ids = torch.tensor([[1, 2] + [image_token] * 16 + [3, 4, 5]])
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    ref, _ = _generate(model, ids, 16, 10, pixel_values=pixels)
    got, cache = _generate(model, ids, 8, 10, pixel_values=pixels)
    assert torch.equal(got, ref)
    assert cache.get_seq_length() == ids.shape[1] + 10 - 1


# --- the fused Triton kernel -----------------------------------------------------------------------

_INTERPRETER_CHECK = textwrap.dedent(
    """
    import torch
    from vlq.kv.cache import append_dequantize_torch
    from vlq.kv.triton_kv import append_dequantize_triton

    gen = torch.Generator().manual_seed(0)
    for bits in (8, 4):
        for dtype in (torch.float16, torch.float32):
            B, H, D, cap = 2, 3, 32, 64
            ref = [torch.zeros(2, B, H, cap, D * bits // 8, dtype=torch.uint8),
                   torch.zeros(2, B, H, cap, 1, dtype=torch.float16), torch.zeros(2, B, H, cap, 1, dtype=torch.float16)]
            tri = [t.clone() for t in ref]
            start = 0
            for n in (37, 1, 1, 5):
                k = (torch.randn(B, n, H, D, generator=gen) * 3).to(dtype).transpose(1, 2)  # strided, as in attention
                v = torch.randn(B, H, n, D, generator=gen).to(dtype)
                want = append_dequantize_torch(k, v, *ref, start, bits)
                got = append_dequantize_triton(k, v, *tri, start, bits)
                start += n
                for a, b in zip(want, got):
                    assert a.shape == b.shape == (B, H, start, D) and a.dtype == b.dtype == dtype
                    assert torch.equal(a, b), (a.float() - b.float()).abs().max()
                for a, b in zip(ref, tri):
                    assert torch.equal(a[:, :, :, :start], b[:, :, :, :start])
    print("interpreter ok")
    """
)


def test_triton_kernel_matches_torch_in_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-c", _INTERPRETER_CHECK], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "interpreter ok" in result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_kernel_matches_torch_on_gpu(bits, dtype):
    from vlq.kv.triton_kv import append_dequantize_triton

    gen = torch.Generator(device="cuda").manual_seed(0)
    B, H, D, cap = 3, 8, 128, 1280
    ref = [
        torch.zeros(2, B, H, cap, D * bits // 8, dtype=torch.uint8, device="cuda"),
        torch.zeros(2, B, H, cap, 1, dtype=torch.float16, device="cuda"),
        torch.zeros(2, B, H, cap, 1, dtype=torch.float16, device="cuda"),
    ]
    tri = [t.clone() for t in ref]
    start = 0
    for n in (1000, 1, 1, 17):
        k = (torch.randn(B, n, H, D, generator=gen, device="cuda") * 4).to(dtype).transpose(1, 2)
        v = torch.randn(B, H, n, D, generator=gen, device="cuda").to(dtype)
        want = append_dequantize_torch(k, v, *ref, start, bits)
        got = append_dequantize_triton(k, v, *tri, start, bits)
        start += n
        scale = ref[1][:, :, :, :start].float()
        for a, b, s in zip(want, got, scale):
            # fp32 division on the GPU may round an exact .5 tie the other way: one code step at most.
            assert ((a.float() - b.float()).abs() <= s + 1e-2 * a.float().abs()).all()
        assert torch.equal(ref[1][:, :, :, :start], tri[1][:, :, :, :start])  # same scales and zeros
        assert torch.equal(ref[2][:, :, :, :start], tri[2][:, :, :, :start])
        codes_differ = (ref[0][:, :, :, :start] != tri[0][:, :, :, :start]).float().mean().item()
        assert codes_differ < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("bits", [8, 4])
@torch.no_grad()
def test_gpu_decode_triton_close_to_torch_backend(bits):
    torch.manual_seed(0)
    model = LlamaForCausalLM(_llama_config()).eval().cuda().half()
    ids = torch.randint(
        1, 256, (2, 44), device="cuda", generator=torch.Generator(device="cuda").manual_seed(8)
    )
    logits = []
    for backend in ("torch", "triton"):
        cache = make_quantized_cache(bits, model.config, backend)
        steps = [model(ids[:, :20], past_key_values=cache).logits[:, -1:]]
        steps += [model(ids[:, i : i + 1], past_key_values=cache).logits for i in range(20, 44)]
        logits.append(torch.cat(steps, dim=1).float())
    ref = model(ids).logits[:, 19:].float()
    assert torch.isfinite(logits[1]).all()
    quant_err = (logits[0] - ref).abs().max()
    assert (logits[1] - logits[0]).abs().max() <= 0.1 * quant_err + 1e-3 * ref.std()


def test_append_keeps_positions_of_earlier_calls():
    """Writing a second chunk leaves the first chunk's stored codes untouched (the cache is append-only)."""
    codes = torch.zeros(2, 1, 1, 8, 4, dtype=torch.uint8)
    scale = torch.zeros(2, 1, 1, 8, 1, dtype=torch.float16)
    zero = torch.zeros_like(scale)
    first = torch.randn(1, 1, 3, 8)
    append_dequantize_torch(first, first, codes, scale, zero, 0, 4)
    before = codes[:, :, :, :3].clone()
    keys, _ = append_dequantize_torch(
        torch.randn(1, 1, 2, 8), torch.randn(1, 1, 2, 8), codes, scale, zero, 3, 4
    )
    assert torch.equal(codes[:, :, :, :3], before)
    assert keys.shape == (1, 1, 5, 8)


# --- vlq bench kv -----------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback's shape and note")
def test_bench_kv_cli_on_cpu(tmp_path):
    import json

    from typer.testing import CliRunner

    from vlq.cli import app

    out = tmp_path / "kv.json"
    args = ["bench", "kv", "--batch", "1,2", "--tokens", "2", "--prompt-tokens", "8", "--json-out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["shape"] == "small" and report["note"].startswith("CPU: ran the 'small' shape")
    rows = {(r["batch"], r["cache"]): r for r in report["rows"]}
    assert set(rows) == {(b, c) for b in (1, 2) for c in ("bf16", "kv8", "kv4")}
    assert rows[1, "kv8"]["ratio"] == pytest.approx(68 / 128) and rows[1, "kv4"]["ratio"] == pytest.approx(
        36 / 128
    )
    # Measured tensors: 2 sequences x (8 prompt + 2 decode steps) positions at the formula's bytes per token.
    assert rows[2, "kv4"]["cache_mib"] * 2**20 == rows[2, "kv4"]["bytes_per_token"] * 2 * 10
    assert "kv4" in result.output


@pytest.mark.parametrize("args", [["--batch", "0"], ["--model-shape", "13b"], ["--backend", "cuda"]])
def test_bench_kv_cli_usage_errors(args):
    from typer.testing import CliRunner

    from vlq.cli import app

    result = CliRunner().invoke(app, ["bench", "kv", *args])
    assert result.exit_code == 2
