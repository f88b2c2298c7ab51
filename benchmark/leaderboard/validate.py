"""Validation of a submission by recomputation.

``validate_submission(FILE)`` checks the metadata (:mod:`.schema`), the predictions file
(:mod:`.npzsafe`), resolves what the submission is evaluated on (dataset, dataset options,
protocol), rebuilds the suite's own ground truth and recomputes every metric. Claimed metrics in
the metadata are never used (they are reported back as ignored).

Ground truth and order: the dataset is loaded with its options and cut by the protocol with
:func:`benchmark.data.windows.prepare` (training fraction set to 1; the test windows do not
depend on it). Window ``i`` of the predictions is the test window starting at
``prepared.splits.test[i]`` (ascending start index); its target is
``raw_targets[start + T_in : start + T_in + T_out]``, in original units, target channels in the
protocol's order. This is the order of ``Trainer.predict("test")``.

Beyond the schema, a submission is refused when its protocol makes no sense for its dataset
(:func:`check_protocol_sense`), when a prediction is not finite or is absurdly large
(``|value| > ABSURD_FACTOR * max(1, largest |test target|)``: predictions are in the data's
original units), and when a recomputed overall metric is not finite.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__ as SUITE_VERSION
from ..data.protocol import Protocol, protocol_hash
from ..data.stdata import DataError
from ..data.windows import PreparedData, prepare
from ..metrics import ProtocolMetrics
from . import npzsafe
from .schema import SubmissionError, read_json_strict, validate_metadata

NOT_ON_LEADERBOARD = ("custom",)  # user-local data: no shared ground truth
MAX_GENERATED_CELLS = 50_000_000  # bound on T * N * C for generated (synthetic) datasets
ABSURD_FACTOR = 1e6  # |prediction| above this times max(1, largest |test target|) is refused
FINGERPRINT_BLOCKS = 64  # block means stored per entry for the near-duplicate rule (store.py)
_EVAL_BATCH = 256


@dataclass
class Target:
    """What a submission is evaluated on.

    Attributes:
        dataset: registered dataset id.
        dataset_options: loader options, normalised (defaults dropped, types coerced).
        protocol: the protocol with the training subset reset (train_fraction 1).
        protocol_hash: ``protocol_hash(dataset, protocol)`` (evaluation fields only).
        board: leaderboard key, ``protocol_hash`` plus a hash of non-default options.
        prepared: the dataset cut by the protocol.
    """

    dataset: str
    dataset_options: dict
    protocol: Protocol
    protocol_hash: str
    board: str
    prepared: PreparedData

    @property
    def expected_shape(self) -> tuple[int, int, int, int]:
        """``(num_test_windows, T_out, N, C_out)``."""
        p = self.prepared
        return (len(p.splits.test), self.protocol.horizon, p.num_nodes, p.out_channels)

    @property
    def channel_names(self) -> list[str]:
        return [self.prepared.data.channels[i] for i in self.prepared.target_channel_idx]


@dataclass
class ValidationResult:
    """A validated submission: its metadata, target, recomputed metrics and content hash."""

    json_path: Path
    npz_path: Path
    metadata: dict
    target: Target
    metrics: dict
    predictions_sha256: str
    num_windows: int
    ignored: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    target_scale: float = 1.0
    fingerprint: list[float] = field(default_factory=list)

    def summary_line(self) -> str:
        o = self.metrics["overall"]
        return (f"{self.metadata['model']} on {self.target.dataset} (protocol "
                f"{self.target.board}, {self.num_windows} test windows): MAE {o['mae']:.4f}  "
                f"RMSE {o['rmse']:.4f}  MAPE {o['mape']:.2f}%")


def submission_paths(file: str | Path) -> tuple[Path, Path]:
    """``(json, npz)`` for a submission named by either file of the pair."""
    path = Path(file)
    if path.suffix not in (".json", ".npz"):
        raise SubmissionError(path, "file", "give the submission's .json or .npz file")
    json_path, npz_path = path.with_suffix(".json"), path.with_suffix(".npz")
    for p in (json_path, npz_path):
        if not p.is_file():
            raise SubmissionError(p, "file", "missing (a submission is <name>.json + <name>.npz "
                                             "side by side)")
    return json_path, npz_path


def normalise_options(dataset: str, options: dict, file: str | Path = "dataset_options") -> dict:
    """Check ``options`` against the dataset loader's signature; coerce types; drop defaults,
    so equal datasets have equal identities."""
    from ..data.registry import get_dataset_spec

    spec = get_dataset_spec(dataset)
    params = {k: p for k, p in inspect.signature(spec.loader).parameters.items() if k != "root"}
    out = {}
    for k, v in sorted(options.items()):
        if k not in params:
            raise SubmissionError(file, f"dataset_options.{k}", f"unknown option for dataset "
                                                                f"{dataset!r}; valid: "
                                                                f"{sorted(params)}")
        default = params[k].default
        if isinstance(default, bool) or default is None:
            ok = isinstance(v, type(default)) if default is not None else True
        elif isinstance(default, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif isinstance(default, float):
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            v = float(v) if ok else v
        else:
            ok = isinstance(v, type(default))
        if not ok:
            raise SubmissionError(file, f"dataset_options.{k}",
                                  f"{v!r} must be a {type(default).__name__}")
        if v != default:
            out[k] = v
    return out


def board_key(dataset: str, phash: str, options: dict) -> str:
    """Directory key of a leaderboard: the protocol hash, plus ``-o<8 hex>`` when the dataset
    has non-default options (their normalised JSON's sha256)."""
    if not options:
        return phash
    blob = json.dumps({"dataset": dataset, "options": options}, sort_keys=True)
    return f"{phash}-o{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def resolve_target(meta: dict, file: str | Path) -> Target:
    """Dataset, options and protocol of a submission; loads and cuts the data."""
    from ..data.registry import get_dataset_spec, load_dataset

    dataset = meta["dataset"]
    try:
        spec = get_dataset_spec(dataset)
    except DataError as e:
        raise SubmissionError(file, "dataset", str(e)) from None
    if dataset in NOT_ON_LEADERBOARD:
        raise SubmissionError(file, "dataset", f"{dataset!r} is user-supplied data and has no "
                                               "shared ground truth")
    options = normalise_options(dataset, meta.get("dataset_options", {}), file)
    protocol = _resolve_protocol(meta, spec.default_protocol, options, file)
    check_protocol_sense(protocol, None, file)
    phash = protocol_hash(dataset, protocol)
    if not spec.files:
        _check_generated_size(dataset, options, spec, file)
    try:
        data = load_dataset(dataset, **options)
    except (DataError, OSError) as e:  # missing files, or options the loader refuses
        raise SubmissionError(file, "dataset_options" if options else "dataset",
                              f"cannot load {dataset!r} to build the ground truth: {e}") from None
    except Exception as e:  # noqa: BLE001 - a loader refusing hostile options, any error type
        raise SubmissionError(file, "dataset_options", f"the {dataset!r} loader rejects them: "
                                                       f"{type(e).__name__}: {e}") from None
    check_protocol_sense(protocol, int(data.values.shape[0]), file)
    try:
        prepared = prepare(data, protocol, dataset_id=dataset)
    except (DataError, ValueError, TypeError, KeyError, IndexError) as e:
        raise SubmissionError(file, "protocol", f"cannot cut {dataset!r} with this protocol: "
                                                f"{e}") from None
    if len(prepared.splits.test) == 0:
        raise SubmissionError(file, "protocol", f"leaves no test window on {dataset!r}; use "
                                                "a larger test split or shorter windows")
    return Target(dataset, options, protocol, phash, board_key(dataset, phash, options), prepared)


def _resolve_protocol(meta: dict, default: Protocol, options: dict,
                      file: str | Path) -> Protocol:
    dataset = meta["dataset"]
    if "protocol" in meta:
        d = dict(meta["protocol"])
        if "dataset_options" in d:  # as stored in run records
            if normalise_options(dataset, d.pop("dataset_options") or {}, file) != options:
                raise SubmissionError(file, "protocol.dataset_options",
                                      "differs from dataset_options")
        d.pop("notes", None)
        if "train_fraction" in d and d["train_fraction"] != meta["train_fraction"]:
            raise SubmissionError(file, "protocol.train_fraction",
                                  f"{d['train_fraction']!r} differs from train_fraction "
                                  f"{meta['train_fraction']!r}")
        _check_protocol_types(d, file)
        try:
            protocol = Protocol.from_dict(d)
            protocol_hash(dataset, protocol)
        except (TypeError, ValueError) as e:
            raise SubmissionError(file, "protocol", f"invalid protocol: {e}") from None
    else:
        protocol = default
    protocol = replace(protocol, train_fraction=1.0, fraction_mode="recent", fraction_seed=0)
    phash = protocol_hash(dataset, protocol)
    given = meta.get("protocol_hash")
    if given is not None and given != phash:
        if "protocol" in meta:
            why = f"does not match the protocol given (its hash is {phash!r})"
        else:
            why = (f"is not the default protocol of {dataset!r} ({phash!r}); give the full "
                   "'protocol' dict for another protocol")
        raise SubmissionError(file, "protocol_hash", f"{given!r} {why}")
    return protocol


_INT, _NUM, _STR = "integer", "number", "string"
_PROTOCOL_TYPES: dict[str, tuple[str, bool, bool]] = {  # field: (element type, list?, nullable?)
    "input_len": (_INT, False, False), "horizon": (_INT, False, False),
    "split_ratios": (_NUM, True, False), "split_steps": (_INT, True, True),
    "time_range": (_INT, True, True), "channels": (_STR, True, True),
    "target_channels": (_STR, True, True), "null_value": (_NUM, False, True),
    "mape_threshold": (_NUM, False, False), "scaler": (_STR, False, False),
    "train_fraction": (_NUM, False, False), "fraction_mode": (_STR, False, False),
    "fraction_seed": (_INT, False, False), "report_horizons": (_INT, True, False),
}
MAX_STEPS = 100_000  # bound on input_len and horizon


def _type_ok(v: object, kind: str) -> bool:
    if kind == _STR:
        return isinstance(v, str) and len(v) <= 200
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return isinstance(v, int) if kind == _INT else math.isfinite(v)


def _check_protocol_types(d: dict, file: str | Path) -> None:
    """JSON types of the protocol's fields (Protocol.from_dict checks names and values)."""
    for k, v in d.items():
        if k not in _PROTOCOL_TYPES:
            continue  # unknown names are reported by Protocol.from_dict
        kind, is_list, nullable = _PROTOCOL_TYPES[k]
        if v is None and nullable:
            continue
        items = v if is_list and isinstance(v, list) and len(v) <= 64 else [v]
        if (is_list and not isinstance(v, list)) or not all(_type_ok(x, kind) for x in items):
            shape = f"a list of {kind}s" if is_list else f"a {kind}"
            raise SubmissionError(file, f"protocol.{k}", f"must be {shape}"
                                                         + (" or null" if nullable else ""))
    for k in ("input_len", "horizon"):
        if isinstance(d.get(k), int) and d[k] > MAX_STEPS:
            raise SubmissionError(file, f"protocol.{k}", f"{d[k]} exceeds {MAX_STEPS}")


def _bad_threshold(v: object) -> str | None:
    """Why a threshold-like protocol value is absurd (None: fine or unset)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return f"{v!r} is not a number"
    if not math.isfinite(v):
        return f"{v!r} is not finite"
    if v < 0:
        return f"{v!r} is negative (targets are non-negative flows and speeds)"
    return None


def check_protocol_sense(protocol: Protocol, num_steps: int | None,
                         file: str | Path) -> None:
    """Refuse protocol values that parse but make no sense for a leaderboard dataset.

    Checked without the data: report horizons within ``1..horizon``; ``mape_threshold``,
    ``null_value`` and ``mask_threshold`` (read with getattr: newer protocols may have it)
    finite and not negative; split ratios each finite, train and test > 0, summing to 1;
    explicit split steps non-negative with train and test > 0. With ``num_steps`` (the series
    length): ``time_range`` inside the series, ``input_len + horizon`` and the explicit split
    steps no longer than the (cropped) series.
    """
    remedy = "fix the protocol or send protocol_hash for the dataset's default protocol"
    horizon, input_len = protocol.horizon, protocol.input_len
    if not (isinstance(horizon, int) and isinstance(input_len, int)) or horizon < 1 \
            or input_len < 1:
        raise SubmissionError(file, "protocol.horizon", f"input_len {input_len!r} and horizon "
                                                        f"{horizon!r} must be positive integers")
    beyond = [h for h in protocol.report_horizons if not 1 <= h <= horizon]
    if beyond:
        raise SubmissionError(file, "protocol.report_horizons",
                              f"{beyond[:5]} outside 1..{horizon} (the horizon); {remedy}")
    for name in ("mape_threshold", "null_value", "mask_threshold"):
        why = _bad_threshold(getattr(protocol, name, None))
        if why:
            raise SubmissionError(file, f"protocol.{name}", f"{why}; {remedy}")
    if protocol.split_steps is None:
        r = list(protocol.split_ratios)
        if len(r) != 3 or not all(_type_ok(x, _NUM) for x in r) or r[0] <= 0 or r[2] <= 0 \
                or r[1] < 0 or abs(sum(r) - 1.0) > 1e-6:
            raise SubmissionError(file, "protocol.split_ratios",
                                  f"{r[:3]} must be three ratios (train > 0, val >= 0, "
                                  f"test > 0) summing to 1; {remedy}")
    else:
        st = list(protocol.split_steps)
        if len(st) != 3 or st[0] <= 0 or st[2] <= 0 or st[1] < 0:
            raise SubmissionError(file, "protocol.split_steps",
                                  f"{st[:3]} must be three step counts (train > 0, val >= 0, "
                                  f"test > 0); {remedy}")
    if num_steps is None:
        return
    length = num_steps
    if protocol.time_range is not None:
        tr = list(protocol.time_range)
        if len(tr) != 2 or not 0 <= tr[0] < tr[1] <= num_steps:
            raise SubmissionError(file, "protocol.time_range",
                                  f"{tr[:2]} must be [start, stop) with 0 <= start < stop <= "
                                  f"{num_steps} (the series length); {remedy}")
        length = tr[1] - tr[0]
    if input_len + horizon > length:
        raise SubmissionError(file, "protocol.input_len",
                              f"input_len {input_len} + horizon {horizon} exceeds the "
                              f"{length} steps of the series; {remedy}")
    if protocol.split_steps is not None and sum(protocol.split_steps) > length:
        raise SubmissionError(file, "protocol.split_steps",
                              f"{list(protocol.split_steps)} sum to more than the {length} "
                              f"steps of the series; {remedy}")


def _check_generated_size(dataset: str, options: dict, spec, file: str | Path) -> None:
    params = inspect.signature(spec.loader).parameters
    get = {k: options.get(k, p.default) for k, p in params.items() if k != "root"}
    dims = [get.get(k) for k in ("num_nodes", "num_days", "steps_per_day", "channels")]
    if all(isinstance(v, int) for v in dims):
        cells = int(np.prod([max(0, v) for v in dims], dtype=object))
        if cells > MAX_GENERATED_CELLS:
            raise SubmissionError(file, "dataset_options", f"generated dataset of {cells} values "
                                                           f"exceeds {MAX_GENERATED_CELLS}")


def ground_truth(prepared: PreparedData) -> np.ndarray:
    """Targets of the test windows, ``[W, T_out, N, C_out]`` original units, in the order of
    ``prepared.splits.test``."""
    starts = prepared.starts("test")
    parts = [prepared.make_batch(starts[i:i + _EVAL_BATCH]).y.numpy()
             for i in range(0, len(starts), _EVAL_BATCH)]
    return np.concatenate(parts)


def recompute_metrics(predictions: np.ndarray, target: Target) -> dict:
    """Every metric of ``predictions: [W, T_out, N, C_out]`` against the suite's ground truth
    (:class:`ProtocolMetrics`: the protocol's masked view, and every finite target under
    ``all_targets``), exactly as the suite scores its own runs."""
    p = target.protocol
    prepared = target.prepared
    acc = ProtocolMetrics.for_protocol(p, prepared.out_channels)
    starts = prepared.starts("test")
    for i in range(0, len(starts), _EVAL_BATCH):
        y = prepared.make_batch(starts[i:i + _EVAL_BATCH]).y
        acc.update(torch.from_numpy(np.asarray(predictions[i:i + _EVAL_BATCH], dtype=np.float64)),
                   y.to(torch.float64))
    return acc.summary(p.report_horizons, target.channel_names)


def validate_submission(file: str | Path,
                        max_bytes: int = npzsafe.DEFAULT_MAX_BYTES) -> ValidationResult:
    """Check a submission completely and recompute its metrics; raise :class:`SubmissionError`
    naming the file and field at the first problem."""
    json_path, npz_path = submission_paths(file)
    meta, ignored = validate_metadata(read_json_strict(json_path), json_path)
    blob = npzsafe.read_checked_bytes(npz_path, max_bytes)
    header = npzsafe.inspect_npz(blob, npz_path, max_bytes)
    target = resolve_target(meta, json_path)
    if header.shape != target.expected_shape:
        raise SubmissionError(npz_path, "predictions.shape",
                              f"{header.shape} != expected {target.expected_shape} = (test "
                              f"windows, horizon, nodes, target channels) for {target.dataset!r} "
                              f"under protocol {target.board}")
    arr = npzsafe.load_predictions(blob, npz_path, header)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int((~finite).sum())
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise SubmissionError(npz_path, "predictions", f"{bad} non-finite values (NaN/inf), "
                                                       f"first at index {first}")
    scale = target_scale(target)
    limit = ABSURD_FACTOR * max(1.0, scale)
    absurd = np.abs(arr) > limit
    if absurd.any():
        first = tuple(int(i) for i in np.argwhere(absurd)[0])
        raise SubmissionError(npz_path, "predictions",
                              f"{int(absurd.sum())} values with |value| > {limit:.3g} "
                              f"({ABSURD_FACTOR:g} x the largest |target| {scale:.3g}), first "
                              f"{float(arr[first]):.3g} at index {first}; predictions must be "
                              "in the dataset's original units")
    metrics = recompute_metrics(arr, target)
    _check_metrics_finite(metrics, npz_path)
    warnings = []
    if meta["suite_version"] != SUITE_VERSION:
        warnings.append(f"suite_version {meta['suite_version']} differs from this suite "
                        f"({SUITE_VERSION}); metrics were recomputed with {SUITE_VERSION}")
    return ValidationResult(json_path, npz_path, meta, target, metrics,
                            npzsafe.predictions_sha256(arr), int(arr.shape[0]), ignored,
                            warnings, scale, block_means(arr))


def target_scale(target: Target) -> float:
    """Largest |value| of the test windows' targets (original units)."""
    return float(np.abs(ground_truth(target.prepared)).max(initial=0.0))


def block_means(arr: np.ndarray, blocks: int = FINGERPRINT_BLOCKS) -> list[float]:
    """Means of ``blocks`` contiguous chunks of the flattened (C order, float64) predictions.
    Each mean moves by at most ``max |p - q|`` between two arrays ``p``, ``q``."""
    flat = np.ascontiguousarray(arr, dtype=np.float64).reshape(-1)
    n = max(1, min(blocks, flat.size))
    return [float(c.mean()) if c.size else 0.0 for c in np.array_split(flat, n)]


def _check_metrics_finite(metrics: dict, file: Path) -> None:
    """Every recomputed overall metric is finite, and no metric anywhere is infinite (a
    horizon or channel with nothing to evaluate may be NaN)."""
    for view in ("overall", "mean_of_horizons"):
        for k, v in (metrics.get(view) or {}).items():
            if not math.isfinite(v):
                raise SubmissionError(file, f"metrics.{view}.{k}",
                                      f"recomputed value is {v} (not finite): the protocol "
                                      "masks every target or the predictions overflow")

    def walk(d: object, where: str) -> None:
        if isinstance(d, dict):
            for k, v in d.items():
                walk(v, f"{where}.{k}")
        elif isinstance(d, list):
            for i, v in enumerate(d):
                walk(v, f"{where}[{i}]")
        elif isinstance(d, float) and math.isinf(d):
            raise SubmissionError(file, where, f"recomputed value is {d} (overflow): "
                                               "predictions are too large")

    walk(metrics, "metrics")
