"""Seeded digests of the models built from the shared layers (:mod:`baselines.layers`).

``reference.json`` beside this file was written by this script from the tree *before* the layers
were shared (main at a605ca0, CPU, one thread), so ``tests/test_layers.py`` can check that STID,
the FlowDistill student, DCRNN and Graph WaveNet still create their parameters in the same order
(same seeded values), keep their ``state_dict`` keys and compute the same outputs and gradients.

Regenerate (only for an intended change of a model) from the repository root::

    PYTHONPATH=. python tests/model_reference/make_reference.py tests/model_reference/reference.json

``--sha`` prints one SHA-256 per case over the raw bytes of every state tensor, output and
gradient instead: a bitwise comparison of two trees on the same machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import torch

from benchmark.atomic import atomic_write_text
from benchmark.batch import Batch
from benchmark.models import ModelContext, build_model

N, T_IN, T_OUT, C, C_OUT, SPD, B = 5, 12, 3, 2, 2, 48, 2
SEED = 0
STUDENT = dict(embed_dim=8, node_dim=4, tod_dim=4, dow_dim=4, num_layers=2)
GWNET = dict(residual_channels=4, dilation_channels=4, skip_channels=8, end_channels=16,
             blocks=2, layers_per_block=2, embedding_dim=3)

# case name -> (registered model, hyperparameter overrides, needs the directed test graph)
CASES: dict[str, tuple[str, dict, bool]] = {
    "stid": ("stid", dict(STUDENT), False),
    "mlp": ("mlp", dict(STUDENT), False),
    "flowdistill": ("flowdistill", dict(STUDENT, num_samples=3), False),
    "dcrnn": ("dcrnn", dict(rnn_units=8), True),
    "dcrnn-k3-no-tod": ("dcrnn", dict(rnn_units=8, max_diffusion_step=3, time_of_day=False),
                        True),
    "gwnet": ("gwnet", dict(GWNET), True),
    "gwnet-adaptive-only": ("gwnet", dict(GWNET, diffusion_steps=3), False),
    "gwnet-fixed-only": ("gwnet", dict(GWNET, adaptive_adj=False), True),
}


def directed_graph() -> np.ndarray:
    """A weighted directed graph (P_f != P_b) with one node without out-edges."""
    rng = np.random.default_rng(7)
    a = rng.uniform(0.5, 2.0, (N, N)) * (rng.uniform(size=(N, N)) < 0.5)
    np.fill_diagonal(a, 0.0)
    a[N - 1] = 0.0
    return a.astype(np.float32)


def make_batch() -> Batch:
    g = torch.Generator().manual_seed(3)
    tod = (torch.randint(0, SPD, (B, 1), generator=g) + torch.arange(T_IN)) % SPD
    return Batch(x=torch.randn(B, T_IN, N, C, generator=g),
                 y=torch.randn(B, T_OUT, N, C_OUT, generator=g),
                 x_tod=tod, x_dow=torch.randint(0, 7, (B, T_IN), generator=g),
                 y_tod=torch.zeros(B, T_OUT, dtype=torch.long),
                 y_dow=torch.zeros(B, T_OUT, dtype=torch.long), start=torch.arange(B))


def build(case: str) -> torch.nn.Module:
    name, overrides, graph = CASES[case]
    ctx = ModelContext(num_nodes=N, input_len=T_IN, horizon=T_OUT, in_channels=C,
                       out_channels=C_OUT, steps_per_day=SPD,
                       adjacency=directed_graph() if graph else None)
    torch.manual_seed(SEED)
    return build_model(name, ctx, overrides)


def run(case: str) -> dict[str, dict[str, torch.Tensor]]:
    """The seeded model's state, its eval output, a training-mode output (dropout, sampling,
    batch statistics drawn after ``manual_seed(1)``) and the gradients of that output's mean
    square."""
    model = build(case)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batch = make_batch()
    with torch.no_grad():
        eval_out = model.eval()(batch)
    torch.manual_seed(1)
    train_out = model.train()(batch)
    train_out.square().mean().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return {"state": state, "outputs": {"eval": eval_out, "train": train_out.detach()},
            "grads": grads}


def _summary(t: torch.Tensor) -> list[float]:
    """[sum |t|, first element] in float64 (portable to within float32 rounding)."""
    flat = t.detach().double().reshape(-1)
    return [float(flat.abs().sum()), float(flat[0])] if flat.numel() else [0.0, 0.0]


def digest(case: str) -> dict:
    r = run(case)
    return {"keys": list(r["state"]),
            "state": {k: _summary(v) for k, v in r["state"].items()},
            "outputs": {k: _summary(v) + [float(x) for x in v.reshape(-1)[:8]]
                        for k, v in r["outputs"].items()},
            "grads": {k: _summary(v) for k, v in r["grads"].items()}}


def sha(case: str) -> str:
    r = run(case)
    h = hashlib.sha256()
    for group in ("state", "outputs", "grads"):
        for k, v in r[group].items():
            h.update(f"{group}/{k}".encode())
            h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", nargs="?", help="write the reference JSON here")
    p.add_argument("--sha", action="store_true", help="print a bitwise digest per case")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.sha:
        for case in CASES:
            print(case, sha(case))
    if args.out:
        text = json.dumps({c: digest(c) for c in CASES}, indent=1) + "\n"
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
