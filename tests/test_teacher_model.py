"""STTeacher on the tiny backbone: shapes, prefix reuse, ST tokens, LoRA, export."""

from __future__ import annotations

import pytest
import torch

from benchmark.data.protocol import Protocol
from benchmark.data.synthetic import make_synthetic
from benchmark.data.windows import prepare
from flowdistill.teacher.backends import PromptSource
from flowdistill.teacher.model import TINY_CONFIGS, STTeacher, build_tiny
from flowdistill.teacher.prompts import PromptBuilder, pairs
from flowdistill.teacher.tokenizer import train_word_tokenizer


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    data = make_synthetic(num_nodes=3, num_days=3, steps_per_day=24, channels=2, seed=1)
    prepared = prepare(data, Protocol(input_len=12, horizon=12, null_value=None), "synthetic")
    builder = PromptBuilder.from_prepared(prepared)
    tok = train_word_tokenizer(builder.corpus(prepared.splits.train[:2]))
    return prepared, builder, tok


def _teacher(setup, st_encoder=False, nodes=0):
    prepared, _, tok = setup
    lm = build_tiny("tiny", len(tok), seed=0)
    return STTeacher(lm, tok, 2, [0, 1], 12, 12, 24, st_encoder=st_encoder,
                     encoder_nodes=nodes).eval()


def _batch(setup, teacher, k=2):
    prepared, builder, tok = setup
    src = PromptSource(builder, tok, prepared.scaled, prepared.tod, prepared.dow,
                       with_series=teacher.st_encoder is not None)
    s, n = pairs(prepared.splits.train[:k], prepared.num_nodes)
    pb = src.batch(s, n)
    return pb, torch.as_tensor(pb.prefix_ids), pb.padded(tok.pad_token_id)


def test_tiny_backbone_size_and_head_dim(setup):
    _, _, tok = setup
    lm = build_tiny("tiny", len(tok))
    n = sum(p.numel() for p in lm.parameters())
    assert 0.5e6 < n < 1.5e6
    for cfg in TINY_CONFIGS.values():  # vLLM's CPU attention needs head_dim >= 32
        assert cfg["hidden_size"] // cfg["num_attention_heads"] >= 32


@pytest.mark.parametrize("st_encoder", [False, True])
def test_forward_shapes_and_prefix_reuse(setup, st_encoder):
    t = _teacher(setup, st_encoder, nodes=3 if st_encoder else 0)
    pb, prefix, ids = _batch(setup, t)
    with torch.no_grad():
        y = t(prefix, ids, pb.st_x, pb.tod, pb.dow, pb.nodes, reuse_prefix=True)
        y_full = t(prefix, ids, pb.st_x, pb.tod, pb.dow, pb.nodes, reuse_prefix=False)
        # one prompt alone, unpadded: right padding must not change anything
        y_one = t(prefix, torch.as_tensor([pb.suffix_ids[0]]),
                  None if pb.st_x is None else pb.st_x[:1], pb.tod[:1] if st_encoder else None,
                  pb.dow[:1] if st_encoder else None, pb.nodes[:1] if st_encoder else None)
    assert y.shape == (6, 12, 2)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_full, atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:1], y_one, atol=1e-5, rtol=0)


def test_st_encoder_changes_the_his_embeddings(setup):
    t = _teacher(setup, True)
    pb, prefix, ids = _batch(setup, t, k=1)
    with torch.no_grad():
        e1 = t.embed(ids, pb.st_x, pb.tod, pb.dow)
        e2 = t.embed(ids, pb.st_x + 1.0, pb.tod, pb.dow)
    his = ids == t.his_id
    assert not torch.allclose(e1[his], e2[his])
    torch.testing.assert_close(e1[~his], e2[~his])
    with pytest.raises(ValueError, match="ST encoder"):
        t.embed(ids)


def test_wrong_token_count_is_reported(setup):
    t = _teacher(setup)
    _, prefix, ids = _batch(setup, t, k=1)
    bad = ids.clone()
    bad[0, (bad[0] == t.pre_id).nonzero()[0]] = t.tokenizer.unk_token_id
    with pytest.raises(ValueError, match="prompt 0 holds 1 copies"):
        t(prefix, bad)


def test_lora_trains_only_adapters_st_rows_and_head(setup):
    t = _teacher(setup, True)
    t.apply_lora(r=4, alpha=8)
    names = [n for n, p in t.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in names) and any(n.startswith("head.") for n in names)
    assert "st_token_embeds" in names and any(n.startswith("st_encoder.") for n in names)
    assert not any("mlp.gate_proj.weight" in n or "embed_tokens" in n for n in names)
    assert set(t.trainable_state_dict()) == set(names)


def test_merged_export_reproduces_the_hidden_states(setup):
    t = _teacher(setup)
    t.apply_lora(r=4, alpha=8)
    with torch.no_grad():  # make the adapters non-trivial
        for n, p in t.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    pb, prefix, ids = _batch(setup, t, k=1)
    full = torch.cat([prefix.expand(len(ids), -1), ids], 1)
    merged = t.merged_lm().eval()
    with torch.no_grad():
        h = t.hidden_states(prefix, ids, reuse_prefix=False)
        h_merged = merged.get_decoder()(input_ids=full).last_hidden_state[:, len(prefix):]
    torch.testing.assert_close(h, h_merged, atol=1e-5, rtol=0)
