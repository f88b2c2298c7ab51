"""Device names: the one place a ``"cpu"`` / ``"cuda"`` / ``"cuda:N"`` / ``"auto"`` setting becomes
a :class:`torch.device` (the trainer, the teacher's fine-tuning and labelling all use it)."""

from __future__ import annotations

import torch

DEVICE_NAMES = "'cpu', 'cuda', 'cuda:N' or 'auto'"


def check_device_name(name: str) -> None:
    """Raise ValueError unless ``name`` is "cpu", "cuda", "cuda:N" or "auto"."""
    ok = name in ("cpu", "cuda", "auto") or (
        isinstance(name, str) and name.startswith("cuda:") and name[5:].isdigit())
    if not ok:
        raise ValueError(f"device must be {DEVICE_NAMES}, got {name!r}")


def resolve_device(name: str) -> torch.device:
    """The torch device for ``name`` ("auto": cuda when available, else cpu); a cuda device
    that is not there is an error here rather than deep inside the first forward pass."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device "
                             f"(torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} asked for, but torch sees only "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return dev


def device_description(dev: torch.device) -> dict:
    """``{"device": "cuda:0", "name": "<GPU name>"}`` (name "cpu" on the CPU)."""
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return {"device": f"cuda:{index}", "name": torch.cuda.get_device_name(index)}
    return {"device": str(dev), "name": str(dev)}


def to_cpu(obj):
    """``obj`` (nested dicts / lists / tuples of tensors, e.g. an optimizer state dict) with
    every tensor moved to the CPU, so that files load on machines without the training
    device."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
