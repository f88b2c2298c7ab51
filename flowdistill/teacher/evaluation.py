"""The teacher's forecasting error: the cheap subset MAE used to select checkpoints during
training, and the full-split masked metrics it is reported with.

:func:`evaluate_splits` scores every (window, node) pair of a split with
:class:`benchmark.metrics.ProtocolMetrics`, the accumulator the harness scores students with
(:meth:`benchmark.trainer.Trainer.evaluate`): masked MAE / RMSE / MAPE in original units under
the protocol's ``null_value`` / ``mask_threshold`` / ``mape_threshold``, plus the all-targets
view. The teacher's forecasts for a window ``[T_out, N, C_out]`` are its N per-node prompts, so
the numbers are directly comparable with the students' on the same split.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmark.data.protocol import Protocol
from benchmark.data.scaler import Scaler
from benchmark.data.windows import PreparedData
from benchmark.device import device_description
from benchmark.metrics import ProtocolMetrics

from .backends import PromptSource
from .model import STTeacher
from .pairs import targets_for
from .prompts import PromptBuilder


@torch.no_grad()
def evaluate_mae(teacher: STTeacher, source: PromptSource, starts: np.ndarray,
                 nodes: np.ndarray, prepared: PreparedData, batch_size: int = 64,
                 reuse_prefix: bool = True) -> float:
    """MAE in original units of the teacher's forecasts for the given pairs."""
    from .backends.hf import HFBackend

    was = teacher.training
    y_hat = HFBackend(teacher, batch_size, reuse_prefix).predict(source.batch(starts, nodes))
    teacher.train(was)
    y = targets_for(prepared.raw_targets, starts, nodes, prepared.protocol.input_len,
                    prepared.protocol.horizon, list(range(prepared.out_channels)))
    y_hat = prepared.inverse_targets(torch.from_numpy(y_hat))
    return float((y_hat - y).abs().mean())


def score_split(predict, prepared: PreparedData, split: str, scaler: Scaler,
                pairs_per_call: int = 8192) -> tuple[ProtocolMetrics, int]:
    """Masked metrics of a per-pair forecaster over every (window, node) pair of ``split``.

    Args:
        predict: ``(starts [P], nodes [P]) -> [P, T_out, C_out]`` scaled forecasts (numpy).
        scaler: maps the forecasts back to original units (the teacher's own).
        pairs_per_call: prompts per ``predict`` call (whole windows: all N nodes of each).

    Returns:
        ``(the filled ProtocolMetrics, number of windows)``.
    """
    p = prepared.protocol
    n = prepared.num_nodes
    starts = prepared.starts(split)
    acc = ProtocolMetrics.for_protocol(p, prepared.out_channels)
    per_call = max(1, pairs_per_call // n)
    tc = list(prepared.target_channel_idx)
    for i in range(0, len(starts), per_call):
        win = starts[i:i + per_call]
        s = np.repeat(win, n)  # window-major: pair (w, v) at w * N + v
        v = np.tile(np.arange(n, dtype=np.int64), len(win))
        y_hat = np.asarray(predict(s, v), dtype=np.float32)  # [W * N, T_out, C_out]
        y_hat = torch.from_numpy(y_hat).reshape(len(win), n, p.horizon, -1).transpose(1, 2)
        acc.update(scaler.inverse(y_hat, tc), prepared.make_batch(win).y)
    return acc, len(starts)


@torch.no_grad()
def evaluate_splits(teacher: STTeacher, prepared: PreparedData,
                    splits: tuple[str, ...] = ("val", "test"), scaler: Scaler | None = None,
                    batch_size: int = 64, reuse_prefix: bool = True,
                    progress: bool = False) -> dict:
    """The teacher's masked MAE / RMSE / MAPE on every (window, node) pair of ``splits``.

    Forecasts come from the HF backend (prompts sorted by length, batched, the shared prefix's
    KV cache reused) on the device the teacher is on, in the teacher's precision. The inputs
    are scaled and the forecasts mapped back with ``scaler`` (default: ``prepared``'s, which is
    the teacher's own when ``prepared`` is its dataset under its protocol).

    Returns:
        ``{"splits": {split: {"windows", "pairs", "seconds", "metrics"}}, "seconds",
        "prompts_per_second",
        "device", "device_name", "batch_size", "reuse_prefix", "precision"}`` where
        ``metrics`` is :meth:`benchmark.metrics.ProtocolMetrics.summary` (the students'
        record format).
    """
    from .backends.hf import HFBackend

    scaler = scaler or prepared.scaler
    scaled = torch.from_numpy(scaler.transform(prepared.data.values))
    source = PromptSource(PromptBuilder.from_prepared(prepared), teacher.tokenizer, scaled,
                          prepared.tod, prepared.dow, with_series=teacher.st_encoder is not None)
    was = teacher.training
    backend = HFBackend(teacher, batch_size, reuse_prefix, progress=progress)
    names = [prepared.data.channels[i] for i in prepared.target_channel_idx]
    out: dict = {"splits": {}}
    t0, prompts = time.perf_counter(), 0
    try:
        for split in splits:
            t_split = time.perf_counter()
            acc, windows = score_split(lambda s, v: backend.predict(source.batch(s, v)),
                                       prepared, split, scaler)
            prompts += windows * prepared.num_nodes
            out["splits"][split] = {
                "windows": windows, "pairs": windows * prepared.num_nodes,
                "seconds": round(time.perf_counter() - t_split, 2),
                "metrics": acc.summary(prepared.protocol.report_horizons, names)}
    finally:
        teacher.train(was)
    seconds = time.perf_counter() - t0
    dev = next(teacher.parameters()).device
    out.update({"seconds": round(seconds, 2),
                "prompts_per_second": round(prompts / seconds, 2) if seconds > 0 else None,
                "device": str(dev), "device_name": device_description(dev)["name"],
                "batch_size": batch_size, "reuse_prefix": reuse_prefix,
                "precision": teacher.precision})
    return out


def evaluate_checkpoint(checkpoint_dir: str | Path, splits: tuple[str, ...] = ("val", "test"),
                        device: str = "cpu", batch_size: int = 64, progress: bool = True,
                        force: bool = False) -> dict:
    """:func:`evaluate_splits` of a checkpoint's kept weights on its own dataset and protocol,
    stored in its teacher.json (:func:`~flowdistill.teacher.checkpoint.record_evaluation`).
    Splits that teacher.json already holds for these weights are not scored again unless
    ``force``. Returns the stored evaluation."""
    from .checkpoint import (
        load_teacher,
        read_config,
        record_evaluation,
        scaler_from_meta,
        stored_evaluation,
    )
    from .config import TeacherFinetuneConfig
    from .pairs import load_prepared

    d = Path(checkpoint_dir)
    meta = read_config(d)
    kept = stored_evaluation(d, meta)
    todo = tuple(s for s in splits if force or kept is None or s not in kept["splits"])
    if not todo:
        return kept
    teacher, meta = load_teacher(d, "best", device=device)
    cfg = TeacherFinetuneConfig.from_dict(meta["config"])
    prepared = load_prepared(meta["dataset_id"], Protocol.from_dict(meta["protocol"]),
                             cfg.dataset_options)
    result = evaluate_splits(teacher, prepared, todo, scaler_from_meta(meta), batch_size,
                             cfg.reuse_prefix, progress)
    return record_evaluation(d, result)
