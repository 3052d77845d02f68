#!/usr/bin/env bash
# The GPU checks of docs/results.md, in one command for a machine with CUDA (the device tool):
# correctness of fused / scan / native on CUDA, the bench against cuDNN, the scan benchmark, and
# the CPU test suite under that machine's torch (an older one than the pinned 2.13). Output: $OUT.
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" | tee -a "$OUT/device.txt"
timeout 150 python3 scripts/check_cuda.py --device cuda 2>&1 | tee "$OUT/check_cuda.txt"
timeout 120 python3 -m pytest -q -x -p no:cacheprovider -n 12 tests --ignore=tests/tasks/test_tag.py 2>&1 | tail -25 | tee "$OUT/pytest_device_torch.txt"
timeout 200 python3 -m rnnkit bench --device cuda --rounds 2 --min-run-time 0.1 --markdown 2>/dev/null | tee "$OUT/bench_cuda.md"
timeout 90 python3 benchmarks/scan.py --device cuda --rounds 3 --min-run-time 0.1 --shape 32,100,128,256 --shape 16,512,128,1024 --shape 8,4096,64,256 2>/dev/null | tee "$OUT/scan_cuda.md"
