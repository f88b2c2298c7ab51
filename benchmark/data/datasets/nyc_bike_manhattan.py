"""``nyc_bike_manhattan``: Citi Bike trips as inflow and outflow of the same 69 Manhattan zones
(and graph) as ``nyc_taxi_manhattan``, every 30 minutes, 2019-2020 (Deep-NYC-Taxi-Bike,
ITSC 2022). Raw format, graph, protocol: :mod:`._manhattan`."""

from __future__ import annotations

from pathlib import Path

from ..catalogue import DatasetSpec, FileSpec, PromptText, register_dataset
from ..stdata import STData
from . import _manhattan as m

INFLOW, OUTFLOW, OD = m.FILES["bike"]
FILES = (
    FileSpec(INFLOW, m.source_url(f"data-NYCBike/30min/{INFLOW}"),
             "6dacfa644848e7c319a62f2e42237f32d54dc4c7f769d0294c6ccb48fe8c5b64", 2007023,
             # the repository's history also holds the inflow under this name
             mirrors=(m.source_url("data-NYCBike/30min/201901-202012-30-NYCbike-inflow.npz"),)),
    FileSpec(OUTFLOW, m.source_url(f"data-NYCBike/30min/{OUTFLOW}"),
             "8842797e47157a867740e25b38fa6d9a364ca725cd06ec356e7b8cfc13261636", 2005539),
    m.ADJ_SPEC,
    FileSpec(OD, m.source_url(f"{m.ZONES_DIR}/adjmatrix/{OD}"),
             "4f22e783f0204008ca581a1319b7d724e38c808dcf1393d0c24ce33dd4fd7b2b", 86059),
    m.ZONES_SPEC,
)


def load(root: Path, adjacency: str = "binary") -> STData:
    return m.load_manhattan(root, "bike", adjacency=adjacency)


register_dataset(DatasetSpec(
    id="nyc_bike_manhattan",
    description="Citi Bike on the same 69 Manhattan zones and graph, inflow+outflow, 30 min, "
                "2019-2020",
    files=FILES, loader=load, default_protocol=m.PROTOCOL, options=m.OPTIONS,
    license="none stated in the source repository; underlying Citi Bike system data license",
    citation=m.CITATION, steps_per_day=48, homepage=m.HOMEPAGE,
    prompt=PromptText(subject="bike flow", place=m.PLACE, channel_noun="bike {channel}")))
