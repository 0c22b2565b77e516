#!/usr/bin/env bash
# Run on the lent GPU machine, from the repository root: each argument in turn, logs under $OUT.
#   test    tests/test_kernels.py on the GPU (-n 12 where pytest-xdist is installed)
#   gemm    benchmarks/gemm_bench.py   (vlq vs fp16 cuBLAS vs the read floor vs AutoAWQ)
#   decode  benchmarks/decode_bench.py (7B-shaped end-to-end decode, fp16 vs w4a16)
#   ws      benchmarks/ws_probe.py     (the warp-specialized kernel vs fp16 and vlq's dispatch; sm_90)
#   other   run as a shell command
# vlq is used from the tree (PYTHONPATH), and AutoAWQ 0.2.9's source from .whl/site when it is
# there. That machine has no network, so fetch the source here first and carry `.whl`:
#   pip download --no-deps autoawq==0.2.9 -d .whl/dl && mkdir -p .whl/site &&
#   tar xzf .whl/dl/autoawq-0.2.9.tar.gz -C .whl && mv .whl/autoawq-0.2.9/awq .whl/site/
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/.whl/site"
OUT="${OUT:-.}"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for step in "$@"; do
  case "$step" in
    test)
      workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 12")
      # shellcheck disable=SC2086
      timeout 240 python3 -m pytest tests/test_kernels.py -p no:warnings -rfE $workers >"$OUT/test.log" 2>&1
      echo "pytest rc=$?" >>"$OUT/test.log"
      tail -5 "$OUT/test.log" ;;
    gemm) timeout 300 python3 benchmarks/gemm_bench.py --json-out "$OUT/gemm.json" 2>&1 | tee "$OUT/gemm.log" ;;
    decode) timeout 300 python3 benchmarks/decode_bench.py --json-out "$OUT/decode.json" 2>&1 | tee "$OUT/decode.log" ;;
    ws) timeout 400 python3 benchmarks/ws_probe.py --json-out "$OUT/ws.json" 2>&1 | tee "$OUT/ws.log" ;;
    *) echo "+ $step"; bash -c "$step" 2>&1 | tee -a "$OUT/cmd.log" ;;
  esac
done
