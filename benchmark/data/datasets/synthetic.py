"""``synthetic``: generated in-process by :func:`benchmark.data.synthetic.make_synthetic` (daily
and weekly cycles, graph-diffused AR(1) noise); the default for tests and smoke runs."""

from __future__ import annotations

from pathlib import Path

from ..catalogue import DatasetSpec, register_dataset
from ..protocol import Protocol
from ..stdata import STData
from ..synthetic import make_synthetic

PROTOCOL = Protocol(
    input_len=12, horizon=12, split_ratios=(0.6, 0.2, 0.2), null_value=None, mape_threshold=1.0,
    notes={"null_value": "generated flows: zeros (clipped) are real", "mape_threshold": "|y| > 1"})


def load(root: Path | None, num_nodes: int = 12, num_days: int = 14, steps_per_day: int = 48,
         channels: int = 2, seed: int = 0) -> STData:
    return make_synthetic(num_nodes=num_nodes, num_days=num_days, steps_per_day=steps_per_day,
                          channels=channels, seed=seed)


register_dataset(DatasetSpec(
    id="synthetic",
    description="generated in-process: daily+weekly cycles, graph-diffused AR(1) noise "
                "(default 12 nodes, 14 days x 48, 2 channels)",
    files=(), loader=load, default_protocol=PROTOCOL,
    options={"num_nodes": "N (default 12)", "num_days": "days (default 14)",
             "steps_per_day": "default 48", "channels": "C (default 2)",
             "seed": "random seed (default 0)"},
    license="generated", citation="FlowDistill-Bench synthetic generator", steps_per_day=None))
