"""Shared fixtures: a small synthetic dataset under its default protocol, and the real-data
location (``FLOWDISTILL_DATA``, else ``../shared/data`` beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def real_data_dir() -> Path | None:
    env = os.environ.get("FLOWDISTILL_DATA")
    cand = Path(env) if env else REPO.parent / "shared" / "data"
    return cand if cand.is_dir() else None


@pytest.fixture(scope="session")
def synthetic_prepared():
    from benchmark.data.protocol import Protocol
    from benchmark.data.synthetic import make_synthetic
    from benchmark.data.windows import prepare

    data = make_synthetic(num_nodes=6, num_days=7, steps_per_day=24, channels=2, seed=0)
    return prepare(data, Protocol(input_len=12, horizon=12, split_ratios=(0.6, 0.2, 0.2),
                                  null_value=None))


@pytest.fixture
def needs_real_data():
    d = real_data_dir()
    if d is None:
        pytest.skip("real datasets not available (set FLOWDISTILL_DATA)")
    return d


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of tiny models (no OpenMP oversubscription on a
    shared CPU; tests/model_reference was computed with one thread); restored afterwards.
    Use as ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
