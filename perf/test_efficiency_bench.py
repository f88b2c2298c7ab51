"""Forward latency of the FlowDistill student against STGCN and Graph WaveNet at the same N.

69 nodes (synthetic kNN graph), T_in = T_out = 12, C = 2, batch 1 and batch 64, eval mode, no
grad, one torch thread. Run ``pytest benchmarks --benchmark-only`` (``tox -e bench``); compare
within a group (``--benchmark-group-by=group``, the default). The same protocol against N is
``python -m perf.scaling``.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.models import build_model, count_parameters
from perf.scaling import synthetic_batch

MODELS = ("flowdistill", "stgcn", "gwnet")
BATCH_SIZES = (1, 64)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("model_name", MODELS)
def test_forward_latency(benchmark, model_name, batch_size, bench_nodes, bench_context,
                         scaling_config, torch_threads):
    torch.manual_seed(0)
    model = build_model(model_name, bench_context).eval()
    batch = synthetic_batch(batch_size, bench_nodes, scaling_config, seed=batch_size)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return model(batch)

    benchmark.group = f"forward N={bench_nodes} batch={batch_size}"
    benchmark.extra_info.update(model=model_name, num_nodes=bench_nodes, batch_size=batch_size,
                                params=count_parameters(model), device="cpu",
                                threads=torch_threads)
    y = benchmark(forward)
    assert y.shape == (batch_size, scaling_config.horizon, bench_nodes, scaling_config.channels)
