"""w4a16 kernels against the torch reference.

Without CUDA the Triton kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 is set before
Triton is imported); with CUDA the same tests run the compiled kernels on the GPU. The
interpreter mis-handles bf16 arithmetic (int->bf16 casts and bf16 loads give garbage in Triton
3.9), so bf16 kernel cases run on CUDA only; fp16, including its tensor-core dot, runs in both.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from vlq.awq.pack import dequantize_awq, pack_awq  # noqa: E402
from vlq.awq.quantize import quantize  # noqa: E402
from vlq.kernels.bench import load_autoawq_module  # noqa: E402
from vlq.kernels.linear import AwqLinear  # noqa: E402
from vlq.kernels.matmul import w4a16_backend, w4a16_matmul, w4a16_matmul_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = DEVICE == "cpu"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
kernel_dtypes = [
    torch.float16,
    pytest.param(
        torch.bfloat16,
        marks=pytest.mark.skipif(INTERPRETED, reason="Triton's CPU interpreter gets bf16 arithmetic wrong"),
    ),
]


def awq_tensors(
    k: int, n: int, group_size: int, dtype: torch.dtype, seed: int = 0
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(n, k, generator=gen) * 0.05
    tensors = pack_awq(quantize(weight, bits=4, group_size=group_size), scale_dtype=dtype)
    return {name: t.to(DEVICE) for name, t in tensors.items()}


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    assert torch.isfinite(out).all()
    return ((out - ref).norm() / ref.norm()).item()


def exact_reference(x: torch.Tensor, t: dict[str, torch.Tensor], group_size: int) -> torch.Tensor:
    """float64 `x @ W` with W dequantized in the scales' dtype, as every kernel rounds it."""
    weight = dequantize_awq(t["qweight"], t["qzeros"], t["scales"], group_size)
    return x.double() @ weight.double()


triton_kernels = pytest.importorskip("vlq.kernels.triton_w4a16", reason="needs triton")
GemmConfig = triton_kernels.GemmConfig


@pytest.mark.parametrize("dtype", kernel_dtypes)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize(
    ("m", "k_groups", "n", "config"),
    [
        # M not a multiple of BLOCK_M, N not a multiple of BLOCK_N, one K slice.
        (3, 2, 40, GemmConfig(block_m=16, block_n=32, block_k=128)),
        # split-K over 3 slices of an uneven step count.
        (17, 3, 72, GemmConfig(block_m=16, block_n=32, block_k=32, split_k=3)),
        # more row tiles than GROUP_M, split-K 2.
        (37, 2, 48, GemmConfig(block_m=16, block_n=16, block_k=64, split_k=2, group_m=2)),
        # decode kernel (inline-PTX unpack on CUDA): one token, N not a multiple of its 128 columns.
        (1, 2, 136, GemmConfig(16, 128, 32, kernel="decode", use_ptx=not INTERPRETED)),
        # decode kernel: two token tiles, split-K 3.
        (19, 3, 264, GemmConfig(16, 128, 64, 3, kernel="decode", use_ptx=not INTERPRETED)),
    ],
)
def test_gemm_kernel_matches_reference(dtype, group_size, m, k_groups, n, config):
    k = k_groups * group_size
    t = awq_tensors(k, n, group_size, dtype, seed=m)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1)).to(dtype).to(DEVICE)
    out = triton_kernels.launch_gemm(x, t["qweight"], t["qzeros"], t["scales"], group_size, config)
    assert out.shape == (m, n) and out.dtype == dtype
    tolerance = 2e-3 if dtype == torch.float16 else 1e-2
    assert rel_error(out, exact_reference(x, t, group_size)) < tolerance


@pytest.mark.parametrize("dtype", kernel_dtypes)
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_dequantize_kernel_is_exact(dtype, group_size):
    t = awq_tensors(2 * group_size, 264, group_size, dtype)
    dense = triton_kernels.dequantize(t["qweight"], t["qzeros"], t["scales"], group_size, dtype)
    assert torch.equal(dense, dequantize_awq(t["qweight"], t["qzeros"], t["scales"], group_size))


def test_step_size_never_crosses_a_group():
    assert [triton_kernels.step_size(g) for g in (16, 32, 48, 64, 96, 128, 256)] == [
        16,
        32,
        16,
        64,
        32,
        128,
        128,
    ]


def test_dispatch_uses_the_reference_on_cpu():
    t = {name: v.cpu() for name, v in awq_tensors(128, 64, 64, torch.float16).items()}
    x = torch.randn(2, 5, 128, dtype=torch.float16)
    assert w4a16_backend(x, 64) == "torch"
    out = w4a16_matmul(x, t["qweight"], t["qzeros"], t["scales"], 64)
    assert out.shape == (2, 5, 64)
    assert torch.equal(out, w4a16_matmul_reference(x, t["qweight"], t["qzeros"], t["scales"], 64))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("m", "k", "n"),
    [
        (1, 512, 392),
        (5, 512, 392),
        (16, 512, 392),
        (33, 512, 392),
        (64, 512, 392),
        (200, 512, 392),
        (1500, 512, 392),
        (1, 8192, 8200),
        (16, 8192, 8200),
        (200, 8192, 8200),
    ],
)
def test_cuda_dispatch_matches_reference_for_every_path(dtype, m, k, n):
    """Every `pick_config` branch: tiled decode, transposed decode (K x N >= 2**26), mid, dequant."""
    t = awq_tensors(k, n, 128, dtype)
    x = torch.randn(m, k, device=DEVICE, dtype=dtype)
    assert w4a16_backend(x, 128) == "triton"
    out = w4a16_matmul(x, t["qweight"], t["qzeros"], t["scales"], 128)
    assert out.shape == (m, n)
    assert rel_error(out, exact_reference(x, t, 128)) < (2e-3 if dtype == torch.float16 else 1e-2)


@pytest.mark.parametrize("bias", [False, True])
def test_awq_linear_forward_is_dequantized_matmul(bias):
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(48, 96, generator=gen)
    bias_tensor = torch.randn(48, generator=gen) if bias else None
    q = quantize(weight, bits=4, group_size=32)
    layer = AwqLinear.from_quantized(q, bias_tensor, dtype=torch.float32)
    x = torch.randn(2, 3, 96, generator=gen)
    dense = dequantize_awq(layer.qweight, layer.qzeros, layer.scales, 32)
    expected = x @ dense + (bias_tensor if bias else 0)
    torch.testing.assert_close(layer(x), expected)
    assert set(layer.state_dict()) == {"qweight", "qzeros", "scales"} | ({"bias"} if bias else set())


def _args(k=128, n=64, group_size=64):
    t = {name: v.cpu() for name, v in awq_tensors(k, n, group_size, torch.float16).items()}
    return torch.randn(4, k, dtype=torch.float16), t["qweight"], t["qzeros"], t["scales"], group_size


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: (a[0][:, :100], *a[1:]), "x must be"),
        (lambda a: (a[0], a[1].float(), *a[2:]), "qweight must be"),
        (lambda a: (*a[:2], a[2][:1], *a[3:]), "qzeros must be"),
        (lambda a: (*a[:3], a[3][:, :32], a[4]), "scales must be"),
        (lambda a: (*a[:4], 48), "group size 48"),
        (lambda a: (*a[:4], 32), "qzeros must be"),
        (lambda a: (a[0].int(), *a[1:]), "x must be"),
    ],
)
def test_bad_arguments_raise_value_error(mutate, message):
    with pytest.raises(ValueError, match=message):
        w4a16_matmul(*mutate(_args()))


def _autoawq(relative_path: str):
    module = load_autoawq_module(relative_path)
    if module is None:
        pytest.skip("AutoAWQ (awq) is not installed")
    return module


def test_autoawq_dequantize_reads_our_tensors():
    packing = _autoawq("utils/packing_utils.py")
    t = {name: v.cpu() for name, v in awq_tensors(256, 128, 64, torch.float16).items()}
    theirs = packing.dequantize_gemm(t["qweight"], t["qzeros"], t["scales"], 4, 64)
    assert torch.equal(theirs, dequantize_awq(t["qweight"], t["qzeros"], t["scales"], 64))


def test_autoawq_triton_gemm_agrees_with_ours():
    autoawq = _autoawq("modules/triton/gemm.py")
    t = awq_tensors(256, 64, 128, torch.float16)
    x = torch.randn(5, 256, dtype=torch.float16).to(DEVICE)
    if x.is_cuda:
        theirs = autoawq.awq_gemm_triton(x, t["qweight"], t["scales"], t["qzeros"], split_k_iters=2)
    else:  # their launcher enters torch.cuda.device(); launch their kernel as it does, minus that
        theirs = torch.zeros(5, 64, dtype=torch.float16)
        autoawq.awq_gemm_kernel[(2, 2)](
            x,
            t["qweight"],
            theirs,
            t["qzeros"],
            t["scales"],
            5,
            64,
            256,
            128,
            BLOCK_SIZE_M=32,
            BLOCK_SIZE_N=32,
            BLOCK_SIZE_K=32,
            SPLIT_K=2,
        )
    ours = triton_kernels.launch_gemm(x, t["qweight"], t["qzeros"], t["scales"], 128, GemmConfig(16, 32, 128))
    assert rel_error(ours, theirs) < 2e-3


def test_autoawq_wqlinear_gemm_gives_our_outputs():
    try:
        from awq.modules.linear.gemm import WQLinear_GEMM
    except Exception as exc:  # the package's __init__ pulls datasets and old transformers APIs
        pytest.skip(f"AutoAWQ's WQLinear_GEMM does not import here: {type(exc).__name__}")
    weight = torch.randn(64, 256, generator=torch.Generator().manual_seed(4)) * 0.05
    ours = AwqLinear.from_quantized(quantize(weight, bits=4, group_size=128), None).to(DEVICE)
    theirs = WQLinear_GEMM(4, 128, 256, 64, bias=False, dev=DEVICE)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 256, dtype=torch.float16, device=DEVICE)
    assert rel_error(ours(x), theirs(x)) < 2e-3


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def test_static_decoder_matches_the_hugging_face_forward():
    from vlq.kernels.decode import StaticLlamaDecoder

    model = tiny_llama()
    tokens = torch.randint(100, (2, 7))
    decoder = StaticLlamaDecoder(model, batch=2, max_len=12)
    prefill = decoder.forward(tokens[:, :6], torch.arange(6))
    step = decoder.forward(tokens[:, 6:], torch.tensor([6]))
    with torch.no_grad():
        logits = model(input_ids=tokens).logits
    torch.testing.assert_close(prefill, logits[:, 5], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(step, logits[:, 6], atol=1e-4, rtol=1e-4)


def test_quantize_decoder_linears_swaps_every_projection():
    from vlq.kernels.decode import linear_weight_bytes, quantize_decoder_linears

    model = tiny_llama()
    dense_bytes = linear_weight_bytes(model)
    tokens = torch.randint(100, (1, 5))
    with torch.no_grad():
        before = model(input_ids=tokens).logits
    assert quantize_decoder_linears(model, group_size=32) == 14
    assert sum(isinstance(m, AwqLinear) for m in model.modules()) == 14
    # fp32 weights (32 bits) -> 4-bit codes + per group of 32 an fp32 scale and a 4-bit zero
    assert linear_weight_bytes(model) == pytest.approx(dense_bytes * (4 + 36 / 32) / 32)
    with torch.no_grad():
        after = model(input_ids=tokens).logits
    assert rel_error(after, before) < 0.1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_bench_gemm_cli_needs_cuda():
    from typer.testing import CliRunner

    from vlq.cli import app

    result = CliRunner().invoke(app, ["bench", "gemm", "--m", "1"])
    assert result.exit_code == 2
    assert "needs a CUDA device" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bench_option_parsing():
    from vlq.errors import UsageError
    from vlq.kernels.bench import bits_per_weight, parse_ms, parse_shapes

    assert parse_shapes("4096x11008, 8192X28672") == [(4096, 11008), (8192, 28672)]
    assert parse_ms("1,16,4096") == [1, 16, 4096]
    assert bits_per_weight(128) == pytest.approx(4.15625)  # AutoAWQ's layout: fp16 scale, 4-bit zero
    assert bits_per_weight(128, k=4096) == pytest.approx(4.25)  # vlq's: one 32-bit word per group
    for bad in ("4096", "4096x11", "ax8"):
        with pytest.raises(UsageError):
            parse_shapes(bad)
    with pytest.raises(UsageError):
        parse_ms("1,0")


# --- vlq's load-time layout (`vlq.kernels.repack`) and the kernels that read it ---

from vlq.kernels.repack import is_repacked, repack_awq, scales_view, unrepack, words_for  # noqa: E402

RpConfig = triton_kernels.RpConfig


def repacked_tensors(k: int, n: int, group_size: int, dtype: torch.dtype, seed: int = 0):
    t = awq_tensors(k, n, group_size, dtype, seed)
    qweight, qzeros, scales = repack_awq(t["qweight"], t["qzeros"], t["scales"])
    return t, {"qweight": qweight, "qzeros": qzeros, "scales": scales}


@pytest.mark.parametrize("group_size", [32, 64, 128, 256])
def test_repack_round_trips_and_reads_the_same_weight(group_size):
    t, r = repacked_tensors(512, 72, group_size, torch.float16)
    assert is_repacked(r["qzeros"]) and r["qweight"].shape == (72, 64) and r["qzeros"].shape == (512 // group_size, 72)
    assert torch.equal(r["scales"], t["scales"])  # a view of the words' low halves
    assert r["scales"].untyped_storage().data_ptr() == r["qzeros"].untyped_storage().data_ptr()
    back = unrepack(r["qweight"], r["qzeros"])
    assert torch.equal(back[0], t["qweight"]) and torch.equal(back[1], t["qzeros"])
    x = torch.randn(3, 512, dtype=torch.float16).to(DEVICE)
    assert torch.equal(
        w4a16_matmul_reference(x.cpu(), *(v.cpu() for v in r.values()), group_size),
        w4a16_matmul_reference(x.cpu(), *(v.cpu() for v in t.values()), group_size),
    )


@pytest.mark.parametrize("dtype", kernel_dtypes)
@pytest.mark.parametrize("group_size", [32, 64, 128, 256])
@pytest.mark.parametrize(
    ("m", "k", "n", "config"),
    [
        # rp: one token, N not a multiple of BLOCK_N, one K slice
        (1, 512, 40, RpConfig(block_m=16, block_n=32)),
        # rp: odd M over two token tiles, split-K 3 over 4 blocks (one slice gets one block)
        (19, 1024, 72, RpConfig(block_m=16, block_n=16, split_k=3)),
        # rp: prefill-like tile, split-K 2
        (37, 768, 24, RpConfig(block_m=32, block_n=16, split_k=2)),
        # rp folded (zero and scale after the dot): one token, then odd M with split-K 3
        (1, 512, 40, RpConfig(block_m=16, block_n=32, fold=True)),
        (19, 1024, 72, RpConfig(block_m=16, block_n=16, split_k=3, fold=True)),
        # rp: 5 blocks asked in 4 slices: shares of 2 make 3 slices (a 4th would be empty)
        (37, 1280, 24, RpConfig(block_m=32, block_n=16, split_k=4)),
        # stream-K: 3 tokens, 5 blocks x 5 row tiles in runs that cross tiles; odd M over two
        # token tiles, folded; runs of two blocks (programs_per_sm is per SM: 4 "SMs" on the CPU)
        (3, 1280, 72, RpConfig(kernel="streamk", block_m=16, block_n=16, programs_per_sm=1)),
        (19, 1024, 40, RpConfig(kernel="streamk", block_m=16, block_n=16, programs_per_sm=3, fold=True)),
        (2, 512, 64, RpConfig(kernel="streamk", block_m=16, block_n=32, programs_per_sm=1)),
        # gemv: one token, odd N over a partial row tile, 3 blocks in steps of 2 (the last step half empty)
        (1, 768, 37, RpConfig(kernel="gemv", block_m=1, block_n=16, blocks_per_step=2)),
        (1, 768, 37, RpConfig(kernel="gemv", block_m=1, block_n=16, blocks_per_step=2, half_sums=True)),
        # gemv: 3 tokens in a tile of 4, split-K 2 over 4 blocks: per slice one step of 4, half empty
        (3, 1024, 40, RpConfig(kernel="gemv", block_m=4, block_n=16, split_k=2)),
        # gemv: 17 tokens over two token tiles, split-K 3 over 5 blocks (slices of 2, 2, 1)
        (17, 1280, 24, RpConfig(kernel="gemv", block_m=16, block_n=8, split_k=3, blocks_per_step=1)),
    ],
)
def test_fused_kernels_match_reference(dtype, group_size, m, k, n, config):
    """`w4a16_rp_kernel`, its stream-K grid and `w4a16_gemv_kernel` over vlq's layout against the
    float64 reference."""
    t, r = repacked_tensors(k, -(-n // 8) * 8, group_size, dtype, seed=m)
    # the first n output rows (AutoAWQ packing needs N % 8 == 0; the vlq layout does not)
    qweight, words = r["qweight"][:n].contiguous(), r["qzeros"][:, :n].contiguous()
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(2)).to(dtype).to(DEVICE)
    out = triton_kernels.run_rp(x, qweight, words, group_size, config)
    assert out.shape == (m, n) and out.dtype == dtype
    tolerance = 2e-3 if dtype == torch.float16 else 1e-2
    assert rel_error(out, exact_reference(x, t, group_size)[:, :n]) < tolerance


@pytest.mark.parametrize("dtype", kernel_dtypes)
@pytest.mark.parametrize("group_size", [32, 128])
def test_rp_dequantize_is_exact_and_chunks_agree(dtype, group_size):
    t, r = repacked_tensors(2048, 264, group_size, dtype)
    dense = triton_kernels.rp_dequantize(r["qweight"], r["qzeros"], group_size, dtype)
    assert torch.equal(dense.t(), dequantize_awq(t["qweight"], t["qzeros"], t["scales"], group_size))
    x = torch.randn(5, 2048, dtype=dtype, device=DEVICE)
    whole = triton_kernels.rp_dequant_matmul(x, r["qweight"], r["qzeros"], group_size, chunk_mb=0)
    chunked = triton_kernels.rp_dequant_matmul(x, r["qweight"], r["qzeros"], group_size, chunk_mb=1)  # 256-row chunks
    torch.testing.assert_close(chunked, whole)


def test_fused_kernels_compile_for_hopper(tmp_path):
    """The CUDA path CI cannot run: every Triton kernel (w4a16 and the KV cache's) builds to an sm_90
    cubin (fp16 and bf16, plain stores and split-K atomics) with Triton's bundled ptxas, no GPU."""
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    script = Path(__file__).with_name("compile_kernels.py")
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and "ptxas" in result.stderr and "No such file" in result.stderr:
        pytest.skip("this Triton build has no ptxas")
    assert result.returncode == 0, result.stderr[-3000:]
    built = dict(line.split() for line in result.stdout.splitlines())
    expected = {
        f"{kernel}-{dtype}-{store}"
        for kernel in ("rp", "rp_fold", "gemv", "tiled", "decode")
        for dtype in ("fp16", "bf16")
        for store in ("store", "atomic")
    } | {
        f"{kernel}-{dtype}"
        for kernel in ("rp_streamk", "rp_dequantize", "awq_dequantize", "kv8", "kv4", "ws_8_per_wait")
        for dtype in ("fp16", "bf16")
    } | {f"ws-{dtype}-{store}" for dtype in ("fp16", "bf16") for store in ("store", "tail")}
    assert set(built) == expected
    assert all(int(size) > 10_000 for size in built.values())


def test_split_k_never_leaves_a_slice_empty():
    """`w4a16_rp_kernel` assumes every K slice has a step (`tl.assume`); `nonempty_split` gives at
    most the slices asked for, equal shares as `_k_slice` cuts them, each with a step."""
    for steps, wanted in itertools.product(range(1, 70), range(1, 20)):
        split = triton_kernels.nonempty_split(steps, wanted)
        per_split = -(-steps // split)
        assert 1 <= split <= wanted and (split - 1) * per_split < steps <= split * per_split


def test_pick_rp_config_uses_the_gpu_models_table_then_the_heuristic():
    from vlq.kernels.tuned import tables

    assert {"NVIDIA H100 80GB HBM3", "NVIDIA H200"} <= set(tables())
    for device, table in tables().items():
        for (k, n), per_m in table.items():
            for m in (1, 3, 16, 200, 5000):
                assert isinstance(triton_kernels.pick_rp_config(m, n, k, 128, 132, device), RpConfig)
            assert triton_kernels.pick_rp_config(max(per_m), n, k, 128, 132, device) == per_m[max(per_m)]
            # between swept token counts: the entry of the next one up
            assert triton_kernels.pick_rp_config(3, n, k, 128, 132, device) == per_m[4]
    h100, h200 = tables()["NVIDIA H100 80GB HBM3"], tables()["NVIDIA H200"]
    assert triton_kernels.pick_rp_config(256, 11008, 4096, 128, 132, "NVIDIA H100 PCIe") == h100[(4096, 11008)][256]
    assert triton_kernels.pick_rp_config(256, 11008, 4096, 128, 132, "NVIDIA H200 NVL") == h200[(4096, 11008)][256]
    # no table of the model (or the CPU): the heuristic
    for device in ("NVIDIA A100-SXM4-80GB", "cpu", ""):
        assert triton_kernels.pick_rp_config(256, 11008, 4096, 128, 108, device) == (
            triton_kernels.heuristic_rp_config(256, 11008, 4096, 108)
        )
    one = triton_kernels.heuristic_rp_config(1, 4096, 4096, 132)
    assert one.kernel == "gemv" and one.half_sums
    small = triton_kernels.heuristic_rp_config(2, 4096, 4096, 132)
    assert small.kernel == "rp" and small.block_m == 16 and small.fold and 1 <= small.split_k <= 16
    assert triton_kernels.heuristic_rp_config(64, 4096, 4096, 132).fold
    assert triton_kernels.heuristic_rp_config(1, 28672, 8192, 132).kernel == "rp"  # 2**27+ weights
    wide = triton_kernels.heuristic_rp_config(128, 4096, 11008, 132)  # 32 row tiles: split 4
    assert (wide.block_m, wide.block_n, wide.split_k, wide.num_warps) == (128, 128, 4, 8)
    # wide weights: 64x256 tiles split to about one wave at 33-64 tokens, stream-K at 65-384
    assert triton_kernels.heuristic_rp_config(64, 11008, 4096, 132) == RpConfig(
        block_m=64, block_n=256, split_k=3, num_warps=8
    )
    assert triton_kernels.heuristic_rp_config(48, 28672, 8192, 132).split_k == 1  # 112 tiles
    for m in (65, 128, 384):
        assert triton_kernels.heuristic_rp_config(m, 28672, 8192, 132).kernel == "streamk"
    assert triton_kernels.heuristic_rp_config(385, 28672, 8192, 132).kernel == "deq"
    assert not triton_kernels.heuristic_rp_config(256, 4096, 4096, 132).fold
    assert triton_kernels.heuristic_rp_config(4096, 4096, 4096, 132).kernel == "deq"


def test_gpu_model_is_the_first_token_with_a_digit():
    from vlq.kernels.tuned import gpu_model

    assert gpu_model("NVIDIA H100 80GB HBM3") == gpu_model("NVIDIA H100 PCIe") == "H100"
    assert gpu_model("NVIDIA GeForce RTX 4090") == "4090"
    assert gpu_model("cpu") == ""


def test_bench_table_says_which_settings_vlq_ran():
    from rich.console import Console

    from vlq.kernels.bench import GemmBenchReport, GemmTiming, gemm_table
    from vlq.kernels.tuned import table_device

    assert table_device("NVIDIA H100 PCIe") == "NVIDIA H100 80GB HBM3"
    assert table_device("NVIDIA A100-SXM4-80GB") is None
    report = GemmBenchReport("NVIDIA H100 PCIe", "float16", 128, 2000.0, 4.25, None, "NVIDIA H100 80GB HBM3")
    report.rows.append(GemmTiming(k=4096, n=4096, m=1, kernel="gemv", vlq_us=6.0, fp16_us=16.0, floor_us=3.0, autoawq_us=None))
    console = Console(width=300, record=True)
    console.print(gemm_table(report))
    assert "the NVIDIA H100 80GB HBM3 sweep table" in console.export_text()
    assert report.to_json()["settings"] == "NVIDIA H100 80GB HBM3"
    console.print(gemm_table(GemmBenchReport("NVIDIA A100-SXM4-80GB", "float16", 128, 2000.0, 4.25, None)))
    assert "the rule for unswept GPUs" in console.export_text()


def test_run_rp_steps_down_when_shared_memory_is_short(monkeypatch):
    """A setting that needs more shared memory than the GPU has (Triton refuses its launch) runs
    with one stage fewer, then as dequantize + cuBLAS; what fit is remembered, so the refused
    launch is tried once."""
    from triton.runtime.errors import OutOfResources

    t, r = repacked_tensors(512, 64, 128, torch.float16, seed=3)
    x = torch.randn(5, 512, dtype=torch.float16, device=DEVICE)
    expected = exact_reference(x, t, 128)
    tried = []

    def launch(x, qweight, scale_zeros, group_size, config, limit):
        tried.append(config)
        if config.num_stages > limit:
            raise OutOfResources(config.num_stages * 1000, limit * 1000, "shared memory")
        return triton_kernels.rp_dequant_matmul(x, qweight, scale_zeros, group_size)

    big = RpConfig(block_m=128, block_n=128, num_warps=8, num_stages=4)
    monkeypatch.setattr(triton_kernels, "launch_rp", lambda *a: launch(*a, limit=2))
    for _ in range(2):
        out = triton_kernels.run_rp(x, r["qweight"], r["qzeros"], 128, big)
        assert rel_error(out, expected) < 2e-3
    assert [c.num_stages for c in tried] == [4, 3, 2, 2]  # the second call starts at what fit

    tried.clear()
    monkeypatch.setattr(triton_kernels, "launch_rp", lambda *a: launch(*a, limit=1))
    streamk = RpConfig(kernel="streamk", block_m=128, block_n=128, num_warps=8, num_stages=3)
    out = triton_kernels.run_rp(x, r["qweight"], r["qzeros"], 128, streamk)
    assert [c.num_stages for c in tried] == [3, 2]  # then dequantize + matmul, which always fits
    assert rel_error(out, expected) < 2e-3
    assert triton_kernels.smaller_config(RpConfig(kernel="gemv")) == RpConfig(kernel="deq")


needs_hopper_gluon = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)),
    reason="the warp-specialized kernel needs an sm_90 GPU",
)


@needs_hopper_gluon
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("group_size", [32, 64, 128, 256])
@pytest.mark.parametrize(
    ("m", "k", "n", "block_m", "x_stages", "split_k"),
    [
        (1, 512, 40, 256, 12, 1),  # one token in a 256-token tile, N < one 128-row tile
        (37, 768, 1000, 128, 16, 2),  # odd M and N, split-K 2 over 3 blocks
        (300, 1280, 264, 256, 8, 3),  # two token tiles, 5 blocks in slices of 2, 2, 1
        (600, 2048, 384, 64, 12, 1),  # a ring of three groups
    ],
)
def test_ws_kernel_matches_reference(dtype, group_size, m, k, n, block_m, x_stages, split_k):
    """`vlq.kernels.ws_w4a16` (Gluon, sm_90 only) against the float64 reference, through `run_rp`'s
    "ws" config as the H100 table selects it."""
    from vlq.kernels import ws_w4a16

    assert ws_w4a16.available(torch.device("cuda")), "Gluon missing from this Triton"
    t, r = repacked_tensors(k, -(-n // 8) * 8, group_size, dtype, seed=m)
    qweight, words = r["qweight"][:n].contiguous(), r["qzeros"][:, :n].contiguous()
    flat = torch.randn(m * k + 1, generator=torch.Generator().manual_seed(2)).to(dtype).to(DEVICE)
    x = flat[1:].view(m, k)  # a base 2 bytes off 16-byte alignment, which TMA cannot read from
    config = RpConfig(kernel="ws", block_m=block_m, num_stages=x_stages, split_k=split_k)
    out = triton_kernels.run_rp(x, qweight, words, group_size, config)
    assert out.shape == (m, n) and out.dtype == dtype
    tolerance = 2e-3 if dtype == torch.float16 else 1e-2
    assert rel_error(out, exact_reference(x, t, group_size)[:, :n]) < tolerance


@needs_hopper_gluon
@pytest.mark.parametrize(("dots_per_wait", "x_stages"), [(1, 3), (2, 10), (4, 12), (8, 16)])
def test_ws_dot_groupings_match_reference(dots_per_wait, x_stages):
    """Every grouping of the dots between full waits, over rings of 2-5 groups (3 and 5 wrap
    unevenly over a block's groups), fills and gives back each activation group exactly once: a
    group released twice or never would hang or race the copies."""
    from vlq.kernels import ws_w4a16

    t, r = repacked_tensors(2304, 256, 64, torch.float16, seed=dots_per_wait)
    x = torch.randn(70, 2304, dtype=torch.float16, device=DEVICE)
    out = ws_w4a16.launch_ws(x, r["qweight"], r["qzeros"], 64, 128, x_stages, 1, dots_per_wait)
    assert rel_error(out, exact_reference(x, t, 64)) < 2e-3


@pytest.mark.parametrize(("dots_per_wait", "x_stages"), [(3, 12), (4, 11), (16, 16), (0, 8)])
def test_ws_launch_refuses_groupings_that_do_not_tile(dots_per_wait, x_stages):
    """Groups of dots must tile a 256-block (8 dots) and the ring must hold whole groups: anything
    else is refused before a launch, on any device."""
    from vlq.kernels import ws_w4a16

    x = torch.zeros(4, 512, dtype=torch.float16)
    with pytest.raises(ValueError, match="dots_per_wait"):
        ws_w4a16.launch_ws(x, x, x, 128, 256, x_stages, 1, dots_per_wait)


@needs_hopper_gluon
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("group_size", [32, 128])
@pytest.mark.parametrize(
    ("m", "k", "n", "slots"),
    [
        (300, 2560, 472, 9),  # 4 columns x 3 token tiles on 9 slots: 3 columns whole, the partial fourth in 3 K slices
        (37, 2048, 1000, 6),  # 8 columns x 1 token tile on 6 slots: the last 2 columns in 3 slices
        (300, 2560, 1000, 11),  # 7 columns whole, the last column's 3 tiles in 11 stream-K runs
        (37, 4096, 472, 7),  # no column whole: 4 tiles of 16 blocks in 7 stream-K runs
    ],
)
def test_ws_balanced_tail_matches_reference(dtype, group_size, m, k, n, slots):
    """Tiles run whole beside the tail that `balanced_tail` plans (stored, and added up in the zeroed
    tail columns: fp32 for bf16) give the reference; the tail covers N's partial last column."""
    from vlq.kernels import ws_w4a16

    cols, m_tiles = -(-n // 128), -(-m // 128)
    whole_cols, programs = ws_w4a16.balanced_tail(cols, m_tiles, k // 256, slots)
    assert whole_cols < cols and programs > 0  # the case shares a tail out
    t, r = repacked_tensors(k, -(-n // 8) * 8, group_size, dtype, seed=n)
    qweight, words = r["qweight"][:n].contiguous(), r["qzeros"][:, :n].contiguous()
    x = torch.randn(m, k, dtype=dtype, device=DEVICE)
    out = ws_w4a16.launch_ws(x, qweight, words, group_size, 128, 16, slots=slots)
    assert out.shape == (m, n) and out.dtype == dtype
    tolerance = 2e-3 if dtype == torch.float16 else 1e-2
    assert rel_error(out, exact_reference(x, t, group_size)[:, :n]) < tolerance


@needs_hopper_gluon
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ws_balance_tail_config_fills_the_gpus_last_wave(dtype):
    """`RpConfig(balance_tail=True)` splits the two tiles past a whole wave of this GPU's SMs (bf16's
    fp32 tail epilogue steps the 256-token tile down to two activation groups on the way)."""
    from vlq.kernels import ws_w4a16

    sms = triton_kernels.sm_count(0)
    n, m, k = 128 * (sms // 2 + 1) - 24, 300, 4096
    cols = -(-n // 128)
    whole_cols, programs = ws_w4a16.balanced_tail(cols, 2, k // 256, sms)
    assert 0 < whole_cols < cols and programs > 0
    t, r = repacked_tensors(k, n, 128, dtype, seed=7)
    x = torch.randn(m, k, dtype=dtype, device=DEVICE)
    config = RpConfig(kernel="ws", block_m=256, num_stages=12, balance_tail=True)
    out = triton_kernels.run_rp(x, r["qweight"], r["qzeros"], 128, config)
    tolerance = 2e-3 if dtype == torch.float16 else 1e-2
    assert rel_error(out, exact_reference(x, t, 128)) < tolerance


@needs_hopper_gluon
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("m", "k", "n", "plan"),
    [
        (300, 2560, 1000, (0, 7)),  # 24 tiles of 10 blocks in 7 runs of 34-35: each reaches into 4-5 tiles
        (300, 2560, 1000, (7, 5)),  # the last column (N's partial one): 3 tiles, 30 blocks in 5 runs of 6
        (300, 1280, 1000, (5, 11)),  # 5 columns whole, the last 3 columns' 9 tiles in 11 runs: some cross one boundary
        (37, 2048, 1000, (0, 13)),  # one token tile: 8 tiles in 13 runs, N's partial last column among them
    ],
)
def test_ws_stream_k_tail_matches_reference(dtype, m, k, n, plan):
    """Stream-K tail programs, whose runs of blocks cross tile boundaries (an accumulator and an
    atomic epilogue per tile reached, the copies running on across), give the reference."""
    from vlq.kernels import ws_w4a16

    t, r = repacked_tensors(k, -(-n // 8) * 8, 64, dtype, seed=plan[1])
    qweight, words = r["qweight"][:n].contiguous(), r["qzeros"][:, :n].contiguous()
    x = torch.randn(m, k, dtype=dtype, device=DEVICE)
    out = ws_w4a16.launch_ws(x, qweight, words, 64, 128, 8, plan=plan)
    tolerance = 2e-3 if dtype == torch.float16 else 1e-2
    assert rel_error(out, exact_reference(x, t, 64)[:, :n]) < tolerance


@pytest.mark.parametrize("plan", [(9, 3), (4, 9), (0, 17), (-1, 30), (3, 0)])
def test_ws_launch_refuses_a_plan_that_leaves_a_tile_or_run_empty(plan):
    """A hand-set plan must keep its whole columns in the grid, give a tail programs and every program
    a block (8 columns x 1 token tile x 2 blocks here): else it is refused before a launch, on any
    device."""
    from vlq.kernels import ws_w4a16

    x = torch.zeros(4, 512, dtype=torch.float16)
    words = torch.zeros(1000, 64, dtype=torch.int32)
    with pytest.raises(ValueError, match="no such split"):
        ws_w4a16.launch_ws(x, words, words, 128, 256, 12, plan=plan)


@pytest.mark.parametrize(("cols", "m_tiles", "slots"), [(66, 2, 132), (33, 4, 132), (4, 1, 4), (7, 3, 7)])
def test_balanced_tail_leaves_full_waves_unsplit(cols, m_tiles, slots):
    """A grid that fills its last wave has nothing to balance."""
    from vlq.kernels.ws_w4a16 import balanced_tail

    assert balanced_tail(cols, m_tiles, 16, slots) == (cols, 0)


def test_balanced_tail_fills_the_last_wave_of_4096x11008_at_512_tokens():
    """172 tiles of 256 tokens on 132 SMs: two waves for 1.3 waves of work, unsplit. Split, the 20
    last columns' 40 tiles run as 120 thirds beside the 132 whole tiles: one wave and one slice
    (its blocks plus the fixed cost)."""
    from vlq.kernels.ws_w4a16 import SLICE_OVERHEAD_BLOCKS, balanced_tail, tail_makespan, tail_run

    assert balanced_tail(86, 2, 16, 132) == (66, 120)
    assert [tail_run(u, 120, 640) for u in range(3)] == [(0, 5), (5, 10), (10, 16)]  # a tile in thirds
    assert tail_makespan(132, 40, 16, 120, 132) == 1 + (6 + SLICE_OVERHEAD_BLOCKS) / 16


def test_balanced_tail_runs_a_grid_under_one_wave_stream_k():
    """11008x4096 at 768 tokens: 96 tiles of 256 tokens leave 36 of 132 SMs idle, and no equal split
    of the tiles fills them. Stream-K gives each SM a run of 31-32 of the 4128 blocks, across tile
    boundaries."""
    from vlq.kernels.ws_w4a16 import balanced_tail, run_tiles, tail_run

    assert balanced_tail(32, 3, 43, 132) == (0, 132)
    assert tail_run(1, 132, 96 * 43) == (31, 62)
    assert run_tiles(31, 62, 43) == [(0, 31, 43), (1, 0, 19)]


@settings(max_examples=200, deadline=None)
@given(
    cols=st.integers(1, 240), m_tiles=st.integers(1, 20), blocks=st.integers(1, 64), slots=st.integers(1, 160)
)
def test_balanced_tail_is_a_valid_grid_that_only_splits_to_gain(cols, m_tiles, blocks, slots):
    """The plan keeps whole columns within the grid, gives every tail tile a program and every program
    a block, and shares a tail out only where its makespan beats the unsplit grid's by 3%."""
    from vlq.kernels.ws_w4a16 import balanced_tail, tail_makespan

    whole_cols, programs = balanced_tail(cols, m_tiles, blocks, slots)
    tail_tiles = (cols - whole_cols) * m_tiles
    assert 0 <= whole_cols <= cols
    if programs == 0:
        assert whole_cols == cols
    else:
        assert tail_tiles < programs <= tail_tiles * blocks
        balanced = tail_makespan(whole_cols * m_tiles, tail_tiles, blocks, programs, slots)
        assert balanced < 0.97 * -(-cols * m_tiles // slots)


@settings(max_examples=300, deadline=None)
@given(tiles=st.integers(1, 300), blocks=st.integers(1, 64), data=st.data())
def test_tail_runs_cover_every_block_of_every_tile_once(tiles, blocks, data):
    """The tail programs' runs, cut into the parts the kernel accumulates and adds up (`run_tiles`),
    cover each block of each tail tile exactly once, each part inside one tile and nonempty; with a
    multiple of the tiles as programs no run crosses a tile (an equal split over K)."""
    from vlq.kernels.ws_w4a16 import run_tiles, tail_run

    programs = data.draw(st.integers(tiles, tiles * blocks))
    covered = []
    for u in range(programs):
        start, end = tail_run(u, programs, tiles * blocks)
        parts = run_tiles(start, end, blocks)
        assert all(0 <= first < last <= blocks for _, first, last in parts)
        covered += [(t, blk) for t, first, last in parts for blk in range(first, last)]
        if programs % tiles == 0:
            assert len(parts) == 1
    assert covered == [(t, blk) for t in range(tiles) for blk in range(blocks)]


def test_ws_config_runs_as_dequant_where_the_kernel_cannot(monkeypatch):
    """A table's "ws" pick on a GPU or Triton without Gluon's Hopper path (or on the CPU) runs as
    dequantize + matmul, remembered like a setting that did not fit."""
    from vlq.kernels import ws_w4a16

    monkeypatch.setattr(ws_w4a16, "available", lambda device: False)
    t, r = repacked_tensors(512, 64, 128, torch.float16, seed=4)
    x = torch.randn(5, 512, dtype=torch.float16, device=DEVICE)
    config = RpConfig(kernel="ws", block_m=256, num_stages=8)
    out = triton_kernels.run_rp(x, r["qweight"], r["qzeros"], 128, config)
    assert rel_error(out, exact_reference(x, t, 128)) < 2e-3
    assert triton_kernels._FITTED[(config, 128, x.dtype, x.device)] == RpConfig(kernel="deq")


def test_ws_pick_steps_down_like_the_other_fused_kernels(monkeypatch):
    """A "ws" launch that Triton refuses for shared memory steps down one group of four activation
    chunks (to two groups, no further), then runs as dequantize + matmul, remembered."""
    from triton.runtime.errors import OutOfResources

    from vlq.kernels import ws_w4a16

    tried = []

    def refuse(*args, **kwargs):
        tried.append(args[4:])
        raise OutOfResources(240_000, 232_448, "shared memory")

    monkeypatch.setattr(ws_w4a16, "available", lambda device: True)
    monkeypatch.setattr(ws_w4a16, "launch_ws", refuse)
    t, r = repacked_tensors(512, 64, 128, torch.float16, seed=5)
    x = torch.randn(5, 512, dtype=torch.float16, device=DEVICE)
    config = RpConfig(kernel="ws", block_m=256, num_stages=12, split_k=2)
    for _ in range(2):
        out = triton_kernels.run_rp(x, r["qweight"], r["qzeros"], 128, config)
        assert rel_error(out, exact_reference(x, t, 128)) < 2e-3
    assert tried == [(256, 12, 2), (256, 8, 2)]  # the second call starts at what fit


def test_h100_table_runs_ws_from_129_tokens_and_balances_the_unsplit_tiles():
    """The hand-merged ws entries (probes 3, 6 and 7): 129-4096 tokens on the four swept shapes, where
    ws beat dequantize + cuBLAS and the earlier picks in the same run; every unsplit pick balances
    its last wave (probe 6: within 1% where that splits nothing useful, 1.07-1.18x where it does;
    probe 7 at 256 tokens: 1.07-1.09x the split or unsplit picks before). 128 tokens and fewer keep
    the sweep's picks, and the H200 table (not timed) has no ws entries."""
    from vlq.kernels.tuned import table_for

    h100 = "NVIDIA H100 80GB HBM3"
    for k, n in ((4096, 11008), (8192, 28672), (11008, 4096), (4096, 4096)):
        for m in (129, 256, 257, 384, 512, 513, 1024, 1025, 2048, 4096):
            config = triton_kernels.pick_rp_config(m, n, k, 128, 132, h100)
            assert config.kernel == "ws"
            assert config.balance_tail == (config.split_k == 1)
        assert triton_kernels.pick_rp_config(128, n, k, 128, 132, h100).kernel != "ws"
    h200_table = table_for("NVIDIA H200")
    assert all(config.kernel != "ws" for per_m in h200_table.values() for config in per_m.values())


def test_bench_times_every_side_in_rotated_rounds_and_takes_medians():
    from vlq.kernels.bench import interleaved_medians

    calls = []
    samples = {"a": iter([5.0, 1.0, 3.0]), "b": iter([2.0, 9.0, 4.0]), "c": iter([7.0, 7.0, 8.0])}

    def timer(name):
        def run():
            calls.append(name)
            return next(samples[name])

        return run

    medians = interleaved_medians({name: timer(name) for name in samples}, rounds=3)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert medians == {"a": 3.0, "b": 4.0, "c": 7.0}


def test_vlq_layout_puts_a_chunks_neighbouring_positions_in_one_word():
    """The bit layout `vlq.kernels.repack` documents (and the kernels' unpacking assumes): in word
    `32 b + 2 p + h`, bit `4 c + 16 e` holds position `256 b + 32 (4 h + c) + 2 p + e`."""
    from vlq.kernels.repack import _pack_codes, _unpack_codes

    codes = torch.randint(0, 16, (3, 512), generator=torch.Generator().manual_seed(6))
    words = _pack_codes(codes)
    assert torch.equal(_unpack_codes(words), codes)
    bits = words.to(torch.int64) & 0xFFFFFFFF
    for b, p, h, c, e in itertools.product(range(2), range(16), range(2), range(4), range(2)):
        nibble = (bits[:, 32 * b + 2 * p + h] >> (4 * c + 16 * e)) & 0xF
        assert torch.equal(nibble, codes[:, 256 * b + 32 * (4 * h + c) + 2 * p + e].to(torch.int64))


def test_awq_linear_repack_keeps_state_dict_and_outputs():
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(64, 512, generator=gen)
    layer = AwqLinear.from_quantized(quantize(weight, bits=4, group_size=128), None)
    before = {name: v.clone() for name, v in layer.state_dict().items()}
    x = torch.randn(3, 512, dtype=torch.float16)
    expected = layer(x)
    repack(layer)  # what a CUDA forward does
    saved = layer.state_dict()
    assert all(torch.equal(saved[name], before[name]) and saved[name].is_contiguous() for name in before)
    assert torch.equal(layer.awq_tensors()["qweight"], before["qweight"])
    layer.load_state_dict(before)  # loading into a repacked module restores AutoAWQ's shapes
    assert not is_repacked(layer.qzeros) and layer.scales.is_contiguous()
    repack(layer)
    torch.testing.assert_close(layer(x), expected)  # a CPU forward turns the layout back
    assert not is_repacked(layer.qzeros)


def repack(layer: AwqLinear) -> None:
    layer.qweight, layer.qzeros, layer.scales = repack_awq(layer.qweight, layer.qzeros, layer.scales)


def test_scale_zero_words_follow_the_scales():
    """The scales are the truth: a cast or move gives the module new scales beside the old words,
    and `words_for` then makes words with the new scales' bits and the old zeros."""
    t, r = repacked_tensors(256, 16, 64, torch.float16)
    assert words_for(r["qzeros"], r["scales"]) is r["qzeros"]
    bf16 = t["scales"].to(torch.bfloat16)
    words = words_for(r["qzeros"], bf16)
    assert words is not r["qzeros"] and torch.equal(scales_view(words, torch.bfloat16), bf16)
    assert torch.equal(unrepack(r["qweight"], words)[1], t["qzeros"])


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 5, 16, 33, 64, 200, 600])
@pytest.mark.parametrize(("k", "n"), [(512, 392), (4096, 11008)])
def test_cuda_awq_linear_repacks_and_matches_reference(dtype, m, k, n):
    """Every `pick_rp_config` branch (table and heuristic) through `AwqLinear`."""
    t = awq_tensors(k, n, 128, dtype)
    layer = AwqLinear(k, n, 128, bias=False, dtype=dtype, device="meta")
    for name, value in t.items():
        setattr(layer, name, value)
    x = torch.randn(m, k, device=DEVICE, dtype=dtype)
    out = layer(x)
    assert is_repacked(layer.qzeros)
    assert rel_error(out, exact_reference(x, t, 128)) < (2e-3 if dtype == torch.float16 else 1e-2)


@needs_cuda
def test_cuda_awq_linear_stays_right_after_a_cast_and_a_move():
    """A repacked module cast with `.to(bf16)` converts its scales apart from the words; the next
    forward must use the new scales (fresh words), and a move to the CPU must still give the
    reference there."""
    t = awq_tensors(512, 64, 128, torch.float16)
    layer = AwqLinear(512, 64, 128, bias=False, dtype=torch.float16, device="meta")
    for name, value in t.items():
        setattr(layer, name, value)
    x = torch.randn(5, 512, device=DEVICE, dtype=torch.float16)
    layer(x)
    assert is_repacked(layer.qzeros)
    layer.to(torch.bfloat16)
    assert layer.scales.dtype == torch.bfloat16
    out = layer(x.to(torch.bfloat16))
    ref = {**t, "scales": t["scales"].to(torch.bfloat16)}
    assert rel_error(out, exact_reference(x.to(torch.bfloat16), ref, 128)) < 1e-2
    assert layer.scales.untyped_storage().data_ptr() == layer.qzeros.untyped_storage().data_ptr()
    layer.to("cpu")
    out = layer(x.cpu().to(torch.bfloat16))
    assert not is_repacked(layer.qzeros)
    cpu_ref = {name: value.cpu() for name, value in ref.items()}
    assert rel_error(out, exact_reference(x.cpu().to(torch.bfloat16), cpu_ref, 128)) < 1e-2
