"""Submission metadata: the JSON schema, checked field by field with errors naming the field.

A submission is a pair ``<name>.json`` (this metadata) + ``<name>.npz`` (the predictions, see
:mod:`benchmark.leaderboard.npzsafe`). The metadata is read with a size limit, rejecting
duplicate keys and the non-standard constants ``NaN``/``Infinity``; unknown fields are errors
(typos would otherwise go unnoticed), except claimed metrics, which are accepted and ignored.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

SUBMISSION_FORMAT = 1
MAX_METADATA_BYTES = 64 * 1024
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HASH_RE = re.compile(r"^[0-9a-f]{16}$")
VERSION_RE = re.compile(r"^[0-9A-Za-z.+_-]{1,32}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
MAX_URL = 500
# claimed numbers are never trusted: present or not, the suite recomputes every metric
IGNORED_FIELDS = ("metrics", "claimed_metrics")


MAX_PROBLEM = 400  # characters of an error's problem text (one line, no matter the input)


class SubmissionError(ValueError):
    """A submission is rejected; the message is ``<file>: <field>: <problem>`` on one line
    (newlines become spaces; the problem is cut to ``MAX_PROBLEM`` characters)."""

    def __init__(self, file: str | Path, field: str, problem: str) -> None:
        problem = " ".join(str(problem).split())
        if len(problem) > MAX_PROBLEM:
            problem = problem[:MAX_PROBLEM - 3] + "..."
        field = _short(field) if len(field) > 80 else field
        self.file, self.field, self.problem = str(file), field, problem
        super().__init__(f"{file}: {field}: {problem}")


@dataclass(frozen=True)
class Field:
    """One metadata field: its kind, whether it is required, and (for text) a length limit."""

    kind: str  # name | text | url | int | fraction | bool | dict | protocol_hash | version
    required: bool = False
    max_len: int = 200
    help: str = ""


FIELDS: dict[str, Field] = {
    "submission_format": Field("int", help=f"format version, {SUBMISSION_FORMAT} (default)"),
    "model": Field("name", True, help="model name, ^[A-Za-z0-9._-]{1,64}$ (part of the entry id)"),
    "dataset": Field("name", True, help="registered dataset id"),
    "dataset_options": Field("dict", help="loader options (part of the dataset's identity)"),
    "protocol": Field("dict", help="the full protocol (Protocol.to_dict()); or protocol_hash"),
    "protocol_hash": Field("protocol_hash", help="protocol_hash(dataset, protocol), 16 hex"),
    "suite_version": Field("version", True, help="flowdistill-bench version used"),
    "contact": Field("text", False, 200, "name or e-mail of the submitter (optional)"),
    "authors": Field("text", False, 300),
    "description": Field("text", False, 1000),
    "paper_url": Field("url"),
    "code_url": Field("url"),
    "parameter_count": Field("int", True, help="trainable parameters (claimed)"),
    "train_fraction": Field("fraction", True, help="share of the training windows used"),
    "hardware": Field("text", True, 200, "hardware used to train and measure"),
    "extra_data": Field("bool", True, help="data beyond the dataset's training split used?"),
    "teacher_used": Field("bool", True, help="a teacher model (distillation) used?"),
    "teacher": Field("text", False, 200, "which teacher, if any"),
    "efficiency": Field("dict", help="claimed efficiency (see EFFICIENCY_FIELDS)"),
}
EFFICIENCY_FIELDS: dict[str, Field] = {
    "latency_ms": Field("number", help="median inference latency, ms"),
    "latency_batch": Field("int", help="batch size of latency_ms"),
    "peak_memory_mb": Field("number", help="peak inference memory, MiB"),
    "train_seconds": Field("number", help="training wall time, s"),
    "device": Field("text", False, 100),
}
MAX_OPTION_STR = 200


def check_name(value: object, field: str, file: str | Path) -> str:
    """A name that becomes part of a path: ``^[A-Za-z0-9._-]{1,64}$``, no leading '.', no '..'."""
    if not isinstance(value, str) or not NAME_RE.match(value) or value.startswith(".") \
            or ".." in value:
        raise SubmissionError(file, field, f"{_short(value)} must match {NAME_RE.pattern} without "
                                           "a leading '.' or '..' (it becomes part of file names)")
    return value


def check_url(value: object, field: str, file: str | Path) -> str:
    """An absolute http(s) URL without whitespace or control characters."""
    if not isinstance(value, str) or len(value) > MAX_URL:
        raise SubmissionError(file, field, f"must be a string of at most {MAX_URL} characters")
    if _CONTROL_RE.search(value) or any(c.isspace() for c in value):
        raise SubmissionError(file, field, "URL contains whitespace or control characters")
    try:
        parts = urlsplit(value)
    except ValueError as e:
        raise SubmissionError(file, field, f"not a URL ({e})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise SubmissionError(file, field, f"URL scheme {parts.scheme!r} not allowed; "
                                           "only http and https")
    if not parts.netloc:
        raise SubmissionError(file, field, "URL has no host")
    return value


def check_text(value: object, field: str, file: str | Path, max_len: int,
               required: bool = False) -> str:
    if not isinstance(value, str):
        raise SubmissionError(file, field, f"must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise SubmissionError(file, field, f"longer than {max_len} characters ({len(value)})")
    if _CONTROL_RE.search(value):
        raise SubmissionError(file, field, "contains control characters")
    if required and not value.strip():
        raise SubmissionError(file, field, "must not be empty")
    return value


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _short(v: object) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def _check_field(name: str, spec: Field, value: object, file: str | Path) -> object:
    kind = spec.kind
    if kind == "name":
        return check_name(value, name, file)
    if kind == "text":
        return check_text(value, name, file, spec.max_len, spec.required)
    if kind == "url":
        return None if value is None else check_url(value, name, file)
    if kind == "int":
        if not _is_int(value) or value < 0 or value > 10**15:
            raise SubmissionError(file, name, f"must be an integer in [0, 1e15], got "
                                              f"{_short(value)}")
        return value
    if kind == "number":
        if not _is_number(value) or value < 0:
            raise SubmissionError(file, name, f"must be a finite number >= 0, got {_short(value)}")
        return float(value)
    if kind == "fraction":
        if not _is_number(value) or not 0.0 < value <= 1.0:
            raise SubmissionError(file, name, f"must be a number in (0, 1], got {_short(value)}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise SubmissionError(file, name, f"must be true or false, got {_short(value)}")
        return value
    if kind == "dict":
        if not isinstance(value, dict):
            raise SubmissionError(file, name, f"must be an object, got {type(value).__name__}")
        return value
    if kind == "protocol_hash":
        if not isinstance(value, str) or not HASH_RE.match(value):
            raise SubmissionError(file, name, f"{_short(value)} is not 16 lowercase hex digits")
        return value
    if kind == "version":
        if not isinstance(value, str) or not VERSION_RE.match(value):
            raise SubmissionError(file, name, f"{_short(value)} must match {VERSION_RE.pattern}")
        return value
    raise AssertionError(kind)  # pragma: no cover


def _reject_constant(name: str) -> float:
    raise ValueError(f"invalid JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def read_json_strict(path: Path, max_bytes: int = MAX_METADATA_BYTES) -> dict:
    """Parse a JSON object of at most ``max_bytes`` (no NaN/Infinity, no duplicate keys)."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise SubmissionError(path, "metadata", f"cannot read ({e.strerror})") from None
    if size > max_bytes:
        raise SubmissionError(path, "metadata", f"file is {size} bytes, above the limit of "
                                                f"{max_bytes}")
    try:
        text = path.read_bytes()[:max_bytes].decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise SubmissionError(path, "metadata", "not UTF-8 text") from None
    except RecursionError:
        raise SubmissionError(path, "metadata", "JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise SubmissionError(path, "metadata", f"not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise SubmissionError(path, "metadata", f"must be a JSON object, got "
                                                f"{type(data).__name__}")
    return data


def validate_metadata(raw: dict, file: str | Path) -> tuple[dict, dict]:
    """Check ``raw`` against :data:`FIELDS`.

    Returns:
        (metadata with defaults filled in, ignored fields such as claimed metrics).
    """
    unknown = sorted(set(raw) - set(FIELDS) - set(IGNORED_FIELDS))
    if unknown:
        raise SubmissionError(file, unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
    out: dict = {}
    for name, spec in FIELDS.items():
        if name not in raw:
            if spec.required:
                raise SubmissionError(file, name, f"required field missing ({spec.help})")
            continue
        out[name] = _check_field(name, spec, raw[name], file)
    fmt = out.setdefault("submission_format", SUBMISSION_FORMAT)
    if fmt != SUBMISSION_FORMAT:
        raise SubmissionError(file, "submission_format", f"unsupported version {fmt}; this "
                                                         f"suite reads {SUBMISSION_FORMAT}")
    if "protocol" not in out and "protocol_hash" not in out:
        raise SubmissionError(file, "protocol", "give the protocol dict or protocol_hash")
    out["dataset_options"] = _check_options(out.get("dataset_options", {}), file)
    if "efficiency" in out:
        out["efficiency"] = _check_efficiency(out["efficiency"], file)
    if out["teacher_used"] is False and out.get("teacher"):
        raise SubmissionError(file, "teacher", "names a teacher but teacher_used is false")
    ignored = {k: raw[k] for k in IGNORED_FIELDS if k in raw}
    return out, ignored


def _check_options(opts: dict, file: str | Path) -> dict:
    out = {}
    for k, v in opts.items():
        check_name(k, f"dataset_options.{k}"[:80], file)
        if isinstance(v, str):
            check_text(v, f"dataset_options.{k}", file, MAX_OPTION_STR)
        elif not (isinstance(v, bool) or _is_number(v)):
            raise SubmissionError(file, f"dataset_options.{k}",
                                  f"must be a string, number or boolean, got {_short(v)}")
        out[k] = v
    return out


def _check_efficiency(eff: dict, file: str | Path) -> dict:
    out = {}
    for k, v in eff.items():
        if k not in EFFICIENCY_FIELDS:
            raise SubmissionError(file, f"efficiency.{_short(k)}",
                                  f"unknown field (known: {', '.join(EFFICIENCY_FIELDS)})")
        out[k] = _check_field(f"efficiency.{k}", EFFICIENCY_FIELDS[k], v, file)
    return out
