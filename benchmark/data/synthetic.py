"""A small seeded synthetic flow dataset: daily and weekly cycles plus graph-diffused noise.

Generated in-process (no files), deterministic by seed; the default for tests and smoke runs.

Model, for node n, channel c, step t with time of day ``tau in [0, 1)`` and day ``k``::

    y[t, n, c] = max(0, b_n * s_c * daily_{n,c}(tau) * weekly_n(k) + sigma * b_n * e[t, n, c])
    daily(tau) = 1 + 0.6 sin(2 pi tau + phi_n + c pi / 6) + 0.2 sin(4 pi tau + psi_n)
    weekly(k)  = 1 - w_n * [k mod 7 in {5, 6}]          (weekends lower; day 0 is a Monday)
    e[t] = rho e[t-1] + sqrt(1 - rho^2) * D eps[t],  eps ~ N(0, I)

where ``D = (deg + 1)^-1 (A + I)`` is the row-normalised random-walk operator of the random
geometric graph A, so noise is spatially correlated along edges and temporally AR(1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stdata import DataError, STData

START = "2024-01-01T00:00"  # a Monday


def random_geometric_graph(pos: np.ndarray, radius: float) -> np.ndarray:
    """Binary symmetric adjacency linking points closer than ``radius`` (plus each point's
    nearest neighbour, so no node is isolated). Zero diagonal. ``pos: [N, 2]`` -> ``[N, N]``."""
    n = len(pos)
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    a = (d < radius).astype(np.float32)
    if n > 1:
        np.fill_diagonal(d, np.inf)
        nn = d.argmin(axis=1)
        a[np.arange(n), nn] = 1.0
        a[nn, np.arange(n)] = 1.0
    np.fill_diagonal(a, 0.0)
    return a


def make_synthetic(num_nodes: int = 12, num_days: int = 14, steps_per_day: int = 48,
                   channels: int = 2, seed: int = 0, num_steps: int | None = None,
                   noise: float = 0.15, rho: float = 0.7) -> STData:
    """Generate the ``synthetic`` dataset (see the module docstring for the model).

    Args:
        num_nodes: N.
        num_days: length in days (ignored when ``num_steps`` is given).
        steps_per_day: time steps per day; must divide 86400 seconds.
        channels: C; named inflow/outflow when C == 2, else ch0, ch1, ...
        seed: all randomness comes from ``numpy.random.default_rng(seed)``.
        num_steps: T, overriding ``num_days * steps_per_day``.
        noise: sigma, the noise level relative to each node's base level.
        rho: AR(1) coefficient of the noise.

    Returns:
        STData with values float32 ``[T, N, C]`` (non-negative), a random geometric graph.
    """
    if num_nodes < 1 or channels < 1 or steps_per_day < 1:
        raise DataError(f"synthetic: num_nodes, channels, steps_per_day must be >= 1, got "
                        f"{num_nodes}, {channels}, {steps_per_day}")
    if 86400 % steps_per_day:
        raise DataError(f"synthetic: steps_per_day={steps_per_day} does not divide a day")
    t = int(num_steps) if num_steps is not None else int(num_days) * steps_per_day
    if t < 2:
        raise DataError(f"synthetic: need at least 2 steps, got {t}")
    rng = np.random.default_rng(seed)

    pos = rng.uniform(0.0, 1.0, size=(num_nodes, 2))
    radius = float(np.sqrt(2.0 * np.log(max(num_nodes, 2)) / (np.pi * num_nodes)))
    adj = random_geometric_graph(pos, radius)
    walk = (adj + np.eye(num_nodes)) / (adj.sum(1, keepdims=True) + 1.0)
    diffuse = walk

    base = rng.uniform(10.0, 40.0, size=num_nodes)
    scale = rng.uniform(0.8, 1.2, size=channels)
    phi = rng.uniform(0.0, 2 * np.pi, size=num_nodes)
    psi = rng.uniform(0.0, 2 * np.pi, size=num_nodes)
    weekend_drop = rng.uniform(0.1, 0.4, size=num_nodes)

    steps = np.arange(t)
    tau = (steps % steps_per_day) / steps_per_day
    day = steps // steps_per_day
    ch_shift = np.arange(channels) * np.pi / 6
    daily = (1.0
             + 0.6 * np.sin(2 * np.pi * tau[:, None, None] + phi[None, :, None]
                            + ch_shift[None, None, :])
             + 0.2 * np.sin(4 * np.pi * tau[:, None, None] + psi[None, :, None]))
    weekend = np.isin(day % 7, (5, 6)).astype(np.float64)
    weekly = 1.0 - weekend[:, None] * weekend_drop[None, :]
    mean = base[None, :, None] * scale[None, None, :] * daily * weekly[:, :, None]

    eps = rng.standard_normal(size=(t, num_nodes, channels))
    eps = np.einsum("nm,tmc->tnc", diffuse, eps)
    e = np.empty_like(eps)
    e[0] = eps[0]
    k = np.sqrt(1.0 - rho ** 2)
    for i in range(1, t):
        e[i] = rho * e[i - 1] + k * eps[i]
    values = np.maximum(mean + noise * base[None, :, None] * e, 0.0).astype(np.float32)

    step_s = 86400 // steps_per_day
    timestamps = np.datetime64(START, "ns") + steps.astype(np.int64) * np.timedelta64(step_s, "s")
    names = ["inflow", "outflow"] if channels == 2 else [f"ch{i}" for i in range(channels)]
    nodes = pd.DataFrame({"name": [f"node {i}" for i in range(num_nodes)],
                          "x": pos[:, 0], "y": pos[:, 1]})
    return STData(
        name="synthetic", values=values, timestamps=timestamps, adjacency=adj, nodes=nodes,
        channels=names, steps_per_day=steps_per_day, source=f"<synthetic seed={seed}>",
        extra={"adjacency_kind": f"random geometric graph (radius {radius:.3f}, binary)",
               "seed": seed},
    )
