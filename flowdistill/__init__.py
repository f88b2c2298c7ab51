"""FlowDistill: an MLP student distilled from an LLM teacher (Yu et al., arXiv 2504.02094)."""

import importlib

# modules that register models with benchmark.models
for _name in ("models", "teacher.model_labels", "teacher.llm_teacher"):
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _e:  # not written yet in a partial checkout
        if _e.name != f"{__name__}.{_name}":
            raise
