#!/usr/bin/env bash
# One bounded GPU session (a lent H100) running the issue-3/issue-4 sweeps side by side.
# Usage on the GPU machine, from the repo root, with the data under .gpudata/:
#   OUT=/some/dir bash paper/experiments/gpu_batch.sh [seconds]
# Each sweep is resumable. Records are written outside $OUT and tarred into $OUT/records.tgz
# every 20 s, so whatever finished comes back even when the device call hits its time limit
# (a first session lost most of its records by tarring only at the end).
set -u
BUDGET=${1:-420}
export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
REC=/tmp/fd-records
export FLOWDISTILL_DATA=$PWD/.gpudata FLOWDISTILL_RECORDS=$REC
export FLOWDISTILL_RUNS=/tmp/fd-runs FLOWDISTILL_LABELS=/tmp/fd-labels FLOWDISTILL_CACHE=/tmp/fd-cache
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$REC"
snapshot() { tar czf "$OUT/records.tgz.tmp" -C "$REC" . && mv "$OUT/records.tgz.tmp" "$OUT/records.tgz"; }
(while sleep 20; do snapshot; done) &
SNAP=$!
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
sweep() { timeout -k 10 -s TERM "$BUDGET" python3 -m benchmark.cli sweep "paper/experiments/$1.toml" \
            --workers "$2" > "$OUT/$1.log" 2>&1; echo "$1 exit $?"; }
sweep student_taxi 8 &
sweep baselines_taxi 11 &
sweep stgcn_pems 3 &
wait $(jobs -p | grep -v "^$SNAP$")
python3 -m benchmark.cli sweep paper/experiments/student_taxi.toml --status
python3 -m benchmark.cli sweep paper/experiments/baselines_taxi.toml --status
python3 -m benchmark.cli sweep paper/experiments/stgcn_pems.toml --status
tail -3 "$OUT"/*.log
kill $SNAP; snapshot
