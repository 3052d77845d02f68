#!/usr/bin/env bash
# Second device run: check_cuda after flatten_parameters, native on cuDNN, bf16 autocast on an AMX host CPU.
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
timeout 150 python3 scripts/check_cuda.py --device cuda 2>&1 | tee "$OUT/check_cuda.txt"
timeout 100 python3 -m rnnkit bench --device cuda --rounds 3 --min-run-time 0.1 --cells rnn_tanh,lstm,gru --markdown 2>/dev/null | tee "$OUT/bench_cuda_native.md"
C=lstm,peephole_lstm,layernorm_lstm,cifg_lstm,gru,cho_gru,indrnn,mingru,minlstm
timeout 120 python3 -m rnnkit bench --threads 2 --rounds 2 --shape 64,256,256,512 --mode training --cells $C --markdown 2>/dev/null | tee "$OUT/bench_cpu_fp32.md"
timeout 120 python3 -m rnnkit bench --threads 2 --rounds 2 --shape 64,256,256,512 --mode training --cells $C --autocast bfloat16 --markdown 2>/dev/null | tee "$OUT/bench_cpu_bf16.md"
