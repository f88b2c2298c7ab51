"""Teacher fine-tuning (LoRA), checkpoints, resume, and HF soft labels on tiny synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flowdistill.teacher import finetune as ft
from flowdistill.teacher.backends import PromptSource, get_backend
from flowdistill.teacher.finetune import (
    TeacherCheckpointError,
    TeacherFinetuneConfig,
    evaluate_mae,
    finetune,
    info,
    load_prepared,
    load_teacher,
    regression_loss,
    sample_pairs,
    targets_for,
)
from flowdistill.teacher.prompts import PromptBuilder
from tests.tiny_teacher import OPTS, tiny_config

_cfg = tiny_config


@pytest.fixture(scope="module")
def prepared():
    return load_prepared("synthetic", None, OPTS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared):
    out = tmp_path_factory.mktemp("teacher") / "ck"
    return finetune(_cfg(out), prepared)


FIXED = (np.array([0, 5, 10, 15, 20, 25, 30, 3]), np.array([0, 1, 2, 0, 1, 2, 0, 1]))


def _fixed_loss(teacher, prepared) -> float:
    src = PromptSource(PromptBuilder.from_prepared(prepared), teacher.tokenizer, prepared.scaled,
                       prepared.tod, prepared.dow, with_series=teacher.st_encoder is not None)
    s, n = FIXED
    y = targets_for(prepared.scaled, s, n, 12, 12, prepared.target_channel_idx)
    y_hat = torch.from_numpy(get_backend("hf", teacher).predict(src.batch(s, n)))
    return float(regression_loss(y_hat, y, "huber", 1.0))


def test_lora_steps_reduce_the_loss(tmp_path, prepared, monkeypatch):
    # every step sees the same 8 training pairs: the loss on them must fall
    monkeypatch.setattr(ft, "sample_pairs", lambda *a, **k: FIXED)
    before = finetune(_cfg(tmp_path / "a", steps=0), prepared)
    after = finetune(_cfg(tmp_path / "b", steps=8, batch_size=8), prepared)
    t0, _ = load_teacher(before, "latest")
    t1, meta = load_teacher(after, "latest")
    assert meta["tuning"] == "lora"
    assert _fixed_loss(t1, prepared) < 0.8 * _fixed_loss(t0, prepared)


def test_same_config_same_weights_bitwise(tmp_path, trained, prepared):
    """Seeded fine-tunes repeat bitwise with torch's multi-threaded CPU kernels (deterministic
    kernels inside finetune only: the process's setting is restored afterwards)."""
    torch.set_num_threads(2)
    again = finetune(_cfg(tmp_path / "again"), prepared)
    first = json.loads((trained / "teacher.json").read_text())
    second = json.loads((again / "teacher.json").read_text())
    assert second["adapter_hash"] == first["adapter_hash"]
    assert (again / "weights.safetensors").read_bytes() == (
        trained / "weights.safetensors").read_bytes()
    assert not torch.are_deterministic_algorithms_enabled()


def test_checkpoint_round_trip(trained, prepared):
    teacher, meta = load_teacher(trained)
    assert meta["template_hash"] and meta["protocol_hash"] and meta["adapter_hash"]
    cfg = TeacherFinetuneConfig.from_dict(meta["config"])
    # the reloaded best weights reproduce the validation MAE measured during training
    src = PromptSource(PromptBuilder.from_prepared(prepared), teacher.tokenizer, prepared.scaled,
                       prepared.tod, prepared.dow, with_series=False)
    s, n = sample_pairs(prepared.starts("val"), prepared.num_nodes, cfg.eval_pairs,
                        np.random.default_rng([cfg.seed, 10**6]))
    mae = evaluate_mae(teacher, src, s, n, prepared)
    assert mae == pytest.approx(meta["training"]["best_val_mae"], abs=1e-5)
    d = info(trained)
    assert d["teacher_id"] == "llm:tiny" and "weights.safetensors" in d["files"]
    assert d["parameters"]["trainable"] < d["parameters"]["total"]


def test_resume_continues_where_it_stopped(tmp_path, trained, prepared, monkeypatch):
    calls = {"n": 0}
    real = ft.regression_loss

    def crash_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ft, "regression_loss", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        finetune(_cfg(tmp_path / "r"), prepared)
    assert json.loads((tmp_path / "r" / "resume" / "state.json").read_text())["step"] == 2
    monkeypatch.setattr(ft, "regression_loss", real)
    finetune(_cfg(tmp_path / "r"), prepared)
    a = ft._load_tensors(trained / "resume" / "weights.safetensors")
    b = ft._load_tensors(tmp_path / "r" / "resume" / "weights.safetensors")
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=0)
    with pytest.raises(TeacherCheckpointError, match="changed settings"):
        finetune(_cfg(tmp_path / "r", lr=0.5), prepared)


def test_hf_labels_shape_and_original_units(tmp_path, trained, prepared):
    from flowdistill.teacher.label_store import SoftLabelStore
    from flowdistill.teacher.llm_labels import label

    store = label(trained, "synthetic", None, backend="hf", splits=("val",),
                  store_root=tmp_path / "labels", progress=False, dataset_options=OPTS)
    starts = prepared.starts("val")
    assert store.labels.shape == (len(starts), 12, prepared.num_nodes, 2)
    assert store.mask.all() and np.array_equal(store.starts, starts)
    md = SoftLabelStore.open(store.path).metadata
    for key in ("teacher_id", "adapter_hash", "template_hash", "protocol_hash", "dataset",
                "backend", "backend_version", "parse_failures", "nan_failures"):
        assert key in md
    assert md["backend"] == "hf" and md["nan_failures"] == 0 and md["device"] == "cpu"
    # window 0, node 2 equals the teacher's scaled forecast mapped back with its scaler
    teacher, meta = load_teacher(trained)
    src = PromptSource(PromptBuilder.from_prepared(prepared), teacher.tokenizer, prepared.scaled,
                       prepared.tod, prepared.dow, with_series=False)
    y = get_backend("hf", teacher).predict(src.batch(starts[:1], np.array([2])))[0]
    shift, scale = np.asarray(meta["scaler"]["shift"]), np.asarray(meta["scaler"]["scale"])
    np.testing.assert_allclose(store.labels[0, :, 2, :], y * scale + shift, atol=1e-4)
    # original units: same scale as the data, not z-scores
    assert abs(store.labels.mean() - prepared.data.values.mean()) < prepared.data.values.std()


def test_label_reuses_a_store_that_holds_the_windows(tmp_path, trained, monkeypatch):
    from flowdistill.teacher import llm_labels as labeling

    root = tmp_path / "labels"
    kw = dict(backend="hf", store_root=root, progress=False, dataset_options=OPTS)
    first = labeling.label(trained, "synthetic", None, splits=("val",), **kw)

    def no_labelling(*a, **k):
        raise AssertionError("labelled again although the store holds every window")

    monkeypatch.setattr(labeling, "predict_windows", no_labelling)
    again = labeling.label(trained, "synthetic", None, splits=("val",), **kw)
    assert again.path == first.path
    # same teacher and protocol, more windows than the store holds: a clear error, no relabel
    with pytest.raises(FileExistsError, match="lacks .* windows"):
        labeling.label(trained, "synthetic", None, splits=("val", "test"), **kw)


def test_label_rejects_a_mismatched_protocol(trained):
    from benchmark.data.stdata import DataError
    from flowdistill.teacher.llm_labels import label

    with pytest.raises(DataError, match="horizon"):
        label(trained, "synthetic", {"horizon": 6}, dataset_options=OPTS, progress=False,
              store_root="/nonexistent")


# ---------------------------------------------------------------- device option
def test_device_names_resolve_and_bad_ones_are_rejected(monkeypatch):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert ft.resolve_device("auto").type == expected
    assert ft.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ft.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        ft.resolve_device("cuda:0")
    for bad in ("gpu", "cuda:x", "CPU", ""):
        with pytest.raises(ValueError, match="device must be"):
            TeacherFinetuneConfig(device=bad)
    assert TeacherFinetuneConfig().device == "cpu"


def test_time_budget_stops_and_a_resume_finishes(tmp_path, trained, prepared):
    """The trainer's time budget applies to the teacher's loop too: a spent budget stops it
    with a resumable checkpoint, and a resumed run (the budget is a run-control setting) ends
    where an uninterrupted one does."""
    out = tmp_path / "b"
    finetune(_cfg(out, time_budget_s=0.0), prepared)
    summary = json.loads((out / "teacher.json").read_text())["training"]
    assert summary["steps"] == 0 and (out / "weights.safetensors").is_file()
    finetune(_cfg(out), prepared)
    assert json.loads((out / "teacher.json").read_text())["training"]["steps"] == 4
    a = ft._load_tensors(trained / "resume" / "weights.safetensors")
    b = ft._load_tensors(out / "resume" / "weights.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=0)


def test_resume_on_another_device_and_device_in_summary(tmp_path, trained, prepared):
    out = tmp_path / "d"
    finetune(_cfg(out, steps=2, device="cpu"), prepared)
    meta = json.loads((out / "teacher.json").read_text())
    assert meta["config"]["device"] == "cpu"
    assert meta["training"]["device"] == "cpu" and meta["training"]["device_name"] == "cpu"
    # pretend the first two steps ran on a GPU this machine does not have
    meta["config"]["device"] = "cuda:3"
    (out / "teacher.json").write_text(json.dumps(meta))
    state = json.loads((out / "resume" / "state.json").read_text())
    state["devices"] = [{"device": "cuda:3", "name": "Some GPU", "from_step": 0}]
    (out / "resume" / "state.json").write_text(json.dumps(state))
    # the checkpoint holds CPU tensors only, so it loads here
    opt = torch.load(out / "resume" / "optimizer.pt", weights_only=True)
    assert all(v.device.type == "cpu" for s in opt["state"].values() for v in s.values()
               if isinstance(v, torch.Tensor))
    finetune(_cfg(out, steps=4, device="auto"), prepared)  # no "changed settings" error
    summary = json.loads((out / "teacher.json").read_text())["training"]
    assert summary["steps"] == 4 and summary["device"] == "cpu"
    assert [(d["device"], d["from_step"]) for d in summary["devices"]] == [("cuda:3", 0),
                                                                           ("cpu", 2)]
    # and it continued exactly like the uninterrupted run
    a = ft._load_tensors(trained / "resume" / "weights.safetensors")
    b = ft._load_tensors(out / "resume" / "weights.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=0)
    # other settings still count
    with pytest.raises(TeacherCheckpointError, match=r"changed settings \['lr'\]"):
        finetune(_cfg(out, steps=6, device="cpu", lr=0.5), prepared)


def test_label_device_option_and_metadata(tmp_path, trained):
    from flowdistill.teacher.llm_labels import label

    store = label(trained, "synthetic", None, splits=("test",), store_root=tmp_path,
                  progress=False, dataset_options=OPTS, max_windows=2, device="auto")
    md = store.metadata
    assert md["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert md["device_name"]
    with pytest.raises(ValueError, match="hf backend"):
        label(trained, "synthetic", None, backend="vllm", device="cuda", store_root=tmp_path,
              dataset_options=OPTS)
    with pytest.raises(ValueError, match="device must be"):
        label(trained, "synthetic", None, device="gpu", store_root=tmp_path,
              dataset_options=OPTS)


def test_cli_teacher_label_passes_device(tmp_path, monkeypatch, trained):
    from benchmark.cli import main
    from flowdistill.teacher import llm_labels as labeling

    seen = {}

    class Store:
        path, starts, coverage = tmp_path, np.zeros(1), 1.0

    def fake_label(*args, **kwargs):
        seen.update(kwargs)
        return Store()

    monkeypatch.setattr(labeling, "label", fake_label)
    assert main(["teacher", "label", "--checkpoint", str(trained), "--device", "auto",
                 "--out", str(tmp_path)]) == 0
    assert seen["device"] == "auto"
    assert main(["teacher", "label", "--checkpoint", str(trained), "--out", str(tmp_path)]) == 0
    assert seen["device"] == "cpu"
    # a forecaster teacher (--from-model) trains on --device
    from flowdistill.teacher import model_labels as from_model

    monkeypatch.setattr(from_model, "label_from_model",
                        lambda spec, **kw: seen.update(spec=spec) or Store())
    assert main(["teacher", "label", "--from-model", "ridge", "--device", "auto",
                 "--dataset", "synthetic"]) == 0
    assert seen["spec"].train.device == "auto"
    assert main(["teacher", "label", "--from-model", "ridge", "--device", "cpu", "--train",
                 "device=cuda", "--dataset", "synthetic"]) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_finetune_and_labels_match_cpu(tmp_path, prepared):
    """The real GPU check: fine-tuning (with the ST encoder and its pre-training) and labelling
    on cuda give the CPU's numbers."""
    from flowdistill.teacher.llm_labels import label

    kw = dict(st_encoder=True, encoder_node_embedding=True, encoder_pretrain_epochs=1,
              encoder_hidden=16, head_hidden=16)
    gpu = finetune(_cfg(tmp_path / "gpu", device="cuda", **kw), prepared)
    cpu = finetune(_cfg(tmp_path / "cpu", device="cpu", **kw), prepared)
    meta = json.loads((gpu / "teacher.json").read_text())
    assert meta["training"]["device"].startswith("cuda")
    # the checkpoint written on the GPU loads on the CPU
    t_gpu, _ = load_teacher(gpu, "latest")
    assert next(t_gpu.parameters()).device.type == "cpu"
    # training: the latest weights of both runs forecast the same (scaled units)
    t_cpu, _ = load_teacher(cpu, "latest")
    src = PromptSource(PromptBuilder.from_prepared(prepared), t_cpu.tokenizer, prepared.scaled,
                       prepared.tod, prepared.dow, with_series=True)
    s, n = FIXED
    y_gpu = get_backend("hf", t_gpu).predict(src.batch(s, n))
    y_cpu = get_backend("hf", t_cpu).predict(src.batch(s, n))
    np.testing.assert_allclose(y_gpu, y_cpu, rtol=1e-4, atol=1e-4)
    # labelling: the GPU-trained checkpoint labelled on cuda and on cpu (original units)
    stores = [label(gpu, "synthetic", None, splits=("val",), store_root=tmp_path / dev,
                    progress=False, dataset_options=OPTS, device=dev)
              for dev in ("cuda", "cpu")]
    assert stores[0].metadata["device"].startswith("cuda")
    np.testing.assert_allclose(stores[0].labels, stores[1].labels, rtol=1e-4, atol=1e-4)


def test_cli_teacher_label_llm_options(tmp_path, monkeypatch, trained):
    """`teacher label --checkpoint` passes its labelling flags, --protocol / --fraction and
    --data-option to label(); flags of the other teacher kind are refused in one line."""
    from benchmark.cli import main
    from flowdistill.teacher import llm_labels as labeling

    seen: dict = {}

    class Store:
        path, starts, coverage = tmp_path, np.zeros(1), 1.0

    monkeypatch.setattr(labeling, "label",
                        lambda *a, **kw: seen.update(args=a, kw=kw) or Store())
    base = ["teacher", "label", "--checkpoint", str(trained), "--out", str(tmp_path)]
    assert main([*base, "--dtype", "bfloat16", "--batch-size", "16", "--chunk-windows", "32",
                 "--chunk-pairs", "512", "--splits", "val", "test", "--max-windows", "8",
                 "--input-scaler", "target", "--fraction", "0.25", "--protocol", "horizon=3",
                 "--data-option", "num_nodes=3"]) == 0
    kw = seen["kw"]
    assert (kw["dtype"], kw["batch_size"], kw["chunk_windows"], kw["chunk_pairs"]) == (
        "bfloat16", 16, 32, 512)
    assert kw["splits"] == ("val", "test") and kw["max_windows"] == 8
    assert kw["input_scaler"] == "target" and kw["dataset_options"] == {"num_nodes": 3}
    assert seen["args"][2] == {"horizon": 3, "train_fraction": 0.25}
    # without them: label()'s own defaults and the teacher's protocol (None)
    seen.clear()
    assert main(base) == 0
    assert seen["args"][2] is None and seen["kw"]["dataset_options"] is None
    assert not {"dtype", "batch_size", "chunk_windows", "splits"} & set(seen["kw"])
    # contradictions and flags of the other teacher kind
    assert main([*base, "--fraction", "0.5", "--protocol", "train_fraction=0.25"]) == 2
    assert main([*base, "--train", "epochs=1"]) == 2
    assert main(["teacher", "label", "--from-model", "ridge", "--dataset", "synthetic",
                 "--dtype", "bfloat16"]) == 2


def test_cli_teacher_label_llm_real_store(tmp_path, trained):
    """The flags reach a real store: bf16 in the key, the batch size and chunking in the
    metadata, only the asked-for windows labelled."""
    from benchmark.cli import main
    from flowdistill.teacher.label_store import SoftLabelStore

    argv = ["teacher", "label", "--checkpoint", str(trained), "--out", str(tmp_path),
            "--dataset", "synthetic", "--splits", "test", "--max-windows", "3",
            "--chunk-windows", "1", "--chunk-pairs", "3", "--batch-size", "2",
            "--dtype", "bfloat16"]
    for k, v in OPTS.items():
        argv += ["--data-option", f"{k}={v}"]
    assert main(argv) == 0
    (path,) = [p for p in tmp_path.iterdir() if (p / "meta.json").exists()]
    store = SoftLabelStore.open(path)
    md = store.metadata
    assert md["dtype"] == "bfloat16"
    assert md["batch_size"] == 2 and md["chunk_windows"] == 1
    assert len(store.starts) == 3 and store.coverage == 1.0
