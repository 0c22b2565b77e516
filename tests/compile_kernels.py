"""Compile vlq's Triton kernels (w4a16 GEMM, the Gluon ws kernel, KV cache) to Hopper (sm_90) code without a GPU.

Run by `tests/test_kernels.py` in a subprocess without TRITON_INTERPRET (the interpreter replaces
`@triton.jit` functions when the module is imported, so the compile needs a fresh interpreter).
CI has no GPU: this is what checks that the CUDA path still builds (Triton front end, inline PTX,
layouts, and Triton's bundled `ptxas`), for fp16 and bf16, plain stores and split-K atomics.
Prints one line per variant: its name and the size of its cubin.
"""

from __future__ import annotations

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from vlq.kernels import triton_w4a16 as kernels
from vlq.kv import triton_kv
from vlq.kv.quant import MIN_SCALE, SCALE_DTYPE, max_code

HOPPER = GPUTarget("cuda", 90, 32)
TRITON_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16"}
SCALE = TRITON_DTYPES[SCALE_DTYPE]  # the KV cache's scales and zeros


def signature(kernel, dtype: str, out: str) -> dict[str, str]:
    """Argument types by name: activations and scales in `dtype`, the output in `out`, codes (zeros
    and vlq's scale-and-zero words too) and ints int32."""
    types = {}
    for param in kernel.params:
        if param.is_constexpr:
            continue
        name = param.name
        if name in ("qweight_ptr", "qzeros_ptr", "scale_zeros_ptr"):
            types[name] = "*i32"
        elif name == "out_ptr":
            types[name] = f"*{out}"
        elif name.endswith("_ptr"):
            types[name] = f"*{dtype}"
        else:
            types[name] = "i32"
    return types


def compile_variant(kernel, torch_dtype, num_warps: int = 4, **constexprs) -> int:
    """Compile one specialization for sm_90; the size of its cubin."""
    constexprs = {"MAGIC": kernels._MAGIC[torch_dtype], **constexprs}
    dtype = TRITON_DTYPES[torch_dtype]
    # split-K partials of bf16 add into an fp32 buffer, as the launchers allocate it (stream-K's always add)
    adds = constexprs.get("ATOMIC") or kernel is kernels.w4a16_rp_streamk_kernel
    out = "fp32" if adds and torch_dtype == torch.bfloat16 else dtype
    types = signature(kernel, dtype, out)
    types.update({name: "constexpr" for name in constexprs})
    source = ASTSource(fn=kernel, signature=types, constexprs=constexprs)
    compiled = triton.compile(source, target=HOPPER, options={"num_warps": num_warps, "num_stages": 3})
    return len(compiled.asm["cubin"])


def main() -> None:
    for dtype in TRITON_DTYPES:
        name = TRITON_DTYPES[dtype]
        for atomic in (False, True):
            variants = {
                "rp": (kernels.w4a16_rp_kernel, dict(GROUP=128, BLOCK_M=16, BLOCK_N=64, FOLD=False, USE_PTX=True)),
                "rp_fold": (
                    kernels.w4a16_rp_kernel,
                    dict(GROUP=64, BLOCK_M=16, BLOCK_N=64, FOLD=True, USE_PTX=True),
                ),
                "gemv": (
                    kernels.w4a16_gemv_kernel,
                    dict(GROUP=64, BLOCK_M=2, BLOCK_N=16, BLOCKS_PER_STEP=2, HALF_SUMS=True, USE_PTX=True),
                ),
                "tiled": (
                    kernels.w4a16_gemm_kernel,
                    dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, GROUP_M=8),
                ),
                "decode": (
                    kernels.w4a16_decode_kernel,
                    dict(BLOCK_T=16, BLOCK_P=8, BLOCK_K=64, USE_PTX=True),
                ),
            }
            for label, (kernel, constexprs) in variants.items():
                size = compile_variant(kernel, dtype, ATOMIC=atomic, **constexprs)
                print(f"{label}-{name}-{'atomic' if atomic else 'store'} {size}", flush=True)
        size = compile_variant(
            kernels.w4a16_rp_streamk_kernel, dtype, num_warps=8, GROUP=128, BLOCK_M=128, BLOCK_N=128, FOLD=False, USE_PTX=True
        )
        print(f"rp_streamk-{name} {size}", flush=True)
        size = compile_variant(
            kernels.rp_dequantize_kernel, dtype, GROUP=32, BLOCK_N=32, USE_PTX=True
        )
        print(f"rp_dequantize-{name} {size}", flush=True)
        size = compile_variant(kernels.awq_dequantize_kernel, dtype, BLOCK_K=32, BLOCK_N=128)
        print(f"awq_dequantize-{name} {size}", flush=True)
        for bits in (8, 4):
            print(f"kv{bits}-{name} {compile_kv(dtype, bits)}", flush=True)
        for tail in (False, True):
            # bf16 tail slices add fp32 partials: that epilogue leaves room for two activation
            # groups, not three (`smaller_config` steps down so at run time)
            stages = 8 if tail and dtype == torch.bfloat16 else 12
            print(f"ws-{name}-{'tail' if tail else 'store'} {compile_ws(dtype, tail, x_stages=stages)}", flush=True)
        print(f"ws_8_per_wait-{name} {compile_ws(dtype, False, block_m=128, x_stages=16, dots_per_wait=8)}", flush=True)


def wgmma_serialized(ptx: str) -> list[str]:
    """ptxas's warnings that it serialized the wgmmas (C7510-C7519: operands written while a dot is in
    flight, too few registers...), which leave the tensor cores idle between dots; Triton's own
    compile does not show them."""
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as source:
        source.write(ptx)
        source.flush()
        result = subprocess.run(
            [get_ptxas(90).path, "-arch=sm_90a", "-v", source.name, "-o", "/dev/null"],
            capture_output=True, text=True, check=True,
        )
    return [line for line in result.stderr.splitlines() if "(C751" in line]


def compile_ws(
    torch_dtype, tail: bool, block_m: int = 256, x_stages: int = 12, dots_per_wait: int = 4
) -> int:
    """The warp-specialized Gluon kernel (`vlq.kernels.ws_w4a16`) as the H100 table runs it, with
    or without split tail tiles (`tail`: their K slices add into fp32 for bf16); its TMA
    descriptors are typed by block shape and shared-memory layout. Fails where ptxas would
    serialize its wgmmas."""
    from triton.experimental.gluon._runtime import GluonASTSource

    from vlq.kernels import ws_w4a16

    dtype = TRITON_DTYPES[torch_dtype]
    x_layout, w_layout = ws_w4a16.descriptor_layouts(block_m, torch_dtype)
    constexprs = ws_w4a16.kernel_constexprs(torch_dtype, 128, block_m, x_stages, dots_per_wait, tail)
    types = {
        "x_desc": f"tensordesc<{dtype}[{block_m}, {ws_w4a16.CHUNK}],{x_layout!r}>",
        "w_desc": f"tensordesc<i32[{ws_w4a16.BLOCK_N}, {ws_w4a16.CHUNK}],{w_layout!r}>",
        "scale_zeros_ptr": "*u32", "out_ptr": f"*{dtype}",
        "tail_ptr": "*fp32" if ws_w4a16.tail_dtype(torch_dtype) == torch.float32 else f"*{dtype}",
        **{name: "i32" for name in ("M", "N", "K", "stride_om", "stride_tm", "whole_cols", "tail_programs")},
        **{name: "constexpr" for name in constexprs},
    }
    source = GluonASTSource(ws_w4a16.w4a16_ws_kernel, types, constexprs)
    compiled = triton.compile(source, target=HOPPER, options={"num_warps": 4, "maxnreg": 168})
    assert compiled.metadata.shared <= 227 * 1024, compiled.metadata.shared
    serialized = wgmma_serialized(compiled.asm["ptx"])
    assert not serialized, serialized
    return len(compiled.asm["cubin"])


def compile_kv(torch_dtype, bits: int, head_dim: int = 128) -> int:
    """The fused KV-cache append + dequantize kernel for `bits`-bit codes and `torch_dtype` states."""
    kernel = triton_kv._kv_append_dequant_kernel
    dtype = TRITON_DTYPES[torch_dtype]
    pointers = {"k_new": dtype, "v_new": dtype, "codes": "u8", "scales": SCALE, "zeros": SCALE, "out": dtype}
    constexprs = dict(
        BITS=bits, TOP=max_code(bits), HALF=head_dim // 2, HALF_P2=head_dim // 2, BLOCK_T=16, MIN_S=MIN_SCALE
    )
    types = {
        p.name: f"*{pointers[p.name]}" if p.name in pointers else "constexpr" if p.is_constexpr else "i32"
        for p in kernel.params
    }
    source = ASTSource(fn=kernel, signature=types, constexprs=constexprs)
    return len(triton.compile(source, target=HOPPER, options={"num_warps": 4}).asm["cubin"])


if __name__ == "__main__":
    main()
