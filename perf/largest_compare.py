"""One CPU epoch of our trainer beside LargeST's engine, on the same arrays (issue 16 item 2).

Usage::

    FLOWDISTILL_DATA=/work/shared/data python -m perf.largest_compare \\
        --largest /work/largest-ref --largest-deps /work/largest-ref/deps \\
        --models gwnet,stgcn,agcrn,astgcn,dcrnn:1 --repeats 3 --out results/cpu_epoch/largest

``--largest`` is a checkout of github.com/liuxu77/LargeST (the directory holding its ``src/``).
Its code is never copied here: the LargeST child process runs with that directory on
``PYTHONPATH`` (and any ``--largest-deps`` folders: its graph code needs scipy) and imports
``src.models.*``, ``src.engines.*`` and ``src.base.engine`` from it.

Sides (``--sides``, alternated A B A B within each model, one child process at a time, never two
at once):

- ``ours``: ``perf.cpu_epoch``'s child: the registered model with its ``paper`` recipe,
  :meth:`Trainer.fit` for one epoch (the training windows, then validation on every validation
  window), malloc settings as the CLI sets them.
- ``largest``: LargeST's model class built as its ``experiments/<model>/main.py`` builds it
  (layer sizes equal to ours), its engine class, and one epoch of what its ``engine.train()``
  runs per epoch: ``engine.train_batch()`` then ``engine.evaluate('val')``. glibc defaults, as
  LargeST's own scripts run.
- ``largest-tuned``: the same with :func:`benchmark.allocator.tune_malloc` called first.

Same data: the parent exports, once, the arrays our loader serves (``load_prepared``: scaled
inputs ``[T, N, 2]``, time of day, the train/validation window starts, the adjacency) in
LargeST's layout: ``data [T, N, 3]`` = (scaled channel 0, scaled channel 1, time of day in
[0, 1)); LargeST's loader slices ``data[..., :input_dim]`` (3 for the models that take the
time of day here, GWNet and DCRNN; else 2) and reads the label as ``data[..., :1]`` (LargeST
models forecast one channel; ours forecast both). Index ``i`` in LargeST's ``idx_*.npy``
convention is the last input step, so ``i = start + input_len - 1``. The adjacency is stored
with self loops (LargeST's files have them; its STGCN/ASTGCN scripts subtract the identity).
Same batch sizes: each model's ``paper`` recipe batch for training, our eval batch for the
validation loader. LargeST's ``DataLoader`` drops a last partial batch (``size // bs``
batches); ``num_batch`` is set to ``ceil(size / bs)`` so both sides see every window
(``--largest-drop-last`` keeps LargeST's own count).

Each child reports ``getrusage(RUSAGE_SELF)`` deltas around the epoch (wall, user, sys, minor and
major faults; data loading and model construction excluded) and the validation pass alone; the
parent adds the whole child's ``RUSAGE_CHILDREN`` delta (startup and loading included) and the
1-minute load average before and after. Results: ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perf.cpu_epoch import _delta, _usage  # the same rusage deltas as our side's own perf script

REPO = Path(__file__).resolve().parent.parent
MODELS = ("gwnet", "stgcn", "agcrn", "astgcn", "dcrnn")
SIDES = ("ours", "largest", "largest-tuned")
#: models whose input here carries the time of day as an extra channel (ours: ``time_of_day``)
TIME_OF_DAY_INPUT = ("gwnet", "dcrnn")
SEED = 2023  # LargeST's scripts' default seed


def largest_index(starts, input_len: int):
    """Our window starts -> LargeST's ``idx`` (the last input step of each window)."""
    import numpy as np

    return np.asarray(starts, dtype=np.int64) + (input_len - 1)


def export_arrays(dataset: str, fraction: float, path: Path) -> tuple[dict, object]:
    """Write the arrays our loader serves for ``dataset`` in LargeST's layout to ``path`` (npz);
    returns their description and our :class:`PreparedData`."""
    import numpy as np

    from benchmark.experiment import RunSpec, load_prepared

    prepared = load_prepared(RunSpec(model="gwnet", dataset=dataset, train_fraction=fraction,
                                     efficiency=None))
    proto = prepared.protocol
    scaled = prepared.scaled.numpy()
    tod = (prepared.tod.numpy().astype(np.float32) / prepared.data.steps_per_day)
    tod = np.broadcast_to(tod[:, None, None], (scaled.shape[0], scaled.shape[1], 1))
    data = np.ascontiguousarray(np.concatenate([scaled, tod], axis=-1), dtype=np.float32)
    adjacency = np.asarray(prepared.data.adjacency, dtype=np.float32)
    adjacency = np.maximum(adjacency, np.eye(adjacency.shape[0], dtype=np.float32))
    target = prepared.target_channel_idx[0]
    arrays = {"data": data, "adj": adjacency,
              "idx_train": largest_index(prepared.starts("train"), proto.input_len),
              "idx_val": largest_index(prepared.starts("val"), proto.input_len),
              "mean": np.float32(prepared.scaler.shift[target]),
              "std": np.float32(prepared.scaler.scale[target]),
              "seq_len": np.int64(proto.input_len), "horizon": np.int64(proto.horizon)}
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return {"path": str(path), "data_shape": list(data.shape),
            "train_windows": int(len(arrays["idx_train"])),
            "val_windows": int(len(arrays["idx_val"])),
            "adjacency_edges": int((adjacency > 0).sum())}, prepared


# ---------------------------------------------------------------------------------------------
# LargeST side (runs with the LargeST checkout on PYTHONPATH)


def _largest_model_and_engine(model: str, arrays, loaders: dict, scaler, threads: int):
    """LargeST's model and engine for ``model``, as its experiments/<model>/main.py builds them
    (defaults of its argparse config; layer sizes equal ours)."""
    import numpy as np
    import torch
    from src.utils.graph_algo import calculate_cheb_poly, normalize_adj_mx
    from src.utils.metrics import masked_mae

    device = torch.device("cpu")
    adj = arrays["adj"].astype(np.float64)
    node_num = adj.shape[0]
    common = {"node_num": node_num, "input_dim": 3 if model in TIME_OF_DAY_INPUT else 2,
              "output_dim": 1, "seq_len": int(arrays["seq_len"]),
              "horizon": int(arrays["horizon"])}
    scheduler = None
    if model == "gwnet":
        from src.base.engine import BaseEngine as Engine
        from src.models.gwnet import GWNET

        supports = [torch.tensor(a) for a in normalize_adj_mx(adj, "doubletransition")]
        net = GWNET(supports=supports, adp_adj=1, dropout=0.3, residual_channels=32,
                    dilation_channels=32, skip_channels=256, end_channels=512, **common)
        lr, wdecay, clip = 1e-3, 1e-4, 5
    elif model == "stgcn":
        from src.base.engine import BaseEngine as Engine
        from src.models.stgcn import STGCN

        gso = torch.tensor(normalize_adj_mx(adj - np.eye(node_num), "scalap")[0])
        kt, block_num = 3, 2
        ko = common["seq_len"] - (kt - 1) * 2 * block_num
        blocks = [[common["input_dim"]]] + [[64, 16, 64]] * block_num
        # main.py's output block is [128, 128]; ours (the authors' output layer) keeps the
        # last block's 64 channels: [64, 64] gives the same layer sizes
        blocks += [[64]] if ko == 0 else [[64, 64]]
        blocks.append([common["horizon"]])
        net = STGCN(gso=gso, blocks=blocks, Kt=kt, Ks=3, dropout=0.5, **common)
        lr, wdecay, clip = 1e-3, 5e-4, 0
    elif model == "agcrn":
        from src.engines.agcrn_engine import AGCRN_Engine as Engine
        from src.models.agcrn import AGCRN

        net = AGCRN(embed_dim=10, rnn_unit=64, num_layer=2, cheb_k=2, **common)
        lr, wdecay, clip = 1e-3, 0, 0
    elif model == "astgcn":
        from src.engines.astgcn_engine import ASTGCN_Engine as Engine
        from src.models.astgcn import ASTGCN

        binary = ((adj - np.eye(node_num)) != 0).astype(np.float32)
        l_tilde = normalize_adj_mx(binary, "scalap")[0]
        cheb = [torch.from_numpy(p).type(torch.FloatTensor)
                for p in calculate_cheb_poly(l_tilde, 3)]
        net = ASTGCN(device="cpu", cheb_poly=cheb, order=3, nb_block=2, nb_chev_filter=64,
                     nb_time_filter=64, time_stride=1, **common)
        lr, wdecay, clip = 1e-3, 1e-4, 5
    elif model == "dcrnn":
        from src.engines.dcrnn_engine import DCRNN_Engine as Engine
        from src.models.dcrnn import DCRNN

        net = DCRNN(device=device, adj_mx=adj, n_filters=64, max_diffusion_step=2,
                    filter_type="doubletransition", num_rnn_layers=2, cl_decay_steps=2000,
                    **common)
        lr, wdecay, clip = 1e-2, 0, 5
    else:
        raise ValueError(f"no LargeST counterpart wired for {model!r} (choose from {MODELS})")
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=wdecay)
    if model == "stgcn":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.95)
    logger = logging.getLogger("largest_compare")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    engine = Engine(device=device, model=net, dataloader=loaders, scaler=scaler, sampler=None,
                    loss_fn=masked_mae, lrate=lr, optimizer=optimizer, scheduler=scheduler,
                    clip_grad_value=clip, max_epochs=1, patience=1,
                    log_dir=tempfile.gettempdir(), logger=logger, seed=SEED)
    return net, engine


def run_largest_child(model: str, arrays_path: str, batch_size: int, eval_batch_size: int,
                      threads: int, tune: bool, drop_last: bool) -> dict:
    """One epoch of LargeST's engine in this process; returns the measurement row."""
    malloc = False
    if tune:
        from benchmark.allocator import tune_malloc

        malloc = tune_malloc()
    import numpy as np
    import torch
    from src.utils.dataloader import DataLoader, StandardScaler

    torch.set_num_threads(threads)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    arrays = dict(np.load(arrays_path))
    input_dim = 3 if model in TIME_OF_DAY_INPUT else 2
    seq_len, horizon = int(arrays["seq_len"]), int(arrays["horizon"])
    quiet = logging.getLogger("largest_compare.loader")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    data = np.ascontiguousarray(arrays["data"][..., :input_dim])
    loaders = {}
    for split, bs in (("train", batch_size), ("val", eval_batch_size)):
        loader = DataLoader(data, arrays[f"idx_{split}"], seq_len, horizon, bs, quiet)
        if not drop_last:
            loader.num_batch = math.ceil(loader.size / bs)
        loaders[f"{split}_loader"] = loader
    scaler = StandardScaler(mean=arrays["mean"], std=arrays["std"])
    net, engine = _largest_model_and_engine(model, arrays, loaders, scaler, threads)
    val: dict = {}
    a = _usage()
    train_loss, _, _ = engine.train_batch()
    v = _usage()
    val_mae, _, _ = engine.evaluate("val")
    b = _usage()
    val.update(_delta(v, b))
    row = _delta(a, b)
    windows = {s: min(loaders[f"{s}_loader"].num_batch * bs, loaders[f"{s}_loader"].size)
               for s, bs in (("train", batch_size), ("val", eval_batch_size))}
    row.update(model=model, params=int(net.param_num()), train_windows=windows["train"],
               val_windows=windows["val"], batch_size=batch_size,
               eval_batch_size=eval_batch_size, threads=torch.get_num_threads(),
               input_dim=input_dim, output_dim=1, train_loss=float(train_loss),
               val_mae=float(val_mae), val=val, malloc_tuned=malloc,
               max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


# ---------------------------------------------------------------------------------------------
# our side


def run_ours_child(model: str, dataset: str, fraction: float, threads: int) -> dict:
    from perf.cpu_epoch import run_child

    return run_child(model, dataset, fraction, threads)


def our_parameters(model: str, prepared) -> int:
    """Parameter count of our ``model`` as the child builds it (default hyperparameters)."""
    from benchmark.models import ModelContext, build_model, count_parameters

    return count_parameters(build_model(model, ModelContext.from_prepared(prepared), {}))


def batch_sizes(model: str, dataset: str, fraction: float) -> tuple[int, int]:
    """(training batch, eval batch) that our child uses for ``model`` (its ``paper`` recipe)."""
    from benchmark.experiment import RunSpec

    spec = RunSpec(model=model, dataset=dataset, train_fraction=fraction, efficiency=None)
    return spec.train.batch_size, spec.train.eval_batch_size


# ---------------------------------------------------------------------------------------------
# parent: alternation, bookkeeping, rendering


def parse_models(text: str, repeats: int) -> list[tuple[str, int]]:
    """``"gwnet,dcrnn:1"`` -> ``[("gwnet", repeats), ("dcrnn", 1)]``."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, n = item.partition(":")
        if name not in MODELS:
            raise SystemExit(f"--models: {name!r} has no LargeST counterpart here; "
                             f"choose from {', '.join(MODELS)}")
        out.append((name, int(n) if n else repeats))
    return out


def side_order(sides: list[str], repeat: int) -> list[str]:
    """Rotate the sides each repeat (A B, B A, ... for two), so neither always runs first."""
    k = repeat % len(sides)
    return sides[k:] + sides[:k]


def _child_command(side: str, model: str, args, arrays: str, bs: tuple[int, int]) -> list[str]:
    cmd = [sys.executable, "-m", "perf.largest_compare", "--dataset", args.dataset,
           "--fraction", str(args.fraction), "--threads", str(args.threads)]
    if side == "ours":
        return cmd + ["--child-ours", model]
    cmd += ["--child-largest", model, "--arrays", arrays, "--batch-size", str(bs[0]),
            "--eval-batch-size", str(bs[1])]
    if side == "largest-tuned":
        cmd.append("--tune-malloc")
    if args.largest_drop_last:
        cmd.append("--largest-drop-last")
    return cmd


def measure(side: str, model: str, args, arrays: str, bs: tuple[int, int]) -> dict:
    """Run one child to completion; its row plus whole-process usage and the load average."""
    env = dict(os.environ)
    paths = [str(REPO)]
    if side != "ours":
        paths[:0] = [str(Path(args.largest).resolve())] + [str(Path(d).resolve())
                                                            for d in args.largest_deps]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if side == "ours":
        env.pop("FLOWDISTILL_MALLOC_TUNING", None)
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(_child_command(side, model, args, arrays, bs), cwd=str(REPO), env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        row = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1], "rc": proc.returncode}
    else:
        row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(side=side, model=model, load_before=load_before, load_after=os.getloadavg()[0],
               process={"wall_s": wall, "user_s": after.ru_utime - before.ru_utime,
                        "sys_s": after.ru_stime - before.ru_stime,
                        "minor_faults": after.ru_minflt - before.ru_minflt})
    return row


def paired_ratios(rows: list[dict], key: str, num: str = "ours", den: str = "largest") -> list:
    """``num / den`` of ``key`` within each repeat of each model and run where both sides
    succeeded (key ``cpu_s`` = user + sys)."""
    def value(r):
        return r["user_s"] + r["sys_s"] if key == "cpu_s" else r[key]

    by = {}
    for r in rows:
        if "error" not in r:
            by.setdefault((r.get("run"), r["model"], r["repeat"]), {})[r["side"]] = r
    return [value(p[num]) / value(p[den]) for p in by.values()
            if num in p and den in p and value(p[den]) > 0]


def render_markdown(rows: list[dict], meta: dict) -> str:
    med = statistics.median
    lines = [f"# One CPU epoch: our trainer beside LargeST's engine ({meta['dataset']} at "
             f"{meta['fraction']:g} of the training period)", "",
             f"Command: `{meta['command']}`", "",
             f"LargeST: {meta['largest_commit']}. Machine: {meta['machine']}, "
             f"{meta['threads']} torch threads per child, one child at a time, sides "
             "alternated. Each cell: median over the repeats. cpu s = user + sys; "
             "sys % = sys / cpu. Ratios: ours / LargeST within each alternated repeat, "
             "median (min-max).", "",
             "| model | side | params | batch (train/eval) | windows (train/val) | repeats | "
             "wall s | user s | sys s | cpu s | sys % | minor faults (M) | val wall s | "
             "load 1 min |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    sides = [s for s in meta["sides"]]
    ratio_lines = []
    for model in models:
        for side in sides:
            rs = [r for r in rows if r["model"] == model and r["side"] == side
                  and "error" not in r]
            if not rs:
                continue
            user, sys_ = med(r["user_s"] for r in rs), med(r["sys_s"] for r in rs)
            cpu = med(r["user_s"] + r["sys_s"] for r in rs)
            share = 100 * med(r["sys_s"] / max(r["user_s"] + r["sys_s"], 1e-9) for r in rs)
            loads = [x for r in rs for x in (r["load_before"], r["load_after"])]
            lines.append(
                f"| {model} | {side} | {rs[0].get('params')} | {rs[0]['batch_size']}/"
                f"{rs[0]['eval_batch_size']} | {rs[0]['train_windows']}/{rs[0]['val_windows']} "
                f"| {len(rs)} | {med(r['wall_s'] for r in rs):.1f} | {user:.1f} | {sys_:.1f} | "
                f"{cpu:.1f} | {share:.1f} | {med(r['minor_faults'] for r in rs) / 1e6:.2f} | "
                f"{med(r['val']['wall_s'] for r in rs):.1f} | "
                f"{min(loads):.1f}-{max(loads):.1f} |")
        model_rows = [r for r in rows if r["model"] == model]
        for other in [s for s in sides if s != "ours"]:
            if not paired_ratios(model_rows, "wall_s", "ours", other):
                continue
            cells = []
            for key in ("wall_s", "cpu_s", "sys_s", "minor_faults"):
                vals = paired_ratios(model_rows, key, "ours", other)
                cells.append(f"{med(vals):.2f} ({min(vals):.2f}-{max(vals):.2f}, n={len(vals)})"
                             if vals else "-")
            ratio_lines.append(f"| {model} | ours / {other} | " + " | ".join(cells) + " |")
    lines += ["", "| model | ratio | wall | cpu (user + sys) | sys | minor faults |",
              "|---|---|---|---|---|---|"] + ratio_lines
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["", "Failures:"] + [f"- {r['model']} ({r['side']}, repeat {r['repeat']}): "
                                      f"{r['error']}" for r in errors]
    return "\n".join(lines) + "\n"


def _largest_commit(path: Path) -> str:
    marker = path / "COMMIT"
    if marker.is_file():
        return marker.read_text().strip()
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no COMMIT file or git checkout)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--largest", type=Path, help="LargeST checkout (the folder holding src/)")
    p.add_argument("--largest-deps", action="append", default=[], metavar="PATH",
                   help="extra folder on the LargeST child's PYTHONPATH (e.g. scipy installed "
                        "with pip --target, if the environment lacks it)")
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated; NAME:K runs K repeats of that model")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sides", default="ours,largest",
                   help=f"comma-separated, alternated in this order: {', '.join(SIDES)}")
    p.add_argument("--dataset", default="nyc_taxi_manhattan")
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2, help="torch threads of every child")
    p.add_argument("--largest-drop-last", action="store_true",
                   help="keep LargeST's loader dropping the last partial batch")
    p.add_argument("--out", type=Path, help="output path without suffix (.json and .md)")
    p.add_argument("--render", nargs="+", type=Path, metavar="JSON",
                   help="only merge these result files (rows of all) into --out .json and .md")
    p.add_argument("--child-ours", metavar="MODEL", help=argparse.SUPPRESS)
    p.add_argument("--child-largest", metavar="MODEL", help=argparse.SUPPRESS)
    p.add_argument("--arrays", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--eval-batch-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--tune-malloc", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child_ours:
        print(json.dumps(run_ours_child(args.child_ours, args.dataset, args.fraction,
                                        args.threads)))
        return 0
    if args.child_largest:
        print(json.dumps(run_largest_child(args.child_largest, args.arrays, args.batch_size,
                                           args.eval_batch_size, args.threads,
                                           args.tune_malloc, args.largest_drop_last)))
        return 0

    from benchmark.atomic import atomic_write_json, atomic_write_text

    if args.render:
        parts = [json.loads(f.read_text()) for f in args.render]
        rows = [{**r, "run": part["meta"]["started"]} for part in parts for r in part["rows"]]
        meta = {**parts[0]["meta"],
                "command": "; ".join(part["meta"]["command"] for part in parts),
                "sides": list(dict.fromkeys(s for part in parts for s in part["meta"]["sides"]))}
        text = render_markdown(rows, meta)
        if args.out is not None:
            atomic_write_json(f"{args.out}.json",
                              {"meta": meta, "parts": [part["meta"] for part in parts],
                               "rows": rows}, indent=1)
            atomic_write_text(f"{args.out}.md", text)
        print(text)
        return 0

    if args.largest is None or not (args.largest / "src" / "base" / "engine.py").is_file():
        raise SystemExit(f"--largest {args.largest}: not a LargeST checkout (no "
                         "src/base/engine.py); fetch github.com/liuxu77/LargeST and pass its "
                         "folder")
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    bad = [s for s in sides if s not in SIDES]
    if bad:
        raise SystemExit(f"--sides: unknown {bad}; choose from {', '.join(SIDES)}")
    models = parse_models(args.models, args.repeats)
    workdir = Path(tempfile.mkdtemp(prefix="largest_compare_"))
    arrays = workdir / "arrays.npz"
    exported, prepared = export_arrays(args.dataset, args.fraction, arrays)
    ours_params = {m: our_parameters(m, prepared) for m, _ in models}
    meta = {"command": "python -m perf.largest_compare " + shlex.join(argv or sys.argv[1:]),
            "dataset": args.dataset, "fraction": args.fraction, "threads": args.threads,
            "sides": sides, "models": [m for m, _ in models], "arrays": exported,
            "largest_path": str(args.largest.resolve()),
            "largest_commit": _largest_commit(args.largest),
            "machine": f"{platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} cpus",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    rows: list[dict] = []

    def save() -> None:
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(f"{args.out}.json", {"meta": meta, "rows": rows}, indent=1)
            atomic_write_text(f"{args.out}.md", render_markdown(rows, meta))

    for model, repeats in models:
        bs = batch_sizes(model, args.dataset, args.fraction)
        for rep in range(repeats):
            for side in side_order(sides, rep):
                row = measure(side, model, args, str(arrays), bs)
                row["repeat"], row["run"] = rep, meta["started"]
                if side == "ours":
                    row["params"] = ours_params[model]
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k not in ("val", "process")}),
                      flush=True)
                save()
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    save()
    arrays.unlink(missing_ok=True)
    workdir.rmdir()
    print(render_markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
