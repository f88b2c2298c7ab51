"""Prompt builder format, region texts, hashing, and the teacher tokenizer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.data.protocol import Protocol
from benchmark.data.stdata import DataError, STData
from benchmark.data.synthetic import make_synthetic
from benchmark.data.windows import prepare
from flowdistill.teacher import prompts
from flowdistill.teacher.prompts import (
    ST_END,
    ST_HIS,
    ST_PRE,
    ST_START,
    PromptBuilder,
    format_values,
    pairs,
    region_text,
    template_hash,
)


@pytest.fixture(scope="module")
def prepared():
    data = make_synthetic(num_nodes=4, num_days=3, steps_per_day=24, channels=2, seed=0)
    return prepare(data, Protocol(input_len=12, horizon=12, null_value=None), "nyc_taxi_test")


def _taxi(nodes: pd.DataFrame) -> STData:
    t = np.arange("2019-01-01T00:00", "2019-01-02T00:00", np.timedelta64(30, "m"),
                  dtype="datetime64[m]").astype("datetime64[ns]")
    v = np.arange(48 * len(nodes) * 2, dtype=np.float32).reshape(48, len(nodes), 2) / 3
    return STData("nyc_taxi_manhattan", v, t, None, nodes, ["inflow", "outflow"], 48)


def test_prompt_format_matches_the_urbangpt_layout():
    nodes = pd.DataFrame({"name": ["A", "B"], "zone_name": ["Alphabet City", "Battery Park"]})
    b = PromptBuilder(_taxi(nodes), 12, 12, [0, 1], "nyc_taxi_manhattan")
    p = b.prompt(2, 1)
    assert p.startswith(b.prefix)
    assert "taxi flow over 12 time steps" in b.prefix and "Manhattan, New York City" in b.prefix
    assert "30-minute intervals" in b.prefix
    suffix = b.suffix(2, 1)
    assert "the Battery Park zone of Manhattan" in suffix
    # values are rounded integers of the node's own history: x[t, n, c] = (2 t N + 2 n + c) / 3
    inflow = [int(np.rint((2 * t * 2 + 2 + 0) / 3)) for t in range(2, 14)]
    assert f"taxi inflow values are [{' '.join(map(str, inflow))}]" in suffix
    assert "January 1, 2019, 01:00, Tuesday to January 1, 2019, 06:30, Tuesday" in suffix
    assert "January 1, 2019, 07:00, Tuesday to January 1, 2019, 12:30, Tuesday" in suffix
    assert f"{ST_START}{ST_HIS}{ST_HIS}{ST_END}" in suffix
    assert suffix.endswith(f"{ST_START}{ST_PRE}{ST_PRE}{ST_END}")
    for tok in (ST_HIS, ST_PRE, ST_START):
        assert tok not in b.prefix  # the shared prefix carries no ST token


def test_prefix_is_shared_and_suffix_differs(prepared):
    b = PromptBuilder.from_prepared(prepared)
    s, n = pairs(prepared.splits.train[:3], prepared.num_nodes)
    texts = [b.prompt(int(a), int(c)) for a, c in zip(s, n, strict=True)]
    assert all(t.startswith(b.prefix) for t in texts)
    assert len(set(texts)) == len(texts)


def test_region_texts_from_node_metadata():
    pems = pd.DataFrame({"name": ["x"], "station_id": [716939], "fwy": [5], "dir": ["S"]})
    assert region_text(pems, 0, "LA") == ("this region is the sensor of station 716939 on "
                                          "freeway 5 southbound")
    zones = pd.DataFrame({"name": ["a"], "zone_name": ["Central Harlem"]})
    assert "Central Harlem zone of NYC" in region_text(zones, 0, "NYC")
    plain = pd.DataFrame({"name": ["a", "b", "c"]})
    assert region_text(plain, 2, "a city") == "this region is region 2 of a city"


def test_one_pre_token_per_target_channel():
    nodes = pd.DataFrame({"name": ["A"]})
    b = PromptBuilder(_taxi(nodes), 12, 12, [1], "nyc_taxi_manhattan")
    s = b.suffix(0, 0)
    assert s.count(ST_HIS) == 2 and s.count(ST_PRE) == 1
    assert "predictive tokens of taxi outflow" in s


def test_bad_window_or_node_names_the_source(prepared):
    b = PromptBuilder.from_prepared(prepared)
    with pytest.raises(DataError, match="window start"):
        b.suffix(prepared.data.num_steps, 0)
    with pytest.raises(DataError, match="node 99"):
        b.suffix(0, 99)


def test_format_values_rounds():
    assert format_values(np.array([0.4, 1.5, 2.6, 10.0])) == "0 2 3 10"
    assert format_values(np.array([1.25]), decimals=1) == "1.2"


def test_template_hash_is_stable_and_tracks_the_template(monkeypatch):
    h = template_hash()
    assert h == template_hash() and len(h) == 16
    assert h == PINNED_HASH, "template changed: bump TEMPLATE_VERSION and update PINNED_HASH"
    monkeypatch.setattr(prompts, "SUFFIX_TEMPLATE", prompts.SUFFIX_TEMPLATE + " ")
    assert template_hash() != h


def test_tokenizer_separates_numbers_and_keeps_the_prefix(prepared):
    from flowdistill.teacher.tokenizer import (
        encode_prefix,
        encode_suffixes,
        st_token_ids,
        train_word_tokenizer,
    )

    b = PromptBuilder.from_prepared(prepared)
    tok = train_word_tokenizer(b.corpus(prepared.splits.train[:2]))
    pieces = tok.convert_ids_to_tokens(encode_suffixes(tok, [" [41 7]"])[0])
    assert pieces == [" ", "[", "4", "1", " 7", "]"]
    ids = st_token_ids(tok)
    pre = encode_prefix(tok, b.prefix)
    assert pre[0] == tok.bos_token_id
    suf = encode_suffixes(tok, [b.suffix(0, 1)])[0]
    assert suf.count(ids[ST_HIS]) == 2 and suf.count(ids[ST_PRE]) == 2
    assert tok.unk_token_id not in suf


PINNED_HASH = "d7073a951bbb86a8"  # template_hash() of TEMPLATE_VERSION "urbangpt-prefix-v1"


# --- the full text, pinned (every word reaches the teacher; a change needs a TEMPLATE_VERSION) ---
PINNED_TAXI = (
    "Given the historical data for taxi flow over 12 time steps in a specific region of "
    "Manhattan, New York City, recorded at 30-minute intervals, we want to predict the taxi "
    "inflow and taxi outflow for the next 12 time steps. To improve prediction accuracy, a "
    "spatio-temporal model is utilized to encode the historical taxi flow data as history "
    "tokens, where the tokens correspond to the representations of taxi inflow and taxi outflow "
    "in this order. Please conduct an analysis of the traffic patterns in this region, taking "
    "into account the provided time and regional information, and then generate the predictive "
    "tokens for regression, one per predicted quantity. Here is the region information: this "
    "region is the Battery Park zone of Manhattan, New York City. The recorded taxi inflow "
    "values are [3 5 6 7 9 10 11 13 14 15 17 18], and the recorded taxi outflow values are "
    "[4 5 6 8 9 10 12 13 14 16 17 18]. The recording time of the historical data is January 1, "
    "2019, 01:00, Tuesday to January 1, 2019, 06:30, Tuesday. We now predict the time period of "
    "January 1, 2019, 07:00, Tuesday to January 1, 2019, 12:30, Tuesday. The history tokens are "
    "<ST_start><ST_HIS><ST_HIS><ST_end>. Based on the given information, the predictive tokens "
    "of taxi inflow and taxi outflow in this region are <ST_start><ST_PRE><ST_PRE><ST_end>")
PINNED_PEMS = (
    "Given the historical data for traffic speed over 12 time steps in a specific region of Los "
    "Angeles County, recorded at 5-minute intervals, we want to predict the traffic speed for "
    "the next 12 time steps. To improve prediction accuracy, a spatio-temporal model is "
    "utilized to encode the historical traffic speed data as history tokens, where the tokens "
    "correspond to the representations of traffic speed in this order. Please conduct an "
    "analysis of the traffic patterns in this region, taking into account the provided time and "
    "regional information, and then generate the predictive tokens for regression, one per "
    "predicted quantity. Here is the region information: this region is the sensor of station "
    "716939 on freeway 5 southbound. The recorded traffic speed values are [61 61 62 62 63 63 63 "
    "64 64 64 65 65]. The recording time of the historical data is May 4, 2012, 22:15, Friday "
    "to May 4, 2012, 23:10, Friday. We now predict the time period of May 4, 2012, 23:15, Friday "
    "to May 5, 2012, 00:10, Saturday. The history tokens are <ST_start><ST_HIS><ST_end>. Based "
    "on the given information, the predictive tokens of traffic speed in this region are "
    "<ST_start><ST_PRE><ST_end>")


def _pems_station() -> STData:
    nodes = pd.DataFrame({"name": ["x"], "station_id": [716939], "fwy": [5], "dir": ["S"]})
    t = np.arange("2012-05-04T22:00", "2012-05-05T02:00", np.timedelta64(5, "m"),
                  dtype="datetime64[m]").astype("datetime64[ns]")
    v = (60 + np.arange(len(t), dtype=np.float32) * 0.37).reshape(-1, 1, 1)
    return STData("pems07m", v, t, None, nodes, ["speed"], 288)


def test_full_prompt_text_is_pinned():
    nodes = pd.DataFrame({"name": ["A", "B"], "zone_name": ["Alphabet City", "Battery Park"]})
    assert PromptBuilder(_taxi(nodes), 12, 12, [0, 1], "nyc_taxi_manhattan").prompt(2, 1) \
        == PINNED_TAXI
    # the dataset id defaults to data.name
    assert PromptBuilder(_pems_station(), 12, 12, [0]).prompt(3, 0) == PINNED_PEMS


@pytest.mark.parametrize(("dataset_id", "subject", "place", "noun"), [
    ("nyc_taxi_manhattan", "taxi flow", "Manhattan, New York City", "taxi inflow"),
    ("nyc_bike_manhattan", "bike flow", "Manhattan, New York City", "bike inflow"),
    ("nyc_taxi_grid", "taxi flow", "New York City", "taxi inflow"),
    ("pems07m", "traffic speed", "Los Angeles County", "traffic inflow"),
    ("metr_la_week", "traffic speed", "Los Angeles County", "traffic inflow"),
    ("synthetic", "flow", "a city", "inflow"),
    ("custom", "flow", "a city", "inflow"),
    ("not_registered", "flow", "a city", "inflow"),
])
def test_each_dataset_declares_its_prompt_text(dataset_id, subject, place, noun):
    """The text comes from the dataset's module (DatasetSpec.prompt); unknown ids are generic."""
    from benchmark.data.registry import prompt_text

    text = prompt_text(dataset_id)
    assert (text.subject, text.place, text.noun("inflow")) == (subject, place, noun)
    assert (text.pattern, text.decimals) == ("traffic", 0)
