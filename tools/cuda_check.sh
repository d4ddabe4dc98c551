#!/bin/bash
# The CUDA backend's checks and benchmarks on a machine with an NVIDIA GPU, in one go:
#   1. the CUDA tests (every kernel against the CPU reference, the whole model against the CPU
#      path), then again under compute-sanitizer memcheck and racecheck;
#   2. greedy tokens of the full-size 2B-4T-shaped random model on CPU and CUDA, compared;
#   3. bitnet bench --device cuda, and transformers' BitNetForCausalLM on the same model
#      (tools/hf_bench.py) when torch is installed.
#
#   tools/cuda_check.sh [BIN_DIR] [OUT_DIR]
#
# BIN_DIR holds bitnet and bitnet_tests (default: build/, built here if missing); OUT_DIR gets
# the logs (default: a temporary directory).
set -uo pipefail
bin=${1:-build}
out=${2:-$(mktemp -d)}
mkdir -p "$out"
model=${BITNET_CHECK_MODEL_DIR:-/tmp/bitnet-2b4t-random}
if [ ! -x "$bin/bitnet" ]; then
  cmake -S . -B "$bin" -G Ninja && cmake --build "$bin" || exit 1
fi
status=0
step() { echo; echo "== $*"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv

step "CUDA tests"
"$bin/bitnet_tests" --gtest_filter='Cuda*' 2>&1 | tee "$out/tests.log" | grep -E '^\[ +(OK|FAILED|SKIPPED|PASSED) +\]|Failure|error' || true
grep -q '^\[  PASSED  \]' "$out/tests.log" && ! grep -q '^\[  FAILED  \]' "$out/tests.log" || status=1
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    step "compute-sanitizer --tool $tool"
    timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 99 "$bin/bitnet_tests" \
      --gtest_filter='CudaKernels*:CudaModel*' >"$out/sanitizer-$tool.log" 2>&1
    rc=$?
    tail -n 3 "$out/sanitizer-$tool.log"
    [ $rc -eq 0 ] || { echo "compute-sanitizer $tool: exit $rc"; status=1; }
  done
fi

step "full-size random model: greedy tokens, CPU vs CUDA"
[ -f "$model/config.json" ] || "$bin/bitnet" make-model -q --preset 2b4t --variant packed -o "$model"
for device in cpu cuda; do
  "$bin/bitnet" run -m "$model" --device "$device" -p "The quick brown fox" -n 32 --temp 0 --json \
    >"$out/run-$device.json" 2>"$out/run-$device.log" || { cat "$out/run-$device.log"; status=1; }
done
/usr/bin/env python3 - "$out" <<'PY' || status=1
import json, sys
cpu, gpu = (json.load(open(f"{sys.argv[1]}/run-{d}.json")) for d in ("cpu", "cuda"))
same = cpu["ids"] == gpu["ids"]
print(f"cpu  {cpu['gen_tokens_per_s']:8.1f} tok/s {cpu['ids']}")
print(f"cuda {gpu['gen_tokens_per_s']:8.1f} tok/s {gpu['ids']}")
print("greedy tokens identical" if same else "GREEDY TOKENS DIFFER")
sys.exit(0 if same else 1)
PY

step "bitnet bench --device cuda"
bench() { "$bin/bitnet" bench -m "$model" --device cuda -r 3 "$@" | tee -a "$out/bench.md" || status=1; }
bench -p 512,4096 -n 0
bench -p 0 -n 128 -d 0,1024,3968
bench -p 0 -n 128 -b 8,32

if python3 -c 'import torch, transformers' 2>/dev/null; then
  step "transformers BitNetForCausalLM, same model and GPU"
  python3 tools/hf_bench.py "$model" --prompt 128 --gen 128 | tee "$out/hf-bench.json" || status=1
  python3 tools/hf_bench.py "$model" --prompt 128 --gen 64 --batch 32 | tee "$out/hf-bench-b32.json" || status=1
fi
echo
echo "cuda_check: $([ $status -eq 0 ] && echo passed || echo FAILED) (logs in $out)"
exit $status
