"""Time the warp-specialized prefill kernel (`vlq.kernels.ws_w4a16`) on an sm_90 GPU next to fp16
cuBLAS and vlq's dispatch (the GPU's sweep table), after checking it against dequantize + cuBLAS.

python benchmarks/ws_probe.py [--m 256,1024,4096] [--shapes 4096x4096,...] [--groupings 2,4,8]
                              [--skip-check] [--json-out F]

Per point it prints the three times, the best ws setting (tokens per program, activation chunks
in flight, split-K or a tail plan, dots per full wait), the best of `balanced_tail`'s own pick
(`tail`) and of the settings with no tail plan, and every setting's time, all timed in the same
run as `gemm_sweep.py` times (CUDA graphs, L2-rotated weights). A tail plan `W+P` runs W columns
of tiles whole and shares the other columns' blocks out to P programs (over K, or stream-K across
tiles); every plan that `balanced_tail` weighs is timed, so that a refit of its cost model picks
among timed plans. The H100 table's ws entries come from this script's runs (see its docstring
for which).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
from triton.runtime.errors import OutOfResources

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gemm_sweep import SHAPES, _rand_awq, _repacked, copies, graph_time_us  # noqa: E402

from vlq.kernels.triton_w4a16 import nonempty_split, rp_dequant_matmul, w4a16_matmul_rp  # noqa: E402
from vlq.kernels.ws_w4a16 import BLOCK_N, DOTS_PER_WAIT, available, balanced_tail, launch_ws, tail_plans  # noqa: E402

# (tokens per program, activation chunks in flight): 164-213 KB of shared memory (12 chunks of a
# 256-token tile fit beside one block of words; bf16 split-K's fp32 epilogue needs 8; 128-token
# tiles with 20 chunks timed the same as 16 on an H200, 24 do not fit). The ring holds whole
# groups of dots, so a tile is timed with the groupings that divide its chunks in two or more
TILES = ((128, 16), (256, 12), (256, 8))


def ring_fits(stages: int, per_wait: int) -> bool:
    """Whether `stages` chunks make a ring of two or more whole groups (one group would leave the
    copies nothing to load ahead into)."""
    return stages % per_wait == 0 and stages // per_wait >= 2


def check(dev) -> int:
    """Every tile and grouping against dequantize + cuBLAS: odd shapes, both dtypes, each group size,
    split-K 2, a balanced tail over 7 slots (on K = 2560 every tile size shares its last one to four
    columns out there; fewer blocks than that never pay for it) and stream-K runs across tile
    boundaries (the grid in 7 programs; half its columns whole, the rest in one program more than
    their tiles)."""
    bad = 0
    for dtype, group, (k, n), m, (split, slots, plan) in itertools.product(
        (torch.float16, torch.bfloat16), (32, 64, 128, 256), ((768, 1000), (512, 256), (2560, 1000)), (1, 37, 300),
        ((1, 0, None), (2, 0, None), (1, 7, None), (1, 0, "all"), (1, 0, "half")),
    ):
        w = _repacked(_rand_awq(k, n, dtype, dev, group))
        x = torch.randn(m, k, device=dev, dtype=dtype)
        ref = rp_dequant_matmul(x, w["qweight"], w["qzeros"], group).float()
        # other dot groupings once per shape: fp16, group 128
        groupings = (2, 8) if (dtype, group, m) == (torch.float16, 128, 300) else ()
        for (block_m, stages), per_wait in itertools.product(TILES, (DOTS_PER_WAIT, *groupings)):
            if not ring_fits(stages, per_wait):
                continue
            cols, m_tiles = -(-n // BLOCK_N), -(-m // block_m)
            tiles, half = cols * m_tiles, cols // 2
            plans = {None: None, "all": (0, min(7, tiles)), "half": (half, (cols - half) * m_tiles + 1)}
            try:
                got = launch_ws(
                    x, w["qweight"], w["qzeros"], group, block_m, stages, split, per_wait, slots, plan=plans[plan]
                )
            except OutOfResources:  # bf16 split-K with three groups: `run_rp` steps down to two
                continue
            err = (got.float() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-6)
            if not err < 2e-2:
                bad += 1
                print(
                    f"MISMATCH {dtype} g{group} k{k} n{n} m{m} split{split} slots{slots} plan {plan} tile{block_m} {per_wait} "
                    f"per wait: rel err {err:.3g}",
                    flush=True,
                )
    print("check:", "all ok" if not bad else f"{bad} mismatches", flush=True)
    return bad


def ws_settings(m: int, n: int, k: int, sms: int, groupings) -> list[tuple]:
    """The launch settings timed at one point: each tile and grouping with no split, split-K where
    the tiles leave SMs idle, and every plan that `balanced_tail` weighs (so that a refit of its
    model picks among timed plans), its own pick marked."""
    out = []
    blocks = k // 256
    for (block_m, stages), per_wait in itertools.product(TILES, groupings):
        if block_m < 256 <= m // 4 or not ring_fits(stages, per_wait):
            continue  # 128-token tiles only pay where 256 would leave SMs idle
        cols, m_tiles = -(-n // BLOCK_N), -(-m // block_m)
        tiles = cols * m_tiles
        wanted = (1,) if tiles >= sms else (1, round(sms / tiles), round(2 * sms / tiles))
        plans = tail_plans(cols, m_tiles, blocks, sms)
        # a split-K that is also one of the plans (the same launch) is timed once, as the plan
        splits = {nonempty_split(blocks, w) for w in wanted} - {p // tiles for w, p in plans if w == 0 and p % tiles == 0}
        out += [(block_m, stages, split, per_wait, None) for split in sorted(splits)]
        out += [(block_m, stages, 1, per_wait, plan) for plan in plans]
    return out


def label(settings: tuple, picked: tuple[int, int]) -> str:
    """`128/16 s2 pw4`: tokens / chunks in flight, split-K, dots per wait; a plan as `66+120` (whole
    columns + tail programs), `tail` where `balanced_tail` picks it."""
    block_m, stages, split, per_wait, plan = settings
    if plan is None:
        return f"{block_m}/{stages} s{split} pw{per_wait}"
    return f"{block_m}/{stages} {'tail ' if plan == picked else ''}{plan[0]}+{plan[1]} pw{per_wait}"


def time_points(dev, shapes, ms, groupings, group=128) -> list[dict]:
    rows = []
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    for (k, n), m in itertools.product(shapes, ms):
        nw = copies(n * k // 2)
        ws_ = [_repacked(_rand_awq(k, n, torch.float16, dev, group)) for _ in range(nw)]
        dense = [torch.randn(n, k, device=dev, dtype=torch.float16) for _ in range(copies(n * k * 2))]
        x = torch.randn(m, k, device=dev, dtype=torch.float16)
        row = {"k": k, "n": n, "m": m, "ws": {}}
        row["fp16"] = graph_time_us([lambda d=d, x=x: x @ d.t() for d in dense])
        row["vlq"] = graph_time_us([lambda w=w, x=x: w4a16_matmul_rp(x, w["qweight"], w["qzeros"], group) for w in ws_])
        for settings in ws_settings(m, n, k, sms, groupings):
            block_m, stages, split, per_wait, plan = settings
            name = label(settings, balanced_tail(-(-n // BLOCK_N), -(-m // block_m), k // 256, sms))
            try:
                row["ws"][name] = graph_time_us(
                    [
                        lambda w=w, x=x, a=settings[:4], plan=plan: launch_ws(
                            x, w["qweight"], w["qzeros"], group, *a, plan=plan
                        )
                        for w in ws_
                    ]
                )
            except Exception as exc:  # noqa: BLE001 - report and go on
                print("fail", name, repr(exc)[:200], flush=True)
        rows.append(row)
        fp16, vlq = row["fp16"], row["vlq"]
        line = f"{k}x{n} M={m}: fp16 {fp16:.1f} us, vlq {vlq:.1f} ({fp16 / vlq:.3f}x fp16)"
        for name, keep in (("best", lambda key: True), ("tail", lambda key: "tail" in key),
                           ("no tail", lambda key: "+" not in key)):
            keys = [key for key in row["ws"] if keep(key)]
            if keys:
                best = min(keys, key=row["ws"].get)
                t = row["ws"][best]
                line += f" | {name} {t:.1f} ({fp16 / t:.3f}x fp16, {vlq / t:.3f}x vlq) [{best}]"
        print(line, flush=True)
        print("    " + "; ".join(f"{key} {t:.1f}" for key, t in row["ws"].items()), flush=True)
        del ws_, dense
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", default="256,1024,4096", help="token counts to time, comma-separated")
    parser.add_argument(
        "--shapes", default=",".join(f"{k}x{n}" for k, n in SHAPES), help="weights to time, KxN, comma-separated"
    )
    parser.add_argument("--json-out", help="also write the timings (fp16, vlq and every ws setting, per point) here")
    parser.add_argument(
        "--groupings",
        default=f"2,{DOTS_PER_WAIT},8",
        help="dots each warpgroup issues between full waits, comma-separated: each is timed",
    )
    parser.add_argument("--skip-check", action="store_true", help="time without the correctness check first")
    args = parser.parse_args()
    try:
        groupings = sorted({int(v) for v in args.groupings.split(",")})
        ms = [int(v) for v in args.m.split(",")]
        shapes = [tuple(int(d) for d in shape.split("x")) for shape in args.shapes.split(",")]
    except ValueError:
        parser.error("--m and --groupings take comma-separated integers, --shapes KxN pairs")
    if any(len(shape) != 2 or shape[0] % 256 for shape in shapes):
        parser.error("--shapes: KxN pairs with K a multiple of 256")
    if not set(groupings) <= {1, 2, 4, 8}:
        parser.error("--groupings: dots per wait are 1, 2, 4 or 8 (groups tile a block's 8 dots)")
    dev = torch.device("cuda")
    if not (torch.cuda.is_available() and available(dev)):
        print("ws_probe needs an sm_90 GPU and a Triton with Gluon", file=sys.stderr)
        return 2
    print(torch.cuda.get_device_name(dev), flush=True)
    bad = 0 if args.skip_check else check(dev)
    rows = time_points(dev, shapes, ms, groupings)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"device": torch.cuda.get_device_name(dev), "rows": rows}, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
