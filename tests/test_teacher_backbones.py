"""Backbones and initialisation: ``init`` ("pretrained" / "scratch"), the teacher id, a local
Hugging Face directory as backbone (a tiny Llama written with ``save_pretrained``)."""

from __future__ import annotations

import json

import pytest
import torch

from flowdistill.teacher import finetune as ft
from flowdistill.teacher.finetune import TeacherFinetuneConfig, finetune, load_teacher, teacher_id
from flowdistill.teacher.model import backbone_name, resolve_init
from flowdistill.teacher.prompts import PromptBuilder

pytestmark = pytest.mark.usefixtures("one_thread")

OPTS = {"num_nodes": 3, "num_days": 4, "steps_per_day": 24}


def write_tiny_hf_dir(path, vocab_text: str = "the taxi flow of a region is 0 1 2 3 4 5 6 7 8 9",
                      seed: int = 0, **config) -> None:
    """A local causal-LM directory as ``from_pretrained`` reads it: a tiny Llama (its own
    random weights stand for 'pretrained' ones) and a word-level tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from flowdistill.teacher.tokenizer import train_word_tokenizer

    tok = train_word_tokenizer([vocab_text])
    base = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    base.update(config)
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(**base)).save_pretrained(path)
    tok.save_pretrained(path)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("backbone") / "tiny-llama-local"
    write_tiny_hf_dir(d)
    return d


@pytest.fixture(scope="module")
def prepared():
    return ft.load_prepared("synthetic", None, OPTS)


def _cfg(out, backbone, **kw) -> TeacherFinetuneConfig:
    base = dict(dataset="synthetic", dataset_options=OPTS, backbone=backbone, steps=2,
                batch_size=2, lr=5e-3, warmup_steps=1, eval_every=2, eval_pairs=4, save_every=2,
                tokenizer_windows=4, head_hidden=16, output_dir=str(out), progress=False)
    base.update(kw)
    return TeacherFinetuneConfig(**base)


def test_init_resolution_and_errors():
    assert resolve_init("tiny", None) == "scratch" and resolve_init("tiny", "scratch") == "scratch"
    assert resolve_init("smollm2-135m", None) == "pretrained"
    assert resolve_init("/m/x", "scratch") == "scratch"
    with pytest.raises(ValueError, match="no pretrained weights"):
        TeacherFinetuneConfig(backbone="tiny", init="pretrained")
    with pytest.raises(ValueError, match="init must be one of"):
        TeacherFinetuneConfig(init="random")
    with pytest.raises(ValueError, match="LoRA would freeze random weights"):
        TeacherFinetuneConfig(backbone="smollm2-135m", init="scratch", tuning="lora")
    # scratch defaults to full tuning, pretrained to LoRA; tiny keeps LoRA as an option
    assert TeacherFinetuneConfig(backbone="smollm2-135m", init="scratch").resolved_tuning == "full"
    assert TeacherFinetuneConfig(backbone="smollm2-135m").resolved_tuning == "lora"
    assert TeacherFinetuneConfig(backbone="tiny").resolved_tuning == "full"
    assert TeacherFinetuneConfig(backbone="tiny", tuning="lora").resolved_tuning == "lora"
    with pytest.raises(ValueError, match="precision must be"):
        TeacherFinetuneConfig(precision="fp16")


def test_teacher_ids_name_backbone_and_init():
    # the tiny backbones keep their pre-`init` ids (label stores and student run ids use them)
    assert teacher_id({"backbone": "tiny"}) == "llm:tiny"
    assert teacher_id({"backbone": "tiny", "st_encoder": True, "init": "scratch"}) \
        == "llm:tiny+stenc"
    assert teacher_id({"backbone": "tiny-10m"}) == "llm:tiny-10m"
    assert teacher_id({"backbone": "smollm2-135m", "st_encoder": True}) \
        == "llm:smollm2-135m@pretrained+stenc"
    assert teacher_id({"backbone": "smollm2-135m", "init": "scratch"}) \
        == "llm:smollm2-135m@scratch"
    # a directory: its last component, whichever machine holds it
    assert teacher_id({"backbone": "/models/Llama-2-7b-hf/"}) == "llm:Llama-2-7b-hf@pretrained"
    assert backbone_name("~/m/Qwen2-7B") == "Qwen2-7B"


def test_local_dir_pretrained_lora_round_trip(tmp_path, hf_dir, prepared):
    ck = finetune(_cfg(tmp_path / "p", str(hf_dir)), prepared)
    meta = json.loads((ck / "teacher.json").read_text())
    assert meta["teacher_id"] == "llm:tiny-llama-local@pretrained"
    assert meta["init"] == "pretrained" and meta["tuning"] == "lora"
    assert meta["backbone"]["kind"] == "hf" and meta["backbone"]["pretrained"] is True
    # the pretrained weights are the directory's: the reloaded LM's frozen weights equal them
    from transformers import AutoModelForCausalLM

    orig = AutoModelForCausalLM.from_pretrained(hf_dir)
    teacher, _ = load_teacher(ck)
    w = teacher.base_lm.model.layers[0].mlp.up_proj.weight
    torch.testing.assert_close(w, orig.model.layers[0].mlp.up_proj.weight)


def test_local_dir_scratch_is_same_architecture_other_weights(tmp_path, hf_dir, prepared):
    ck = finetune(_cfg(tmp_path / "s", str(hf_dir), init="scratch"), prepared)
    meta = json.loads((ck / "teacher.json").read_text())
    assert meta["teacher_id"] == "llm:tiny-llama-local@scratch"
    assert meta["init"] == "scratch" and meta["tuning"] == "full"
    assert meta["backbone"]["pretrained"] is False
    assert not (ck / "base" / "model.safetensors").exists()  # config only: all weights tuned
    teacher, _ = load_teacher(ck)
    from transformers import AutoModelForCausalLM

    orig = AutoModelForCausalLM.from_pretrained(hf_dir)
    # same layers, widths and vocabulary (+ the ST tokens) and the directory's tokenizer
    assert teacher.base_lm.config.num_hidden_layers == orig.config.num_hidden_layers
    assert teacher.base_lm.config.hidden_size == orig.config.hidden_size
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(hf_dir).get_vocab()
    assert vocab.items() <= teacher.tokenizer.get_vocab().items()
    assert teacher.input_embeddings.weight.shape[0] >= len(teacher.tokenizer)
    assert not torch.allclose(teacher.base_lm.model.layers[0].mlp.up_proj.weight,
                              orig.model.layers[0].mlp.up_proj.weight)
    # zero-initialised residual branches: two tuning steps move them only a little
    assert teacher.num_parameters(trainable_only=True) == teacher.num_parameters()
    # the same config rebuilds the same weights (seeded initialisation), another seed does not
    again = finetune(_cfg(tmp_path / "s2", str(hf_dir), init="scratch"), prepared)
    other = finetune(_cfg(tmp_path / "s3", str(hf_dir), init="scratch", seed=1), prepared)
    h = [json.loads((c / "teacher.json").read_text())["adapter_hash"] for c in (ck, again, other)]
    assert h[0] == h[1] != h[2]


def test_old_checkpoints_resume_with_new_settings_defaulted(tmp_path, prepared):
    """A checkpoint written before ``init``/``precision`` existed resumes (missing settings take
    their defaults) and keeps its teacher id."""
    out = tmp_path / "old"
    finetune(_cfg(out, "tiny", steps=2), prepared)
    meta = json.loads((out / "teacher.json").read_text())
    for key in ("init", "precision"):
        del meta["config"][key]
    (out / "teacher.json").write_text(json.dumps(meta))
    finetune(_cfg(out, "tiny", steps=4), prepared)
    meta = json.loads((out / "teacher.json").read_text())
    assert meta["training"]["steps"] == 4 and meta["teacher_id"] == "llm:tiny"


# ---------------------------------------------------------------- resources before loading
@pytest.mark.parametrize("kw", [dict(), dict(init="scratch", st_encoder=True,
                                             encoder_node_embedding=True)])
def test_estimate_counts_the_parameters_the_run_then_has(tmp_path, hf_dir, prepared, capsys,
                                                         kw):
    ck = finetune(_cfg(tmp_path / "e", str(hf_dir), final_eval_splits=(), **kw), prepared)
    printed = capsys.readouterr().out
    meta = json.loads((ck / "teacher.json").read_text())
    total, trainable = meta["parameters"]["total"], meta["parameters"]["trainable"]
    assert f"{total:,} parameters" in printed and f"{trainable:,} trainable" in printed
    assert "memory about" in printed and "time per step" in printed


def test_estimate_memory_terms(hf_dir, prepared):
    from transformers import AutoConfig, AutoTokenizer

    from flowdistill.teacher.resources import estimate_resources
    from flowdistill.teacher.tokenizer import add_st_tokens, encode_prefix

    config, tok = AutoConfig.from_pretrained(hf_dir), AutoTokenizer.from_pretrained(hf_dir)
    add_st_tokens(tok)
    cpu = torch.device("cpu")
    lora = estimate_resources(_cfg("x", str(hf_dir)), config, tok, prepared, cpu, measure=False)
    # fp32 LoRA: frozen and trainable weights at 4 bytes; gradients 4 and AdamW 8 per trainable
    assert lora.weight_bytes == 4 * lora.parameters
    assert lora.grad_bytes == 4 * lora.trainable and lora.optimizer_bytes == 8 * lora.trainable
    bf16 = estimate_resources(_cfg("x", str(hf_dir), precision="bf16"), config, tok, prepared,
                              cpu, measure=False)
    frozen = lora.parameters - lora.trainable
    assert bf16.weight_bytes == 2 * frozen + 4 * lora.trainable
    assert 2 * bf16.activation_bytes == lora.activation_bytes  # bf16 activations
    # activations (module docstring): 2 layers, h = 64, i = 128, a = 2 heads, kv_dim = 64; per
    # token and layer 8h + 4i + a * ctx elements, prefix once + batch x suffix tokens, plus the
    # prefix's K/V repeated over the batch, 4 bytes each
    pre, suf, b = lora.prefix_tokens, lora.suffix_tokens, lora.batch_size
    per_token = 8 * 64 + 4 * 128 + 2 * (pre + suf)
    assert lora.activation_bytes == 4 * 2 * ((pre + b * suf) * per_token + 2 * b * pre * 64)
    assert pre == len(encode_prefix(tok, PromptBuilder.from_prepared(prepared).prefix))
    assert any("time per step unknown" in line for line in lora.lines())
    timed = estimate_resources(_cfg("x", str(hf_dir)), config, tok, prepared, cpu)
    assert timed.seconds_per_step > 0


def test_too_big_fails_in_one_line_before_loading(tmp_path, hf_dir, prepared, monkeypatch,
                                                  capsys):
    from benchmark.cli import main
    from flowdistill.teacher import checkpoint, resources

    def never(*a, **k):
        raise AssertionError("the backbone was loaded")

    monkeypatch.setattr(checkpoint, "load_pretrained", never)
    monkeypatch.setattr(resources, "device_memory", lambda dev: (2 ** 20, "free"))
    with pytest.raises(resources.TeacherResourceError, match="needs about .* but cpu has 0.0 GiB"):
        finetune(_cfg(tmp_path / "big", str(hf_dir)), prepared)
    args = ["teacher", "finetune", "--backbone", str(hf_dir), "--out", str(tmp_path / "c"),
            "--set", f"dataset_options={json.dumps(OPTS)}", "steps=1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "lower batch_size" in err and "memory_check=False" in err
    # --estimate-only prints the estimate and loads nothing
    monkeypatch.setattr(resources, "device_memory", lambda dev: (2 ** 40, "free"))
    assert main(args + ["--estimate-only"]) == 0
    assert "teacher resources:" in capsys.readouterr().out
    assert not (tmp_path / "c").exists()


def test_backbone_path_errors(tmp_path):
    from flowdistill.teacher.model import check_local_backbone

    with pytest.raises(FileNotFoundError, match="no such directory"):
        check_local_backbone(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        check_local_backbone(str(tmp_path / "empty"))
    check_local_backbone("HuggingFaceTB/SmolLM2-135M")  # a hub id: left to transformers
