#!/usr/bin/env bash
# The triton backend on a machine with CUDA, in one command (see README "On a GPU"):
#   1. triton imports, and which versions run (GPU, driver, torch, CUDA, triton);
#   2. scripts/check_triton_cuda.py: triton == reference on CUDA for every cell x layers x directions x
#      lengths, float64 (1e-10) and float32 with TF32 off (1e-5 relative), and bf16 autocast;
#   3. the CPU interpreter tests under this machine's triton (the kernels must run on its older triton too);
#   4. `rnnkit bench --device cuda` for every cell with backend triton, then fused, each row with its ratio to
#      nn.LSTM / nn.GRU (cuDNN) in the same run: the tables for docs/results.md.
# Until this has passed on a GPU and its tables show triton faster than fused for a cell, `auto` keeps fused.
# Output: the console and $OUT (default /tmp/gpu_triton). Exit status: 1 if a check failed.
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/gpu_triton}
mkdir -p "$OUT"
status=0
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
    | tee -a "$OUT/device.txt" || { echo "triton does not import: pip install triton"; exit 1; }
timeout 300 python3 scripts/check_triton_cuda.py --device cuda 2>&1 | tee "$OUT/check_triton_cuda.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
TRITON_INTERPRET=1 timeout 120 python3 -m pytest -q -x -p no:cacheprovider tests/test_triton.py -m "not slow" 2>&1 \
    | tail -5 | tee "$OUT/pytest_triton_interpreter.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
for backend in triton fused; do
    timeout 300 python3 -m rnnkit bench --device cuda --backend $backend --rounds 2 --min-run-time 0.1 --markdown \
        2>/dev/null | tee "$OUT/bench_cuda_$backend.md"
done
exit $status
