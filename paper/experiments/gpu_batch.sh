#!/usr/bin/env bash
# One bounded GPU session (a lent H100/H200) running the issue-3/issue-4 sweeps side by side:
# student_taxi (6 workers), baselines_taxi (4) and stgcn_pems (3), 13 processes on one GPU.
# Usage on the GPU machine, from the repo root, with the data under .gpudata/:
#   OUT=/some/dir bash paper/experiments/gpu_batch.sh [seconds]
# SWEEPS="name:workers ..." picks other sweeps; records already finished elsewhere can be put
# in .gpurecords/ (carried) so that their runs are skipped.
# Each sweep is resumable. Records are written outside $OUT and tarred into $OUT/records.tgz
# every 20 s, so whatever finished comes back even when the device call hits its time limit.
# With many small processes on one GPU, CUDA time-slices between their contexts; the script
# starts the MPS daemon so that their kernels can overlap, and runs without it when a CUDA
# client cannot start under it.
set -u
BUDGET=${1:-480}
export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
REC=/tmp/fd-records
export FLOWDISTILL_DATA=$PWD/.gpudata FLOWDISTILL_RECORDS=$REC
export FLOWDISTILL_RUNS=/tmp/fd-runs FLOWDISTILL_LABELS=/tmp/fd-labels FLOWDISTILL_CACHE=/tmp/fd-cache
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
SWEEPS=${SWEEPS:-"student_taxi:6 baselines_taxi:4 stgcn_pems:3"}
mkdir -p "$REC"
[ -d .gpurecords ] && cp .gpurecords/*.json "$REC"/ 2>/dev/null
snapshot() { tar czf "$OUT/records.tgz.tmp" -C "$REC" . && mv "$OUT/records.tgz.tmp" "$OUT/records.tgz"; }
(while sleep 20; do snapshot; done) &
SNAP=$!
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

. paper/experiments/gpu_mps.sh
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"

sweep() {
  local left=$(( BUDGET - SECONDS ))
  timeout -k 10 -s TERM "$left" python3 -m benchmark.cli sweep "paper/experiments/$1.toml" \
    --workers "$2" > "$OUT/$1.log" 2>&1
  echo "$1 exit $? at ${SECONDS}s"
}
for sw in $SWEEPS; do sweep "${sw%%:*}" "${sw##*:}" & done
wait $(jobs -p | grep -v "^$SNAP$")
pkill -f spawn_main 2>/dev/null
for sw in $SWEEPS; do
  timeout 60 python3 -m benchmark.cli sweep "paper/experiments/${sw%%:*}.toml" --status
done
kill $SNAP; snapshot
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
echo "done at ${SECONDS}s"
