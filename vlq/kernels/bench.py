"""`vlq bench gemm`: time the w4a16 runner against fp16 cuBLAS, the 4-bit bandwidth floor and AutoAWQ.

Every time comes from `triton.testing.do_bench_cudagraph`: after a warm-up, many calls are
captured in one CUDA graph and its replays are timed with CUDA events (median of the replays),
so Python launch overhead stays out, as in a graph-captured decode loop. Tensors are random and
non-zero; when one set of weights fits in twice the L2, calls rotate over enough copies that no
call finds its weights cached. vlq, fp16 and AutoAWQ are timed in turn, three rounds per point
in rotated order, and each side's median round is reported (`interleaved_medians`). The floor
is the bytes a call must move (packed weights, zeros, scales, input and output activations) at
the read bandwidth measured once per run (`measure_bandwidth`).
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from rich.table import Table

from vlq.errors import UsageError

DEFAULT_SHAPES = ((4096, 4096), (4096, 11008), (11008, 4096), (8192, 28672))
DEFAULT_MS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_FALLBACK_L2_BYTES = 50 * 2**20


@dataclass(frozen=True)
class GemmTiming:
    """One (shape, M) point; times in microseconds, None where that baseline was not run."""

    k: int
    n: int
    m: int
    kernel: str
    vlq_us: float
    fp16_us: float
    floor_us: float
    autoawq_us: float | None

    @property
    def speedup_vs_fp16(self) -> float:
        return self.fp16_us / self.vlq_us

    @property
    def floor_fraction(self) -> float:
        """How close to the bandwidth floor: 1.0 means at the floor."""
        return self.floor_us / self.vlq_us

    @property
    def speedup_vs_autoawq(self) -> float | None:
        return None if self.autoawq_us is None else self.autoawq_us / self.vlq_us


@dataclass(frozen=True)
class GemmBenchReport:
    device: str
    dtype: str
    group_size: int
    bandwidth_gbps: float
    bits_per_weight: float
    autoawq: str | None
    settings: str = "heuristic"  # the sweep table's device (`vlq.kernels.tuned`), or "heuristic"
    rows: list[GemmTiming] = field(default_factory=list)

    def to_json(self) -> dict:
        rows = [
            {
                "k": r.k,
                "n": r.n,
                "m": r.m,
                "kernel": r.kernel,
                "vlq_us": r.vlq_us,
                "fp16_us": r.fp16_us,
                "floor_us": r.floor_us,
                "autoawq_us": r.autoawq_us,
                "speedup_vs_fp16": r.speedup_vs_fp16,
                "floor_fraction": r.floor_fraction,
                "speedup_vs_autoawq": r.speedup_vs_autoawq,
            }
            for r in self.rows
        ]
        return {
            "device": self.device,
            "dtype": self.dtype,
            "group_size": self.group_size,
            "bandwidth_gbps": self.bandwidth_gbps,
            "bits_per_weight": self.bits_per_weight,
            "autoawq": self.autoawq,
            "settings": self.settings,
            "rows": rows,
        }


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """`"4096x4096,4096x11008"` -> [(K, N), ...] (in x out); N must be a multiple of 8."""
    shapes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            k, n = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise UsageError(f"shape {item!r} is not KxN (in x out), e.g. 4096x11008") from None
        if k <= 0 or n <= 0 or n % 8:
            raise UsageError(f"shape {item!r} needs positive K and N with N a multiple of 8")
        shapes.append((k, n))
    if not shapes:
        raise UsageError("no shapes given")
    return shapes


def parse_ms(text: str) -> list[int]:
    """`"1,2,4"` -> [1, 2, 4] token counts."""
    try:
        ms = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--m {text!r} is not a comma-separated list of token counts") from None
    if not ms or min(ms) <= 0:
        raise UsageError(f"--m {text!r} needs positive token counts")
    return ms


def load_autoawq_module(relative_path: str) -> ModuleType | None:
    """One file of the installed AutoAWQ package, loaded without running `awq/__init__.py`.

    Why: AutoAWQ's package init imports its whole model zoo (datasets, transformers 4.x APIs)
    and fails on current stacks, while its Triton GEMM file needs only torch and triton.
    """
    spec = importlib.util.find_spec("awq")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative_path
    if not path.is_file():
        return None
    name = "_vlq_autoawq_" + relative_path.replace("/", "_").removesuffix(".py")
    file_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(file_spec)
    try:
        file_spec.loader.exec_module(module)
    except ImportError:
        return None
    return module


def autoawq_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("autoawq")
    except Exception:
        return None


def _median_us(calls: list[Callable[[], object]]) -> float:
    """GPU time of one call in us, rotating through `calls` (each on its own copy of the data)."""
    from triton.testing import do_bench_cudagraph

    cycle = itertools.cycle(calls)
    return do_bench_cudagraph(lambda: next(cycle)(), rep=10, return_mode="median") * 1000


def measure_bandwidth(device: torch.device, nbytes: int = 2**30) -> float:
    """Device-memory read bandwidth in bytes/s: fp16 cuBLAS's matrix-vector product over `nbytes` of
    matrix, which reads it once (the vectors are negligible).

    Why not a copy: a weight stream is reads only, and a copy's read + write rate is below what
    reads alone reach (H200: a 1 GiB copy moved 2.7 TB/s while fp16 cuBLAS read a 470 MB weight
    at 4.4 TB/s), which made the floor look closer than it is.
    """
    rows = 16384
    matrix = torch.empty(rows, nbytes // (2 * rows), dtype=torch.float16, device=device).normal_()
    vector = torch.randn(matrix.shape[1], dtype=torch.float16, device=device)
    seconds = _median_us([lambda: torch.mv(matrix, vector)]) / 1e6
    return matrix.numel() * matrix.element_size() / seconds


def bits_per_weight(group_size: int, k: int | None = None) -> float:
    """Stored bits per weight: 4-bit codes plus, per group, an fp16 scale and a zero point (4 bits
    in AutoAWQ's layout; in vlq's load-time layout, when a K of `k` fits it, scale and zero share a
    32-bit word)."""
    from vlq.kernels.repack import repackable

    zero_bits = 16 if k is not None and repackable(k, group_size) else 4
    return 4 + (16 + zero_bits) / group_size


def _copies(bytes_per_copy: int, l2_bytes: int) -> int:
    """How many copies to rotate so that no call finds its data in L2."""
    return 1 if bytes_per_copy > 2 * l2_bytes else min(8, math.ceil(2 * l2_bytes / bytes_per_copy) + 1)


def _random_awq(k: int, n: int, group_size: int, dtype: torch.dtype, device: torch.device) -> dict:
    int32 = torch.iinfo(torch.int32)
    return {
        "qweight": torch.randint(int32.min, int32.max, (k, n // 8), dtype=torch.int32, device=device),
        "qzeros": torch.randint(
            int32.min, int32.max, (k // group_size, n // 8), dtype=torch.int32, device=device
        ),
        "scales": (torch.rand(k // group_size, n, device=device) * 0.01 + 0.001).to(dtype),
    }


def _autoawq_forward(autoawq: ModuleType, x: torch.Tensor, w: dict) -> torch.Tensor:
    """What AutoAWQ's WQLinear_GEMM runs without its CUDA extension for an input [1, M, K]:
    dequantize + matmul from 1024 tokens on, its split-K Triton GEMM below."""
    if x.shape[0] >= 1024:
        return x @ autoawq.awq_dequantize_triton(w["qweight"], w["scales"], w["qzeros"])
    return autoawq.awq_gemm_triton(x, w["qweight"], w["scales"], w["qzeros"], split_k_iters=8)


def describe_kernel(m: int, n: int, k: int, group_size: int, device: torch.device) -> str:
    from vlq.kernels.repack import repackable
    from vlq.kernels.triton_w4a16 import device_name, pick_config, pick_rp_config, sm_count

    if repackable(k, group_size):
        index = device.index or 0
        c = pick_rp_config(m, n, k, group_size, sm_count(index), device_name(index))
        if c.kernel == "deq":
            return "dequant+cuBLAS" + (f" {c.chunk_mb}MB chunks" if c.chunk_mb else "")
        if c.kernel == "streamk":
            return f"streamk {c.block_m}x{c.block_n} {c.programs_per_sm}/SM w{c.num_warps}"
        split = f" split{c.split_k}" if c.split_k > 1 else ""
        if c.kernel == "ws":
            from vlq.kernels.ws_w4a16 import available

            ran = "" if available(device) else " (no Gluon/sm_90 here: ran dequant+cuBLAS)"
            return f"ws {c.block_m}x128{split} {c.num_stages} chunks in flight{ran}"
        blocks = f" b{c.blocks_per_step}" if c.kernel == "gemv" else ""
        sums = " fp16-sums" if c.kernel == "gemv" and c.half_sums else ""
        fold = " folded" if c.kernel == "rp" and c.fold else ""
        return f"{c.kernel} {c.block_m}x{c.block_n}{split} w{c.num_warps}{blocks}{sums}{fold}"
    config = pick_config(m, n, k, group_size, sm_count(device.index or 0))
    if config is None:
        return "dequant+cuBLAS"
    split = f" split{config.split_k}" if config.split_k > 1 else ""
    return f"{config.kernel} {config.block_m}x{config.block_n}x{config.block_k}{split}"


def _load_time_layout(w: dict, k: int, group_size: int) -> dict:
    from vlq.kernels.repack import repack_awq, repackable

    if not repackable(k, group_size):
        return w
    qweight, qzeros, scales = repack_awq(w["qweight"], w["qzeros"], w["scales"])
    return {"qweight": qweight, "qzeros": qzeros, "scales": scales}


# Rounds per (shape, M) point: each times vlq, fp16 and AutoAWQ once, in a rotated order.
_ROUNDS = 3


def interleaved_medians(timers: dict[str, Callable[[], float]], rounds: int = _ROUNDS) -> dict[str, float]:
    """Each timer's median over `rounds` rounds that call every timer once, round r starting at
    the r-th: a GPU clock that drifts during a point (power, heat) then weighs on all sides alike,
    instead of on whichever was timed last."""
    names = list(timers)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        start = r % len(names)
        for name in names[start:] + names[:start]:
            times[name].append(timers[name]())
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}


def _time_point(
    x: torch.Tensor,
    vlq_sets: list[dict],
    quant_sets: list[dict],
    dense_sets: list[torch.Tensor],
    group_size: int,
    autoawq: ModuleType | None,
) -> tuple[float, float, float | None]:
    """(vlq, fp16 cuBLAS, AutoAWQ or None) in us for one input (`interleaved_medians`)."""
    from vlq.kernels.matmul import w4a16_matmul

    timers = {
        "vlq": lambda: _median_us(
            [lambda w=w: w4a16_matmul(x, w["qweight"], w["qzeros"], w["scales"], group_size) for w in vlq_sets]
        ),
        "fp16": lambda: _median_us([lambda w=w: x @ w.t() for w in dense_sets]),
    }
    if autoawq is not None:
        timers["autoawq"] = lambda: _median_us([lambda w=w: _autoawq_forward(autoawq, x, w) for w in quant_sets])
    us = interleaved_medians(timers)
    return us["vlq"], us["fp16"], us.get("autoawq")


def run_gemm_bench(
    shapes: list[tuple[int, int]],
    ms: list[int],
    dtype: torch.dtype = torch.float16,
    group_size: int = 128,
    with_autoawq: bool = True,
    progress: Callable[[str], None] | None = None,
) -> GemmBenchReport:
    """Time every (shape, M) point; needs a CUDA device with Triton."""
    if not torch.cuda.is_available():
        raise UsageError("vlq bench gemm needs a CUDA device (none is visible to torch)")
    if importlib.util.find_spec("triton") is None:
        raise UsageError("vlq bench gemm needs triton (pip install triton)")
    if dtype not in DTYPES.values():
        raise UsageError(f"dtype {dtype} is not one of {', '.join(DTYPES)}")

    from vlq.kernels.tuned import table_device

    device = torch.device("cuda", torch.cuda.current_device())
    props = torch.cuda.get_device_properties(device)
    l2_bytes = getattr(props, "L2_cache_size", 0) or _FALLBACK_L2_BYTES
    autoawq = (
        load_autoawq_module("modules/triton/gemm.py") if with_autoawq and dtype == torch.float16 else None
    )
    bandwidth = measure_bandwidth(device)
    report = GemmBenchReport(
        device=props.name,
        dtype=str(dtype).removeprefix("torch."),
        group_size=group_size,
        bandwidth_gbps=bandwidth / 1e9,
        bits_per_weight=bits_per_weight(group_size, shapes[0][0]),
        autoawq=(autoawq_version() or "installed") if autoawq else None,
        settings=table_device(props.name) or "heuristic",
    )
    for k, n in shapes:
        if k % group_size:
            raise UsageError(f"group size {group_size} does not divide K={k}")
        w_bytes = round(k * n * bits_per_weight(group_size, k) / 8)
        dense_bytes = k * n * 2
        quant_sets = [_random_awq(k, n, group_size, dtype, device) for _ in range(_copies(w_bytes, l2_bytes))]
        # what AwqLinear runs after its load-time repack (AutoAWQ keeps its own layout)
        vlq_sets = [_load_time_layout(w, k, group_size) for w in quant_sets]
        dense_sets = [
            torch.randn(n, k, device=device, dtype=dtype) * 0.02
            for _ in range(_copies(dense_bytes, l2_bytes))
        ]
        for m in ms:
            if progress:
                progress(f"{k}x{n} M={m}")
            x = torch.randn(m, k, device=device, dtype=dtype)
            vlq_us, fp16_us, autoawq_us = _time_point(
                x, vlq_sets, quant_sets, dense_sets, group_size, autoawq
            )
            floor_us = (w_bytes + m * (k + n) * x.element_size()) / bandwidth * 1e6
            report.rows.append(
                GemmTiming(
                    k=k,
                    n=n,
                    m=m,
                    kernel=describe_kernel(m, n, k, group_size, device),
                    vlq_us=vlq_us,
                    fp16_us=fp16_us,
                    floor_us=floor_us,
                    autoawq_us=autoawq_us,
                )
            )
        del quant_sets, vlq_sets, dense_sets
        torch.cuda.empty_cache()
    return report


def _ratio(value: float | None, good: float) -> str:
    if value is None:
        return "-"
    color = "green" if value >= good else "red"
    return f"[{color}]{value:.2f}x[/{color}]"


def gemm_table(report: GemmBenchReport) -> Table:
    """Rich table: one row per (shape, M)."""
    table = Table(
        title=f"w4a16 GEMM on {report.device} ({report.dtype} activations, group {report.group_size}, "
        f"{report.bits_per_weight:.2f} bits/weight, read bandwidth {report.bandwidth_gbps:.0f} GB/s; "
        + (
            "vlq settings: the rule for unswept GPUs"
            if report.settings == "heuristic"
            else f"vlq settings: the {report.settings} sweep table"
        )
        + ")",
        caption="GPU times in us (CUDA-graph replays, median of 3 interleaved rounds); floor = bytes of packed weights, zeros, scales "
        "and activations at the measured bandwidth; AutoAWQ = its Triton kernels as WQLinear_GEMM calls them"
        + ("" if report.autoawq else " (not installed)"),
    )
    for name in (
        "K x N",
        "M",
        "vlq kernel",
        "vlq us",
        "fp16 us",
        "floor us",
        "AutoAWQ us",
        "vs fp16",
        "floor/vlq",
        "vs AutoAWQ",
    ):
        table.add_column(name, justify="left" if name in ("K x N", "vlq kernel") else "right")
    previous = None
    for r in report.rows:
        shape = f"{r.k}x{r.n}"
        table.add_row(
            shape if shape != previous else "",
            str(r.m),
            r.kernel,
            f"{r.vlq_us:.1f}",
            f"{r.fp16_us:.1f}",
            f"{r.floor_us:.1f}",
            "-" if r.autoawq_us is None else f"{r.autoawq_us:.1f}",
            _ratio(r.speedup_vs_fp16, 1.0),
            f"{r.floor_fraction:.2f}",
            _ratio(r.speedup_vs_autoawq, 1.0),
        )
        previous = shape
    return table
