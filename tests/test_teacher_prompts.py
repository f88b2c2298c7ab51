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
