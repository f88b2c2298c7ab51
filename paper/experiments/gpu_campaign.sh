#!/usr/bin/env bash
# One lent GPU session of the campaign (campaigns/gpu.toml, issue 13): the next unfinished runs of
# the priority list, several at once on the one GPU, snapshots (records, checkpoints of unfinished
# runs, status.json, log) into $OUT every 20 s, running runs parked at a checkpoint and the
# command ended before the time given (default 540 s). Each session goes on where the last ended.
# Usage on the GPU machine, from the repo root, with the data under .gpudata/ and, from the second
# session on, the files the last one returned under .campaign/ (carried):
#   OUT=/some/dir bash paper/experiments/gpu_campaign.sh [seconds]
# Back home: flowdistill campaign collect <returned folder>   (records into results/records)
#            flowdistill campaign status --snapshot <returned folder>
set -u
BUDGET=${1:-540}
export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export FLOWDISTILL_DATA=$PWD/.gpudata FLOWDISTILL_LABELS=/tmp/fd-labels
export FLOWDISTILL_CACHE=/tmp/fd-cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
. paper/experiments/gpu_mps.sh
resume=()
[ -f .campaign/status.json ] && resume=(--resume-from .campaign)
python3 -m benchmark.cli campaign run paper/experiments/campaigns/gpu.toml \
  --deadline "$(( BUDGET - SECONDS ))" --snapshot "$OUT" \
  --records /tmp/fd-records --runs /tmp/fd-runs "${resume[@]}"
rc=$?
python3 -m benchmark.cli campaign status --snapshot "$OUT"
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
echo "campaign exit $rc at ${SECONDS}s"
exit $rc
