"""Saved test predictions of one run: ``<runs>/<run_id>/test_predictions.npz``.

The file holds ``pred`` and ``true`` ``[W, T_out, N, C]`` in original units (``[W, T_out, N]``
is read as one channel) and ``starts [W]``, the start index of each test window in the series.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE_NAME = "test_predictions.npz"


@dataclass(frozen=True)
class TestPredictions:
    """``pred``/``true``: ``[W, T_out, N, C]``; ``starts``: ``[W]`` window start indices."""

    __test__ = False  # not a pytest test class

    pred: np.ndarray
    true: np.ndarray
    starts: np.ndarray
    path: Path

    @property
    def num_nodes(self) -> int:
        return int(self.pred.shape[2])


def predictions_path(run_id: str, runs_dir: Path = Path("runs")) -> Path:
    return Path(runs_dir) / run_id / FILE_NAME


def load_predictions(run_id: str, runs_dir: Path = Path("runs")) -> TestPredictions:
    """Load and check the saved test predictions of ``run_id``; errors name the file."""
    path = predictions_path(run_id, runs_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved test predictions for run {run_id}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("pred", "true", "starts") if k not in z.files]
            if missing:
                raise ValueError(f"{path}: missing arrays {missing} (has {sorted(z.files)})")
            pred, true, starts = (np.asarray(z[k]) for k in ("pred", "true", "starts"))
    except (OSError, ValueError) as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: cannot read predictions ({e})") from e
    if pred.ndim == 3:
        pred, true = pred[..., None], true[..., None]
    if pred.ndim != 4 or pred.shape != true.shape:
        raise ValueError(f"{path}: pred {pred.shape} and true {true.shape} must both be "
                         "[W, T_out, N, C]")
    if starts.shape != (pred.shape[0],):
        raise ValueError(f"{path}: starts has shape {starts.shape}, expected ({pred.shape[0]},)")
    return TestPredictions(pred=pred, true=true, starts=starts.astype(np.int64), path=path)
