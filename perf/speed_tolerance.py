"""How far bf16 autocast and compilation move a run's validation MAE from the fp32 eager
reference (``TrainConfig.precision`` / ``TrainConfig.compile``, :mod:`benchmark.execution`).

Usage::

    python -m perf.speed_tolerance --models mlp,stid --seeds 0,1 --epochs 3 \\
        --options bf16,torch.compile --out results/speed_tolerance/cpu

For each model and seed, the same seeded spec (the model's ``paper`` recipe, ``--epochs``
epochs of at most ``--batches`` training batches, on ``--dataset`` at ``--fraction``) is
trained under fp32 eager and under each option, and the best validation MAE compared: the
relative difference ``|MAE_option - MAE_fp32| / MAE_fp32``. For scale, the same difference
between two seeds of the fp32 run (the seed-to-seed spread) is reported beside it. Compiled
runs use TorchDynamo + Inductor, which on a CPU needs a C++ compiler (``g++``) and draws its own
dropout masks, so a compiled run is a different sample of training noise as well as a different
rounding. Results: ``<out>.json`` and ``<out>.md``; the largest difference per option is the
tolerance quoted in :mod:`benchmark.execution` (``VAL_MAE_RTOL``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmark.atomic import atomic_write_text

OPTIONS = {"fp32": {}, "bf16": {"precision": "bf16"},
           "torch.compile": {"compile": "torch.compile"},
           "cudagraphs": {"compile": "cudagraphs"},
           "bf16+cudagraphs": {"precision": "bf16", "compile": "cudagraphs"}}


def run_one(model: str, seed: int, option: str, args) -> dict:
    """Train the seeded spec under ``option``; returns its best validation MAE and seconds."""
    from benchmark.experiment import RunSpec, load_prepared, make_objective
    from benchmark.models import ModelContext, build_model
    from benchmark.recipes import train_config_for
    from benchmark.trainer import Trainer, seed_everything

    train = replace(train_config_for(model, "paper"), epochs=args.epochs, seed=seed,
                    max_train_batches=args.batches, patience=None, progress=False,
                    device=args.device, **OPTIONS[option])
    spec = RunSpec(model=model, dataset=args.dataset, train_fraction=args.fraction,
                   train=train, efficiency=None)
    prepared = load_prepared(spec)
    seed_everything(seed, train.deterministic)
    net = build_model(model, ModelContext.from_prepared(prepared), spec.hparams)
    t0 = time.perf_counter()
    fit = Trainer(net, prepared, train, make_objective(spec)).fit()
    return {"model": model, "seed": seed, "option": option, "val_mae": fit.best_val_mae,
            "history": [r["val_mae"] for r in fit.history], "seconds": time.perf_counter() - t0,
            "run_id": spec.run_id()}


def summarise(rows: list[dict]) -> dict:
    """Per option: every relative difference from the fp32 run of the same model and seed, and
    their maximum; ``seed_spread``: the same between the fp32 runs of two seeds."""
    ref = {(r["model"], r["seed"]): r["val_mae"] for r in rows if r["option"] == "fp32"}
    out: dict = {}
    for r in rows:
        base = ref.get((r["model"], r["seed"]))
        if r["option"] == "fp32" or base is None or "error" in r:
            continue
        rel = abs(r["val_mae"] - base) / base
        out.setdefault(r["option"], {"rel": [], "max_rel": 0.0})
        out[r["option"]]["rel"].append({"model": r["model"], "seed": r["seed"], "rel": rel})
        out[r["option"]]["max_rel"] = max(out[r["option"]]["max_rel"], rel)
    spreads = []
    for model in sorted({m for m, _ in ref}):
        vals = [v for (m, _), v in sorted(ref.items()) if m == model]
        spreads += [abs(a - b) / min(a, b) for i, a in enumerate(vals) for b in vals[i + 1:]]
    out["seed_spread"] = {"max_rel": max(spreads) if spreads else None, "rel": spreads}
    return out


def render_markdown(rows: list[dict], summary: dict, meta: dict) -> str:
    lines = [f"# bf16 and compiled runs against fp32 eager: {meta['dataset']}, {meta['device']}",
             "", f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']}, {meta['threads']} torch threads. Each run: the "
             f"model's paper recipe, {meta['epochs']} epochs of at most {meta['batches']} "
             f"training batches, training fraction {meta['fraction']:g}, best validation "
             "MAE over the epochs (masked, original units). *rel.* = "
             "|MAE_option - MAE_fp32| / MAE_fp32 for the same model and seed. torch "
             f"{meta.get('torch', '?')}.", "",
             "| model | seed | option | val MAE | rel. to fp32 | seconds |",
             "|---|---|---|---|---|---|"]
    ref = {(r["model"], r["seed"]): r["val_mae"] for r in rows if r["option"] == "fp32"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['seed']} | {r['option']} | error: {r['error']} "
                         "| | |")
            continue
        base = ref.get((r["model"], r["seed"]))
        rel = "" if r["option"] == "fp32" or base is None else (
            f"{abs(r['val_mae'] - base) / base:.2e}")
        lines.append(f"| {r['model']} | {r['seed']} | {r['option']} | {r['val_mae']:.4f} | "
                     f"{rel} | {r['seconds']:.0f} |")
    lines += ["", "| option | largest rel. difference |", "|---|---|"]
    for option, s in summary.items():
        if s["max_rel"] is not None:
            name = ("fp32, one seed against another (for scale)" if option == "seed_spread"
                    else option)
            lines.append(f"| {name} | {s['max_rel']:.2e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp,stid")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--options", default="bf16,torch.compile",
                   help=f"comma-separated, from {', '.join(o for o in OPTIONS if o != 'fp32')}")
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--fraction", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batches", type=int, default=8, help="training batches per epoch at most")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help="output path without suffix (.json and .md)")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="only render this result file's markdown (to --out.md, else stdout)")
    args = p.parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        text = render_markdown(saved["rows"], saved["summary"], saved["meta"])
        if args.out is not None:
            atomic_write_text(f"{args.out}.md", text)
        print(text)
        return 0

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    options = ["fp32"] + [o.strip() for o in args.options.split(",") if o.strip()]
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        p.error(f"--options: unknown {unknown}; choose from {sorted(OPTIONS)}")
    meta = {"command": "python -m perf.speed_tolerance " + shlex.join(argv or sys.argv[1:]),
            "dataset": args.dataset, "fraction": args.fraction, "epochs": args.epochs,
            "batches": args.batches, "device": args.device, "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    rows: list[dict] = []

    def save() -> str:  # after every run: a long compile that is killed loses only itself
        summary = summarise(rows)
        text = render_markdown(rows, summary, meta)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(f"{args.out}.json", json.dumps(
                {"meta": meta, "rows": rows, "summary": summary}, indent=1))
            atomic_write_text(f"{args.out}.md", text)
        return text

    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for option in options:
                try:
                    row = run_one(model, seed, option, args)
                except Exception as e:  # noqa: BLE001 - one failing option is a result too
                    row = {"model": model, "seed": seed, "option": option,
                           "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
                save()
    print(save())
    return 0


if __name__ == "__main__":
    sys.exit(main())
