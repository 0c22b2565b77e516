"""Summarize where a kernel's warps stall, from ncu's per-instruction sampling (source page, SASS).

ncu -i REPORT --page source --csv --print-source sass > sass.csv
python benchmarks/ncu_stalls.py sass.csv [--min-samples 4]

Prints the stall reasons over the whole kernel, then every SASS instruction with at least
`--min-samples` samples in address order (offset from the kernel's first instruction, samples,
times executed, the instruction, its three main stall reasons): the loop structure stays readable
and the stalls show where they happen. The results' `*-stalls.txt` files are this script's output.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter

SAMPLES = "Warp Stall Sampling (All Samples)"


def number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", help="ncu --page source --csv --print-source sass output")
    parser.add_argument("--min-samples", type=int, default=4, help="list instructions with at least this many samples")
    args = parser.parse_args()
    try:
        with open(args.csv, newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        print(f"ncu_stalls: cannot read {args.csv}: {exc}", file=sys.stderr)
        return 2
    header_at = next((i for i, row in enumerate(rows) if row and row[0] == "Address"), None)
    if header_at is None or SAMPLES not in rows[header_at]:
        print(f"ncu_stalls: {args.csv} has no per-instruction stall sampling (want ncu's source page as CSV)", file=sys.stderr)
        return 2
    header, data = rows[header_at], [row for row in rows[header_at + 1 :] if len(row) == len(rows[header_at])]
    if not data:
        print(f"ncu_stalls: {args.csv} lists no instructions", file=sys.stderr)
        return 2
    column = {name: i for i, name in enumerate(header)}
    reasons = [name for name in header if name.startswith("stall_") and "Not Issued" not in name]
    total = sum(number(row[column[SAMPLES]]) for row in data) or 1.0
    by_reason = Counter({name[6:]: sum(number(row[column[name]]) for row in data) for name in reasons})
    print(f"{total:.0f} samples; by reason: " + ", ".join(f"{r} {100 * n / total:.1f}%" for r, n in by_reason.most_common(8)))
    base = int(data[0][column["Address"]], 16)
    for row in data:
        samples = number(row[column[SAMPLES]])
        if samples < args.min_samples:
            continue
        top = sorted(((number(row[column[name]]), name[6:]) for name in reasons), reverse=True)[:3]
        print(
            f"{int(row[column['Address']], 16) - base:6x} {samples:5.0f} {number(row[column['Instructions Executed']]):8.0f}  "
            f"{row[column['Source']].strip()[:64]:64s} " + " ".join(f"{name}={n:.0f}" for n, name in top if n)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
