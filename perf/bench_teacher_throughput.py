"""Soft-label throughput (prompts/s) of the vLLM and transformers backends, side by side.

Same teacher weights, same prompts, same machine, one process: for each teacher size
(``tiny`` ~1M and ``tiny-10m`` ~10M parameters, randomly initialised: throughput does not depend
on the weights) the first ``--prompts`` (window, node) prompts of a dataset, which all share the
instruction prefix, are labelled by

* ``hf``: plain batched forward of the full prompts (``reuse_prefix=False``),
* ``hf+prefix``: the same, but the shared prefix runs once per batch and its KV cache is reused,
* ``vllm``: vLLM pooling runner with prefix caching,
* ``vllm-nocache``: the same engine told not to read the prefix cache (every token computed).

Each backend labels a warm-up set first; then the four arms run ``--repeats`` times, interleaved,
and the median is reported. vLLM's start-up time is reported separately. Both sides
use the same number of torch threads (vLLM on CPU runs its model with one thread unless
OMP_NUM_THREADS says otherwise). Run in the vllm env:

    VLLM_CPU_KVCACHE_SPACE=1 /work/venv-vllm/bin/python perf/bench_teacher_throughput.py \
        --dataset nyc_taxi_manhattan --prompts 2000 --out results/teacher_throughput.md
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

from benchmark.atomic import atomic_write_text
from flowdistill.teacher.backends import PromptSource, get_backend
from flowdistill.teacher.finetune import load_prepared
from flowdistill.teacher.model import STTeacher, build_tiny
from flowdistill.teacher.prompts import PromptBuilder, pairs
from flowdistill.teacher.tokenizer import train_word_tokenizer


def _once(backend, batch, threads: int) -> tuple[float, np.ndarray]:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    y = backend.predict(batch)
    return len(batch) / (time.perf_counter() - t0), y


ARMS = ("hf", "hf+prefix", "vllm", "vllm-nocache")


def run(args) -> dict:
    prepared = load_prepared(args.dataset, None, {})
    builder = PromptBuilder.from_prepared(prepared)
    n = prepared.num_nodes
    windows = -(-(args.prompts + args.warmup) // n)
    starts = prepared.splits.val[:windows]
    tok = train_word_tokenizer(builder.corpus(prepared.train_starts[:: max(1, len(
        prepared.train_starts) // 50)][:50]))
    s, nodes = pairs(starts, n)
    src = PromptSource(builder, tok, prepared.scaled, prepared.tod, prepared.dow, False)
    allb = src.batch(s[:args.prompts + args.warmup], nodes[:args.prompts + args.warmup])
    warm = allb.subset(range(args.warmup))
    batch = allb.subset(range(args.warmup, args.warmup + args.prompts))
    lengths = [len(batch.prefix_ids) + len(x) for x in batch.suffix_ids]
    mean_len = float(np.mean(lengths))
    out = {"dataset": args.dataset, "prompts": len(batch), "prefix_tokens": len(batch.prefix_ids),
           "mean_prompt_tokens": mean_len, "threads": args.threads, "repeats": args.repeats,
           "hf_batch_size": args.batch_size, "vllm_options": {
               "max_num_batched_tokens": args.max_batched_tokens,
               "max_num_seqs": args.max_num_seqs, "block_size": 32, "dtype": "float32",
               "enforce_eager": True}, "models": {}}
    for name in args.models:
        torch.manual_seed(0)
        lm = build_tiny(name, len(tok))
        teacher = STTeacher(lm, tok, prepared.in_channels, prepared.target_channel_idx,
                            prepared.protocol.input_len, prepared.protocol.horizon,
                            prepared.data.steps_per_day).eval()
        t0 = time.perf_counter()
        vb = get_backend("vllm", teacher, request_batch=args.request_batch,
                         llm_options={"max_num_batched_tokens": args.max_batched_tokens,
                                      "max_num_seqs": args.max_num_seqs})
        startup = time.perf_counter() - t0
        backends = {
            "hf": get_backend("hf", teacher, batch_size=args.batch_size, reuse_prefix=False),
            "hf+prefix": get_backend("hf", teacher, batch_size=args.batch_size,
                                     reuse_prefix=True),
            "vllm": vb, "vllm-nocache": vb}
        speeds: dict[str, list[float]] = {a: [] for a in ARMS}
        outputs: dict[str, np.ndarray] = {}
        computed = {}
        try:
            for arm in ARMS:  # warm-up
                vb.read_prefix_cache = arm != "vllm-nocache"
                _once(backends[arm], warm, args.threads)
            for rep in range(args.repeats):  # interleaved, so load drift hits every arm
                for arm in ARMS:
                    vb.read_prefix_cache = arm != "vllm-nocache"
                    before = dict(vb.stats)
                    pps, y = _once(backends[arm], batch, args.threads)
                    speeds[arm].append(pps)
                    outputs[arm] = y
                    if arm.startswith("vllm"):
                        computed[arm] = ((vb.stats["computed_tokens"] - before["computed_tokens"])
                                         / (vb.stats["prompt_tokens"] - before["prompt_tokens"]))
                    print(name, rep, arm, round(pps, 2), flush=True)
        finally:
            vb.close()
        res = {"parameters": sum(p.numel() for p in lm.parameters()),
               "vllm_startup_s": round(startup, 1)}
        for arm in ARMS:
            med = float(np.median(speeds[arm]))
            res[arm] = {"prompts_per_s": round(med, 2), "runs": [round(v, 2) for v in speeds[arm]],
                        "tokens_per_s": round(med * mean_len, 1)}
            if arm in computed:
                res[arm]["computed_token_fraction"] = round(computed[arm], 3)
                res[arm]["max_abs_diff_vs_hf_scaled"] = float(
                    np.abs(outputs[arm] - outputs["hf"]).max())
        res["ratio_vllm_over_hf"] = round(res["vllm"]["prompts_per_s"]
                                          / res["hf"]["prompts_per_s"], 2)
        res["ratio_vllm_over_hf_prefix"] = round(res["vllm"]["prompts_per_s"]
                                                 / res["hf+prefix"]["prompts_per_s"], 2)
        out["models"][name] = res
    return out


def render(out: dict, cmd: str) -> str:
    lines = [
        "# Teacher soft-label throughput: vLLM vs transformers (same model, same prompts)",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs shared "
        f"with other jobs; torch threads {out['threads']}; {out['prompts']} prompts of "
        f"{out['dataset']} (mean {out['mean_prompt_tokens']:.0f} tokens, shared prefix "
        f"{out['prefix_tokens']} tokens); HF batch size {out['hf_batch_size']}.",
        "",
        "| teacher | params | hf | hf+prefix | vllm (prefix cache) | vllm (no cache) | "
        "vllm / hf | vllm / hf+prefix | vllm start-up s | max abs diff (scaled) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in out["models"].items():
        lines.append(
            f"| {name} | {r['parameters'] / 1e6:.2f}M | {r['hf']['prompts_per_s']} | "
            f"{r['hf+prefix']['prompts_per_s']} | {r['vllm']['prompts_per_s']} | "
            f"{r['vllm-nocache']['prompts_per_s']} | {r['ratio_vllm_over_hf']} | "
            f"{r['ratio_vllm_over_hf_prefix']} | {r['vllm_startup_s']} | "
            f"{r['vllm']['max_abs_diff_vs_hf_scaled']:.1e} |")
    lines += ["", "Throughput in prompts/s (higher is better), median of the interleaved "
              "repeats; `computed_token_fraction` is the share of prompt tokens vLLM actually "
              "ran (the rest came from its prefix cache).", "",
              "```json", json.dumps(out, indent=2), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="nyc_taxi_manhattan")
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["tiny", "tiny-10m"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--request-batch", type=int, default=1024)
    ap.add_argument("--max-batched-tokens", type=int, default=16384)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    out = run(args)
    text = render(out, "perf/bench_teacher_throughput.py " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
