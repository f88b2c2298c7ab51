"""The transformers backend: batched float32 forward passes, no generation.

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
        progress: show a progress bar.
    """

    name = "hf"

    def __init__(self, teacher, batch_size: int = 64, reuse_prefix: bool = True,
                 progress: bool = False) -> None:
        self.teacher = teacher.eval()
        self.batch_size = int(batch_size)
        self.reuse_prefix = reuse_prefix
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
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            sub = batch.subset(idx).to(dev)
            y = t(prefix, sub.padded(pad).to(dev), sub.st_x, sub.tod, sub.dow, sub.nodes,
                  reuse_prefix=self.reuse_prefix)
            out[idx] = y.float().cpu().numpy()
            bar.update(len(idx))
        bar.close()
        return out

    def close(self) -> None:
        pass
