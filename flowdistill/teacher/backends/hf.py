"""The transformers backend: batched forward passes (float32, or under bf16 autocast), no
generation.

Prompts are sorted by length (less padding) and right-padded; causal attention means padding at
the end never reaches the real tokens, so no attention mask is needed. With ``reuse_prefix`` the
shared instruction prefix runs once per batch and its KV cache is repeated over the batch
(the HF analogue of vLLM's prefix caching).

The forward passes run on the device the teacher's parameters are on (see
:func:`~flowdistill.teacher.finetune.load_teacher`'s ``device``); inputs are moved there and the
forecasts come back as CPU numpy arrays.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .base import PromptBatch


class HFBackend:
    """Soft labels from an :class:`~flowdistill.teacher.model.STTeacher` with plain PyTorch.

    Args:
        teacher: the loaded teacher (on the device to run on).
        batch_size: prompts per forward pass.
        reuse_prefix: compute the prefix once per batch (see the module docstring).
        dtype: "float32", or "bfloat16": the forward passes run under
            ``torch.autocast(dtype=torch.bfloat16)`` on the teacher's device (weights stay
            float32; matrix products in bf16, as on a GPU); forecasts come back as float32.
        progress: show a progress bar.
    """

    name = "hf"

    def __init__(self, teacher, batch_size: int = 64, reuse_prefix: bool = True,
                 dtype: str = "float32", progress: bool = False) -> None:
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        self.teacher = teacher.eval()
        self.batch_size = int(batch_size)
        self.reuse_prefix = reuse_prefix
        self.dtype = dtype
        self.progress = progress

    @property
    def version(self) -> str:
        from .base import backend_version

        return backend_version("hf")

    @torch.no_grad()
    def predict(self, batch: PromptBatch) -> np.ndarray:
        """Forecasts ``[P, T_out, C_out]`` (scaled, float32) for the prompts of ``batch``."""
        t = self.teacher
        n = len(batch)
        out = np.zeros((n, t.horizon, len(t.target_channel_idx)), np.float32)
        if n == 0:
            return out
        dev = next(t.parameters()).device
        order = np.argsort([len(s) for s in batch.suffix_ids], kind="stable")
        prefix = torch.as_tensor(batch.prefix_ids, dtype=torch.long, device=dev)
        pad = t.tokenizer.pad_token_id if t.tokenizer.pad_token_id is not None else 0
        bar = tqdm(total=n, desc="hf labels", unit="prompt", disable=not self.progress)
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16,
                                  enabled=self.dtype == "bfloat16")
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            sub = batch.subset(idx).to(dev)
            with autocast:
                y = t(prefix, sub.padded(pad).to(dev), sub.st_x, sub.tod, sub.dow, sub.nodes,
                      reuse_prefix=self.reuse_prefix)
            out[idx] = y.float().cpu().numpy()
            bar.update(len(idx))
        bar.close()
        return out

    def close(self) -> None:
        pass
