"""Dataset registry: one :class:`DatasetSpec` per dataset id, with pinned files and checksums.

Where files come from, in order (the first directory holding *all* of a dataset's files wins):

1. ``$FLOWDISTILL_DATA/<dataset_id>/`` when the variable is set;
2. a ``shared/data`` mirror beside the checkout: ``<repo root>/../shared/data/<dataset_id>/``
   (found from this package's location, or else from the working directory), only if it exists;
3. the user cache ``<cache>/data/<dataset_id>/``, where ``<cache>`` is ``$FLOWDISTILL_CACHE`` or
   ``platformdirs.user_cache_dir("flowdistill")``;
4. otherwise the missing files are downloaded from their pinned URLs into the cache (progress bar,
   size + sha256 checked before an atomic rename). ``FLOWDISTILL_OFFLINE=1`` disables downloads.

Nothing is ever written into ``FLOWDISTILL_DATA`` or the mirror. When files cannot be found or
fetched, :class:`DataError` names the dataset, the files, the places searched and
``FLOWDISTILL_DATA``; synthetic data are never substituted. Loading verifies sha256 first
(cached in-process by path, size and mtime, so repeated loads are cheap).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .custom import content_hash as custom_content_hash
from .custom import load_custom
from .files import download, sha256_file
from .protocol import Protocol
from .sources.metr_la import load_metr_la_week
from .sources.nyc_grid import load_nyc_grid
from .sources.nyc_manhattan import load_manhattan
from .sources.pems07m import load_pems07m
from .stdata import DataError, STData
from .synthetic import make_synthetic

ENV_DATA = "FLOWDISTILL_DATA"
ENV_CACHE = "FLOWDISTILL_CACHE"
ENV_OFFLINE = "FLOWDISTILL_OFFLINE"


@dataclass(frozen=True)
class FileSpec:
    """One raw file: its name in the dataset directory, canonical URL, sha256 and size (bytes).
    ``mirrors`` are further URLs for the same bytes, tried in order after ``url``."""

    name: str
    url: str
    sha256: str
    size: int
    mirrors: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the suite knows about a dataset id.

    Attributes:
        id: dataset id (the directory name under FLOWDISTILL_DATA).
        description: one line.
        files: raw files (empty for generated or user-supplied datasets).
        loader: ``loader(root: Path | None, **options) -> STData``.
        default_protocol: the protocol results are reported under unless overridden.
        options: loader option name -> help text (with the default).
        license, citation: of the data (and its packaging).
        steps_per_day: of the native time axis (None: depends on options).
        homepage: source repository.
        content_hash: ``content_hash(**options) -> str`` for data whose files are not pinned by
            ``files`` (user-supplied): a hash of the actual bytes, made part of a run's identity.
    """

    id: str
    description: str
    files: tuple[FileSpec, ...]
    loader: Callable[..., STData]
    default_protocol: Protocol
    options: dict[str, str] = field(default_factory=dict)
    license: str = ""
    citation: str = ""
    steps_per_day: int | None = None
    homepage: str = ""
    content_hash: Callable[..., str] | None = None


class FileCheck(NamedTuple):
    file: str
    ok: bool
    expected_sha: str
    actual_sha: str


def _gh(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


# --- pinned sources (see each dataset's PROVENANCE.txt) -------------------------------------
_NYC_REPO, _NYC_COMMIT = "Evens1sen/Deep-NYC-Taxi-Bike", "097aa2d8177392339b089ed940c6ccc2d469dd97"
_STSAN_REPO, _STSAN_COMMIT = "haoxingl/STSAN", "f5d09f88544f5def714a8727db847f2a57a56348"
_OPENCITY_REPO, _OPENCITY_COMMIT = ("Beater-221E/OpenCity-reproduce",
                                    "d555685d0d8a074e755670504fef00cc0e03859b")
# PROVENANCE names no commit for the station table; this is the STGCN commit whose blob has the
# same size (9118 bytes) and content.
_STGCN_REPO, _STGCN_COMMIT = "VeritasYin/STGCN_IJCAI-18", "26308e61a5c61609577c31f39bd432f1768ceacc"
_TGCN_REPO, _TGCN_COMMIT = "lehaifeng/T-GCN", "219a2346f5bf68d54d91a948e7a41a08f9edc46b"
# PROVENANCE names no DCRNN commit: the branch is used and the sha256 pins the bytes.
_DCRNN_URL = ("https://raw.githubusercontent.com/liyaguang/DCRNN/master/"
              "data/sensor_graph/graph_sensor_locations.csv")


def _nyc(path: str) -> str:
    return _gh(_NYC_REPO, _NYC_COMMIT, path)


def _tgcn(name: str, sha256: str, size: int) -> FileSpec:
    # the same blob lies in data/ and in T-GCN/T-GCN-PyTorch/data/ at the pinned commit
    return FileSpec(name, _gh(_TGCN_REPO, _TGCN_COMMIT, f"data/{name}"), sha256, size,
                    mirrors=(_gh(_TGCN_REPO, _TGCN_COMMIT, f"T-GCN/T-GCN-PyTorch/data/{name}"),))


_ZONES = "data-NYCZones"
_W_ADJ = FileSpec("W_adj_matrix.csv", _nyc(f"{_ZONES}/adjmatrix/W_adj_matrix.csv"),
                  "1822444cccf3545b6d2b410c0f36071f495a5f5ba6e65020f15f07359a60f9a9", 9859)
_ZONES_CSV = FileSpec("manhattan_zones.csv", _nyc(f"{_ZONES}/zones/manhattan_zones.csv"),
                      "8b06eb185812d95c19a84951861b9a40a16672b522694238ff364cd369e850ec", 1836)

_TAXI_FILES = (
    FileSpec("201901-202012-NYCtaxi-inflow.npz",
             _nyc("data-NYCTaxi/30min/201901-202012-NYCtaxi-inflow.npz"),
             "6fb7b9720ac4548fb63b05b0023236469ae7c16ae8491044cff701fb7d7659bb", 2445364),
    FileSpec("201901-202012-NYCtaxi-outflow.npz",
             _nyc("data-NYCTaxi/30min/201901-202012-NYCtaxi-outflow.npz"),
             "233b1e11e53c86acd7233f7960bb4301780ba2ca92ff6275dabf31d6712036e3", 2331070),
    _W_ADJ,
    FileSpec("W_od_taxi.csv", _nyc(f"{_ZONES}/adjmatrix/W_od_taxi.csv"),
             "c24e515b328d68c481861074233995b6c606386cd81f1f7b8827d7050ebf4125", 95022),
    _ZONES_CSV,
)
_BIKE_FILES = (
    FileSpec("201901-202012-NYCbike-inflow.npz",
             _nyc("data-NYCBike/30min/201901-202012-NYCbike-inflow.npz"),
             "6dacfa644848e7c319a62f2e42237f32d54dc4c7f769d0294c6ccb48fe8c5b64", 2007023,
             # the repository's history also holds the inflow under this name
             mirrors=(_nyc("data-NYCBike/30min/201901-202012-30-NYCbike-inflow.npz"),)),
    FileSpec("201901-202012-NYCbike-outflow.npz",
             _nyc("data-NYCBike/30min/201901-202012-NYCbike-outflow.npz"),
             "8842797e47157a867740e25b38fa6d9a364ca725cd06ec356e7b8cfc13261636", 2005539),
    _W_ADJ,
    FileSpec("W_od_bike.csv", _nyc(f"{_ZONES}/adjmatrix/W_od_bike.csv"),
             "4f22e783f0204008ca581a1319b7d724e38c808dcf1393d0c24ce33dd4fd7b2b", 86059),
    _ZONES_CSV,
)
_GRID_FILES = (
    FileSpec("flow_train.npz", _gh(_STSAN_REPO, _STSAN_COMMIT, "data/NYTaxi/flow_train.npz"),
             "a972c671e2916e300c545c48d4b2f4b1f803b8c6e653d1e6eb1b0d27004245d1", 957727),
    FileSpec("flow_val.npz", _gh(_STSAN_REPO, _STSAN_COMMIT, "data/NYTaxi/flow_val.npz"),
             "f9b58bdeeafd8e12d516603cfcbdf5a80c745f4e35614363b06ffcf431d002b5", 238630),
    FileSpec("flow_test.npz", _gh(_STSAN_REPO, _STSAN_COMMIT, "data/NYTaxi/flow_test.npz"),
             "5f1fc043214fcc6f0fbea0de06e9d4ba85d8492d3e7f6c0d322ccfea135ff840", 304787),
    FileSpec("external_knowledge.csv",
             _gh(_STSAN_REPO, _STSAN_COMMIT, "data/NYTaxi/external_knowledge.csv"),
             "3f491ef27164dc09cd5a03d1cbb41e810ac3e4cc1ec2253d539589e3da2261f0", 3318),
)
_PEMS_FILES = (
    FileSpec("PEMS07M.zip", _gh(_OPENCITY_REPO, _OPENCITY_COMMIT, "data/PEMS07M.zip"),
             "6fc2550c447dee4c81838b50dafa5bd75c7abcd8c0272d55610a2a7f5c84de3c", 3911787),
    FileSpec("PeMSD7_M_Station_Info.csv",
             _gh(_STGCN_REPO, _STGCN_COMMIT, "dataset/PeMSD7_M_Station_Info.csv"),
             "5a9744215880f2ec1a5b3efdbd6ee662eb1533b9b3d68924d85f5e45c28a02fe", 9118),
)
_METR_FILES = (
    _tgcn("los_speed.csv", "7b732d86ae32b2930595becba28aff39dacbfb2197e250fc0332e1744ce2cbf4",
          3402125),
    _tgcn("los_adj.csv", "7a6eb41e10677992b5af50f5ab187c6c05c5c3a92cb973950cfddbf857361e76",
          111686),
    FileSpec("graph_sensor_locations.csv", _DCRNN_URL,
             "eb8ea96e07358b45d0e4ba3b89c2673fa20c54af50150249e627389e749ade6f", 6341),
)

# --- default protocols ---------------------------------------------------------------------
_ZERO_MASK_NOTE = ("targets <= 0 are masked in the training loss and in every metric: the "
                   "FlowDistill release's convention (loss mask_value = 0.001, metrics keep "
                   "true > 0 with mae_thresh = 0; identical on counts), as BasicTS and LargeST "
                   "mask zeros on flow data; records also carry the metrics over all targets "
                   "(metrics.<split>.all_targets); mask_threshold=null selects the unmasked "
                   "protocol")
_MAPE_NOTE = ("MAPE over the same non-zero targets as MAE/RMSE, as in the release (no further "
              "threshold)")
_MANHATTAN_PROTOCOL = Protocol(
    input_len=12, horizon=12, split_ratios=(0.5, 0.3, 0.2), time_range=(0, 17520),
    null_value=None, mask_threshold=0.0, mape_threshold=0.0,
    notes={"time_range": "2019 only (17,520 half-hours): FlowDistill's one-year 30-min setting; "
                         "2020 has the COVID collapse",
           "split": "5:3:2 chronological as in the FlowDistill authors' code",
           "mask_threshold": _ZERO_MASK_NOTE, "mape_threshold": _MAPE_NOTE})
_GRID_PROTOCOL = Protocol(
    input_len=12, horizon=12, split_ratios=(0.5, 0.3, 0.2), null_value=None, mask_threshold=0.0,
    mape_threshold=0.0,
    notes={"split": "5:3:2 chronological like the other NYC taxi data (the source files' own "
                    "split is 2784/672/864 steps: use split_steps to reproduce STSAN)",
           "mask_threshold": _ZERO_MASK_NOTE,
           "mape_threshold": _MAPE_NOTE + " (STSAN's own protocol: mask_threshold=null, "
                             "mape_threshold=10)"})
_PEMS_PROTOCOL = Protocol(
    input_len=12, horizon=12, split_ratios=(0.6, 0.2, 0.2), null_value=0.0, mape_threshold=0.0,
    notes={"split": "6:2:2, the usual PEMS-style split",
           "null_value": "speed 0 marks a missing reading (none occur in this release)",
           "calendar": "real timestamps of the 44 weekdays of May-June 2012; the time axis "
                       "skips the weekends (windows are by index and may span one)"})
_METR_PROTOCOL = Protocol(
    input_len=12, horizon=12, split_ratios=(0.7, 0.1, 0.2), null_value=0.0, mape_threshold=0.0,
    notes={"split": "7:1:2, the METR-LA convention (DCRNN)",
           "null_value": "speed 0 marks a missing reading (T-GCN's copy is already imputed)"})
_SYNTH_PROTOCOL = Protocol(
    input_len=12, horizon=12, split_ratios=(0.6, 0.2, 0.2), null_value=None, mape_threshold=1.0,
    notes={"null_value": "generated flows: zeros (clipped) are real", "mape_threshold": "|y| > 1"})
_CUSTOM_PROTOCOL = Protocol(
    input_len=12, horizon=12, split_ratios=(0.6, 0.2, 0.2), null_value=None, mape_threshold=0.0,
    notes={"null_value": "taken from the manifest's null_value by default_protocol()"})


def _taxi_loader(root: Path, adjacency: str = "binary") -> STData:
    return load_manhattan(root, "taxi", adjacency=adjacency)


def _bike_loader(root: Path, adjacency: str = "binary") -> STData:
    return load_manhattan(root, "bike", adjacency=adjacency)


def _grid_loader(root: Path, neighbours: int = 8) -> STData:
    return load_nyc_grid(root, neighbours=neighbours)


def _pems_loader(root: Path, adjacency: str = "zip", sigma2: float = 10.0,
                 epsilon: float = 0.5) -> STData:
    return load_pems07m(root, adjacency=adjacency, sigma2=sigma2, epsilon=epsilon)


def _metr_loader(root: Path) -> STData:
    return load_metr_la_week(root)


def _synthetic_loader(root: Path | None, num_nodes: int = 12, num_days: int = 14,
                      steps_per_day: int = 48, channels: int = 2, seed: int = 0) -> STData:
    return make_synthetic(num_nodes=num_nodes, num_days=num_days, steps_per_day=steps_per_day,
                          channels=channels, seed=seed)


def _custom_loader(root: Path | None, path: str | None = None) -> STData:
    if path is None:
        raise DataError("dataset 'custom' needs the option path=<directory with manifest.json> "
                        "(see docs/custom_data.md)")
    return load_custom(path)


def _custom_content_hash(path: str | None = None) -> str:
    if path is None:
        raise DataError("dataset 'custom' needs the option path=<directory with manifest.json> "
                        "(see docs/custom_data.md)")
    return custom_content_hash(path)


_NYC_CITATION = ("Forecasting Regional Multimodal Transportation Demand with Graph Neural "
                 "Networks: An Open Dataset. IEEE ITSC 2022. "
                 "https://github.com/Evens1sen/Deep-NYC-Taxi-Bike")
_MANHATTAN_OPTIONS = {"adjacency": "'binary' (default; W_adj_matrix.csv zone contiguity) or "
                                   "'od' (W_od_*.csv origin-destination weights)"}

_SPECS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry (ids are unique)."""
    if spec.id in _SPECS:
        raise ValueError(f"dataset {spec.id!r} is already registered")
    _SPECS[spec.id] = spec
    return spec


register_dataset(DatasetSpec(
    id="nyc_taxi_manhattan",
    description="NYC yellow taxi, 69 Manhattan zones, inflow+outflow, 30 min, 2019-2020",
    files=_TAXI_FILES, loader=_taxi_loader, default_protocol=_MANHATTAN_PROTOCOL,
    options=_MANHATTAN_OPTIONS,
    license="none stated in the source repository; underlying NYC TLC trip records are public",
    citation=_NYC_CITATION, steps_per_day=48, homepage=f"https://github.com/{_NYC_REPO}"))
register_dataset(DatasetSpec(
    id="nyc_bike_manhattan",
    description="Citi Bike on the same 69 Manhattan zones and graph, inflow+outflow, 30 min, "
                "2019-2020",
    files=_BIKE_FILES, loader=_bike_loader, default_protocol=_MANHATTAN_PROTOCOL,
    options=_MANHATTAN_OPTIONS,
    license="none stated in the source repository; underlying Citi Bike system data license",
    citation=_NYC_CITATION, steps_per_day=48, homepage=f"https://github.com/{_NYC_REPO}"))
register_dataset(DatasetSpec(
    id="nyc_taxi_grid",
    description="NYC taxi on a 16x12 grid (192 cells), inflow+outflow, 30 min, "
                "2016-01-01..2016-03-30",
    files=_GRID_FILES, loader=_grid_loader, default_protocol=_GRID_PROTOCOL,
    options={"neighbours": "8 (default, cells sharing an edge or a corner) or 4 (edge only)"},
    license="MIT (STSAN repository, (c) 2020 StarkLord)",
    citation="Lin et al. Preserving Dynamic Attention for Long-Term Spatial-Temporal "
             "Prediction (STSAN). KDD 2020. https://github.com/haoxingl/STSAN",
    steps_per_day=48, homepage=f"https://github.com/{_STSAN_REPO}"))
register_dataset(DatasetSpec(
    id="pems07m",
    description="PeMSD7(M): 228 Caltrans D7 stations, speed, 5 min, 44 weekdays of May-Jun 2012",
    files=_PEMS_FILES, loader=_pems_loader, default_protocol=_PEMS_PROTOCOL,
    options={"adjacency": "'zip' (default; the zip's weighted matrix = STGCN Eq. 10 on the "
                          "original distances, diagonal 1), 'binary' (its support) or 'gaussian' "
                          "(STGCN Eq. 10 recomputed from station coordinates, km)",
             "sigma2": "Gaussian kernel sigma^2 in km^2 (default 10, STGCN)",
             "epsilon": "Gaussian kernel threshold (default 0.5, STGCN)"},
    license="packaging: none stated (OpenCity-reproduce; HKUDS OpenCity code is MIT); station "
            "table: BSD-2-Clause (STGCN)",
    citation="Yu, Yin, Zhu. Spatio-Temporal Graph Convolutional Networks: A Deep Learning "
             "Framework for Traffic Forecasting. IJCAI 2018; OpenCity packaging (HKUDS)",
    steps_per_day=288, homepage=f"https://github.com/{_OPENCITY_REPO}"))
register_dataset(DatasetSpec(
    id="metr_la_week",
    description="METR-LA first week (T-GCN Los-loop): 207 sensors, speed, 5 min, "
                "2012-03-01..2012-03-07",
    files=_METR_FILES, loader=_metr_loader, default_protocol=_METR_PROTOCOL,
    license="MIT (T-GCN-PyTorch, (c) 2021 martinwhl; DCRNN sensor locations, MIT)",
    citation="Zhao et al. T-GCN: A Temporal Graph Convolutional Network for Traffic "
             "Prediction. IEEE T-ITS 2020; Li et al. Diffusion Convolutional Recurrent Neural "
             "Network (METR-LA). ICLR 2018",
    steps_per_day=288, homepage=f"https://github.com/{_TGCN_REPO}"))
register_dataset(DatasetSpec(
    id="synthetic",
    description="generated in-process: daily+weekly cycles, graph-diffused AR(1) noise "
                "(default 12 nodes, 14 days x 48, 2 channels)",
    files=(), loader=_synthetic_loader, default_protocol=_SYNTH_PROTOCOL,
    options={"num_nodes": "N (default 12)", "num_days": "days (default 14)",
             "steps_per_day": "default 48", "channels": "C (default 2)",
             "seed": "random seed (default 0)"},
    license="generated", citation="FlowDistill-Bench synthetic generator", steps_per_day=None))
register_dataset(DatasetSpec(
    id="custom",
    description="your own data: a directory with manifest.json (docs/custom_data.md)",
    files=(), loader=_custom_loader, default_protocol=_CUSTOM_PROTOCOL,
    options={"path": "directory holding manifest.json (required)"},
    license="yours", citation="", steps_per_day=None, content_hash=_custom_content_hash))


# --- public API ----------------------------------------------------------------------------
def list_datasets() -> list[DatasetSpec]:
    """Registered dataset specs, in registration order (``spec.id``, ``spec.description``...)."""
    return list(_SPECS.values())


def dataset_ids() -> list[str]:
    """Registered dataset ids, in registration order."""
    return list(_SPECS)


def get_dataset_spec(dataset_id: str) -> DatasetSpec:
    try:
        return _SPECS[dataset_id]
    except KeyError:
        raise DataError(f"unknown dataset {dataset_id!r}; known: {dataset_ids()}") from None


def default_protocol(dataset_id: str, data: STData | None = None) -> Protocol:
    """The dataset's default protocol; for ``custom`` data the manifest's null_value is used."""
    p = get_dataset_spec(dataset_id).default_protocol
    if data is not None and data.extra.get("null_value") is not None:
        p = p.with_(null_value=float(data.extra["null_value"]))
    return p


def cache_dir() -> Path:
    """``<cache>/data``: ``$FLOWDISTILL_CACHE/data`` or platformdirs' user cache."""
    root = os.environ.get(ENV_CACHE)
    if not root:
        from platformdirs import user_cache_dir

        root = user_cache_dir("flowdistill")
    return Path(root).expanduser() / "data"


def mirror_dir() -> Path | None:
    """A ``shared/data`` directory beside the checkout, if one exists.

    Looked up from this package's location (``<repo root>/../shared/data``) and, for
    non-editable installs run from the checkout (tox), from the working directory."""
    here = Path(__file__).resolve().parents[2]
    for base in (here, Path.cwd()):
        cand = (base / ".." / "shared" / "data").resolve()
        if cand.is_dir():
            return cand
    return None


def search_roots() -> list[tuple[str, Path]]:
    """(label, root) pairs searched in order; a dataset lives in ``root / dataset_id``."""
    roots: list[tuple[str, Path]] = []
    env = os.environ.get(ENV_DATA)
    if env:
        roots.append((f"${ENV_DATA}", Path(env).expanduser()))
    mirror = mirror_dir()
    if mirror is not None:
        roots.append(("shared/data mirror", mirror))
    roots.append(("user cache", cache_dir()))
    return roots


def _offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def _not_found(spec: DatasetSpec, missing: list[str], roots: list[tuple[str, Path]],
               reason: str) -> DataError:
    places = "; ".join(f"{label}: {root / spec.id}" for label, root in roots)
    env = os.environ.get(ENV_DATA)
    env_state = f"currently {env!r}" if env else "currently unset"
    return DataError(
        f"dataset {spec.id!r}: file(s) {missing} not found. Searched {places}. {reason} "
        f"Set {ENV_DATA} to a directory laid out as <dataset_id>/<files> ({env_state}), or run "
        f"`flowdistill data fetch {spec.id}` with network access. Synthetic data are never "
        "substituted.")


def _download_file(f: FileSpec, dest: Path, progress: bool = True) -> None:
    errors = []
    for url in (f.url, *f.mirrors):
        try:
            download(url, dest, f.sha256, f.size, desc=f.name, progress=progress)
            return
        except DataError as e:  # checksum mismatch: try the next URL, report all
            errors.append(str(e))
        except OSError as e:  # network or HTTP error
            errors.append(f"{url}: {e}")
    raise DataError(f"could not download {f.name}: " + " | ".join(errors))


def locate(dataset_id: str, download: bool = True) -> Path:
    """Directory holding all of ``dataset_id``'s files (see the module docstring for the order).

    Missing files are downloaded into the user cache when ``download`` and not offline.
    Raises :class:`DataError` naming the files, the places searched and FLOWDISTILL_DATA.
    """
    spec = get_dataset_spec(dataset_id)
    if not spec.files:
        raise DataError(f"dataset {dataset_id!r} has no files (it is generated or user-supplied)")
    roots = search_roots()
    for _, root in roots:
        d = root / spec.id
        if all((d / f.name).is_file() for f in spec.files):
            return d
    cache = cache_dir() / spec.id
    missing = [f for f in spec.files if not (cache / f.name).is_file()]
    if not download or _offline():
        why = ("Downloads are disabled." if not download
               else f"Downloads are disabled by {ENV_OFFLINE}.")
        raise _not_found(spec, [f.name for f in missing], roots, why)
    for f in missing:
        try:
            _download_file(f, cache / f.name)
        except DataError as e:
            raise _not_found(spec, [f.name], roots, f"Download failed: {e}.") from e
    return cache


def _check(path: Path, f: FileSpec) -> FileCheck:
    actual = sha256_file(path)
    return FileCheck(f.name, actual == f.sha256, f.sha256, actual)


def verify(dataset_id: str) -> list[FileCheck]:
    """sha256 of each of the dataset's files where :func:`locate` finds them (no download).

    Returns:
        one ``(file, ok, expected_sha, actual_sha)`` per file; empty for generated datasets.
    """
    spec = get_dataset_spec(dataset_id)
    if not spec.files:
        return []
    d = locate(dataset_id, download=False)
    return [_check(d / f.name, f) for f in spec.files]


def _raise_if_bad(spec: DatasetSpec, d: Path, checks: list[FileCheck]) -> None:
    bad = [c for c in checks if not c.ok]
    if bad:
        lines = "; ".join(f"{d / c.file}: expected sha256 {c.expected_sha}, got {c.actual_sha}"
                          for c in bad)
        raise DataError(f"dataset {spec.id!r} failed checksum verification (truncated or "
                        f"altered file): {lines}")


def fetch(dataset_id: str, progress: bool = True) -> Path:
    """Make the dataset available and verified; returns its directory.

    Downloads missing files into the cache; a corrupt file *in the cache* is re-downloaded,
    a corrupt file in FLOWDISTILL_DATA or the mirror is reported (never overwritten).
    """
    spec = get_dataset_spec(dataset_id)
    if not spec.files:
        return Path()
    d = locate(dataset_id, download=True)
    checks = [_check(d / f.name, f) for f in spec.files]
    if d.resolve() == (cache_dir() / spec.id).resolve() and not _offline():
        by_name = {f.name: f for f in spec.files}
        for c in checks:
            if not c.ok:
                _download_file(by_name[c.file], d / c.file, progress=progress)
        checks = [_check(d / f.name, f) for f in spec.files]
    _raise_if_bad(spec, d, checks)
    return d


def _coerce_options(spec: DatasetSpec, options: dict) -> dict:
    params = {k: p for k, p in inspect.signature(spec.loader).parameters.items() if k != "root"}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise DataError(f"dataset {spec.id!r}: unknown option(s) {unknown}; "
                        f"valid: {sorted(params)}")
    out = {}
    for k, v in options.items():
        default = params[k].default
        if isinstance(v, str) and isinstance(default, bool):
            v = v.strip().lower() in ("1", "true", "yes")
        elif isinstance(v, str) and isinstance(default, int | float):
            try:
                v = type(default)(v)
            except ValueError:
                raise DataError(f"dataset {spec.id!r}: option {k}={v!r} must be a "
                                f"{type(default).__name__}") from None
        out[k] = v
    return out


def load_dataset(dataset_id: str, verify: bool = True, **options) -> STData:
    """Load a registered dataset as :class:`STData` (original units).

    Args:
        dataset_id: see :func:`list_datasets`.
        verify: check every file's sha256 first (cached in-process by path, size, mtime).
        **options: loader options, see ``get_dataset_spec(id).options``.
    """
    spec = get_dataset_spec(dataset_id)
    options = _coerce_options(spec, options)
    if not spec.files:
        return spec.loader(None, **options)
    d = locate(dataset_id)
    if verify:
        _raise_if_bad(spec, d, [_check(d / f.name, f) for f in spec.files])
    return spec.loader(d, **options)


def dataset_content_hash(dataset_id: str, **options) -> str | None:
    """sha256 over the bytes of a user-supplied dataset (``custom``: the manifest and every file
    it names); None for datasets whose files the registry pins by sha256 or that are generated
    from their options."""
    spec = get_dataset_spec(dataset_id)
    if spec.content_hash is None:
        return None
    return spec.content_hash(**_coerce_options(spec, options))


def dataset_info(dataset_id: str, **options) -> dict:
    """Loads the dataset and describes it: shapes, time span, channels, nodes, graph, protocol."""
    spec = get_dataset_spec(dataset_id)
    data = load_dataset(dataset_id, **options)
    ts = data.timestamps
    step_s = 86400 // data.steps_per_day if len(ts) > 1 else None
    adj = data.adjacency
    info = {
        "id": spec.id,
        "description": spec.description,
        "shape": [data.num_steps, data.num_nodes, data.num_channels],
        "num_steps": data.num_steps,
        "num_nodes": data.num_nodes,
        "num_channels": data.num_channels,
        "channels": list(data.channels),
        "start": str(ts[0].astype("datetime64[s]")),
        "end": str(ts[-1].astype("datetime64[s]")),
        "step_minutes": step_s / 60 if step_s else None,
        "steps_per_day": data.steps_per_day,
        "days": data.num_steps / data.steps_per_day,
        "regular": data.regular,
        "node_columns": list(data.nodes.columns),
        "first_nodes": data.nodes["name"].head(3).tolist(),
        "adjacency": data.extra.get("adjacency_kind", "none" if adj is None else "given"),
        "adjacency_nonzeros": None if adj is None else int(np.count_nonzero(adj)),
        "value_range": [float(np.min(data.values)), float(np.max(data.values))],
        "default_protocol": default_protocol(dataset_id, data).to_dict(),
        "files": [f.name for f in spec.files],
        "location": data.source,
        "options": dict(spec.options),
        "license": spec.license,
        "citation": spec.citation,
    }
    if "calendar_note" in data.extra:
        info["calendar_note"] = data.extra["calendar_note"]
    return info
