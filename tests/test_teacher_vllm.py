"""vLLM and transformers backends agree on the tiny teacher (runs in the ``vllm`` env only).

    tox -e vllm   (or: /work/venv-vllm/bin/python -m pytest -m vllm tests/test_teacher_vllm.py)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

OPTS = {"num_nodes": 3, "num_days": 4, "steps_per_day": 24}
TOL = 1e-3  # max |vllm - hf| in the teacher's scaled units


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from flowdistill.teacher.finetune import TeacherFinetuneConfig, finetune

    cfg = TeacherFinetuneConfig(dataset="synthetic", dataset_options=OPTS, backbone="tiny",
                                tuning="lora", lora_r=4, lora_alpha=8, steps=3, batch_size=4,
                                lr=1e-2, warmup_steps=1, eval_pairs=0, save_every=3,
                                tokenizer_windows=10, progress=False,
                                output_dir=str(tmp_path_factory.mktemp("vllm") / "ck"))
    return finetune(cfg)


def test_vllm_labels_match_hf(checkpoint, tmp_path):
    from flowdistill.teacher.finetune import read_config
    from flowdistill.teacher.llm_labels import label

    kw = dict(splits=("val", "test"), progress=False, dataset_options=OPTS)
    hf = label(checkpoint, backend="hf", store_root=tmp_path / "hf", **kw)
    vl = label(checkpoint, backend="vllm", store_root=tmp_path / "vllm", **kw)
    assert vl.metadata["backend"] == "vllm" and vl.metadata["backend_version"].startswith("vllm")
    assert vl.metadata["adapter_hash"] == hf.metadata["adapter_hash"]
    assert vl.version_key != hf.version_key
    np.testing.assert_array_equal(vl.starts, hf.starts)
    scale = np.asarray(read_config(checkpoint)["scaler"]["scale"], np.float32)
    diff = np.abs(vl.labels - hf.labels) / scale
    assert diff.max() <= TOL, f"max |vllm - hf| = {diff.max():.2e} scaled units"


def test_vllm_serves_the_st_encoder_through_prompt_embeds():
    from benchmark.data.protocol import Protocol
    from benchmark.data.synthetic import make_synthetic
    from benchmark.data.windows import prepare
    from flowdistill.teacher.backends import PromptSource, get_backend
    from flowdistill.teacher.model import STTeacher, build_tiny
    from flowdistill.teacher.prompts import PromptBuilder, pairs
    from flowdistill.teacher.tokenizer import train_word_tokenizer

    data = make_synthetic(num_nodes=3, num_days=3, steps_per_day=24, channels=2, seed=2)
    prepared = prepare(data, Protocol(input_len=12, horizon=12, null_value=None), "synthetic")
    builder = PromptBuilder.from_prepared(prepared)
    tok = train_word_tokenizer(builder.corpus(prepared.splits.train[:3]))
    torch.manual_seed(0)
    teacher = STTeacher(build_tiny("tiny", len(tok)), tok, 2, [0, 1], 12, 12, 24,
                        st_encoder=True, encoder_nodes=3).eval()
    src = PromptSource(builder, tok, prepared.scaled, prepared.tod, prepared.dow, True)
    batch = src.batch(*pairs(prepared.splits.val[:4], 3))
    y_hf = get_backend("hf", teacher).predict(batch)
    be = get_backend("vllm", teacher)
    try:
        y_v = be.predict(batch)
        y_again = be.predict(batch)  # same prompts again: prefix cache reset, same numbers
    finally:
        be.close()
    assert np.abs(y_v - y_hf).max() <= TOL
    np.testing.assert_array_equal(y_v, y_again)
    # the shared prefix really came from the prefix cache (vLLM computed fewer tokens)
    assert be.stats["computed_tokens"] < be.stats["prompt_tokens"]
    assert be.stats["recomputed"] == 0
