"""perf.largest_compare: the driver's own logic (LargeST's code is not needed here)."""

from __future__ import annotations

import numpy as np
import pytest

from perf.largest_compare import (
    largest_index,
    paired_ratios,
    parse_models,
    render_markdown,
    side_order,
)


def test_largest_index_is_the_last_input_step():
    # a window starting at s covers inputs s..s+11 and targets s+12..s+23; LargeST's idx i reads
    # inputs i-11..i and targets i+1..i+12
    idx = largest_index(np.array([0, 5, 100]), input_len=12)
    assert idx.tolist() == [11, 16, 111]
    series = np.arange(200)
    s = 5
    assert (series[idx[1] + np.arange(-11, 1)] == series[s:s + 12]).all()
    assert (series[idx[1] + np.arange(1, 13)] == series[s + 12:s + 24]).all()


def test_parse_models_per_model_repeats_and_unknown_names():
    assert parse_models("gwnet, dcrnn:1,", 3) == [("gwnet", 3), ("dcrnn", 1)]
    with pytest.raises(SystemExit, match="stid"):
        parse_models("stid", 3)


def test_side_order_alternates():
    sides = ["ours", "largest"]
    assert [side_order(sides, r) for r in range(3)] == [
        ["ours", "largest"], ["largest", "ours"], ["ours", "largest"]]
    three = ["ours", "largest", "largest-tuned"]
    firsts = {side_order(three, r)[0] for r in range(3)}
    assert firsts == set(three)


def _row(model, side, repeat, wall, user, sys_, faults=1_000_000):
    return {"model": model, "side": side, "repeat": repeat, "wall_s": wall, "user_s": user,
            "sys_s": sys_, "minor_faults": faults, "params": 10, "batch_size": 64,
            "eval_batch_size": 256, "train_windows": 874, "val_windows": 5245,
            "val": {"wall_s": wall / 2}, "load_before": 1.0, "load_after": 2.0}


def test_paired_ratios_pair_within_a_repeat_and_skip_failures():
    rows = [_row("gwnet", "ours", 0, 10, 8, 2), _row("gwnet", "largest", 0, 20, 15, 5),
            _row("gwnet", "largest", 1, 40, 30, 10), _row("gwnet", "ours", 1, 10, 9, 1),
            {"model": "gwnet", "side": "ours", "repeat": 2, "error": "boom"},
            _row("gwnet", "largest", 2, 5, 5, 0)]
    assert paired_ratios(rows, "wall_s") == [0.5, 0.25]
    assert paired_ratios(rows, "cpu_s") == [0.5, 0.25]
    assert paired_ratios(rows, "sys_s") == [0.4, 0.1]
    # the same repeat number in two runs (merged result files) are two pairs
    other_run = [{**r, "run": "b"} for r in rows[:2]]
    assert paired_ratios(rows + other_run, "wall_s") == [0.5, 0.25, 0.5]


def test_render_markdown_medians_and_ratio_line():
    rows = [_row("stgcn", "ours", 0, 10, 8, 2), _row("stgcn", "largest", 0, 20, 15, 5),
            _row("stgcn", "largest", 1, 40, 30, 10), _row("stgcn", "ours", 1, 30, 9, 1)]
    meta = {"dataset": "d", "fraction": 0.1, "command": "c", "largest_commit": "abc",
            "machine": "m", "threads": 2, "sides": ["ours", "largest"]}
    text = render_markdown(rows, meta)
    # ours: wall median of 10 and 30; cpu median of 10 and 10; sys % median of 20 % and 10 %
    assert "| stgcn | ours | 10 | 64/256 | 874/5245 | 2 | 20.0 | 8.5 | 1.5 | 10.0 | 15.0 |" in text
    # per-repeat wall ratios 10/20 and 30/40
    assert "| stgcn | ours / largest | 0.62 (0.50-0.75, n=2) |" in text
