"""``custom``: the user's own data, a directory with ``manifest.json`` read by
:func:`benchmark.data.custom.load_custom` (format: docs/custom_data.md). Its run identity
includes the sha256 of the manifest and every file it names."""

from __future__ import annotations

from pathlib import Path

from ..catalogue import DatasetSpec, register_dataset
from ..custom import content_hash, load_custom
from ..protocol import Protocol
from ..stdata import DataError, STData

PROTOCOL = Protocol(
    input_len=12, horizon=12, split_ratios=(0.6, 0.2, 0.2), null_value=None, mape_threshold=0.0,
    notes={"null_value": "taken from the manifest's null_value by default_protocol()"})


def _require_path(path: str | None) -> str:
    if path is None:
        raise DataError("dataset 'custom' needs the option path=<directory with manifest.json> "
                        "(see docs/custom_data.md)")
    return path


def load(root: Path | None, path: str | None = None) -> STData:
    return load_custom(_require_path(path))


def data_hash(path: str | None = None) -> str:
    return content_hash(_require_path(path))


register_dataset(DatasetSpec(
    id="custom",
    description="your own data: a directory with manifest.json (docs/custom_data.md)",
    files=(), loader=load, default_protocol=PROTOCOL,
    options={"path": "directory holding manifest.json (required)"},
    license="yours", citation="", steps_per_day=None, content_hash=data_hash))
