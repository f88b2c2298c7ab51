"""STGCN's spatial layer before and after projecting channels first (issue 16): CPU time of one
forward + backward of :class:`baselines.stgcn.SpatialConv` at the paper's block size (Ks 3,
64 -> 16 channels, batch 50 x 10 steps x 69 nodes, nyc_taxi_manhattan's shape), the layer of a
git revision (``--before``, read with ``git show``) against the working tree's, alternated in
one process; and the largest output difference.

    python -m perf.stgcn_order --before 5ce7cc9 [--repeats 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

from baselines.stgcn import SpatialConv

ROOT = Path(__file__).resolve().parents[1]


def layer_at(rev: str) -> type:
    """``SpatialConv`` as ``baselines/stgcn.py`` defined it at git revision ``rev`` (registration
    of its models skipped: only the layer is used)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:baselines/stgcn.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"stgcn_at_{rev}")
    import benchmark.models as models
    register = models.register_model
    models.register_model = lambda *a, **k: (lambda cls: cls)  # noqa: ARG005
    try:
        exec(compile(source, f"{rev}:baselines/stgcn.py", "exec"), module.__dict__)  # noqa: S102
    finally:
        models.register_model = register
    return module.SpatialConv


def cpu_seconds(layer, x: torch.Tensor, basis: torch.Tensor) -> float:
    t = time.process_time()
    layer(x, basis).sum().backward()
    return time.process_time() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision of the propagate-first layer")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    before, after = layer_at(args.before)(3, 64, 16), SpatialConv(3, 64, 16)
    after.load_state_dict(before.state_dict())
    basis = torch.randn(3, 69, 69) / 10
    x = torch.randn(50, 10, 69, 64, requires_grad=True)
    with torch.no_grad():
        diff = (before(x, basis) - after(x, basis)).abs().max().item()
    for _ in range(3):
        cpu_seconds(before, x, basis), cpu_seconds(after, x, basis)
    times: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(args.repeats):
        order = (("before", before), ("after", after))
        for name, layer in order if i % 2 == 0 else order[::-1]:
            times[name].append(cpu_seconds(layer, x, basis))
    ratios = [a / b for a, b in zip(times["after"], times["before"], strict=True)]
    print(f"SpatialConv fwd+bwd CPU ms, median of {args.repeats}: before ({args.before}) "
          f"{statistics.median(times['before']) * 1e3:.1f}, after "
          f"{statistics.median(times['after']) * 1e3:.1f}; after / before "
          f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}); "
          f"max |output difference| {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
