"""The vLLM backend: offline ``LLM`` with the pooling runner returning per-token hidden states.

The teacher's LM (LoRA merged, ST token rows written into the embedding) is saved with its
tokenizer to a temporary directory that vLLM loads; ``PoolerConfig(task="token_embed",
use_activation=False)`` makes ``LLM.encode`` return the final (normed) hidden states of the
prompt tokens, and the teacher's regression head is applied to those at the ``<ST_HIS>`` and
``<ST_PRE>`` tokens, exactly as in the HF backend.

Settings: float32 by default (vLLM's CPU default would cast to bf16; ``dtype="bfloat16"`` asks
for bf16, for GPU labelling), ``enforce_eager=True``, prefix caching
on, ``seed``, and vLLM's documented offline reproducibility setting
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (the engine runs in this process, so scheduling is
deterministic; note that it also reseeds the caller's random state). ``VLLM_CPU_KVCACHE_SPACE``
defaults to 1 (GiB).

vLLM 0.32 makes token_embed requests skip reading the prefix cache by default (so that every
prompt token gets a hidden state); this backend passes ``PoolingParams(
skip_reading_prefix_cache=False)`` so the cache is read, and vLLM then returns hidden states only
for the tokens it computed, i.e. the tail of each prompt after the cached blocks. The ST tokens
sit in the window-specific suffix, after the time spans, so they are always computed unless an
identical prompt was cached before: the prefix cache is therefore reset at the start of every
:meth:`VLLMBackend.predict` call, and a prompt whose ST tokens were served from cache anyway is
recomputed alone.

Teachers with an ST encoder are served through ``prompt_embeds`` (``enable_prompt_embeds=True``):
the input embeddings, with the encoder's outputs at ``<ST_HIS>``, are computed in PyTorch and
vLLM runs the transformer. vLLM hashes embeddings block by block, so the shared prefix is still
cached.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import torch

from .base import PromptBatch


class VLLMBackend:
    """Soft labels through vLLM.

    Args:
        teacher: the loaded :class:`~flowdistill.teacher.model.STTeacher`.
        seed: vLLM's seed.
        enable_prefix_caching: reuse the KV cache of shared prompt prefixes.
        kv_cache_space_gb: ``VLLM_CPU_KVCACHE_SPACE`` when not already set.
        request_batch: prompts per ``LLM.encode`` call (bounds the memory of returned states).
        block_size: KV-cache block size; prefix caching shares whole blocks only, and the CPU
            attention kernels need a multiple of 32 (vLLM's CPU default is 128).
        workdir: parent directory of the exported model (default: the system temp dir).
        llm_options: further ``vllm.LLM`` keyword arguments (e.g. ``max_num_batched_tokens``).
        dtype: the model's dtype in vLLM, "float32" or "bfloat16".
        progress: vLLM's progress bars.
    """

    name = "vllm"

    def __init__(self, teacher, seed: int = 0, enable_prefix_caching: bool = True,
                 kv_cache_space_gb: int = 1, request_batch: int = 1024,
                 block_size: int | None = 32, workdir: str | None = None,
                 llm_options: dict | None = None, dtype: str = "float32",
                 progress: bool = False) -> None:
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        self.dtype = dtype
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_space_gb))
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self.teacher = teacher.eval()
        self.request_batch = int(request_batch)
        self.progress = progress
        self.use_embeds = teacher.st_encoder is not None
        self.enable_prefix_caching = enable_prefix_caching
        self.read_prefix_cache = enable_prefix_caching  # False: compute every token (benchmarks)
        # prompts, their tokens, the tokens vLLM computed (the rest came from the prefix cache),
        # and prompts recomputed because their ST tokens were cached
        self.stats = {"prompts": 0, "prompt_tokens": 0, "computed_tokens": 0, "recomputed": 0}
        self.dir = tempfile.mkdtemp(prefix="flowdistill-vllm-", dir=workdir)
        try:
            merged = teacher.merged_lm()
            merged.save_pretrained(self.dir, safe_serialization=True)
            teacher.tokenizer.save_pretrained(self.dir)
            del merged
            from vllm import LLM
            from vllm.config import PoolerConfig

            opts = dict(llm_options or {})
            if block_size is not None:
                opts.setdefault("block_size", block_size)
            self.llm = LLM(model=self.dir, runner="pooling",
                           pooler_config=PoolerConfig(task="token_embed", use_activation=False),
                           dtype=dtype, enforce_eager=True,
                           enable_prefix_caching=enable_prefix_caching, seed=seed,
                           enable_prompt_embeds=self.use_embeds, **opts)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    @property
    def version(self) -> str:
        from .base import backend_version

        return backend_version("vllm")

    def _prompts(self, batch: PromptBatch) -> list:
        from vllm.inputs import TokensPrompt

        full = [batch.prefix_ids + s for s in batch.suffix_ids]
        if not self.use_embeds:
            return [TokensPrompt(prompt_token_ids=ids) for ids in full]
        out = []
        with torch.no_grad():
            for i, ids in enumerate(full):
                t = torch.as_tensor([ids], dtype=torch.long)
                n0 = len(batch.prefix_ids)
                sx = batch.st_x[i:i + 1]
                tod, dow = batch.tod[i:i + 1], batch.dow[i:i + 1]
                node = None if batch.nodes is None else batch.nodes[i:i + 1]
                e = torch.cat([self.teacher.embed(t[:, :n0]),
                               self.teacher.embed(t[:, n0:], sx, tod, dow, node)], dim=1)
                dt = torch.bfloat16 if self.dtype == "bfloat16" else torch.float32
                out.append({"prompt_embeds": e[0].to(dt).contiguous()})
        return out

    def _encode(self, prompts: list) -> list[torch.Tensor]:
        from vllm import PoolingParams

        # vLLM 0.32 skips READING the prefix cache for token_embed requests unless told
        # otherwise (so that every prompt token gets a state); we only need the tail.
        params = PoolingParams(skip_reading_prefix_cache=not self.read_prefix_cache)
        outs = self.llm.encode(prompts, pooling_params=params, pooling_task="token_embed",
                               use_tqdm=self.progress)
        return [o.outputs.data for o in outs]

    @torch.no_grad()
    def predict(self, batch: PromptBatch) -> np.ndarray:
        """Forecasts ``[P, T_out, C_out]`` (scaled, float32) for the prompts of ``batch``."""
        t = self.teacher
        n = len(batch)
        out = np.zeros((n, t.horizon, len(t.target_channel_idx)), np.float32)
        if n == 0:
            return out
        self.llm.reset_prefix_cache()
        pad = t.tokenizer.pad_token_id if t.tokenizer.pad_token_id is not None else 0
        for i in range(0, n, self.request_batch):
            sub = batch.subset(range(i, min(n, i + self.request_batch)))
            states = self._encode(self._prompts(sub))
            ids = sub.padded(pad)
            first = _first_needed(ids, t.his_id, t.pre_id)
            lengths = [len(s) for s in sub.suffix_ids]
            for j, h in enumerate(states):
                self.stats["prompts"] += 1
                self.stats["prompt_tokens"] += len(sub.prefix_ids) + lengths[j]
                self.stats["computed_tokens"] += int(h.shape[0])
                if h.shape[0] < lengths[j] - int(first[j]):  # ST tokens served from cache
                    self.stats["recomputed"] += 1
                    self.llm.reset_prefix_cache()
                    states[j] = self._encode(self._prompts(sub.subset([j])))[0]
                    self.llm.reset_prefix_cache()
            hidden = torch.zeros(len(sub), ids.shape[1], t.hidden_size)
            for j, h in enumerate(states):
                k = min(lengths[j], h.shape[0])
                hidden[j, lengths[j] - k:lengths[j]] = h[-k:].float()
            out[i:i + len(sub)] = t.head_from_hidden(ids, hidden).numpy()
        return out

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            del self.llm
        shutil.rmtree(self.dir, ignore_errors=True)


def _first_needed(ids: torch.Tensor, his_id: int, pre_id: int) -> torch.Tensor:
    """Index of the first ``<ST_HIS>`` or ``<ST_PRE>`` token in each row of ``ids [B, L]``."""
    hit = (ids == his_id) | (ids == pre_id)
    return hit.float().argmax(dim=1)
