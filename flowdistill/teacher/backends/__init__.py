"""Soft-label backends: turn (window, node) prompts into teacher forecasts.

Both backends take a :class:`PromptBatch` (token ids of the shared prefix and of each suffix, and
the ST-encoder inputs) and return forecasts ``[P, T_out, C_out]`` in the teacher's SCALED units;
:mod:`flowdistill.teacher.llm_labels` turns them into windows in original units.

* ``hf`` (:mod:`.hf`): batched plain transformers forward in float32, optionally reusing the
  prefix's KV cache across the batch.
* ``vllm`` (:mod:`.vllm`): vLLM's offline ``LLM`` with the pooling runner returning per-token
  hidden states, prefix caching on. vLLM is imported only when this backend is built.
"""

from __future__ import annotations

from .base import BACKENDS, PromptBatch, PromptSource, backend_version

__all__ = ["BACKENDS", "PromptBatch", "PromptSource", "backend_version", "get_backend"]


def get_backend(name: str, teacher, **options):
    """Build backend ``name`` ("hf" or "vllm") around a loaded teacher."""
    if name == "hf":
        from .hf import HFBackend

        return HFBackend(teacher, **options)
    if name == "vllm":
        from .vllm import VLLMBackend

        return VLLMBackend(teacher, **options)
    raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
