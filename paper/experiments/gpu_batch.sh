#!/usr/bin/env bash
# One bounded GPU session (a lent H100) running the issue-3/issue-4 sweeps side by side.
# Usage on the GPU machine, from the repo root, with the data under .gpudata/:
#   OUT=/some/dir bash paper/experiments/gpu_batch.sh [seconds]
# Each sweep is resumable; records land in $OUT/records and are tarred at the end.
set -u
BUDGET=${1:-420}
export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export FLOWDISTILL_DATA=$PWD/.gpudata FLOWDISTILL_RECORDS=$OUT/records
export FLOWDISTILL_RUNS=/tmp/fd-runs FLOWDISTILL_LABELS=/tmp/fd-labels FLOWDISTILL_CACHE=/tmp/fd-cache
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT/records"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
sweep() { timeout -s INT "$BUDGET" python3 -m benchmark.cli sweep "paper/experiments/$1.toml" \
            --workers "$2" > "$OUT/$1.log" 2>&1; echo "$1 exit $?"; }
sweep student_taxi 8 &
sweep baselines_taxi 11 &
sweep stgcn_pems 3 &
wait
python3 -m benchmark.cli sweep paper/experiments/student_taxi.toml --status
python3 -m benchmark.cli sweep paper/experiments/baselines_taxi.toml --status
python3 -m benchmark.cli sweep paper/experiments/stgcn_pems.toml --status
tail -3 "$OUT"/*.log
(cd "$OUT" && tar czf records.tgz records && rm -rf records)
