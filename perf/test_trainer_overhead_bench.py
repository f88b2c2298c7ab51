"""Seconds per epoch of every gradient-trained registered model on nyc_taxi_manhattan: the
trainer against a bare forward/backward loop over the same batches (:mod:`perf.trainer_overhead`
has the protocol and the side-by-side script that writes results/trainer_overhead/).

Run ``pytest perf --benchmark-only -k trainer_overhead`` (``tox -e bench``); compare the two
sides within a group (``--benchmark-group-by=group``, the default). An epoch here is
``FLOWDISTILL_BENCH_BATCHES`` training batches (default 4) of the model's recipe and the first
``FLOWDISTILL_BENCH_VAL`` validation windows (default 256), on ``FLOWDISTILL_BENCH_DEVICE``
(default cpu). Needs the real data (``FLOWDISTILL_DATA``).
"""

from __future__ import annotations

import os

import pytest

from perf.trainer_overhead import Case, trained_models

MODELS = trained_models()[0]
BATCHES = int(os.environ.get("FLOWDISTILL_BENCH_BATCHES", "4"))
VAL_WINDOWS = int(os.environ.get("FLOWDISTILL_BENCH_VAL", "256"))
DEVICE = os.environ.get("FLOWDISTILL_BENCH_DEVICE", "cpu")


@pytest.fixture(scope="module")
def cases():
    from benchmark.data.registry import locate

    try:
        locate("nyc_taxi_manhattan", download=False)
    except Exception as e:  # noqa: BLE001 - any reason the files are not here
        pytest.skip(f"nyc_taxi_manhattan not available (set FLOWDISTILL_DATA): {e}")
    return {}


@pytest.mark.parametrize("side", ["trainer", "bare"])
@pytest.mark.parametrize("model_name", MODELS)
def test_trainer_overhead(benchmark, cases, model_name, side, torch_threads):
    if model_name not in cases:
        cases.clear()  # one model's data and weights at a time
        cases[model_name] = Case.build(model_name, train_batches=BATCHES,
                                       val_windows=VAL_WINDOWS, device=DEVICE)
    case = cases[model_name]
    run = case.trainer_epoch if side == "trainer" else case.bare_epoch
    benchmark.group = f"epoch {model_name}"
    benchmark.extra_info.update(model=model_name, side=side, train_batches=BATCHES,
                                val_windows=VAL_WINDOWS, batch_size=case.config.batch_size,
                                device=DEVICE, threads=torch_threads)
    out = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    assert out["train_s"] > 0 and out["val_mae"] == out["val_mae"]  # finite, not NaN
