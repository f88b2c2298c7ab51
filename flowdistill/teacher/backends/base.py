"""What both soft-label backends share: the encoded prompt batch, the prompt source that makes it,
and the version string each backend records (see :mod:`flowdistill.teacher.backends`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..prompts import PromptBuilder
from ..tokenizer import encode_prefix, encode_suffixes

BACKENDS = ("hf", "vllm")


@dataclass
class PromptBatch:
    """Encoded prompts for ``P`` (window, node) pairs.

    Attributes:
        prefix_ids: ids of the shared instruction prefix (identical for every prompt).
        suffix_ids: ids of each prompt's suffix (P lists).
        st_x: ``[P, T_in, C_in]`` the node's scaled history (ST-encoder input) or None.
        tod, dow: ``[P]`` int64 time of day / day of week of the last input step, or None.
        nodes: ``[P]`` int64 node index of each prompt, or None.
    """

    prefix_ids: list[int]
    suffix_ids: list[list[int]]
    st_x: torch.Tensor | None = None
    tod: torch.Tensor | None = None
    dow: torch.Tensor | None = None
    nodes: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.suffix_ids)

    def subset(self, idx: np.ndarray | list[int]) -> PromptBatch:
        idx = [int(i) for i in idx]
        t = torch.as_tensor(idx, dtype=torch.long)
        return PromptBatch(self.prefix_ids, [self.suffix_ids[i] for i in idx],
                           None if self.st_x is None else self.st_x[t],
                           None if self.tod is None else self.tod[t],
                           None if self.dow is None else self.dow[t],
                           None if self.nodes is None else self.nodes[t])

    def to(self, device: torch.device | str) -> PromptBatch:
        """The same prompts with the ST-encoder tensors (``st_x``, ``tod``, ``dow``, ``nodes``)
        on ``device``; the token ids stay Python lists."""
        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.to(device)

        return PromptBatch(self.prefix_ids, self.suffix_ids, move(self.st_x), move(self.tod),
                           move(self.dow), move(self.nodes))

    def padded(self, pad_id: int) -> torch.Tensor:
        """Right-padded suffix ids ``[P, L_max]``."""
        width = max((len(s) for s in self.suffix_ids), default=0)
        out = torch.full((len(self), width), int(pad_id), dtype=torch.long)
        for i, s in enumerate(self.suffix_ids):
            out[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
        return out


class PromptSource:
    """Encodes (window start, node) pairs of one dataset for one teacher.

    Args:
        builder: the prompt builder of the dataset.
        tokenizer: the teacher's tokenizer.
        scaled: ``[T, N, C_in]`` the series in the TEACHER's scaled units (ST-encoder input).
        tod, dow: ``[T]`` int64 time indices.
        with_series: fill ``st_x``/``tod``/``dow`` (teachers with an ST encoder).
    """

    def __init__(self, builder: PromptBuilder, tokenizer, scaled: torch.Tensor,
                 tod: torch.Tensor, dow: torch.Tensor, with_series: bool) -> None:
        self.builder = builder
        self.tokenizer = tokenizer
        self.scaled, self.tod, self.dow = scaled, tod, dow
        self.with_series = with_series
        self.prefix_ids = encode_prefix(tokenizer, builder.prefix)

    def batch(self, starts: np.ndarray, nodes: np.ndarray) -> PromptBatch:
        starts = np.asarray(starts, dtype=np.int64)
        nodes = np.asarray(nodes, dtype=np.int64)
        ids = encode_suffixes(self.tokenizer, self.builder.suffixes(starts, nodes))
        if not self.with_series:
            return PromptBatch(self.prefix_ids, ids)
        t_in = self.builder.input_len
        s = torch.as_tensor(starts)
        ix = s[:, None] + torch.arange(t_in)[None, :]
        st_x = self.scaled[ix, torch.as_tensor(nodes)[:, None]]  # [P, T_in, C]
        last = s + t_in - 1
        return PromptBatch(self.prefix_ids, ids, st_x, self.tod[last], self.dow[last],
                           torch.as_tensor(nodes))


def backend_version(name: str) -> str:
    """The version string backend ``name`` records in soft-label stores (part of their key);
    known without starting the backend."""
    if name == "hf":
        import transformers

        return f"transformers {transformers.__version__}, torch {torch.__version__}"
    if name == "vllm":
        import vllm

        return f"vllm {vllm.__version__}, torch {torch.__version__}"
    raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
