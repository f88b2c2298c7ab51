"""UrbanGPT-style instructions for the LLM teacher, one prompt per (window, node).

The format follows UrbanGPT (Li et al., KDD 2024, Sec. 3.3 and its instruction generator) as
adopted by FlowDistill (arXiv 2504.02094, Supplement B, Table 5): the region's recent history of
each channel (e.g. taxi inflow and outflow) as numbers, the time span of the history and of the
forecast, region information, and special tokens:

* ``<ST_HIS>``: one per input channel, between ``<ST_start>`` and ``<ST_end>``. With the
  optional ST encoder (see :mod:`flowdistill.teacher.model`) their input embeddings are replaced
  by the encoder's per-channel representation of the node's history (UrbanGPT: "the first and
  the second tokens correspond to the representations of taxi inflow and outflow").
* ``<ST_PRE>``: one per target channel, between ``<ST_start>`` and ``<ST_end>`` at the very end
  of the prompt. The regression head reads each one's final hidden state and outputs ``T_out``
  values for that channel, as in UrbanGPT (``feature_nums`` predictive tokens, a linear map to
  ``time_steps``). The count is therefore fixed by the channels, not by the horizon.

Deviation from UrbanGPT, on purpose: every sentence that does not depend on the window or the
node comes first, as one shared instruction prefix (:attr:`PromptBuilder.prefix`); the
region, the numbers and the time spans follow in the suffix. Prompts then share a long common
prefix, which vLLM's prefix caching and the HF backend's prefix KV reuse exploit. The content is
UrbanGPT's; only the order differs. Values are written as rounded integers in original units
(UrbanGPT writes ``astype(int)``). POI descriptions are not available for these datasets; the
region text comes from node metadata (zone names, freeway and direction, else "region i").
What is measured and where (subject, place, channel nouns) is the dataset's own
:class:`~benchmark.data.catalogue.PromptText`, declared in its module; an unregistered id gets
the generic one ("flow" in "a city").

The template is versioned (:data:`TEMPLATE_VERSION`) and hashed (:func:`template_hash`); the hash
goes into every soft-label artifact.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from benchmark.data.registry import prompt_text
from benchmark.data.stdata import DataError, STData

TEMPLATE_VERSION = "urbangpt-prefix-v1"

ST_START = "<ST_start>"
ST_END = "<ST_end>"
ST_HIS = "<ST_HIS>"
ST_PRE = "<ST_PRE>"
SPECIAL_TOKENS = (ST_START, ST_END, ST_HIS, ST_PRE)

# The shared instruction (identical for every window and node of one dataset and protocol).
PREFIX_TEMPLATE = (
    "Given the historical data for {subject} over {t_in} time steps in a specific region of "
    "{place}, recorded at {interval} intervals, we want to predict the {targets} for the next "
    "{t_out} time steps. To improve prediction accuracy, a spatio-temporal model is utilized to "
    "encode the historical {subject} data as history tokens, where the tokens correspond to the "
    "representations of {channels} in this order. Please conduct an analysis of the "
    "{pattern} patterns in this region, taking into account the provided time and regional "
    "information, and then generate the predictive tokens for regression, one per predicted "
    "quantity."
)
# The per-(window, node) part.
SUFFIX_TEMPLATE = (
    " Here is the region information: {region}. {history}. The recording time of the historical "
    "data is {his_span}. We now predict the time period of {pre_span}. The history tokens are "
    "{st_his}. Based on the given information, the predictive tokens of {targets} in this region "
    "are {st_pre}"
)
HISTORY_TEMPLATE = "the recorded {name} values are [{values}]"

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DIRECTIONS = {"N": "northbound", "S": "southbound", "E": "eastbound", "W": "westbound"}


def template_hash() -> str:
    """sha256 (first 16 hex) of the template version, texts and special tokens."""
    blob = json.dumps({"version": TEMPLATE_VERSION, "prefix": PREFIX_TEMPLATE,
                       "suffix": SUFFIX_TEMPLATE, "history": HISTORY_TEMPLATE,
                       "tokens": SPECIAL_TOKENS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def region_text(nodes: pd.DataFrame, i: int, place: str) -> str:
    """Region information for node ``i`` from node metadata: a zone name (nyc_*), a freeway and
    direction (pems07m), else "region i"."""
    row = nodes.iloc[i]
    if "zone_name" in nodes.columns:
        return f"this region is the {row['zone_name']} zone of {place}"
    if "fwy" in nodes.columns and "dir" in nodes.columns:
        direction = DIRECTIONS.get(str(row["dir"]).upper(), str(row["dir"]))
        sid = f" of station {int(row['station_id'])}" if "station_id" in nodes.columns else ""
        return f"this region is the sensor{sid} on freeway {int(row['fwy'])} {direction}"
    return f"this region is region {i} of {place}"


def format_values(values: np.ndarray, decimals: int = 0) -> str:
    """Space-separated numbers, rounded (``decimals`` = 0 gives integers)."""
    if decimals == 0:
        return " ".join(str(int(v)) for v in np.rint(values))
    return " ".join(f"{v:.{decimals}f}" for v in values)


class PromptBuilder:
    """Builds the instruction for each (window, node) of one dataset under one protocol.

    Args:
        data: the cropped, channel-selected dataset in original units (``PreparedData.data``);
            window starts index its time axis.
        input_len, horizon: T_in and T_out.
        target_channel_idx: indices of the target channels among ``data.channels``.
        dataset_id: the registered dataset whose :class:`~benchmark.data.catalogue.PromptText`
            describes it (default ``data.name``).
    """

    def __init__(self, data: STData, input_len: int, horizon: int,
                 target_channel_idx: list[int], dataset_id: str | None = None) -> None:
        self.data = data
        self.input_len = int(input_len)
        self.horizon = int(horizon)
        self.target_channel_idx = list(target_channel_idx)
        self.dataset_id = dataset_id or data.name
        self.text = prompt_text(self.dataset_id)
        nouns = [self.text.noun(c) for c in data.channels]
        self.channel_nouns = nouns
        self.target_nouns = [nouns[j] for j in self.target_channel_idx]
        self._times = pd.DatetimeIndex(np.asarray(data.timestamps).astype("datetime64[m]"))
        self._when: dict[int, str] = {}
        self._regions = [region_text(data.nodes, i, self.text.place)
                         for i in range(data.num_nodes)]
        step_s = 86400 // data.steps_per_day  # timestamps may skip whole days (pems07m)
        interval = (f"{step_s // 60}-minute" if step_s % 3600 else f"{step_s // 3600}-hour")
        self.prefix = PREFIX_TEMPLATE.format(
            subject=self.text.subject, t_in=self.input_len, place=self.text.place,
            interval=interval, targets=_join(self.target_nouns), t_out=self.horizon,
            channels=_join(nouns), pattern=self.text.pattern)

    @classmethod
    def from_prepared(cls, prepared) -> PromptBuilder:
        p = prepared.protocol
        return cls(prepared.data, p.input_len, p.horizon, prepared.target_channel_idx,
                   prepared.dataset_id)

    def region(self, node: int) -> str:
        return self._regions[node]

    def when(self, step: int) -> str:
        """The text of time step ``step`` (cached)."""
        w = self._when.get(step)
        if w is None:
            w = self._when[step] = _when(self._times[step])
        return w

    def _span(self, a: int, b: int) -> str:
        return f"{self.when(a)} to {self.when(b)}"

    def suffix(self, start: int, node: int) -> str:
        """The window- and node-specific part of the prompt for window ``start``."""
        t_in, t_out = self.input_len, self.horizon
        if not 0 <= start <= self.data.num_steps - t_in - t_out:
            raise DataError(f"{self.data.source}: window start {start} outside "
                            f"0..{self.data.num_steps - t_in - t_out}")
        if not 0 <= node < self.data.num_nodes:
            raise DataError(f"{self.data.source}: node {node} outside 0..{self.data.num_nodes - 1}")
        hist = self.data.values[start:start + t_in, node, :]  # [T_in, C]
        history = ", and ".join(
            HISTORY_TEMPLATE.format(name=noun, values=format_values(hist[:, c],
                                                                    self.text.decimals))
            for c, noun in enumerate(self.channel_nouns))
        history = history[0].upper() + history[1:]
        st_his = ST_START + ST_HIS * len(self.channel_nouns) + ST_END
        st_pre = ST_START + ST_PRE * len(self.target_nouns) + ST_END
        return SUFFIX_TEMPLATE.format(
            region=self._regions[node], history=history,
            his_span=self._span(start, start + t_in - 1),
            pre_span=self._span(start + t_in, start + t_in + t_out - 1),
            st_his=st_his, targets=_join(self.target_nouns), st_pre=st_pre)

    def prompt(self, start: int, node: int) -> str:
        return self.prefix + self.suffix(start, node)

    def suffixes(self, starts: np.ndarray, nodes: np.ndarray) -> list[str]:
        """Suffixes for paired arrays ``starts [P]`` and ``nodes [P]``."""
        return [self.suffix(int(s), int(n)) for s, n in zip(starts, nodes, strict=True)]

    def corpus(self, starts: np.ndarray) -> list[str]:
        """Text for training a tokenizer: the prefix, every region, every month and weekday
        name and every digit, plus the full prompts of ``starts`` for every node."""
        extra = [self.prefix, " ".join(self._regions), " ".join(MONTHS), " ".join(WEEKDAYS),
                 " ".join("0123456789")]
        n = self.data.num_nodes
        return extra + [self.suffix(int(s), i) for s in starts for i in range(n)]


def _when(ts: pd.Timestamp) -> str:
    return (f"{MONTHS[ts.month - 1]} {ts.day}, {ts.year}, {ts.hour:02d}:{ts.minute:02d}, "
            f"{WEEKDAYS[ts.weekday()]}")


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def pairs(starts: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """All (window, node) pairs in window-major order: ``(starts [W*N], nodes [W*N])``."""
    s = np.repeat(np.asarray(starts, dtype=np.int64), num_nodes)
    n = np.tile(np.arange(num_nodes, dtype=np.int64), len(starts))
    return s, n
