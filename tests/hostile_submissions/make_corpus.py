"""Regenerate the hostile-submission corpus in this directory (deterministic bytes).

    .venv/bin/python tests/hostile_submissions/make_corpus.py [OUT_DIR]

Every case is a pair ``<case>.json`` + ``<case>.npz`` for the small synthetic dataset
(``num_nodes=4, num_days=7, steps_per_day=24``, default protocol: 23 test windows, so
predictions are ``[23, 12, 4, 2]``). ``valid`` (ground truth + 1) and ``script_in_metadata``
(ground truth + 2, HTML/script in its text fields) are accepted; every other case must be
rejected (see ``CASES``; tests/test_leaderboard.py holds the expected messages).
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from benchmark.data.protocol import protocol_hash
from benchmark.data.registry import get_dataset_spec, load_dataset
from benchmark.data.windows import prepare
from benchmark.leaderboard.npzsafe import MEMBER, npy_bytes, zip_members
from benchmark.leaderboard.validate import ground_truth

HERE = Path(__file__).resolve().parent
DATASET = "synthetic"
OPTIONS = {"num_nodes": 4, "num_days": 7, "steps_per_day": 24}
SENTINEL = "PWNED-by-hostile-submission.txt"  # created by the pickle payload if ever unpickled

CASES = {
    "valid": "accepted: ground truth + 1 (MAE 1, RMSE 1); claims metrics, which are ignored",
    "script_in_metadata": "accepted: <script>/<img> in free text and URL, escaped on the page",
    "duplicate": "the valid predictions again under another model name",
    "pickled_object": "object-dtype .npy whose pickle would create SENTINEL when unpickled",
    "oversized_shape": "header declares a 3 GiB float64 array over 1 KB of data",
    "zip_bomb": "central directory declares a 3.75 GiB uncompressed member",
    "nan": "one NaN",
    "inf": "one +inf",
    "wrong_shape": "one target channel instead of two",
    "wrong_dataset": "unknown dataset id",
    "unknown_option": "dataset option the loader does not have",
    "wrong_protocol_hash": "protocol hash of no known protocol",
    "truncated": "npz cut in half (no zip directory)",
    "truncated_member": "zip intact but the array data shorter than its header says",
    "member_path_traversal": "archive member named ../predictions.npy",
    "model_path_traversal": "model name ../../evil",
    "bad_url": "javascript: URL",
    "extra_member": "a second array in the archive",
    "json_nan": "metadata with a bare NaN",
    "missing_field": "metadata without hardware (a required field)",
    "int_dtype": "int64 predictions",
    "huge_values": "float64 predictions with one 1e308 (its squared error would overflow)",
    "near_duplicate": "the valid predictions plus noise of 1e-7, as float64, another model name",
    "horizon_beyond": "protocol reporting horizon 24 of a 12-step horizon",
    "negative_threshold": "protocol with mape_threshold -1",
}


class _OpenOnUnpickle:
    """Unpickling this calls ``open(SENTINEL, "w")``: proof that a pickle was executed."""

    def __reduce__(self):
        return (open, (SENTINEL, "w"))


def base_metadata(model: str) -> dict:
    protocol = get_dataset_spec(DATASET).default_protocol
    return {
        "submission_format": 1, "model": model, "dataset": DATASET,
        "dataset_options": dict(OPTIONS), "protocol_hash": protocol_hash(DATASET, protocol),
        "suite_version": "0.1.0", "contact": "tests@example.org", "parameter_count": 0,
        "train_fraction": 1.0, "hardware": "none (offset of the ground truth)",
        "extra_data": False, "teacher_used": False,
    }


def truth() -> np.ndarray:
    spec = get_dataset_spec(DATASET)
    prepared = prepare(load_dataset(DATASET, **OPTIONS), spec.default_protocol, DATASET)
    return ground_truth(prepared)


def _npz(arr: np.ndarray) -> bytes:
    return zip_members([(MEMBER, npy_bytes(arr))])


def _header(descr: str, shape: tuple) -> bytes:
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                            "shape": shape})
    return buf.getvalue()


def _forge_uncompressed_size(blob: bytes, size: int) -> bytes:
    """Overwrite the uncompressed size in the local header and the central directory."""
    b = bytearray(blob)
    local = b.find(b"PK\x03\x04")
    b[local + 22:local + 26] = struct.pack("<I", size)
    central = b.find(b"PK\x01\x02")
    b[central + 24:central + 28] = struct.pack("<I", size)
    return bytes(b)


def build() -> dict[str, tuple[dict | bytes, bytes]]:
    """case -> (metadata dict or raw JSON bytes, npz bytes)."""
    y = truth().astype(np.float32)
    good = y + np.float32(1.0)
    valid_npz = _npz(good)
    out: dict[str, tuple[dict | bytes, bytes]] = {}
    meta = base_metadata("offset-one")
    meta["metrics"] = {"overall": {"mae": 0.0, "rmse": 0.0, "mape": 0.0}}  # a false claim
    out["valid"] = (meta, valid_npz)

    m = base_metadata("xss-test")
    m.update(hardware='<script>alert("hardware")</script>', contact='"><script>alert(2)</script>',
             description="<img src=x onerror=alert(1)> | `code` *bold* [x](javascript:alert(4))",
             paper_url='https://example.org/p?a="><script>alert(3)</script>')
    out["script_in_metadata"] = (m, _npz(y + np.float32(2.0)))
    out["duplicate"] = (base_metadata("offset-one-again"), valid_npz)

    pickled = _header("|O", (1,)) + pickle.dumps(_OpenOnUnpickle(),
                                                 protocol=2)
    out["pickled_object"] = (base_metadata("pickled"), zip_members([(MEMBER, pickled)]))
    out["oversized_shape"] = (base_metadata("oversized"),
                              zip_members([(MEMBER, _header("<f8", (2**22, 12, 4, 2))
                                            + bytes(1000))]))
    out["zip_bomb"] = (base_metadata("bomb"), _forge_uncompressed_size(valid_npz, 0xF0000000))
    bad = good.copy()
    bad[0, 0, 0, 0] = np.nan
    out["nan"] = (base_metadata("nan"), _npz(bad))
    bad = good.copy()
    bad[5, 3, 2, 1] = np.inf
    out["inf"] = (base_metadata("inf"), _npz(bad))
    out["wrong_shape"] = (base_metadata("wrong-shape"), _npz(good[..., :1]))
    m = base_metadata("wrong-dataset")
    m["dataset"] = "nyc_taxi_mars"
    out["wrong_dataset"] = (m, valid_npz)
    m = base_metadata("unknown-option")
    m["dataset_options"]["bogus"] = 1
    out["unknown_option"] = (m, valid_npz)
    m = base_metadata("wrong-hash")
    m["protocol_hash"] = "0123456789abcdef"
    out["wrong_protocol_hash"] = (m, valid_npz)
    out["truncated"] = (base_metadata("truncated"), valid_npz[: len(valid_npz) // 2])
    raw = npy_bytes(good)
    out["truncated_member"] = (base_metadata("truncated-member"),
                               zip_members([(MEMBER, raw[: len(raw) // 2])]))
    out["member_path_traversal"] = (base_metadata("traversal"),
                                    zip_members([("../" + MEMBER, npy_bytes(good))]))
    out["model_path_traversal"] = (base_metadata("../../evil"), valid_npz)
    m = base_metadata("bad-url")
    m["paper_url"] = "javascript:alert(1)"
    out["bad_url"] = (m, valid_npz)
    out["extra_member"] = (base_metadata("extra-member"),
                           zip_members([(MEMBER, npy_bytes(good)),
                                        ("other.npy", npy_bytes(good[:1]))]))
    text = json.dumps(base_metadata("json-nan"), indent=1, sort_keys=True)
    out["json_nan"] = (text.replace('"parameter_count": 0', '"parameter_count": NaN').encode(),
                       valid_npz)
    m = base_metadata("missing-field")
    del m["hardware"]
    out["missing_field"] = (m, valid_npz)
    out["int_dtype"] = (base_metadata("int-dtype"), _npz(np.rint(good).astype(np.int64)))
    huge = good.astype(np.float64)
    huge[2, 1, 0, 0] = 1e308
    out["huge_values"] = (base_metadata("huge"), _npz(huge))
    jitter = np.random.default_rng(0).uniform(-1e-7, 1e-7, size=good.shape)
    out["near_duplicate"] = (base_metadata("offset-one-jittered"),
                             _npz(good.astype(np.float64) + jitter))
    for case, change in (("horizon_beyond", {"report_horizons": [3, 6, 24]}),
                         ("negative_threshold", {"mape_threshold": -1.0})):
        m = base_metadata(case.replace("_", "-"))
        del m["protocol_hash"]
        m["protocol"] = {**get_dataset_spec(DATASET).default_protocol.to_dict(), **change}
        out[case] = (m, valid_npz)
    assert set(out) == set(CASES), set(out) ^ set(CASES)
    return out


def write(out_dir: Path = HERE) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for case, (meta, npz) in build().items():
        text = meta if isinstance(meta, bytes) else \
            (json.dumps(copy.deepcopy(meta), indent=1, sort_keys=True) + "\n").encode()
        (out_dir / f"{case}.json").write_bytes(text)
        (out_dir / f"{case}.npz").write_bytes(npz)
        paths += [out_dir / f"{case}.json", out_dir / f"{case}.npz"]
    return paths


if __name__ == "__main__":
    written = write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
    print(f"wrote {len(written)} files")
