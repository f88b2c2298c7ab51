# Sourced by the GPU scripts beside it: start the CUDA MPS daemon so that the kernels of the many
# small processes sharing one lent GPU can overlap (without it CUDA time-slices between their
# contexts); go on without it when a CUDA client cannot start under it.
cuda_ok() {
  timeout 60 python3 -c "import torch; x = torch.ones(8, device='cuda'); print('cuda ok', float(x.sum()))"
}
if command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d && cuda_ok; then
    echo "MPS on"
  else
    echo "MPS unavailable; running without it"
    echo quit | nvidia-cuda-mps-control 2>/dev/null
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    cuda_ok || echo "CUDA check failed"
  fi
else
  echo "no nvidia-cuda-mps-control; running without MPS"
fi
