"""Sweep w4a16 kernel candidates per (shape, M) on a CUDA GPU; prints the best of each next to fp16.

python benchmarks/gemm_sweep.py [--shapes 4096x4096,...] [--m 1,2,...] [--budget 200] [--json-out F]
                                [--write-table vlq/kernels/tuned/h100.py [--merge-table]]

Candidates: `w4a16_rp_kernel` tiles, pipeline stages and split-K over vlq's layout (dequantized,
or folded up to 256 tokens: zero off the codes, scale after the dot), `w4a16_gemv_kernel` (CUDA-core FMAs, several
256-blocks per step, fp32 or fp16 partial sums) for tokens <= 16, the wide rp tiles stream-K
(`w4a16_rp_streamk_kernel`, one or two programs per SM) from 64 tokens, chunked dequantize + cuBLAS
over vlq's layout (tokens >= 128), and the AWQ-layout dispatch that shipped before (`current`).
Every candidate is checked against a float32 reference before it is timed.
Times: one CUDA graph of many calls, rotating over enough weight copies that none is found in
L2, replayed 3 times; the median replay over the call count. Kernels compile first in a pool of
processes (Triton's disk cache then serves the timing process). Dev tool for `pick_rp_config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import os
import re
import sys
import textwrap
import time

import torch

SHAPES = ((4096, 11008), (8192, 28672), (11008, 4096), (4096, 4096))
MS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)
GROUP = 128
CHECK_GROUPS = (32, 64, 128, 256)
L2_BYTES = 50 * 2**20


def rp_decode_candidates():
    """`w4a16_rp_kernel` for up to 16 tokens: weight-row tiles and split-K, dequantized or folded."""
    from vlq.kernels.triton_w4a16 import RpConfig

    out = []
    for fold in (False, True):
        for bn, warps in ((16, 1), (32, 2), (64, 4), (128, 8)):
            for stages in (3, 4):
                for split in (1, 2, 3, 4, 6, 8, 16) if bn >= 64 else (1, 2, 4, 8, 16):
                    out.append(
                        RpConfig(block_m=16, block_n=bn, split_k=split, num_warps=warps, num_stages=stages, fold=fold)
                    )
    return out


# `w4a16_gemv_kernel` tiles (rows, 256-blocks per step, warps) per tokens per program, picked from
# sm_90 ptxas register counts (fp16, group 128): no spills, and as many weight bytes in flight per SM
# as the registers leave room for.
GEMV_TILES = {
    1: ((8, 2, 2), (16, 1, 2), (16, 2, 4), (8, 4, 4), (16, 4, 4), (32, 1, 4), (32, 2, 8)),
    2: ((8, 2, 2), (16, 1, 2), (16, 2, 4), (8, 4, 4), (32, 1, 4), (32, 2, 8), (64, 1, 8)),
    4: ((8, 2, 2), (16, 1, 2), (32, 1, 4), (16, 2, 8), (32, 2, 8), (64, 1, 8)),
    8: ((16, 1, 4), (32, 1, 4), (32, 1, 8), (32, 2, 8), (64, 1, 8)),
}


def gemv_candidates(m):
    """`w4a16_gemv_kernel` for M tokens: M rounded up to a power of two per program, at most 8
    (a thread holds its activations for every token, so more tokens take more programs), each
    tile at split-K 1, 2 and 4. Its loop has no pipelined loads, so num_stages stays at the default."""
    from vlq.kernels.triton_w4a16 import RpConfig

    block_m = min(1 << (m - 1).bit_length(), 8)
    return [
        RpConfig(
            kernel="gemv",
            block_m=block_m,
            block_n=bn,
            blocks_per_step=steps,
            split_k=split,
            num_warps=warps,
            half_sums=half,
        )
        for bn, steps, warps in GEMV_TILES[block_m]
        for split in (1, 2, 4)
        for half in (False, True)
    ]


def decode_candidates(m):
    return rp_decode_candidates() + gemv_candidates(m)


def prefill_candidates(m):
    """From 32 tokens: `w4a16_rp_kernel` tiles (dequantized, or folded up to 256 tokens), pipeline
    stages and split-K, from 128 tokens chunked dequantize + cuBLAS, and from 256 tokens on an sm_90
    GPU with Gluon the warp-specialized kernel (`vlq.kernels.ws_w4a16`)."""
    from vlq.kernels import ws_w4a16
    from vlq.kernels.triton_w4a16 import RpConfig

    splits = (1, 2, 3, 4) if m <= 1024 else (1, 2)
    out = []
    # (tokens, weight rows, warps): a pipeline stage of a 256-wide K step holds the activation
    # tile and the words, so 128 x 256 fits Hopper's shared memory with two stages only
    tiles = ((32, 64, 4), (64, 64, 4), (64, 128, 8), (128, 64, 4), (128, 128, 8), (64, 256, 8), (128, 256, 8))
    for bm, bn, warps in tiles:
        if bm > 2 * m or (m >= 128 and bm < 64):
            continue
        stage_counts = (2,) if bm * bn > 128 * 128 else (2, 3)
        for stages in stage_counts:
            out += [
                RpConfig(block_m=bm, block_n=bn, split_k=split, num_warps=warps, num_stages=stages)
                for split in splits
            ]
        if m <= 256:  # folded (zero off the codes, scale after a dot per group)
            out += [
                RpConfig(block_m=bm, block_n=bn, split_k=split, num_warps=warps, num_stages=stage_counts[-1], fold=True)
                for split in splits
            ]
    if m >= 64:  # the wide tiles stream-K, one or two programs per SM (3 stages fit some shapes only)
        for bm, bn in ((64, 256), (128, 128)):
            if bm <= 2 * m:
                out += [
                    RpConfig(kernel="streamk", block_m=bm, block_n=bn, num_warps=8, num_stages=st, programs_per_sm=p)
                    for st in (2, 3)
                    for p in (1, 2)
                ]
    if m >= 128:
        for chunk in (0, 16, 32):
            out.append(RpConfig(kernel="deq", chunk_mb=chunk))
    if m >= 256 and torch.cuda.is_available() and ws_w4a16.available(torch.device("cuda")):
        # (tokens per program, activation chunks in flight: whole groups of the default four dots
        # per wait): 164-213 KB of shared memory; split-K for the few tiles of 256 tokens on narrow
        # weights (the probe's best there: 2-4), and the balanced tail for a part-empty last wave
        for bm, stages in ((128, 16), (256, 12), (256, 8)):
            out += [RpConfig(kernel="ws", block_m=bm, num_stages=stages, split_k=split) for split in (1, 2, 4)]
            out.append(RpConfig(kernel="ws", block_m=bm, num_stages=stages, balance_tail=True))
    return out


def compile_key(cfg):
    """What selects a compiled variant: the split count only matters through split-K's atomics."""
    if cfg.kernel == "deq":
        return ("deq",)
    if cfg.kernel == "streamk":
        return dataclasses.replace(cfg, programs_per_sm=1)
    return dataclasses.replace(cfg, split_k=2 if cfg.split_k > 1 else 1)


def describe(cfg):
    """Short label of a candidate for the progress lines."""
    if cfg.kernel == "deq":
        return f"deq chunk{cfg.chunk_mb}"
    tile = f"{cfg.block_m}x{cfg.block_n} s{cfg.split_k} w{cfg.num_warps}"
    if cfg.kernel == "gemv":
        return f"gemv {tile} b{cfg.blocks_per_step}{' h' if cfg.half_sums else ''}"
    if cfg.kernel == "streamk":
        return f"streamk {cfg.block_m}x{cfg.block_n} {cfg.programs_per_sm}/SM w{cfg.num_warps} st{cfg.num_stages}"
    if cfg.kernel == "ws":
        return f"ws {cfg.block_m}x128 {'tail' if cfg.balance_tail else f's{cfg.split_k}'} st{cfg.num_stages}"
    return f"rp {tile} st{cfg.num_stages}{' fold' if cfg.fold else ''}"


def _rand_awq(k, n, dtype, device, group=GROUP):
    i = torch.iinfo(torch.int32)
    return {
        "qweight": torch.randint(i.min, i.max, (k, n // 8), dtype=torch.int32, device=device),
        "qzeros": torch.randint(i.min, i.max, (k // group, n // 8), dtype=torch.int32, device=device),
        "scales": (torch.rand(k // group, n, device=device) * 0.01 + 0.001).to(dtype),
    }


def _repacked(w):
    from vlq.kernels.repack import repack_awq

    rq, rz, _ = repack_awq(w["qweight"], w["qzeros"], w["scales"])
    return {"qweight": rq, "qzeros": rz}


def compile_worker(tasks):
    from vlq.kernels.triton_w4a16 import run_rp, w4a16_matmul_triton

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    done = 0
    cache = {}
    for kind, dtype, group, payload in tasks:
        key = (dtype, group)
        if key not in cache:
            w = _rand_awq(512, 256, dtype, dev, group)
            cache[key] = (w, _repacked(w))
        w, r = cache[key]
        try:
            if kind == "rp":
                x = torch.randn(3, 512, device=dev, dtype=dtype)
                run_rp(x, r["qweight"], r["qzeros"], group, payload)
            else:  # the AWQ-layout dispatch (`current`) at (tokens, K, N) = payload
                m, k, n = payload
                if (k, n) not in cache:
                    cache[(k, n)] = _rand_awq(k, n, dtype, dev, group)
                big = cache[(k, n)]
                x = torch.randn(m, k, device=dev, dtype=dtype)
                w4a16_matmul_triton(x, big["qweight"], big["qzeros"], big["scales"], group)
            done += 1
        except Exception as exc:  # noqa: BLE001 - report and go on
            print("compile fail", kind, payload, repr(exc)[:300], flush=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return done


def graph_time_us(calls, max_calls=64):
    """GPU time per call in us: a CUDA graph of up to `max_calls` calls (rotating), median of 3 replays."""
    if not torch.cuda.is_available():  # --dry on the CPU: one interpreted call, wall clock
        start = time.perf_counter()
        calls[0]()
        return (time.perf_counter() - start) * 1e6
    for c in calls:
        c()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for c in calls:
        c()
    end.record()
    torch.cuda.synchronize()
    est = start.elapsed_time(end) * 1000 / len(calls)
    reps = max(len(calls), min(max_calls, int(3000 / max(est, 1.0))))
    reps = math.ceil(reps / len(calls)) * len(calls)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            for i in range(reps):
                calls[i % len(calls)]()
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(3):
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000 / reps)
    del graph
    return sorted(times)[1]


def copies(nbytes):
    return 1 if nbytes > 2 * L2_BYTES else min(8, math.ceil(2 * L2_BYTES / nbytes) + 1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default=",".join(f"{k}x{n}" for k, n in SHAPES))
    parser.add_argument("--m", default=",".join(map(str, MS)))
    parser.add_argument("--budget", type=float, default=200.0, help="seconds; later points are skipped")
    parser.add_argument("--json-out", default=os.path.join(os.environ.get("OUT", "."), "sweep.json"))
    parser.add_argument("--procs", type=int, default=15)
    parser.add_argument(
        "--write-table", help="write the winners as this GPU model's table here (vlq/kernels/tuned/NAME.py)"
    )
    parser.add_argument(
        "--merge-table",
        action="store_true",
        help="with --write-table: keep that file's entries for the (shape, M) points this run did not sweep",
    )
    parser.add_argument("--dry", action="store_true", help="CPU smoke run (Triton interpreter, tiny shapes)")
    args = parser.parse_args()
    if args.dry:
        os.environ["TRITON_INTERPRET"] = "1"
        global rp_decode_candidates, gemv_candidates, prefill_candidates
        full_rp, full_gemv, full_prefill = rp_decode_candidates, gemv_candidates, prefill_candidates
        rp_decode_candidates = lambda: full_rp()[::37]  # noqa: E731
        gemv_candidates = lambda m: full_gemv(m)[::10]  # noqa: E731
        prefill_candidates = lambda m: full_prefill(m)[::17]  # noqa: E731
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    ms = [int(v) for v in args.m.split(",")]
    t0 = time.time()

    import triton

    from vlq.awq.pack import dequantize_awq
    from vlq.kernels.triton_w4a16 import RpConfig, run_rp, w4a16_matmul_triton

    if args.dry:
        from vlq.kernels import triton_w4a16

        triton_w4a16.sm_count = lambda index: 132
    print(
        torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch",
        torch.__version__,
        "triton",
        triton.__version__,
        flush=True,
    )
    f16 = torch.float16
    tasks = {}
    for m in ms:
        for cfg in decode_candidates(m) if m <= 16 else prefill_candidates(m):
            tasks[("rp", f16, GROUP, compile_key(cfg))] = ("rp", f16, GROUP, cfg)
        for k, n in shapes:
            tasks[("awq", m, k * n >= 1 << 26)] = ("awq", f16, GROUP, (m, k, n))
    # bf16 and the other group sizes, for the correctness check below
    checks = [
        RpConfig(block_m=16, block_n=64, split_k=2),
        RpConfig(kernel="gemv", block_m=4, block_n=16, split_k=2, blocks_per_step=2),
        RpConfig(kernel="gemv", block_m=1, block_n=16, blocks_per_step=2, half_sums=True),
        RpConfig(block_m=64, block_n=128),
        RpConfig(block_m=16, block_n=64, split_k=2, fold=True),
        RpConfig(block_m=128, block_n=128, num_warps=8, num_stages=2),
        RpConfig(kernel="streamk", block_m=128, block_n=128, num_warps=8, num_stages=2, programs_per_sm=1),
        RpConfig(kernel="deq"),
    ]
    for dtype in (torch.float16, torch.bfloat16):
        for group in CHECK_GROUPS:
            for cfg in checks:
                tasks[("rp", dtype, group, compile_key(cfg))] = ("rp", dtype, group, cfg)
    task_list = list(tasks.values())
    if args.dry:
        done = len(task_list)
    else:
        with mp.get_context("spawn").Pool(args.procs) as pool:
            done = sum(pool.map(compile_worker, [task_list[i :: args.procs] for i in range(args.procs)]))
    print(f"compiled {done}/{len(task_list)} variants in {time.time() - t0:.0f}s", flush=True)

    dev = torch.device("cpu" if args.dry else "cuda")
    # correctness of the vlq-layout kernels in bf16 and every group size (PTX unpack included)
    for dtype in (torch.float16,) if args.dry else (torch.float16, torch.bfloat16):
        for group in CHECK_GROUPS:
            w = _rand_awq(512, 256, dtype, dev, group)
            r = _repacked(w)
            ref_w = dequantize_awq(w["qweight"], w["qzeros"], w["scales"], group).float()
            for cfg in checks:
                x = torch.randn(3, 512, device=dev, dtype=dtype)
                try:
                    out = run_rp(x, r["qweight"], r["qzeros"], group, cfg)
                except Exception as exc:  # noqa: BLE001 - report and go on
                    print("FAIL check", dtype, group, cfg, repr(exc)[:200], flush=True)
                    continue
                ref = x.float() @ ref_w
                err = ((out.float() - ref).norm() / ref.norm()).item()
                if not err < (2e-3 if dtype == torch.float16 else 1e-2):
                    print("BAD check", dtype, group, cfg, err, flush=True)
    print(f"dtype/group checks done at {time.time() - t0:.0f}s", flush=True)

    results, summary = [], []
    for k, n in shapes:
        w_bytes = k * n // 2 + k // GROUP * n * 3
        sets = [_rand_awq(k, n, f16, dev) for _ in range(copies(w_bytes))]
        rsets = [_repacked(w) for w in sets]
        dense = [torch.randn(n, k, device=dev, dtype=f16) * 0.02 for _ in range(copies(2 * k * n))]
        ref_w = dequantize_awq(sets[0]["qweight"], sets[0]["qzeros"], sets[0]["scales"], GROUP).float()
        top_rp = []
        for m in ms:
            if time.time() - t0 > args.budget:
                print(f"budget spent: skipping {k}x{n} M={m}", flush=True)
                continue
            x = torch.randn(m, k, device=dev, dtype=f16)
            ref = x.float() @ ref_w
            fp16_us = graph_time_us([lambda d=d, x=x: x @ d.t() for d in dense])
            cur_us = graph_time_us(
                [
                    lambda w=w, x=x: w4a16_matmul_triton(x, w["qweight"], w["qzeros"], w["scales"], GROUP)
                    for w in sets
                ]
            )
            if m <= 16:
                cands = decode_candidates(m)
                if m in (2, 4, 8) and top_rp:  # rp pads to 16 tokens: its best at M=1 and 16 will do
                    cands = list(dict.fromkeys(top_rp)) + gemv_candidates(m)
            else:
                cands = prefill_candidates(m)
            timed = []
            for cfg in cands:
                if cfg.kernel != "deq" and cfg.split_k > max(1, k // 256):
                    continue
                try:
                    out = run_rp(x, rsets[0]["qweight"], rsets[0]["qzeros"], GROUP, cfg)
                    err = ((out.float() - ref).norm() / ref.norm()).item()
                    if not err < 3e-3:
                        print("BAD", k, n, m, cfg, err, flush=True)
                        continue
                    us = graph_time_us(
                        [
                            lambda r=r, x=x, cfg=cfg: run_rp(
                                x, r["qweight"], r["qzeros"], GROUP, cfg
                            )
                            for r in rsets
                        ]
                    )
                except Exception as exc:  # noqa: BLE001
                    print("FAIL", k, n, m, cfg, repr(exc)[:200], flush=True)
                    continue
                timed.append((us, cfg))
                results.append(dict(k=k, n=n, m=m, cfg=dataclasses.asdict(cfg), us=us, err=err))
            timed.sort(key=lambda t: t[0])
            if m in (1, 16):
                top_rp += [c for _, c in timed if c.kernel == "rp"][:6]
            best_us, best = timed[0] if timed else (float("inf"), None)
            summary.append(
                dict(
                    k=k,
                    n=n,
                    m=m,
                    fp16_us=fp16_us,
                    current_us=cur_us,
                    best_us=best_us,
                    best=dataclasses.asdict(best) if best else None,
                    top=[(u, dataclasses.asdict(c)) for u, c in timed[:5]],
                )
            )
            second = f" | 2nd {timed[1][0]:.1f} {describe(timed[1][1])}" if len(timed) > 1 else ""
            print(
                f"{k}x{n} M={m}: fp16 {fp16_us:.1f} current {cur_us:.1f} best {best_us:.1f} "
                f"({fp16_us / best_us:.2f}x fp16, {cur_us / best_us:.2f}x current) {describe(best) if best else '-'}"
                f"{second}  [{time.time() - t0:.0f}s]",
                flush=True,
            )
        del sets, rsets, dense, ref_w
        torch.cuda.empty_cache()
    with open(args.json_out, "w") as f:
        json.dump(dict(results=results, summary=summary), f)
    print("\nbest per (shape, M): us (vs fp16, vs current)")
    for s in summary:
        print(
            f"{s['k']}x{s['n']:<6} M={s['m']:<5} fp16 {s['fp16_us']:8.1f} cur {s['current_us']:8.1f} "
            f"best {s['best_us']:8.1f} {s['fp16_us'] / s['best_us']:5.2f}x {s['current_us'] / s['best_us']:5.2f}x "
            f"{s['best']}"
        )
    if args.write_table:
        write_table(args.write_table, summary, merge=args.merge_table)
    print(f"sweep done in {time.time() - t0:.0f}s", flush=True)
    return 0


ENTRY = re.compile(r"^        (\d+): RpConfig\(.*$")
SHAPE = re.compile(r"^    \((\d+), (\d+)\): \{$")


def table_lines(path):
    """The entry lines of an existing `vlq.kernels.tuned` table, by (K, N) and M."""
    lines, shape = {}, None
    with open(path) as f:
        for line in f.read().splitlines():
            if found := SHAPE.match(line):
                shape = tuple(int(v) for v in found.groups())
            elif shape and (entry := ENTRY.match(line)):
                lines[(*shape, int(entry.group(1)))] = line
    return lines


def table_device(path):
    """The device an existing `vlq.kernels.tuned` table was measured on."""
    with open(path) as f:
        match = re.search(r"^DEVICE = '(.*)'$", f.read(), re.M)
    return match.group(1) if match else "unknown device"


def write_table(path, summary, merge=False):
    """A `vlq.kernels.tuned` table: the fastest config that passed the check, per (K, N, M); with `merge`,
    the file's earlier entries for points this run did not sweep stay as they were."""
    from vlq.kernels.triton_w4a16 import RpConfig

    default = RpConfig()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (dry run)"
    entries, earlier = (table_lines(path), table_device(path)) if merge and os.path.exists(path) else ({}, None)
    kept = set(entries)
    for s in summary:
        if s["best"] is None:
            continue
        cfg = RpConfig(**s["best"])
        fields = ", ".join(
            f"{f.name}={getattr(cfg, f.name)!r}"
            for f in dataclasses.fields(cfg)
            if getattr(cfg, f.name) != getattr(default, f.name)
        )
        key = (s["k"], s["n"], s["m"])
        kept.discard(key)
        entries[key] = (
            f"        {s['m']}: RpConfig({fields}),  # {s['best_us']:.1f} us; fp16 {s['fp16_us']:.1f}, "
            f"AWQ-layout kernels {s['current_us']:.1f}"
        )
    provenance = f"measured them on {device} ({time.strftime('%Y-%m-%d')}, fp16, group {GROUP})."
    if kept:
        old_ms = sorted({m for _, _, m in kept})
        provenance += f" Entries for M = {', '.join(map(str, old_ms))} are kept from the earlier table ({earlier})."
    lines = [
        '"""Fastest vlq-layout settings per (K, N) and token count, as `benchmarks/gemm_sweep.py --write-table`',
        *textwrap.wrap(provenance, 100),
        "",
        "`pick_rp_config` takes the entry of the smallest swept token count >= M on GPUs of this model;",
        "other shapes use `heuristic_rp_config`. Generated file: rerun the sweep rather than editing it.",
        '"""',
        "",
        "from vlq.kernels.triton_w4a16 import RpConfig",
        "",
        f"DEVICE = {device!r}",
        "TUNED: dict[tuple[int, int], dict[int, RpConfig]] = {",
    ]
    for shape in dict.fromkeys((k, n) for k, n, _ in entries):
        lines.append(f"    ({shape[0]}, {shape[1]}): {{")
        lines += [entries[key] for key in sorted(key for key in entries if key[:2] == shape)]
        lines.append("    },")
    lines.append("}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", path, flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    sys.exit(main())
