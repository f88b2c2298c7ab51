"""``nyc_taxi_grid`` (STSAN/STDN "NYC-Taxi"): a 16x12 grid of cells, inflow/outflow every 30
minutes.

Raw format (STSAN, Lin et al.): ``flow_train.npz``, ``flow_val.npz``, ``flow_test.npz``, key
``flow``, float64 ``[T_k, 16, 12, 2]`` with T_k = 2784, 672, 864. Concatenated in that order they
are one contiguous series of 4320 steps = 90 days x 48 from 2016-01-01 00:00. Channel 0 is the
inflow, channel 1 the outflow. ``external_knowledge.csv`` is a daily weather/holiday table
(dates as ``D-M-YYYY``), kept in ``extra["external_knowledge"]``. No graph is shipped: the grid
graph is built here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..catalogue import DatasetSpec, FileSpec, PromptText, register_dataset
from ..protocol import Protocol
from ..rawfiles import check_choice, load_npz_key, read_csv, regular_timestamps, require
from ..stdata import DataError, STData
from ._common import MAPE_NOTE, ZERO_MASK_NOTE, github_raw

ROWS, COLS = 16, 12
PARTS = ("flow_train.npz", "flow_val.npz", "flow_test.npz")
PART_STEPS = (2784, 672, 864)
EXTERNAL_FILE = "external_knowledge.csv"
START = "2016-01-01T00:00"
STEP_MINUTES = 30

REPO, COMMIT = "haoxingl/STSAN", "f5d09f88544f5def714a8727db847f2a57a56348"
FILES = (
    FileSpec("flow_train.npz", github_raw(REPO, COMMIT, "data/NYTaxi/flow_train.npz"),
             "a972c671e2916e300c545c48d4b2f4b1f803b8c6e653d1e6eb1b0d27004245d1", 957727),
    FileSpec("flow_val.npz", github_raw(REPO, COMMIT, "data/NYTaxi/flow_val.npz"),
             "f9b58bdeeafd8e12d516603cfcbdf5a80c745f4e35614363b06ffcf431d002b5", 238630),
    FileSpec("flow_test.npz", github_raw(REPO, COMMIT, "data/NYTaxi/flow_test.npz"),
             "5f1fc043214fcc6f0fbea0de06e9d4ba85d8492d3e7f6c0d322ccfea135ff840", 304787),
    FileSpec(EXTERNAL_FILE, github_raw(REPO, COMMIT, f"data/NYTaxi/{EXTERNAL_FILE}"),
             "3f491ef27164dc09cd5a03d1cbb41e810ac3e4cc1ec2253d539589e3da2261f0", 3318),
)
PROTOCOL = Protocol(
    input_len=12, horizon=12, split_ratios=(0.5, 0.3, 0.2), null_value=None, mask_threshold=0.0,
    mape_threshold=0.0,
    notes={"split": "5:3:2 chronological like the other NYC taxi data (the source files' own "
                    "split is 2784/672/864 steps: use split_steps to reproduce STSAN)",
           "mask_threshold": ZERO_MASK_NOTE,
           "mape_threshold": MAPE_NOTE + " (STSAN's own protocol: mask_threshold=null, "
                             "mape_threshold=10)"})


def grid_adjacency(rows: int, cols: int, neighbours: int = 8) -> np.ndarray:
    """Binary adjacency of a ``rows x cols`` grid, cells numbered row-major (``r * cols + c``).

    ``neighbours=4`` links cells sharing an edge (von Neumann neighbourhood); ``neighbours=8``
    also links cells sharing a corner (Moore neighbourhood). Symmetric, zero diagonal.

    Returns:
        float32 ``[rows * cols, rows * cols]``.
    """
    check_choice("neighbours", neighbours, (4, 8))
    offsets = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if neighbours == 8:
        offsets += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    n = rows * cols
    a = np.zeros((n, n), dtype=np.float32)
    r, c = np.divmod(np.arange(n), cols)
    for dr, dc in offsets:
        rr, cc = r + dr, c + dc
        ok = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
        a[np.arange(n)[ok], (rr * cols + cc)[ok]] = 1.0
    return a


def _external(path: Path) -> pd.DataFrame:
    df = read_csv(path)
    if "date" in df.columns:
        df["date"] = pd.to_datetime(df["date"], format="%d-%m-%Y", errors="coerce")
    return df


def load_nyc_grid(root: Path, neighbours: int = 8) -> STData:
    """Load ``nyc_taxi_grid``.

    Args:
        root: directory holding the dataset's files.
        neighbours: 8 (default, Moore) or 4 (von Neumann) grid adjacency.

    Returns:
        STData with values float32 ``[4320, 192, 2]`` (node ``r * 12 + c``), channels
        ["inflow", "outflow"].
    """
    check_choice("neighbours", neighbours, (4, 8))
    parts = []
    for name, steps in zip(PARTS, PART_STEPS, strict=True):
        a = load_npz_key(require(root / name), "flow")
        if a.shape != (steps, ROWS, COLS, 2):
            raise DataError(f"{root / name}: expected shape ({steps}, {ROWS}, {COLS}, 2), "
                            f"got {a.shape}")
        parts.append(a)
    flow = np.concatenate(parts, axis=0)
    t = flow.shape[0]
    values = flow.reshape(t, ROWS * COLS, 2).astype(np.float32)
    r, c = np.divmod(np.arange(ROWS * COLS), COLS)
    nodes = pd.DataFrame({"name": [f"cell ({i}, {j})" for i, j in zip(r, c, strict=True)],
                          "row": r, "col": c})
    extra = {"adjacency_kind": f"{neighbours}-neighbour grid ({ROWS}x{COLS}), built in code",
             "grid_shape": (ROWS, COLS)}
    ext = root / EXTERNAL_FILE
    if ext.is_file():
        extra["external_knowledge"] = _external(ext)
    return STData(
        name="nyc_taxi_grid",
        values=values,
        timestamps=regular_timestamps(START, t, STEP_MINUTES),
        adjacency=grid_adjacency(ROWS, COLS, neighbours),
        nodes=nodes,
        channels=["inflow", "outflow"],
        steps_per_day=24 * 60 // STEP_MINUTES,
        source=str(root),
        extra=extra,
    )


register_dataset(DatasetSpec(
    id="nyc_taxi_grid",
    description="NYC taxi on a 16x12 grid (192 cells), inflow+outflow, 30 min, "
                "2016-01-01..2016-03-30",
    files=FILES, loader=load_nyc_grid, default_protocol=PROTOCOL,
    options={"neighbours": "8 (default, cells sharing an edge or a corner) or 4 (edge only)"},
    license="MIT (STSAN repository, (c) 2020 StarkLord)",
    citation="Lin et al. Preserving Dynamic Attention for Long-Term Spatial-Temporal "
             "Prediction (STSAN). KDD 2020. https://github.com/haoxingl/STSAN",
    steps_per_day=48, homepage=f"https://github.com/{REPO}",
    prompt=PromptText(subject="taxi flow", place="New York City", channel_noun="taxi {channel}")))
