"""METR-LA, first week (T-GCN's "Los-loop"): 207 loop detectors in Los Angeles, speed every 5 min.

Raw format (T-GCN, Zhao et al., 2019): ``los_speed.csv``, 2016 rows x 207 columns, header = METR-LA
sensor ids (same order as DCRNN's ``graph_sensor_ids``), speed in mph, already imputed (no zeros
or NaN); 2012-03-01 00:00 .. 2012-03-07 23:55. ``los_adj.csv`` is a 207x207 weighted symmetric
adjacency without a header row (diagonal 1). ``graph_sensor_locations.csv`` (DCRNN, Li et al.,
ICLR 2018) has columns index, sensor_id, latitude, longitude.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..stdata import DataError, STData
from ._common import read_csv, regular_timestamps, square_matrix

SPEED_FILE = "los_speed.csv"
ADJ_FILE = "los_adj.csv"
LOCATIONS_FILE = "graph_sensor_locations.csv"
START = "2012-03-01T00:00"
NUM_NODES = 207


def _sensor_ids(columns: pd.Index, path: Path) -> list[int]:
    try:
        return [int(str(c).strip()) for c in columns]
    except ValueError as e:
        raise DataError(f"{path}: header must be integer sensor ids: {e}") from e


def load_metr_la_week(root: Path) -> STData:
    """Load ``metr_la_week``.

    Returns:
        STData with values float32 ``[2016, 207, 1]``, channels ["speed"], weighted adjacency
        from los_adj.csv, nodes with sensor_id, latitude, longitude.
    """
    speed_path = root / SPEED_FILE
    df = read_csv(speed_path, header=0, dtype=np.float64)
    ids = _sensor_ids(df.columns, speed_path)
    if len(ids) != NUM_NODES:
        raise DataError(f"{speed_path}: expected {NUM_NODES} sensor columns, got {len(ids)}")
    values = df.to_numpy(dtype=np.float32)[:, :, None]

    adj_path = root / ADJ_FILE
    adj = square_matrix(read_csv(adj_path, header=None).to_numpy(dtype=np.float64), NUM_NODES,
                        str(adj_path))

    loc_path = root / LOCATIONS_FILE
    loc = read_csv(loc_path)
    missing = {"sensor_id", "latitude", "longitude"} - set(loc.columns)
    if missing:
        raise DataError(f"{loc_path}: missing columns {sorted(missing)}")
    loc = loc.set_index(loc["sensor_id"].astype(int))
    absent = [i for i in ids if i not in loc.index]
    if absent:
        raise DataError(f"{loc_path}: no location for sensors {absent[:5]}")
    loc = loc.loc[ids]
    nodes = pd.DataFrame({"name": [f"sensor {i}" for i in ids], "sensor_id": ids,
                          "latitude": loc["latitude"].to_numpy(float),
                          "longitude": loc["longitude"].to_numpy(float)})
    return STData(
        name="metr_la_week",
        values=values,
        timestamps=regular_timestamps(START, values.shape[0], 5),
        adjacency=adj,
        nodes=nodes,
        channels=["speed"],
        steps_per_day=288,
        source=str(root),
        extra={"adjacency_kind": f"weighted, symmetric, diagonal 1 ({ADJ_FILE})"},
    )
