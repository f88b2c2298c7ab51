"""CPU time of one training epoch (training windows, then validation on the whole split).

Usage::

    FLOWDISTILL_DATA=/work/shared/data python -m perf.cpu_epoch \\
        --models gwnet,stgcn,flowdistill-noteacher --repeats 3 --jobs 1,2 \\
        --out results/cpu_epoch/<name>

Each measurement is a *child process* (``--child``) that loads the dataset under its default
protocol at ``--fraction`` of the training period, builds the model with its ``paper`` recipe
(``epochs=1``, no progress bars, no checkpoints), and runs :meth:`Trainer.fit` once: one pass
over the training windows then validation over every validation window. Around ``fit`` (data
loading and model construction excluded) it takes ``resource.getrusage(RUSAGE_SELF)`` and
reports wall, user and sys seconds and minor/major page faults, and the same for the
validation pass alone.

``--jobs 2`` starts two children of the same model at once (each with ``cpus // jobs`` torch
threads unless ``--threads`` says otherwise) and reports each of them. ``--variant NAME=PATH``
(repeatable) measures another source tree (``PYTHONPATH=PATH``, e.g. an unpacked older commit)
side by side: repeats alternate the variants (A, B, A, B, ...), so machine noise hits both;
``--variant NAME=PATH@ENV=VALUE`` also sets an environment variable for that variant's children.
Results: ``<out>.json`` (every measurement) and ``<out>.md`` (medians per model, variant and job
count, with the spread of the repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmark.atomic import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ("gwnet", "stgcn", "flowdistill-noteacher")


def _usage() -> tuple[float, float, float, int, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime, r.ru_stime, r.ru_minflt, r.ru_majflt


def _delta(a, b) -> dict:
    return {"wall_s": b[0] - a[0], "user_s": b[1] - a[1], "sys_s": b[2] - a[2],
            "minor_faults": b[3] - a[3], "major_faults": b[4] - a[4]}


def run_child(model: str, dataset: str, fraction: float, threads: int | None) -> dict:
    """One epoch of ``model`` in this process; returns the measurement row."""
    import torch

    from benchmark.experiment import RunSpec, load_prepared, make_objective
    from benchmark.models import ModelContext, build_model
    from benchmark.trainer import Trainer, seed_everything

    try:  # as the CLI does at process start (absent in trees older than benchmark.allocator)
        from benchmark.allocator import tune_malloc
    except ImportError:
        tune_malloc = None
    malloc = tune_malloc() if tune_malloc is not None else False
    if threads:
        torch.set_num_threads(threads)
    spec = RunSpec(model=model, dataset=dataset, train_fraction=fraction, efficiency=None)
    spec.train.epochs = 1
    spec.train.progress = False
    prepared = load_prepared(spec)
    seed_everything(spec.train.seed, spec.train.deterministic)
    net = build_model(model, ModelContext.from_prepared(prepared), spec.hparams)
    trainer = Trainer(net, prepared, spec.train, make_objective(spec))
    evaluate = trainer.evaluate
    val: dict = {}

    def timed_evaluate(split: str) -> dict:
        a = _usage()
        out = evaluate(split)
        val.update(_delta(a, _usage()))
        return out

    trainer.evaluate = timed_evaluate
    a = _usage()
    fit = trainer.fit()
    row = _delta(a, _usage())
    row.update(model=model, dataset=dataset, fraction=fraction,
               train_windows=len(prepared.starts("train")),
               val_windows=len(prepared.starts("val")), batch_size=spec.train.batch_size,
               eval_batch_size=spec.train.eval_batch_size, threads=torch.get_num_threads(),
               val_mae=fit.best_val_mae, val=val, malloc_tuned=malloc,
               max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


def _launch(model: str, args, variant: tuple[str, str, dict], threads: int) -> subprocess.Popen:
    name, path, env_extra = variant
    env = {**os.environ, "PYTHONPATH": path, **env_extra}
    # this file runs as a script, so the package under test comes from ``path`` alone
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", model, "--dataset",
           args.dataset, "--fraction", str(args.fraction), "--threads", str(threads)]
    return subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _collect(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        return {"error": (err.strip().splitlines() or ["?"])[-1], "rc": proc.returncode}
    return json.loads(out.strip().splitlines()[-1])


def parse_variant(text: str) -> tuple[str, str, dict]:
    name, _, rest = text.partition("=")
    path, *envs = rest.split("@")
    env = dict(e.split("=", 1) for e in envs)
    return name, str(Path(path).resolve()), env


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _spread(rows: list[dict], key: str) -> str:
    vals = [r[key] for r in rows]
    return f"{min(vals):.1f}-{max(vals):.1f}" if len(vals) > 1 else ""


def render_markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# One CPU epoch: {meta['dataset']} at {meta['fraction']:g} of the training period",
             "", f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']}. Each cell: median of {meta['repeats']} repeat(s) "
             "(per job when 2 jobs run at once); variants alternate within each repeat. "
             "Spread = min-max of the wall seconds.", "",
             "| model | variant | jobs | wall s | spread | user s | sys s | sys % | minor faults "
             "(M) | val wall s | val sys s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["model"], r["variant"], r["jobs"]) for r in rows if "error" not in r},
                  key=lambda k: (meta["models"].index(k[0]), k[2], meta["variants"].index(k[1])))
    for model, variant, jobs in keys:
        rs = [r for r in rows if (r.get("model"), r["variant"], r["jobs"]) == (model, variant, jobs)
              and "error" not in r]
        wall, user, sys_ = (_median(rs, k) for k in ("wall_s", "user_s", "sys_s"))
        share = 100 * sys_ / max(user + sys_, 1e-9)
        vw = statistics.median(r["val"]["wall_s"] for r in rs)
        vs = statistics.median(r["val"]["sys_s"] for r in rs)
        lines.append(f"| {model} | {variant} | {jobs} | {wall:.1f} | {_spread(rs, 'wall_s')} | "
                     f"{user:.1f} | {sys_:.1f} | {share:.0f} | "
                     f"{_median(rs, 'minor_faults') / 1e6:.2f} | {vw:.1f} | {vs:.1f} |")
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["", "Failures:"] + [f"- {r['model']} ({r['variant']}): {r['error']}"
                                      for r in errors]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated registered models, or 'all' (every gradient-trained "
                        "model that trains without a teacher)")
    p.add_argument("--dataset", default="nyc_taxi_manhattan")
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--jobs", default="1,2", help="job counts to measure (comma-separated)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per child (0: cpus // jobs)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=PATH[@ENV=VALUE]",
                   help="source tree to measure (default: this one, named 'current')")
    p.add_argument("--out", type=Path, help="output path without suffix (.json and .md)")
    p.add_argument("--render", nargs="+", type=Path, metavar="JSON",
                   help="only render these result files (one table, rows of all) to --out")
    p.add_argument("--child", metavar="MODEL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.render:
        parts = [json.loads(f.read_text()) for f in args.render]
        rows = [r for part in parts for r in part["rows"]]
        meta = {**parts[0]["meta"],
                "command": "; ".join(part["meta"]["command"] for part in parts),
                "repeats": "/".join(str(part["meta"]["repeats"]) for part in parts),
                "models": list(dict.fromkeys(m for part in parts for m in part["meta"]["models"])),
                "variants": list(dict.fromkeys(v for part in parts
                                               for v in part["meta"]["variants"]))}
        text = render_markdown(rows, meta)
        if args.out is not None:
            atomic_write_text(f"{args.out}.md", text)
        print(text)
        return 0

    if args.child:
        row = run_child(args.child, args.dataset, args.fraction, args.threads or None)
        print(json.dumps(row))
        return 0

    if args.models == "all":
        from benchmark.models import registry
        from benchmark.recipes import get_recipe

        # gradient-trained (closed-form models have no recipe) and no teacher store needed
        models = [n for n, s in registry().items()
                  if "needs_teacher" not in s.tags and get_recipe(n, "paper") is not None]
    else:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    variants = [parse_variant(v) for v in args.variant] or [("current", str(REPO), {})]
    jobs_list = [int(j) for j in args.jobs.split(",")]
    cpus = os.cpu_count() or 1
    rows: list[dict] = []
    meta = {"command": "python -m perf.cpu_epoch " + shlex.join(argv or sys.argv[1:]),
            "dataset": args.dataset, "fraction": args.fraction, "repeats": args.repeats,
            "models": models, "variants": [v[0] for v in variants],
            "machine": f"{platform.processor() or platform.machine()}, {cpus} cpus",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "variant_paths": {v[0]: {"path": v[1], "env": v[2]} for v in variants}}

    def save() -> None:
        if args.out is None:
            return
        atomic_write_text(f"{args.out}.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
        atomic_write_text(f"{args.out}.md", render_markdown(rows, meta))

    for model in models:
        for jobs in jobs_list:
            threads = args.threads or max(1, cpus // jobs)
            for rep in range(args.repeats):
                order = variants if rep % 2 == 0 else variants[::-1]
                for variant in order:
                    procs = [_launch(model, args, variant, threads) for _ in range(jobs)]
                    for k, proc in enumerate(procs):
                        row = {"model": model, **_collect(proc), "variant": variant[0],
                               "jobs": jobs, "job": k, "repeat": rep}
                        rows.append(row)
                        print(json.dumps({k: row[k] for k in row if k != "val"}), flush=True)
                    save()
    save()
    if args.out is not None:
        print(render_markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
