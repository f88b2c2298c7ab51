"""(window, node) pairs: the dataset under a protocol, random pairs, their targets."""

from __future__ import annotations

import numpy as np
import torch

from benchmark.data.protocol import Protocol
from benchmark.data.windows import PreparedData


def load_prepared(dataset: str, protocol: Protocol | dict | None = None,
                  dataset_options: dict | None = None) -> PreparedData:
    """Load a registered dataset and cut it by ``protocol`` (a Protocol, or overrides on the
    dataset's default protocol)."""
    from benchmark.data.registry import default_protocol, load_dataset
    from benchmark.data.windows import prepare

    data = load_dataset(dataset, **(dataset_options or {}))
    if not isinstance(protocol, Protocol):
        base = default_protocol(dataset, data)
        protocol = base.with_(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in (protocol or {}).items()})
    return prepare(data, protocol, dataset)


def sample_pairs(starts: np.ndarray, num_nodes: int, size: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` (window start, node) pairs drawn uniformly with replacement."""
    s = starts[rng.integers(0, len(starts), size)]
    n = rng.integers(0, num_nodes, size)
    return s.astype(np.int64), n.astype(np.int64)


def targets_for(prepared_scaled: torch.Tensor, starts: np.ndarray, nodes: np.ndarray,
                input_len: int, horizon: int, target_idx: list[int]) -> torch.Tensor:
    """Scaled targets ``[P, T_out, C_out]`` of the pairs."""
    s = torch.as_tensor(starts)
    iy = s[:, None] + input_len + torch.arange(horizon)[None, :]
    y = prepared_scaled[iy, torch.as_tensor(nodes)[:, None]]  # [P, T_out, C]
    return y[..., target_idx]
