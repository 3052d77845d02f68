#!/usr/bin/env bash
# The long-range lab's table in docs/results.md: every run of it, PARALLEL at a time, each with one
# thread, through the CLI. Usage: scripts/lab_sweep.sh OUTDIR [DEVICE=cpu] [PARALLEL=2] [EXTRA flags...]
# Writes OUTDIR/results.jsonl (each run's --json line, with its name) and OUTDIR/evals.jsonl (each
# evaluation of each run: name, step, metrics); the run directories go to OUTDIR/runs/NAME.
set -u
out=${1:?usage: scripts/lab_sweep.sh OUTDIR [DEVICE] [PARALLEL] [EXTRA...]}
device=${2:-cpu}; parallel=${3:-2}; shift $(( $# < 3 ? $# : 3 )); extra="$*"
mkdir -p "$out/runs"
export OUT_DIR=$out DEVICE=$device EXTRA=$extra OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
one() {  # PROBLEM T CELL SEED; order runs 2000 steps (the issue's budget), the others the default 3000
  local p=$1 T=$2 cell=$3 seed=$4 name=$1-T$2-$3-s$4 steps=""
  [ "$p" = order ] && steps="--steps 2000"
  local start=$SECONDS
  python3 -m rnnkit lab "$p" --cell "$cell" --length "$T" --seed "$seed" $steps --device "$DEVICE" $EXTRA \
    --out "$OUT_DIR/runs/$name" --no-progress --json > "$OUT_DIR/runs/$name.json" 2> "$OUT_DIR/runs/$name.log"
  python3 - "$OUT_DIR" "$name" $(( SECONDS - start )) <<'PY'
import json, sys
out, name, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(f"{out}/runs/{name}.json").read().strip()
result = json.loads(text) if text else {"error": open(f"{out}/runs/{name}.log").read()[-500:]}
with open(f"{out}/results.jsonl", "a") as f:
    f.write(json.dumps({"name": name, "seconds": seconds, **result}) + "\n")
with open(f"{out}/evals.jsonl", "a") as f:
    for line in open(f"{out}/runs/{name}/metrics.jsonl"):
        record = json.loads(line)
        if "eval" in record:
            f.write(json.dumps({"name": name, "step": record["step"], **record["eval"]}) + "\n")
PY
}
export -f one
cat <<'RUNS' | xargs -P "$parallel" -L 1 bash -c 'one "$@"' _
adding 100 lstm 0
adding 100 gru 0
adding 100 peephole_lstm 0
adding 100 rnn_tanh 0
adding 100 lstm 1
adding 100 gru 1
adding 100 peephole_lstm 1
adding 100 rnn_tanh 1
adding 100 lstm 2
adding 100 gru 2
adding 100 peephole_lstm 2
adding 100 rnn_tanh 2
copy 20 lstm 0
copy 20 gru 0
order 100 lstm 0
order 100 gru 0
copy 20 lstm 1
copy 20 gru 1
order 100 lstm 1
order 100 gru 1
copy 20 lstm 2
copy 20 gru 2
order 100 lstm 2
order 100 gru 2
adding 100 mingru 0
adding 100 minlstm 0
adding 100 indrnn 0
adding 200 lstm 0
adding 200 gru 0
adding 400 lstm 0
adding 400 gru 0
adding 100 mingru 1
adding 100 minlstm 1
adding 100 indrnn 1
adding 100 mingru 2
adding 100 minlstm 2
adding 100 indrnn 2
adding 200 lstm 1
adding 200 gru 1
adding 400 lstm 1
adding 400 gru 1
adding 200 lstm 2
adding 200 gru 2
adding 400 lstm 2
adding 400 gru 2
adding 200 rnn_tanh 0
RUNS
