"""Issue 11 §2: the NYC datasets' default protocol is the FlowDistill release's zero mask
(targets <= 0 masked in loss and metrics), and records carry the all-targets view too."""

import numpy as np
import pytest

from benchmark.data.registry import get_dataset_spec

NYC = ("nyc_taxi_manhattan", "nyc_bike_manhattan", "nyc_taxi_grid")


@pytest.mark.parametrize("dataset", NYC)
def test_nyc_default_protocol_masks_nonpositive_targets(dataset):
    p = get_dataset_spec(dataset).default_protocol
    assert p.mask_threshold == 0.0 and p.null_value is None
    assert "release" in p.notes["mask_threshold"]


def test_last_value_on_taxi_reports_both_views(needs_real_data, tmp_path, monkeypatch):
    """The acceptance check: last-value on nyc_taxi_manhattan's test split, MAE over non-zero
    targets in the protocol's view and over all targets in ``all_targets``, each equal to a
    direct numpy computation over the same windows."""
    monkeypatch.setenv("FLOWDISTILL_DATA", str(needs_real_data))
    from benchmark.experiment import RunSpec, load_prepared, run_experiment
    from benchmark.trainer import TrainConfig

    spec = RunSpec(model="last-value", dataset="nyc_taxi_manhattan",
                   train=TrainConfig(progress=False), efficiency=None)
    rec = run_experiment(spec, tmp_path / "rec", tmp_path / "runs")
    test = rec.metrics["test"]
    prepared = load_prepared(spec)
    values = prepared.data.values[:, :, list(prepared.target_channel_idx)]
    starts = prepared.starts("test")
    t_in, h = prepared.protocol.input_len, prepared.protocol.horizon
    y = np.stack([values[s + t_in:s + t_in + h] for s in starts]).astype(np.float64)
    last = np.stack([values[s + t_in - 1] for s in starts]).astype(np.float64)[:, None]
    err = np.abs(y - last)
    assert test["overall"]["mae"] == pytest.approx(err[y > 0].mean(), rel=1e-6)
    assert test["all_targets"]["overall"]["mae"] == pytest.approx(err.mean(), rel=1e-6)
    assert test["overall"]["mae"] > test["all_targets"]["overall"]["mae"]
