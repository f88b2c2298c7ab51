"""``nyc_taxi_manhattan``: NYC yellow taxi trips as inflow (drop-offs) and outflow (pick-ups) of
the 69 Manhattan taxi zones every 30 minutes, 2019-2020 (Deep-NYC-Taxi-Bike, ITSC 2022).
Raw format, graph, protocol: :mod:`._manhattan`."""

from __future__ import annotations

from pathlib import Path

from ..catalogue import DatasetSpec, FileSpec, PromptText, register_dataset
from ..stdata import STData
from . import _manhattan as m

INFLOW, OUTFLOW, OD = m.FILES["taxi"]
FILES = (
    FileSpec(INFLOW, m.source_url(f"data-NYCTaxi/30min/{INFLOW}"),
             "6fb7b9720ac4548fb63b05b0023236469ae7c16ae8491044cff701fb7d7659bb", 2445364),
    FileSpec(OUTFLOW, m.source_url(f"data-NYCTaxi/30min/{OUTFLOW}"),
             "233b1e11e53c86acd7233f7960bb4301780ba2ca92ff6275dabf31d6712036e3", 2331070),
    m.ADJ_SPEC,
    FileSpec(OD, m.source_url(f"{m.ZONES_DIR}/adjmatrix/{OD}"),
             "c24e515b328d68c481861074233995b6c606386cd81f1f7b8827d7050ebf4125", 95022),
    m.ZONES_SPEC,
)


def load(root: Path, adjacency: str = "binary") -> STData:
    return m.load_manhattan(root, "taxi", adjacency=adjacency)


register_dataset(DatasetSpec(
    id="nyc_taxi_manhattan",
    description="NYC yellow taxi, 69 Manhattan zones, inflow+outflow, 30 min, 2019-2020",
    files=FILES, loader=load, default_protocol=m.PROTOCOL, options=m.OPTIONS,
    license="none stated in the source repository; underlying NYC TLC trip records are public",
    citation=m.CITATION, steps_per_day=48, homepage=m.HOMEPAGE,
    prompt=PromptText(subject="taxi flow", place=m.PLACE, channel_noun="taxi {channel}")))
