"""Fixtures of the pytest-benchmark efficiency benchmarks (``pytest benchmarks --benchmark-only``).

The project's pytest ``addopts`` carry ``--benchmark-disable`` (so the unit tests never time
anything), and pytest-benchmark refuses ``--benchmark-only`` together with it; asking for
``--benchmark-only`` therefore turns benchmarking back on here (as ``--benchmark-enable`` would).
Torch runs with ``FLOWDISTILL_BENCH_THREADS`` threads (default 1: steadier on a shared machine).
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("benchmark_only", default=False):
        config.option.benchmark_enable = True


@pytest.fixture(scope="session", autouse=True)
def torch_threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("FLOWDISTILL_BENCH_THREADS", "1")))
    yield torch.get_num_threads()
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def scaling_config():
    """T_in = T_out = 12, C = 2, 48 slots a day, 8-NN graph, seed 0 (perf.scaling)."""
    from perf.scaling import ScalingConfig

    return ScalingConfig()


@pytest.fixture(scope="session")
def bench_nodes() -> int:
    """N of the benchmarks (the number of Manhattan taxi zones in the paper's data)."""
    return 69


@pytest.fixture(scope="session")
def bench_context(scaling_config, bench_nodes):
    """The :class:`~benchmark.models.ModelContext` of an N-node synthetic kNN graph."""
    from perf.scaling import model_context

    return model_context(bench_nodes, scaling_config)
