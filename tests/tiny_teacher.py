"""The tiny LLM teacher the teacher and campaign tests fine-tune: the synthetic dataset at its
smallest (3 nodes, 4 days of 24 steps) and a LoRA-tuned tiny Llama for a few steps."""

from __future__ import annotations

from flowdistill.teacher.finetune import TeacherFinetuneConfig

OPTS = {"num_nodes": 3, "num_days": 4, "steps_per_day": 24}


def tiny_config(out, **kw) -> TeacherFinetuneConfig:
    """4 LoRA steps of the tiny backbone on synthetic data into ``out``; ``kw`` overrides."""
    base = dict(dataset="synthetic", dataset_options=OPTS, backbone="tiny", tuning="lora",
                lora_r=4, lora_alpha=8, steps=4, batch_size=4, lr=5e-3, warmup_steps=1,
                eval_every=2, eval_pairs=8, save_every=2, tokenizer_windows=10,
                output_dir=str(out), progress=False, seed=0)
    base.update(kw)
    return TeacherFinetuneConfig(**base)
