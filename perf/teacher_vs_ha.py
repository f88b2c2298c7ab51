"""Fine-tune the tiny LLM teacher on a dataset and compare its validation MAE with the historical
average (``ha-slot``) on the same random (window, node) validation pairs.

Usage (the acceptance run of the teacher issue; about 30 min on one shared CPU core):

    FLOWDISTILL_DATA=/work/shared/data .venv/bin/python perf/teacher_vs_ha.py \
        --dataset nyc_taxi_manhattan --steps 500 --out runs/teacher/nyc_tiny \
        --report results/teacher_nyc_taxi_manhattan.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.atomic import atomic_write_text
from benchmark.simple_models import HistoricalSlotMean
from flowdistill.teacher.backends import PromptSource
from flowdistill.teacher.finetune import (
    TeacherFinetuneConfig,
    evaluate_mae,
    finetune,
    load_prepared,
    load_teacher,
    sample_pairs,
    targets_for,
)
from flowdistill.teacher.prompts import PromptBuilder


def ha_mae(prepared, starts: np.ndarray, nodes: np.ndarray) -> float:
    """MAE (original units) of the per-(day-of-week, time-of-day) training mean on the pairs."""
    m = HistoricalSlotMean(prepared.num_nodes, prepared.data.steps_per_day,
                           tuple(prepared.target_channel_idx))
    m.fit_closed_form(prepared)
    p = prepared.protocol
    batch = prepared.make_batch(starts)
    y_hat = prepared.inverse_targets(m(batch))  # [P, T_out, N, C]
    idx = torch.arange(len(starts))
    y_hat = y_hat[idx, :, torch.as_tensor(nodes)]  # [P, T_out, C]
    y = targets_for(prepared.raw_targets, starts, nodes, p.input_len, p.horizon,
                    list(range(prepared.out_channels)))
    return float((y_hat - y).abs().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="nyc_taxi_manhattan")
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--text-only", action="store_true", help="no ST encoder")
    ap.add_argument("--no-node-embedding", action="store_true")
    ap.add_argument("--encoder-pretrain-epochs", type=int, default=0)
    ap.add_argument("--eval-pairs", type=int, default=3000)
    ap.add_argument("--out", default="runs/teacher/nyc_tiny")
    ap.add_argument("--report", default=None)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = TeacherFinetuneConfig(
        dataset=a.dataset, backbone=a.backbone, st_encoder=not a.text_only,
        encoder_node_embedding=not (a.text_only or a.no_node_embedding), steps=a.steps,
        encoder_pretrain_epochs=0 if a.text_only else a.encoder_pretrain_epochs,
        batch_size=a.batch_size, lr=a.lr, warmup_steps=min(50, a.steps // 10),
        eval_every=max(1, a.steps // 5), eval_pairs=512, save_every=50, output_dir=a.out,
        num_threads=a.threads, progress=sys.stderr.isatty())
    t0 = time.time()
    prepared = load_prepared(a.dataset, cfg.protocol)
    ckpt = finetune(cfg, prepared)
    train_s = time.time() - t0
    teacher, meta = load_teacher(ckpt)
    rng = np.random.default_rng([2024, 7])
    s, n = sample_pairs(prepared.starts("val"), prepared.num_nodes, a.eval_pairs, rng)
    source = PromptSource(PromptBuilder.from_prepared(prepared), teacher.tokenizer,
                          prepared.scaled, prepared.tod, prepared.dow,
                          with_series=teacher.st_encoder is not None)
    t1 = time.time()
    mae_teacher = evaluate_mae(teacher, source, s, n, prepared)
    eval_s = time.time() - t1
    mae_ha = ha_mae(prepared, s, n)
    result = {"dataset": a.dataset, "teacher_id": meta["teacher_id"], "checkpoint": str(ckpt),
              "config": meta["config"], "training": meta["training"],
              "parameters": meta["parameters"], "val_pairs": a.eval_pairs,
              "val_mae_teacher": mae_teacher, "val_mae_ha_slot": mae_ha,
              "wall_seconds_total": round(train_s, 1), "eval_seconds": round(eval_s, 1),
              "eval_prompts_per_second": round(a.eval_pairs / eval_s, 1)}
    print(json.dumps(result, indent=2, default=str))
    if a.report:
        cmd = "FLOWDISTILL_DATA=... .venv/bin/python perf/teacher_vs_ha.py " + \
            " ".join(argv if argv is not None else sys.argv[1:])
        text = (f"# Tiny LLM teacher vs historical average on {a.dataset} (validation)\n\n"
                f"Command: `{cmd}`\n\n"
                f"| model | val MAE ({a.eval_pairs} random (window, node) pairs) |\n"
                f"|---|---|\n| {meta['teacher_id']} (not pretrained) | {mae_teacher:.3f} |\n"
                f"| ha-slot | {mae_ha:.3f} |\n\n"
                f"```json\n{json.dumps(result, indent=2, default=str)}\n```\n")
        atomic_write_text(Path(a.report), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
