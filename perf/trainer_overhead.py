"""The trainer's overhead: one epoch of :class:`benchmark.trainer.Trainer` against a bare
forward/backward loop over the same batches.

Usage::

    FLOWDISTILL_DATA=/work/shared/data python -m perf.trainer_overhead \\
        --models all --train-batches 6 --val-windows 512 --repeats 3 --threads 2 \\
        --out results/trainer_overhead/cpu

For every gradient-trained registered model (the closed-form ones, ``ha-slot``, ``ha-week``,
``last-value`` and ``ridge``, have no training loop) a child process loads the dataset under its
default protocol, builds the model with its ``paper`` recipe (batch size, optimiser, clipping,
loss) and times two sides, alternated (trainer, bare, bare, trainer, ...) so that the load of
a shared machine hits both:

* **trainer**: ``Trainer.fit`` for one epoch of ``--train-batches`` training batches
  (``max_train_batches``) with its checkpoint layout writing ``last.pt`` to a temporary
  directory, then ``Trainer.evaluate("val")`` over the first ``--val-windows`` validation
  windows. The epoch is timed from the epoch's start to the end of ``fit`` (callbacks), so the
  one-off set-up of a run (optimiser, seeds) is not counted, the batch gathering, logging,
  finiteness check, scheduler and checkpoint are.
* **bare**: the same number of steps over the same batches (the trainer's first-epoch
  permutation), each gathered inside the timed loop from the same device-resident windows as
  the trainer gathers them (a hand-written loop has to index its windows too: gathering is the
  data's cost, not the harness's), the same optimiser and clipping and the model's own loss
  (``objective.step_loss``): ``zero_grad; loss.backward(); clip; step`` and nothing else; then
  a ``no_grad`` forward over the same validation windows, gathered the same way, scored with
  the same masked metric sums. (Until 2026-12-02 the bare side timed batches gathered before
  the clock started, which put the gathering on the trainer's side of the ratio: TGCN 1.12.)

Both start each repeat from the same initial weights. A teacher-distilled variant gets a
stand-in teacher (the ground truth times 0.9 for every window; the speed of a step does not
depend on the labels' values). On a GPU both sides end with ``torch.cuda.synchronize()``.
Reported per model: seconds of the trainer's and the bare epoch (training part, validation part
and both), their ratio per repeat and its median, and the 1-minute load average around each
measurement. Results: ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmark.atomic import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
CLOSED_FORM_NOTE = "closed-form models (no training loop): "


class TargetTeacher:
    """Stand-in teacher labels: 0.9 times each window's targets (every window labelled)."""

    def __init__(self, prepared) -> None:
        self.prepared = prepared

    def gather(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.prepared.protocol
        iy = np.asarray(starts)[:, None] + p.input_len + np.arange(p.horizon)[None, :]
        labels = 0.9 * self.prepared.raw_targets.numpy()[iy]
        return labels.astype(np.float32), np.ones(len(starts), dtype=bool)


def trained_models() -> tuple[list[str], list[str]]:
    """(gradient-trained models, closed-form models) of the registry, by name."""
    from benchmark.models import registry

    trained, closed = [], []
    for name, spec in sorted(registry().items()):
        (closed if spec.closed_form else trained).append(name)
    return trained, closed


def _clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: every thread, user + system)."""
    return time.perf_counter(), time.process_time()


def _elapsed(part: str, a: tuple[float, float], b: tuple[float, float]) -> dict:
    return {f"{part}_s": b[0] - a[0], f"{part}_cpu_s": b[1] - a[1]}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Case:
    """One model on one dataset, ready to time either side from the same initial weights."""

    model_name: str
    prepared: object
    val_prepared: object
    config: object
    initial: object
    objective_factory: object
    device: object

    @classmethod
    def build(cls, model_name: str, dataset: str = "nyc_taxi_manhattan",
              train_batches: int = 6, val_windows: int = 512, device: str = "cpu",
              fraction: float = 1.0) -> Case:
        import torch

        from benchmark.device import resolve_device
        from benchmark.experiment import RunSpec, load_prepared, make_objective
        from benchmark.models import ModelContext, build_model, get_spec
        from benchmark.trainer import seed_everything

        spec = RunSpec(model=model_name, dataset=dataset, train_fraction=fraction,
                       efficiency=None)
        cfg = replace(spec.train, epochs=1, max_train_batches=train_batches, progress=False,
                      patience=None, device=device)
        prepared = load_prepared(spec)
        splits = replace(prepared.splits, val=prepared.splits.val[:val_windows])
        val_prepared = replace(prepared, splits=splits)
        seed_everything(cfg.seed, cfg.deterministic)
        model = build_model(model_name, ModelContext.from_prepared(prepared), spec.hparams)
        needs_teacher = "needs_teacher" in get_spec(model_name).tags

        def objective_factory():
            objective = make_objective(replace(spec, teacher=None)) if needs_teacher else (
                make_objective(spec))
            if needs_teacher:
                objective.store = TargetTeacher(prepared)
            return objective

        dev = resolve_device(device)
        torch.manual_seed(cfg.seed)
        return cls(model_name, prepared, val_prepared, cfg, model, objective_factory, dev)

    def fresh_model(self):
        return copy.deepcopy(self.initial).to(self.device)

    # ------------------------------------------------------------------------- the sides
    def trainer_epoch(self) -> dict:
        """Seconds of the trainer's epoch (training part) and validation."""
        import torch

        from benchmark.loop import Callback, no_validation
        from benchmark.trainer import Trainer

        marks: dict[str, float] = {}
        device = self.device

        class Clock(Callback):
            def on_epoch_start(self, trainer, state) -> None:
                _sync(device)
                marks["start"] = _clock()

            def on_step_end(self, trainer, state, batch, logs) -> None:
                marks["steps_end"] = _clock()  # (the last one counts)

            def on_fit_end(self, trainer, state) -> None:
                _sync(device)
                marks["end"] = _clock()

        torch.manual_seed(self.config.seed)
        model = self.fresh_model()
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(model, self.prepared, self.config, self.objective_factory(),
                              Path(tmp), validate=no_validation, callbacks=[Clock()],
                              restore_best=False)
            trainer.fit()
        trainer.prepared = self.val_prepared
        _sync(device)
        t0 = _clock()
        val = trainer.evaluate("val")["overall"]["mae"]
        _sync(device)
        # steps: the epoch's steps with their batch gathering (no sync: on a GPU the queue may
        # still run, so the split is exact on a CPU only); end: reading the logs, the finiteness
        # check, scheduler, history and checkpoint, once per epoch
        return {**_elapsed("train", marks["start"], marks["end"]),
                **_elapsed("steps", marks["start"], marks["steps_end"]),
                **_elapsed("end", marks["steps_end"], marks["end"]),
                **_elapsed("val", t0, _clock()), "val_mae": val}

    def batch_source(self):
        """The trainer's batch source (same seed: its first epoch is the trainer's first-epoch
        permutation); an epoch's batches are gathered on the device as they are iterated."""
        from benchmark.trainer import WindowBatches

        cfg = self.config
        objective = self.objective_factory()
        return WindowBatches(self.prepared, cfg.batch_size, cfg.seed,
                             objective.teacher_labels(), cfg.max_train_batches, self.device)

    def bare_epoch(self) -> dict:
        """Seconds of the bare loop over the same batches, and of a bare validation pass."""
        import torch

        from benchmark.metrics import ProtocolMetrics
        from benchmark.objectives import StepContext
        from benchmark.trainer import make_optimizer

        cfg = self.config
        batches = self.batch_source().epoch(None)  # gathered inside the clock, per step
        val_windows = self.val_prepared.on_device(self.device)
        objective = self.objective_factory()
        torch.manual_seed(cfg.seed)
        model = self.fresh_model()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer, _ = make_optimizer(cfg, params)
        ctx = StepContext(0, cfg.schedule_epochs or cfg.epochs, self.prepared)
        model.train()
        _sync(self.device)
        t0 = _clock()
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = objective.step_loss(model, batch, ctx)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
        _sync(self.device)
        train = _elapsed("train", t0, _clock())
        p = self.prepared.protocol
        acc = ProtocolMetrics.for_protocol(p, self.prepared.out_channels)
        model.eval()
        t0 = _clock()
        with torch.no_grad():
            for batch in val_windows.batches("val", cfg.eval_batch_size):
                acc.update(self.prepared.inverse_targets(model(batch)), batch.y)
            val = acc.summary(p.report_horizons)["overall"]["mae"]
        _sync(self.device)
        return {**train, **_elapsed("val", t0, _clock()), "val_mae": val}


# ------------------------------------------------------------------------------ measuring
def full_epoch_seconds(run: dict, k: int, n_full: int, val_scale: float, trainer: bool,
                       cpu: bool = False) -> float:
    """A measured side scaled to a whole epoch at the measured fraction: its seconds per step
    times the ``n_full`` batches of the training split, plus (trainer) its once-per-epoch end,
    plus its validation seconds times ``val_scale`` (whole validation split / measured
    windows)."""
    c = "_cpu" if cpu else ""
    steps = run[f"steps{c}_s"] if trainer else run[f"train{c}_s"]
    end = run[f"end{c}_s"] if trainer else 0.0
    return steps / k * n_full + end + run[f"val{c}_s"] * val_scale


def full_epoch_ratio(t: dict, b: dict, k: int, n_full: int, val_scale: float,
                     ) -> tuple[float, float]:
    """Trainer / bare of :func:`full_epoch_seconds`, wall and CPU."""
    return tuple(full_epoch_seconds(t, k, n_full, val_scale, True, cpu)
                 / full_epoch_seconds(b, k, n_full, val_scale, False, cpu)
                 for cpu in (False, True))


def measure_model(model_name: str, args) -> dict:
    """Alternate the two sides ``args.repeats`` times (T B, B T, T B, ...) after one untimed
    warm-up of each; returns the model's row."""
    import torch

    from benchmark.allocator import tune_malloc

    tune_malloc()  # as the CLI does at process start
    if args.threads:
        torch.set_num_threads(args.threads)
    case = Case.build(model_name, args.dataset, args.train_batches, args.val_windows,
                      args.device, args.fraction)
    sides = {"trainer": case.trainer_epoch, "bare": case.bare_epoch}
    for side in sides.values():  # warm-up: allocator, first-call dispatch, lazy modules
        side()
    runs: dict[str, list[dict]] = {"trainer": [], "bare": []}
    for rep in range(args.repeats):
        order = ("trainer", "bare") if rep % 2 == 0 else ("bare", "trainer")
        for name in order:
            load0 = os.getloadavg()[0]
            out = sides[name]()
            out["load1"] = [load0, os.getloadavg()[0]]
            out["total_s"] = out["train_s"] + out["val_s"]
            out["total_cpu_s"] = out["train_cpu_s"] + out["val_cpu_s"]
            runs[name].append(out)
    keys = ("train_s", "val_s", "total_s", "train_cpu_s", "val_cpu_s", "total_cpu_s")
    ratios = {k: [t[k] / b[k] for t, b in zip(runs["trainer"], runs["bare"], strict=True)]
              for k in keys}
    cfg = case.config
    n_full = -(-len(case.prepared.starts("train")) // cfg.batch_size)
    val_scale = len(case.prepared.starts("val")) / len(case.val_prepared.starts("val"))
    k = len(case.batch_source())
    full = [full_epoch_ratio(t, b, k, n_full, val_scale)
            for t, b in zip(runs["trainer"], runs["bare"], strict=True)]
    ratios["full_epoch_s"] = [f[0] for f in full]
    ratios["full_epoch_cpu_s"] = [f[1] for f in full]
    return {"model": model_name, "runs": runs, "ratios": ratios,
            "median_ratio": {key: statistics.median(v) for key, v in ratios.items()},
            "full_epoch_s": {"trainer": statistics.median(
                [full_epoch_seconds(t, k, n_full, val_scale, True) for t in runs["trainer"]]),
                "bare": statistics.median(
                [full_epoch_seconds(b, k, n_full, val_scale, False) for b in runs["bare"]])},
            "batch_size": cfg.batch_size, "train_batches": k, "full_batches": n_full,
            "eval_batch_size": cfg.eval_batch_size,
            "val_windows": len(case.val_prepared.starts("val")),
            "train_windows_full": len(case.prepared.starts("train")),
            "val_windows_full": len(case.prepared.starts("val")),
            "threads": torch.get_num_threads(), "device": str(case.device),
            "same_val_mae": [t["val_mae"] == b["val_mae"]
                             for t, b in zip(runs["trainer"], runs["bare"], strict=True)]}


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def render_markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Trainer overhead: {meta['dataset']}, {meta['device']}",
             "", f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']}; {meta['threads']} torch threads; load average "
             f"(1 min) during the run {meta['load_range']}; {meta.get('wall_s', 0) / 60:.0f} "
             f"minutes in all. Each model: {meta['train_batches']} training batches of its "
             "recipe's batch size (the same batches on both sides: the trainer's first-epoch "
             f"permutation) and the first {meta['val_windows']} validation windows, "
             f"{meta['repeats']} repeats alternating the sides after one warm-up of each. "
             "*Trainer*: `Trainer.fit` (one epoch, `last.pt` written) then "
             "`Trainer.evaluate('val')`; *bare*: zero_grad / loss / backward / clip / step over "
             "the same batches, each gathered in the loop from the same device-resident "
             "windows, then a no-grad forward scored with the same metric sums. "
             "Seconds are medians over the repeats; ratios are medians of the per-repeat "
             "trainer/bare ratios, of wall seconds and (the machine is shared) of the process's "
             "CPU seconds. Target: trainer/bare <= 1.1 on CPU.", "",
             "| model | batch | trainer s (train + val) | bare s | ratio | ratio, CPU s | "
             "epoch end ms | whole epoch s (est.) | whole-epoch ratio | whole-epoch ratio, "
             "CPU s | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} | | | | | | | | | |")
            continue
        t, b = r["runs"]["trainer"], r["runs"]["bare"]
        mr = r["median_ratio"]
        tt, tv = _median([x["train_s"] for x in t]), _median([x["val_s"] for x in t])
        bt, bv = _median([x["train_s"] for x in b]), _median([x["val_s"] for x in b])
        end_ms = 1000 * _median([x["end_s"] for x in t])
        loads = [x for run in t + b for x in run["load1"]]
        flag = "" if max(mr["full_epoch_s"], mr["full_epoch_cpu_s"]) <= 1.1 else " (!)"
        lines.append(f"| {r['model']} | {r['batch_size']} | {tt:.2f} + {tv:.2f} | "
                     f"{bt:.2f} + {bv:.2f} | {mr['total_s']:.3f} | {mr['total_cpu_s']:.3f} | "
                     f"{end_ms:.0f} | {r['full_epoch_s']['trainer']:.0f} | "
                     f"**{mr['full_epoch_s']:.3f}**{flag} | {mr['full_epoch_cpu_s']:.3f} | "
                     f"{min(loads):.1f}-{max(loads):.1f} |")
    lines += ["", "*ratio*: the measured epoch (the batches and windows above). *epoch end*: "
              "the trainer's once-per-epoch work after the last step (reading the epoch's logs "
              "from the device, the finiteness check, scheduler, history, `last.pt`). *whole "
              "epoch (est.)*: each side's seconds per step times the batches of the whole "
              f"training split at fraction {meta['fraction']:g}, plus the trainer's epoch end, "
              "plus the validation seconds scaled to the whole validation split: the share "
              "the harness takes of a real epoch, where the epoch end is paid once per "
              "whole training split rather than once per measured few batches. (!) marks a "
              "whole-epoch ratio above 1.1."]
    if meta.get("closed_form"):
        lines += ["", CLOSED_FORM_NOTE + ", ".join(meta["closed_form"]) + "."]
    return "\n".join(lines) + "\n"


def _launch(model: str, args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "perf.trainer_overhead", "--child", model,
           "--dataset", args.dataset, "--fraction", str(args.fraction),
           "--train-batches", str(args.train_batches), "--val-windows", str(args.val_windows),
           "--repeats", str(args.repeats), "--threads", str(args.threads),
           "--device", args.device]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="all",
                   help="comma-separated registered models, or 'all' (every gradient-trained one)")
    p.add_argument("--dataset", default="nyc_taxi_manhattan")
    p.add_argument("--fraction", type=float, default=1.0)
    p.add_argument("--train-batches", type=int, default=6,
                   help="training batches per epoch, both sides (default 6)")
    p.add_argument("--val-windows", type=int, default=512,
                   help="validation windows per epoch, both sides (default 512)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads (0: leave as is)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help="output path without suffix (.json and .md)")
    p.add_argument("--child", metavar="MODEL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        print(json.dumps(measure_model(args.child, args)))
        return 0

    trained, closed = trained_models()
    models = trained if args.models == "all" else [
        m.strip() for m in args.models.split(",") if m.strip()]
    rows: list[dict] = []
    loads: list[float] = []
    meta = {"command": "python -m perf.trainer_overhead " + shlex.join(argv or sys.argv[1:]),
            "dataset": args.dataset, "fraction": args.fraction, "device": args.device,
            "train_batches": args.train_batches, "val_windows": args.val_windows,
            "repeats": args.repeats, "threads": args.threads,
            "machine": f"{platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} cpus",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "closed_form": [m for m in closed if args.models == "all"]}

    def save() -> None:
        meta["load_range"] = (f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a")
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(f"{args.out}.json",
                              json.dumps({"meta": meta, "rows": rows}, indent=1))
            atomic_write_text(f"{args.out}.md", render_markdown(rows, meta))

    t_start = time.perf_counter()
    for model in models:
        proc = _launch(model, args)
        out, err = proc.communicate()
        if proc.returncode != 0:
            row = {"model": model, "error": (err.strip().splitlines() or ["?"])[-1]}
        else:
            row = json.loads(out.strip().splitlines()[-1])
            loads += [x for side in row["runs"].values() for run in side for x in run["load1"]]
        rows.append(row)
        ratio = row.get("median_ratio", {}).get("total_s")
        print(f"{model}: epoch ratio {ratio if ratio is None else round(ratio, 3)} "
              f"({time.perf_counter() - t_start:.0f}s)", flush=True)
        save()
    meta["wall_s"] = time.perf_counter() - t_start
    save()
    print(render_markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
