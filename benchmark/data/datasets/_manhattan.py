"""NYC Manhattan zones (taxi or Citi Bike): 69 TLC taxi zones, inflow/outflow every 30 minutes.

Shared by ``nyc_taxi_manhattan`` and ``nyc_bike_manhattan``: the raw format, the zone graph and
table, the default protocol and the citation.

Raw format (Deep-NYC-Taxi-Bike, Evens1sen et al., ITSC 2022): two ``.npz`` files, key ``arr_0``,
float64 ``[35088, 69]`` (2019-01-01 00:00 .. 2020-12-31 23:30, 731 days x 48 slots):
``*-inflow.npz`` (drop-offs per zone) and ``*-outflow.npz`` (pick-ups per zone). Graph files are
CSV matrices whose first row is a header ``0..68``: ``W_adj_matrix.csv`` (binary zone contiguity)
and ``W_od_{taxi,bike}.csv`` (symmetric origin-destination weights in [0, 1]).
``manhattan_zones.csv`` maps ``zone_id`` (TLC LocationID) to ``graph_id`` (row/column index).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..files import FileSpec
from ..protocol import Protocol
from ..rawfiles import (
    check_choice,
    load_npz_key,
    read_csv,
    regular_timestamps,
    require,
    square_matrix,
)
from ..stdata import DataError, STData
from ._common import MAPE_NOTE, ZERO_MASK_NOTE, github_raw

NUM_ZONES = 69
NUM_STEPS = 35088
START = "2019-01-01T00:00"
STEP_MINUTES = 30

FILES = {
    "taxi": ("201901-202012-NYCtaxi-inflow.npz", "201901-202012-NYCtaxi-outflow.npz",
             "W_od_taxi.csv"),
    "bike": ("201901-202012-NYCbike-inflow.npz", "201901-202012-NYCbike-outflow.npz",
             "W_od_bike.csv"),
}
ADJ_FILE = "W_adj_matrix.csv"
ZONES_FILE = "manhattan_zones.csv"

# --- pinned source (see each dataset's PROVENANCE.txt) ------------------------------------------
REPO, COMMIT = "Evens1sen/Deep-NYC-Taxi-Bike", "097aa2d8177392339b089ed940c6ccc2d469dd97"
HOMEPAGE = f"https://github.com/{REPO}"
ZONES_DIR = "data-NYCZones"


def source_url(path: str) -> str:
    """URL of ``path`` in the pinned Deep-NYC-Taxi-Bike commit."""
    return github_raw(REPO, COMMIT, path)


ADJ_SPEC = FileSpec(ADJ_FILE, source_url(f"{ZONES_DIR}/adjmatrix/{ADJ_FILE}"),
                    "1822444cccf3545b6d2b410c0f36071f495a5f5ba6e65020f15f07359a60f9a9", 9859)
ZONES_SPEC = FileSpec(ZONES_FILE, source_url(f"{ZONES_DIR}/zones/{ZONES_FILE}"),
                      "8b06eb185812d95c19a84951861b9a40a16672b522694238ff364cd369e850ec", 1836)

PROTOCOL = Protocol(
    input_len=12, horizon=12, split_ratios=(0.5, 0.3, 0.2), time_range=(0, 17520),
    null_value=None, mask_threshold=0.0, mape_threshold=0.0,
    notes={"time_range": "2019 only (17,520 half-hours): FlowDistill's one-year 30-min setting; "
                         "2020 has the COVID collapse",
           "split": "5:3:2 chronological as in the FlowDistill authors' code",
           "mask_threshold": ZERO_MASK_NOTE, "mape_threshold": MAPE_NOTE})
CITATION = ("Forecasting Regional Multimodal Transportation Demand with Graph Neural "
            "Networks: An Open Dataset. IEEE ITSC 2022. "
            "https://github.com/Evens1sen/Deep-NYC-Taxi-Bike")
OPTIONS = {"adjacency": "'binary' (default; W_adj_matrix.csv zone contiguity) or "
                        "'od' (W_od_*.csv origin-destination weights)"}
PLACE = "Manhattan, New York City"


def _flow(path: Path) -> np.ndarray:
    a = load_npz_key(require(path), "arr_0")
    if a.shape != (NUM_STEPS, NUM_ZONES):
        raise DataError(f"{path}: expected shape ({NUM_STEPS}, {NUM_ZONES}), got {a.shape}")
    return a


def _matrix(path: Path) -> np.ndarray:
    df = read_csv(path, header=0)  # first row is the header 0..68
    return square_matrix(df.to_numpy(dtype=np.float64), NUM_ZONES, str(path))


def _zones(path: Path) -> pd.DataFrame:
    df = read_csv(path)
    missing = {"zone_id", "graph_id", "zone_name"} - set(df.columns)
    if missing:
        raise DataError(f"{path}: missing columns {sorted(missing)}")
    df = df.sort_values("graph_id").reset_index(drop=True)
    if df["graph_id"].tolist() != list(range(NUM_ZONES)):
        raise DataError(f"{path}: graph_id must be 0..{NUM_ZONES - 1} exactly once each")
    names = df["zone_name"].astype(str)
    dup = names.duplicated(keep=False)
    # Zones 103/104/105 share one TLC name; suffix the zone id so node names stay unique.
    names = names.where(~dup, names + " (zone " + df["zone_id"].astype(str) + ")")
    return pd.DataFrame({"name": names, "zone_id": df["zone_id"].astype(int),
                         "graph_id": df["graph_id"].astype(int),
                         "zone_name": df["zone_name"].astype(str)})


def load_manhattan(root: Path, mode: str, adjacency: str = "binary") -> STData:
    """Load ``nyc_taxi_manhattan`` (mode="taxi") or ``nyc_bike_manhattan`` (mode="bike").

    Args:
        root: directory holding the dataset's files.
        mode: "taxi" or "bike".
        adjacency: "binary" (W_adj_matrix.csv, zone contiguity, zero diagonal) or "od"
            (W_od_<mode>.csv, origin-destination weights, non-zero diagonal).

    Returns:
        STData with values float32 ``[35088, 69, 2]``, channels ["inflow", "outflow"].
    """
    check_choice("mode", mode, tuple(FILES))
    check_choice("adjacency", adjacency, ("binary", "od"))
    inflow_f, outflow_f, od_f = FILES[mode]
    values = np.stack([_flow(root / inflow_f), _flow(root / outflow_f)], axis=-1)
    adj_file = ADJ_FILE if adjacency == "binary" else od_f
    adj = _matrix(root / adj_file)
    kind = ("binary zone contiguity" if adjacency == "binary"
            else f"origin-destination weights ({mode})")
    return STData(
        name=f"nyc_{mode}_manhattan",
        values=values.astype(np.float32),
        timestamps=regular_timestamps(START, NUM_STEPS, STEP_MINUTES),
        adjacency=adj,
        nodes=_zones(root / ZONES_FILE),
        channels=["inflow", "outflow"],
        steps_per_day=24 * 60 // STEP_MINUTES,
        source=str(root),
        extra={"adjacency_kind": f"{kind} ({adj_file})"},
    )
