"""Efficiency protocol: parameters, peak memory and inference latency, with the device recorded.

Latency: ``warmup`` untimed forward passes, then ``repeats`` timed ones (synchronising the GPU
around each), reported as median and 95th percentile in milliseconds, at batch size 1 and at a
fixed batch size. Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after a reset; on CPU
the peak resident-set-size increase of the process over its level before the call (an upper
bound that includes allocator slack). Before the call, freed heap pages are handed back to the
OS (glibc ``malloc_trim``) so that reused memory counts again, and the kernel's peak-RSS mark
``VmHWM`` is reset (``/proc/self/clear_refs``) and read afterwards; where either is unavailable,
``/proc/self/statm`` sampled every millisecond stands in (it can miss short peaks).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .batch import Batch


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc only), so a later reuse shows up in the RSS."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # non-Linux: fall back to the max RSS so far
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _RssSampler:
    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> _RssSampler:
        self.base = _rss_bytes()
        self.peak = self.base
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_bytes())


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory (MiB) used while ``fn()`` runs on ``device`` (see module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    _release_free_heap()
    hwm_reset = _reset_peak_rss()
    with _RssSampler() as s:
        fn()
    peak = s.peak
    hwm = _peak_rss_bytes() if hwm_reset else None
    if hwm is not None:
        peak = max(peak, hwm)
    return (peak - s.base) / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_ms(model: nn.Module, batch: Batch, warmup: int = 3, repeats: int = 20) -> dict:
    """Median and p95 forward latency (ms) of ``model(batch)`` in eval mode without grad."""
    device = batch.x.device
    model.eval()
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            model(batch)
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            model(batch)
            _sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
    return {"median": float(np.median(times)), "p95": float(np.percentile(times, 95)),
            "repeats": repeats}


@dataclass
class EfficiencyConfig:
    """Settings of the efficiency measurement.

    Attributes:
        batch_size: the fixed batch size for latency and inference memory.
        warmup: untimed passes before timing.
        repeats: timed passes.
        train_memory: also measure one training step's peak memory.
    """

    batch_size: int = 64
    warmup: int = 3
    repeats: int = 20
    train_memory: bool = True


def measure_efficiency(model: nn.Module, make_batch: Callable[[int], Batch],
                       device: torch.device, config: EfficiencyConfig | None = None,
                       train_step: Callable[[Batch], object] | None = None) -> dict:
    """Latency at batch 1 and ``batch_size``, inference and (optionally) training peak memory.

    Args:
        make_batch: ``make_batch(b)`` returns a batch of ``b`` windows (on CPU).
        train_step: one training step of the model's own loop on a batch of ``batch_size``
            windows, up to and including the backward pass
            (:meth:`benchmark.trainer.Trainer.train_step` with ``update=False``); the gradients
            it leaves are freed after the measurement.
    """
    cfg = config or EfficiencyConfig()
    b1 = make_batch(1).to(device)
    bb = make_batch(cfg.batch_size).to(device)
    out = {"device": str(device), "latency_batch": bb.size}
    lat1 = latency_ms(model, b1, cfg.warmup, cfg.repeats)
    latb = latency_ms(model, bb, cfg.warmup, cfg.repeats)
    out.update({"latency_ms_b1_median": lat1["median"], "latency_ms_b1_p95": lat1["p95"],
                "latency_ms_median": latb["median"], "latency_ms_p95": latb["p95"]})

    def infer() -> None:
        with torch.no_grad():
            model(bb)

    out["peak_memory_mb_inference"] = peak_memory_mb(infer, device)
    if cfg.train_memory and train_step is not None:
        was_training = model.training
        model.train()

        def step() -> None:
            train_step(bb)
            model.zero_grad(set_to_none=True)

        out["peak_memory_mb_train"] = peak_memory_mb(step, device)
        model.train(was_training)
    return out
