#!/usr/bin/env bash
# The long-range lab's table in docs/results.md: every run of it, PARALLEL at a time, each with one
# thread, through the CLI. Usage: [PYTHON=.venv/bin/python] scripts/lab_sweep.sh OUTDIR [DEVICE=cpu] [PARALLEL=2] [RUNS=scripts/lab_runs.txt]
# RUNS has one run per line: PROBLEM T CELL SEED [more rnnkit lab flags]; '#' starts a comment.
# Writes OUTDIR/results.jsonl (each run's --json line, with its name) and OUTDIR/evals.jsonl (each
# evaluation of each run: name, step, metrics); the run directories go to OUTDIR/runs/NAME. A run whose
# directory already holds test.json is skipped, so the sweep can be stopped and started again.
set -u
PYTHON=${PYTHON:-python3}  # e.g. PYTHON=.venv/bin/python
out=${1:?usage: scripts/lab_sweep.sh OUTDIR [DEVICE] [PARALLEL] [RUNS]}
device=${2:-cpu}; parallel=${3:-2}; runs=${4:-$(dirname "$0")/lab_runs.txt}
mkdir -p "$out/runs"
export PYTHON OUT_DIR=$out DEVICE=$device OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
one() {  # PROBLEM T CELL SEED [FLAGS...]; order runs 2000 steps (the issue's budget), the others the default 3000,
  # and each stops at the first evaluation (every 250 steps) that meets the issue's target, to spare the CPU
  local p=$1 T=$2 cell=$3 seed=$4; shift 4
  local flags="$*" steps="" stop="mse<0.01"
  local name=$p-T$T-$cell-s$seed$(echo "$flags" | tr -d ' -' | sed 's/^\(.\)/-\1/')
  [ "$p" = order ] && steps="--steps 2000"
  [ "$p" = adding ] || stop="accuracy>=0.99"
  [ -f "$OUT_DIR/runs/$name/test.json" ] && return 0
  local start=$SECONDS
  "$PYTHON" -m rnnkit lab "$p" --cell "$cell" --length "$T" --seed "$seed" $steps --stop-when "$stop" --device "$DEVICE" $flags \
    --out "$OUT_DIR/runs/$name" --no-progress --json > "$OUT_DIR/runs/$name.json" 2> "$OUT_DIR/runs/$name.log"
  python3 - "$OUT_DIR" "$name" $(( SECONDS - start )) "$flags" <<'PY'
import json, sys
out, name, seconds, flags = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
text = open(f"{out}/runs/{name}.json").read().strip()
result = json.loads(text) if text else {"error": open(f"{out}/runs/{name}.log").read()[-500:]}
with open(f"{out}/results.jsonl", "a") as f:
    f.write(json.dumps({"name": name, "flags": flags, "seconds": seconds, **result}) + "\n")
with open(f"{out}/evals.jsonl", "a") as f:
    for line in open(f"{out}/runs/{name}/metrics.jsonl"):
        record = json.loads(line)
        if "eval" in record:
            f.write(json.dumps({"name": name, "step": record["step"], **record["eval"]}) + "\n")
PY
}
export -f one
grep -v '^\s*\(#\|$\)' "$runs" | xargs -P "$parallel" -L 1 bash -c 'one "$@"' _
