"""``pems07m``, PeMSD7(M): 228 Caltrans District 7 stations, speed (mph) every 5 minutes,
44 weekdays of 2012.

Raw format (OpenCity packaging of the STGCN dataset, Yu et al., IJCAI 2018): ``PEMS07M.zip``
holding ``PEMS07M/PEMS07M.npz`` (key ``data``, float64 ``[12672, 228]``) and
``PEMS07M/PEMS07M_rn_adj.npy`` (float64 ``[228, 228]``, symmetric). Despite its name and the
PROVENANCE note ("binary"), that matrix is *weighted*: off-diagonal weights lie in [0.5, 1] and the
diagonal is 1. It is STGCN's thresholded Gaussian kernel (Eq. 10, sigma^2 = 10, epsilon = 0.5)
on the original STGCN distances plus self-loops: its weights correlate at 0.994 with the kernel
recomputed here from the station coordinates. Both are read from the zip in memory (no extraction).
``PeMSD7_M_Station_Info.csv`` (STGCN repository) lists the stations in the same order: ID, Fwy,
Dir, District, Latitude, Longitude.

Calendar: the 12672 steps are 44 days x 288, namely every weekday (Mon-Fri, holidays included)
of May and June 2012, 2012-05-01 (Tue) to 2012-06-29 (Fri); weekends are absent. Evidence:
the STGCN README (github.com/VeritasYin/STGCN_IJCAI-18) and paper (dataset description) say
"the weekdays of May and June of 2012"; its main.py splits the data into 34 + 5 + 5 = 44 days
of ``day_slot = 288``; May-June 2012 has exactly 44 weekdays (23 + 21) when Memorial Day
(2012-05-28) is counted, 43 without it. The data agree: the day this calendar puts on Memorial
Day is the one day without a morning peak (mean 07:00-09:00 speed 68.4 mph over all stations,
against 48.9-59.1 on the other 43 days), and in each of the other eight weeks the day put on
the Friday has the week's lightest morning.

The timestamps are those real times (:func:`true_dates` x 5-minute slots), so time of day and
day of week derived from them are real. The axis therefore skips whole days (Friday 23:55 is
followed by Monday 00:00): ``STData.regular`` is False. Windows are built by index and may span
a weekend. ``extra["true_dates"]`` keeps the 44 dates (step s lies on ``true_dates[s // 288]``).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalogue import DatasetSpec, FileSpec, PromptText, register_dataset
from ..geo import gaussian_kernel_adjacency, haversine_km
from ..protocol import Protocol
from ..rawfiles import check_choice, load_npy, load_npz_key, read_csv, require
from ..stdata import DataError, STData
from ._common import github_raw

ZIP_FILE = "PEMS07M.zip"
STATION_FILE = "PeMSD7_M_Station_Info.csv"
NPZ_MEMBER = "PEMS07M/PEMS07M.npz"
ADJ_MEMBER = "PEMS07M/PEMS07M_rn_adj.npy"
NUM_NODES = 228
STEPS_PER_DAY = 288
NUM_DAYS = 44

OPENCITY_REPO, OPENCITY_COMMIT = ("Beater-221E/OpenCity-reproduce",
                                  "d555685d0d8a074e755670504fef00cc0e03859b")
# PROVENANCE names no commit for the station table; this is the STGCN commit whose blob has the
# same size (9118 bytes) and content.
STGCN_REPO, STGCN_COMMIT = "VeritasYin/STGCN_IJCAI-18", "26308e61a5c61609577c31f39bd432f1768ceacc"
FILES = (
    FileSpec(ZIP_FILE, github_raw(OPENCITY_REPO, OPENCITY_COMMIT, f"data/{ZIP_FILE}"),
             "6fc2550c447dee4c81838b50dafa5bd75c7abcd8c0272d55610a2a7f5c84de3c", 3911787),
    FileSpec(STATION_FILE, github_raw(STGCN_REPO, STGCN_COMMIT, f"dataset/{STATION_FILE}"),
             "5a9744215880f2ec1a5b3efdbd6ee662eb1533b9b3d68924d85f5e45c28a02fe", 9118),
)
PROTOCOL = Protocol(
    input_len=12, horizon=12, split_ratios=(0.6, 0.2, 0.2), null_value=0.0, mape_threshold=0.0,
    notes={"split": "6:2:2, the usual PEMS-style split",
           "null_value": "speed 0 marks a missing reading (none occur in this release)",
           "calendar": "real timestamps of the 44 weekdays of May-June 2012; the time axis "
                       "skips the weekends (windows are by index and may span one)"})

# Interstates vs California state routes among the freeways in the station table.
_ROUTE_PREFIX = {5: "I", 10: "I", 105: "I", 110: "I", 405: "I", 605: "I", 710: "I",
                 60: "SR", 91: "SR"}


def true_dates() -> np.ndarray:
    """The 44 weekdays of May-June 2012, ``datetime64[D]``."""
    days = np.arange(np.datetime64("2012-05-01"), np.datetime64("2012-07-01"))
    return days[np.is_busday(days)]


def true_timestamps() -> np.ndarray:
    """The real time of every step, ``datetime64[ns]`` ``[12672]``: each of :func:`true_dates`
    at 00:00, 00:05, ..., 23:55. Skips the weekends."""
    days = true_dates().astype("datetime64[ns]")
    slots = np.arange(STEPS_PER_DAY, dtype=np.int64) * np.timedelta64(86400 // STEPS_PER_DAY, "s")
    return (days[:, None] + slots[None, :]).reshape(-1)


def _read_zip_member(zf: zipfile.ZipFile, member: str, label: str) -> io.BytesIO:
    try:
        return io.BytesIO(zf.read(member))
    except KeyError as e:
        raise DataError(f"{label}: member {member!r} not found (members: {zf.namelist()})") from e


def _stations(path: Path) -> pd.DataFrame:
    df = read_csv(path)
    missing = {"ID", "Fwy", "Dir", "Latitude", "Longitude"} - set(df.columns)
    if missing:
        raise DataError(f"{path}: missing columns {sorted(missing)}")
    if len(df) != NUM_NODES:
        raise DataError(f"{path}: expected {NUM_NODES} stations, got {len(df)}")
    names = [f"{_ROUTE_PREFIX.get(int(f), 'Fwy ')}{int(f)}-{d} station {int(i)}"
             for i, f, d in zip(df["ID"], df["Fwy"], df["Dir"], strict=True)]
    out = pd.DataFrame({"name": names, "station_id": df["ID"].astype(int),
                        "fwy": df["Fwy"].astype(int), "dir": df["Dir"].astype(str),
                        "latitude": df["Latitude"].astype(float),
                        "longitude": df["Longitude"].astype(float)})
    if "District" in df.columns:
        out["district"] = df["District"].astype(int)
    return out


def load_pems07m(root: Path, adjacency: str = "zip", sigma2: float = 10.0,
                 epsilon: float = 0.5) -> STData:
    """Load ``pems07m``.

    Args:
        root: directory holding the dataset's files.
        adjacency: "zip" (default: the zip's weighted matrix as shipped, STGCN Eq. 10 weights on
            the original distances, diagonal 1), "binary" (its support: 1 where that matrix is
            non-zero, self-loops included) or "gaussian" (STGCN Eq. 10 recomputed on great-circle
            distances in km between station coordinates, zero diagonal).
        sigma2, epsilon: Gaussian-kernel parameters for "gaussian" (km^2, threshold); STGCN uses
            10 and 0.5.

    Returns:
        STData with values float32 ``[12672, 228, 1]``, channels ["speed"], and the real
        timestamps of the 44 weekdays (weekends skipped; see the module docstring).
    """
    check_choice("adjacency", adjacency, ("zip", "binary", "gaussian"))
    zpath = require(root / ZIP_FILE)
    try:
        with zipfile.ZipFile(zpath) as zf:
            speed = load_npz_key(_read_zip_member(zf, NPZ_MEMBER, str(zpath)), "data",
                                 f"{zpath}:{NPZ_MEMBER}")
            rn_adj = None
            if adjacency != "gaussian":
                rn_adj = load_npy(_read_zip_member(zf, ADJ_MEMBER, str(zpath)),
                                  f"{zpath}:{ADJ_MEMBER}")
    except zipfile.BadZipFile as e:
        raise DataError(f"{zpath}: not a valid zip file: {e}") from e
    if speed.shape != (NUM_DAYS * STEPS_PER_DAY, NUM_NODES):
        raise DataError(f"{zpath}:{NPZ_MEMBER}: expected shape "
                        f"({NUM_DAYS * STEPS_PER_DAY}, {NUM_NODES}), got {speed.shape}")
    nodes = _stations(root / STATION_FILE)
    if rn_adj is not None:
        if rn_adj.shape != (NUM_NODES, NUM_NODES):
            raise DataError(f"{zpath}:{ADJ_MEMBER}: expected ({NUM_NODES}, {NUM_NODES}), "
                            f"got {rn_adj.shape}")
        if adjacency == "zip":
            adj = rn_adj.astype(np.float32)
            kind = (f"weighted, STGCN Eq. 10 on the original distances, diagonal 1 "
                    f"({ZIP_FILE}:{ADJ_MEMBER})")
        else:
            adj = (rn_adj != 0).astype(np.float32)
            kind = f"binary support of {ZIP_FILE}:{ADJ_MEMBER}, self-loops included"
    else:
        dist = haversine_km(nodes["latitude"].to_numpy(), nodes["longitude"].to_numpy())
        adj = gaussian_kernel_adjacency(dist, sigma2=sigma2, epsilon=epsilon)
        kind = (f"Gaussian kernel (STGCN Eq. 10, sigma^2={sigma2} km^2, epsilon={epsilon}) on "
                f"great-circle distances from {STATION_FILE}")
    return STData(
        name="pems07m",
        values=speed.astype(np.float32)[:, :, None],
        timestamps=true_timestamps(),
        adjacency=adj,
        nodes=nodes,
        channels=["speed"],
        steps_per_day=STEPS_PER_DAY,
        source=str(root),
        extra={"adjacency_kind": kind, "true_dates": true_dates(),
               "calendar_note": "real timestamps: the 44 weekdays of May-June 2012 "
                                "(2012-05-01 to 2012-06-29, Memorial Day included); weekends "
                                "are absent, so the time axis skips them"},
    )


register_dataset(DatasetSpec(
    id="pems07m",
    description="PeMSD7(M): 228 Caltrans D7 stations, speed, 5 min, 44 weekdays of May-Jun 2012",
    files=FILES, loader=load_pems07m, default_protocol=PROTOCOL,
    options={"adjacency": "'zip' (default; the zip's weighted matrix = STGCN Eq. 10 on the "
                          "original distances, diagonal 1), 'binary' (its support) or 'gaussian' "
                          "(STGCN Eq. 10 recomputed from station coordinates, km)",
             "sigma2": "Gaussian kernel sigma^2 in km^2 (default 10, STGCN)",
             "epsilon": "Gaussian kernel threshold (default 0.5, STGCN)"},
    license="packaging: none stated (OpenCity-reproduce; HKUDS OpenCity code is MIT); station "
            "table: BSD-2-Clause (STGCN)",
    citation="Yu, Yin, Zhu. Spatio-Temporal Graph Convolutional Networks: A Deep Learning "
             "Framework for Traffic Forecasting. IJCAI 2018; OpenCity packaging (HKUDS)",
    steps_per_day=288, homepage=f"https://github.com/{OPENCITY_REPO}",
    prompt=PromptText(subject="traffic speed", place="Los Angeles County",
                      channel_noun="traffic {channel}")))
