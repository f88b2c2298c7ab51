"""``metr_la_week``: METR-LA, first week (T-GCN's "Los-loop"): 207 loop detectors in Los
Angeles, speed every 5 min.

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

from ..catalogue import DatasetSpec, FileSpec, PromptText, register_dataset
from ..protocol import Protocol
from ..rawfiles import read_csv, regular_timestamps, square_matrix
from ..stdata import DataError, STData
from ._common import github_raw

SPEED_FILE = "los_speed.csv"
ADJ_FILE = "los_adj.csv"
LOCATIONS_FILE = "graph_sensor_locations.csv"
START = "2012-03-01T00:00"
NUM_NODES = 207

TGCN_REPO, TGCN_COMMIT = "lehaifeng/T-GCN", "219a2346f5bf68d54d91a948e7a41a08f9edc46b"
# PROVENANCE names no DCRNN commit: the branch is used and the sha256 pins the bytes.
DCRNN_URL = ("https://raw.githubusercontent.com/liyaguang/DCRNN/master/"
             "data/sensor_graph/graph_sensor_locations.csv")


def _tgcn(name: str, sha256: str, size: int) -> FileSpec:
    # the same blob lies in data/ and in T-GCN/T-GCN-PyTorch/data/ at the pinned commit
    return FileSpec(name, github_raw(TGCN_REPO, TGCN_COMMIT, f"data/{name}"), sha256, size,
                    mirrors=(github_raw(TGCN_REPO, TGCN_COMMIT,
                                        f"T-GCN/T-GCN-PyTorch/data/{name}"),))


FILES = (
    _tgcn(SPEED_FILE, "7b732d86ae32b2930595becba28aff39dacbfb2197e250fc0332e1744ce2cbf4", 3402125),
    _tgcn(ADJ_FILE, "7a6eb41e10677992b5af50f5ab187c6c05c5c3a92cb973950cfddbf857361e76", 111686),
    FileSpec(LOCATIONS_FILE, DCRNN_URL,
             "eb8ea96e07358b45d0e4ba3b89c2673fa20c54af50150249e627389e749ade6f", 6341),
)
PROTOCOL = Protocol(
    input_len=12, horizon=12, split_ratios=(0.7, 0.1, 0.2), null_value=0.0, mape_threshold=0.0,
    notes={"split": "7:1:2, the METR-LA convention (DCRNN)",
           "null_value": "speed 0 marks a missing reading (T-GCN's copy is already imputed)"})


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


register_dataset(DatasetSpec(
    id="metr_la_week",
    description="METR-LA first week (T-GCN Los-loop): 207 sensors, speed, 5 min, "
                "2012-03-01..2012-03-07",
    files=FILES, loader=load_metr_la_week, default_protocol=PROTOCOL,
    license="MIT (T-GCN-PyTorch, (c) 2021 martinwhl; DCRNN sensor locations, MIT)",
    citation="Zhao et al. T-GCN: A Temporal Graph Convolutional Network for Traffic "
             "Prediction. IEEE T-ITS 2020; Li et al. Diffusion Convolutional Recurrent Neural "
             "Network (METR-LA). ICLR 2018",
    steps_per_day=288, homepage=f"https://github.com/{TGCN_REPO}",
    prompt=PromptText(subject="traffic speed", place="Los Angeles County",
                      channel_noun="traffic {channel}")))
