"""Inference latency and peak memory against the number of nodes N, on synthetic graphs.

Usage::

    python -m perf.scaling --models flowdistill,gwnet,stgcn \\
        --nodes 69,500,1000,2000,5000,10000 --out results/scaling/<name>.json

For each (model, N) a *child process* builds the model on a random kNN graph of N nodes
(:func:`knn_graph`) and random inputs ``x: [B, T_in, N, C]``, then, at batch 1 and at the fixed
batch (``--batch-size``), runs the protocol of :mod:`benchmark.efficiency`: ``--warmup`` untimed
passes, one pass under :func:`~benchmark.efficiency.peak_memory_mb`, then timed passes with
:func:`~benchmark.efficiency.latency_ms` (median and p95). ``--max-latency-s`` caps the time of the
timed passes: fewer repeats are run when one pass is slow (never fewer than one; the count is
recorded).

The child runs under an address-space limit (``RLIMIT_AS``, ``--memory-limit-gb``; CPU only, set
once torch and the models are imported, so their mappings count towards it) and a wall-clock
limit (``--timeout-s``). So that a configuration that does not fit is recorded, not dropped:

* an allocation failure in the child -> ``status: "oom"``;
* the child killed by SIGKILL without a result (the kernel's OOM killer) -> ``"oom"``;
* the time limit -> ``"error"`` with ``error: "timeout after ... s (during <stage>)"`` (the paper
  build knows the statuses ok / oom / error); what was measured before the limit stays in the row;
* any other failure -> ``"error"`` with the message.

Once a model is out of memory or out of time at some N, its larger N are recorded with the same
status and ``error: "not run: ... at N=..."`` instead of being run (``--keep-going`` runs them).

Graph supports (``--supports``): ``dense`` (default) gives the models the dense ``[N, N]``
adjacency and builds every fixed-graph model with ``sparse_supports=False`` (what they always
did); ``sparse`` gives them a sparse adjacency (:func:`knn_sparse`: never an ``[N, N]`` array,
so N = 50,000 fits) and builds them with ``sparse_supports=True``. A model whose graph is dense
by design (its class's ``dense_graph_reason(hparams)`` says why: Graph WaveNet's adaptive
adjacency, ASTGCN's spatial attention, STSGCN's mask, MTGNN's and AGCRN's learned graphs) is
not run under ``sparse``: its row has ``status: "skipped"`` and ``error: "not attempted: dense
by design: <reason>"``. Models without a graph (the student, STID, MLP) run the same either way.
Each row says what the model ran with: ``supports`` = ``"dense"``, ``"sparse"`` or ``"none"``.

Rows (``paper/scaling.py`` and docs/paper.md read them) go to ``--out`` as ``{"rows": [...]}``,
rewritten atomically after each configuration; rerunning the same command skips the
(model, N, device, supports setting) rows already there (``--redo-failed`` reruns the non-ok
ones). Keys of a row: ``model, num_nodes, status, device`` (e.g. ``"cpu (AMD EPYC, 1
thread)"``), ``supports``, ``latency_batch``, ``latency_ms_median``/``latency_ms_p95`` and
``peak_memory_mb_inference`` at the fixed batch,
the same with ``_b1`` at batch 1, repeats, parameters, edges, timings and settings, and
``session``: the id of the invocation that measured it. The file's ``sessions`` list says, per
id, the command, the host and when it started (and keeps ``commands``, every command that wrote
to the file). A file collects rows from every invocation that wrote to it (a rerun, a
``--redo-failed``), so ``paper/scaling.py`` compares two rows only within one session: one
process's measurements under one machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from benchmark.paths import module_env

OK, OOM, ERROR, SKIPPED = "ok", "oom", "error", "skipped"
SUPPORTS = ("dense", "sparse")
_OOM_MESSAGES = ("not enough memory", "out of memory", "cannot allocate memory",
                 "can't allocate memory", "unable to allocate", "failed to allocate")


@dataclass
class ScalingConfig:
    """Settings of one scaling run (every row records them).

    Attributes:
        batch_size: the fixed batch size (latency and memory are also measured at batch 1).
        warmup: untimed passes before the memory pass and the timed passes (at least 1: the
            warm-up time decides how many timed passes fit in ``max_latency_s``).
        repeats: timed passes per batch size.
        max_latency_s: cap on the time of the timed passes per batch size (None: no cap).
        memory_limit_gb: the child's address-space limit (RLIMIT_AS, CPU only); None: no limit.
        timeout_s: wall-clock limit of one (model, N) child process.
        threads: ``torch.set_num_threads`` in the child; None keeps torch's default.
        device: ``cpu``, ``cuda`` or ``cuda:K``.
        supports: ``"dense"`` or ``"sparse"`` graph supports (module docstring).
        neighbours: k of the kNN graph.
        input_len, horizon, channels, steps_per_day: T_in, T_out, C (in and out), time slots.
        seed: graph positions, inputs and weights.
        keep_going: run larger N of a model after it ran out of memory or time.
    """

    batch_size: int = 64
    warmup: int = 3
    repeats: int = 20
    max_latency_s: float | None = None
    memory_limit_gb: float | None = 8.0
    timeout_s: float = 600.0
    threads: int | None = None
    device: str = "cpu"
    supports: str = "dense"
    neighbours: int = 8
    input_len: int = 12
    horizon: int = 12
    channels: int = 2
    steps_per_day: int = 48
    seed: int = 0
    keep_going: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.warmup < 1 or self.repeats < 1:
            raise ValueError(f"scaling: batch_size, warmup and repeats must be >= 1, got "
                             f"{self.batch_size}, {self.warmup}, {self.repeats}")
        if self.timeout_s <= 0:
            raise ValueError(f"scaling: timeout_s must be positive, got {self.timeout_s}")
        if self.neighbours < 1:
            raise ValueError(f"scaling: neighbours must be >= 1, got {self.neighbours}")
        if self.supports not in SUPPORTS:
            raise ValueError(f"scaling: supports must be one of {SUPPORTS}, got "
                             f"{self.supports!r}")


# ---------------------------------------------------------------------------------- inputs


def knn_graph(num_nodes: int, neighbours: int = 8, seed: int = 0,
              chunk: int = 512) -> np.ndarray:
    """Random geometric kNN graph: N points uniform in the unit square, each linked to its
    ``neighbours`` nearest others, symmetrised (an edge if either end picked the other).

    Returns the binary float32 adjacency ``[N, N]`` with a zero diagonal. Distances are computed
    ``chunk`` rows at a time, so extra memory is ``O(chunk * N)`` beside the dense result.
    """
    if num_nodes < 1:
        raise ValueError(f"knn_graph: num_nodes must be >= 1, got {num_nodes}")
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.0, 1.0, size=(num_nodes, 2))
    k = min(neighbours, num_nodes - 1)
    adj = np.zeros((num_nodes, num_nodes), dtype=np.float32)
    if k < 1:
        return adj
    sq = (pos ** 2).sum(1)
    for lo in range(0, num_nodes, chunk):
        hi = min(lo + chunk, num_nodes)
        d = sq[lo:hi, None] + sq[None, :] - 2.0 * pos[lo:hi] @ pos.T  # [chunk, N]
        d[np.arange(hi - lo), np.arange(lo, hi)] = np.inf
        nearest = np.argpartition(d, k - 1, axis=1)[:, :k]
        rows = np.repeat(np.arange(lo, hi), k)
        adj[rows, nearest.ravel()] = 1.0
        adj[nearest.ravel(), rows] = 1.0
    return adj


def knn_edges(num_nodes: int, neighbours: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The picks of :func:`knn_graph` without the dense matrix: ``(rows, cols)``, node
    ``rows[e]`` picked ``cols[e]`` as one of its ``k = min(neighbours, N - 1)`` nearest others
    (``N k`` pairs, same positions from ``seed``). The union of both directions is the graph.

    Exact, in about ``O(N k)`` instead of the ``O(N^2)`` of comparing every pair: the unit square
    is cut into ``G x G`` cells of about ``2 k`` points; the points of a cell are compared with
    those of the ``(2r + 1)^2`` cells around it (r = 1, 2, ...) until the k-th nearest candidate
    lies strictly closer than the edge of that block (no point outside it can be nearer).
    """
    if num_nodes < 1:
        raise ValueError(f"knn_edges: num_nodes must be >= 1, got {num_nodes}")
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.0, 1.0, size=(num_nodes, 2))
    k = min(neighbours, num_nodes - 1)
    if k < 1:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    g = max(1, int(np.sqrt(num_nodes / (2 * k))))
    cx = np.minimum((pos[:, 0] * g).astype(np.int64), g - 1)
    cy = np.minimum((pos[:, 1] * g).astype(np.int64), g - 1)
    cell = cx * g + cy
    order = np.argsort(cell, kind="stable")
    starts = np.searchsorted(cell[order], np.arange(g * g + 1))
    sq = (pos ** 2).sum(1)
    nearest = np.empty((num_nodes, k), dtype=np.int64)
    for c in range(g * g):
        pending = order[starts[c]:starts[c + 1]]
        gx, gy = divmod(c, g)
        r = 1
        while pending.size:
            x0, x1, y0, y1 = max(gx - r, 0), min(gx + r, g - 1), max(gy - r, 0), min(gy + r, g - 1)
            # cells x * g + y0 .. x * g + y1 are contiguous in ``order``
            cand = np.concatenate([order[starts[x * g + y0]:starts[x * g + y1 + 1]]
                                   for x in range(x0, x1 + 1)])
            whole = x0 == 0 and y0 == 0 and x1 == g - 1 and y1 == g - 1
            if cand.size <= k and not whole:
                r += 1
                continue
            d = sq[pending, None] + sq[None, cand] - 2.0 * pos[pending] @ pos[cand].T
            d[pending[:, None] == cand[None, :]] = np.inf
            part = np.argpartition(d, k - 1, axis=1)[:, :k]
            kth = np.take_along_axis(d, part, axis=1).max(axis=1)
            p = pos[pending]
            edge = np.full(pending.size, np.inf)
            for bound, lo_side in ((x0 / g, True), ((x1 + 1) / g, False)):
                if 0.0 < bound < 1.0:
                    edge = np.minimum(edge, p[:, 0] - bound if lo_side else bound - p[:, 0])
            for bound, lo_side in ((y0 / g, True), ((y1 + 1) / g, False)):
                if 0.0 < bound < 1.0:
                    edge = np.minimum(edge, p[:, 1] - bound if lo_side else bound - p[:, 1])
            exact = whole | (kth < edge ** 2 - 1e-12)
            nearest[pending[exact]] = cand[part[exact]]
            pending = pending[~exact]
            r += 1
    return np.repeat(np.arange(num_nodes), k), nearest.ravel()


def knn_sparse(num_nodes: int, neighbours: int = 8, seed: int = 0):
    """:func:`knn_graph` as a coalesced float32 sparse COO tensor ``[N, N]`` (from
    :func:`knn_edges`; no dense ``[N, N]`` array at any point)."""
    import torch

    rows, cols = knn_edges(num_nodes, neighbours, seed)
    index = torch.from_numpy(np.stack([np.concatenate([rows, cols]),
                                       np.concatenate([cols, rows])]))
    merged = torch.sparse_coo_tensor(index, torch.ones(index.shape[1]), (num_nodes, num_nodes),
                                     check_invariants=True).coalesce()
    return torch.sparse_coo_tensor(merged.indices(), torch.ones(merged.indices().shape[1]),
                                   (num_nodes, num_nodes), is_coalesced=True,
                                   check_invariants=True)


def model_context(num_nodes: int, cfg: ScalingConfig, adjacency: np.ndarray | None = None):
    """The :class:`~benchmark.models.ModelContext` of a synthetic graph with ``num_nodes``."""
    from benchmark.models import ModelContext

    if adjacency is None:
        adjacency = knn_graph(num_nodes, cfg.neighbours, cfg.seed)
    return ModelContext(num_nodes=num_nodes, input_len=cfg.input_len, horizon=cfg.horizon,
                        in_channels=cfg.channels, out_channels=cfg.channels,
                        steps_per_day=cfg.steps_per_day, adjacency=adjacency,
                        target_channel_idx=tuple(range(cfg.channels)))


def synthetic_batch(batch_size: int, num_nodes: int, cfg: ScalingConfig, seed: int = 0):
    """A :class:`~benchmark.batch.Batch` of random windows: ``x: [B, T_in, N, C]`` standard
    normal, ``y`` zeros ``[B, T_out, N, C]``, consecutive time-of-day slots from a random start."""
    import torch

    from benchmark.batch import Batch

    g = torch.Generator().manual_seed(seed)
    b, t_in, t_out, spd = batch_size, cfg.input_len, cfg.horizon, cfg.steps_per_day
    first = torch.randint(0, spd * 7, (b, 1), generator=g)
    steps_in = first + torch.arange(t_in)
    steps_out = first + t_in + torch.arange(t_out)
    return Batch(
        x=torch.randn(b, t_in, num_nodes, cfg.channels, generator=g),
        y=torch.zeros(b, t_out, num_nodes, cfg.channels),
        x_tod=steps_in % spd, x_dow=(steps_in // spd) % 7,
        y_tod=steps_out % spd, y_dow=(steps_out // spd) % 7,
        start=torch.arange(b, dtype=torch.int64),
    )


def device_label(device: str, threads: int | None) -> str:
    """``"cpu (<processor>, <k> threads)"`` or ``"cuda:0 (<GPU name>)"``: the row's ``device``."""
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if threads is None:
        return f"cpu ({name})"
    return f"cpu ({name}, {threads} thread{'s' if threads != 1 else ''})"


# ------------------------------------------------------------------------- the measurement


def _timed_pass_ms(model, batch) -> float:
    import torch

    from benchmark.efficiency import _sync

    with torch.no_grad():
        _sync(batch.x.device)
        t0 = time.perf_counter()
        model(batch)
        _sync(batch.x.device)
    return (time.perf_counter() - t0) * 1e3


def _fit_repeats(cfg: ScalingConfig, pass_ms: float) -> int:
    if cfg.max_latency_s is None or pass_ms <= 0:
        return cfg.repeats
    return int(max(1, min(cfg.repeats, cfg.max_latency_s * 1e3 // pass_ms)))


def measure_batch(model, batch, cfg: ScalingConfig, suffix: str,
                  report: Callable[[dict], None]) -> dict:
    """Warm-up, peak inference memory, then latency of ``model`` on ``batch``; the keys end in
    ``suffix`` (``""`` for the fixed batch, ``"_b1"`` for batch 1)."""
    import torch

    from benchmark.efficiency import latency_ms, peak_memory_mb

    out: dict = {}
    report({"stage": f"warm-up{suffix}"})
    warm = [_timed_pass_ms(model, batch) for _ in range(cfg.warmup)]
    out[f"warmup_ms{suffix}"] = warm
    report({**out, "stage": f"memory{suffix}"})

    def infer() -> None:
        with torch.no_grad():
            model(batch)

    out[f"peak_memory_mb_inference{suffix}"] = peak_memory_mb(infer, batch.x.device)
    repeats = _fit_repeats(cfg, warm[-1])
    report({**out, "stage": f"latency{suffix}"})
    lat = latency_ms(model, batch, warmup=0, repeats=repeats)
    out.update({f"latency_ms{suffix}_median": lat["median"], f"latency_ms{suffix}_p95": lat["p95"],
                f"latency_repeats{suffix}": repeats})
    report(out)
    return out


class DenseByDesign(Exception):
    """The model has no sparse path (``supports="sparse"``): not attempted."""


def graph_plan(model_name: str, supports: str) -> tuple[str, dict]:
    """What ``model_name`` runs with under ``supports``: ``(row supports, hparam overrides)``,
    row supports being ``"dense"``, ``"sparse"`` or ``"none"`` (no graph). Raises
    :class:`DenseByDesign` (with the model's reason) for ``"sparse"`` and a model whose graph
    is dense by design."""
    from benchmark.models import get_spec, resolve_hparams

    spec = get_spec(model_name)
    why = getattr(spec.factory, "dense_graph_reason", None)
    reason = why(resolve_hparams(model_name)) if why is not None else None
    accepted = spec.accepted_args() or set()
    if reason is not None:
        if supports == "sparse":
            raise DenseByDesign(reason)
        return "dense", ({"sparse_supports": False} if "sparse_supports" in accepted else {})
    if "sparse_supports" in accepted:
        return supports, {"sparse_supports": supports == "sparse"}
    return ("dense" if "adjacency" in accepted else "none"), {}


def measure(model_name: str, num_nodes: int, cfg: ScalingConfig,
            report: Callable[[dict], None] = lambda d: None) -> dict:
    """Build ``model_name`` on a ``num_nodes`` kNN graph and measure it at batch 1 and at
    ``cfg.batch_size`` (in this process). ``report(fields)`` receives partial results."""
    import torch

    from benchmark.models import build_model, count_parameters

    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    supports, overrides = graph_plan(model_name, cfg.supports)
    report({"supports": supports, "stage": "graph"})
    if cfg.supports == "sparse":
        adj = knn_sparse(num_nodes, cfg.neighbours, cfg.seed)
        num_edges = int(adj._nnz())
    else:
        adj = knn_graph(num_nodes, cfg.neighbours, cfg.seed)
        num_edges = int(np.count_nonzero(adj))
    row: dict = {"supports": supports, "num_edges": num_edges}
    report({**row, "stage": "build"})
    model = build_model(model_name, model_context(num_nodes, cfg, adj), overrides)
    model = model.to(device).eval()
    del adj
    row.update(params=count_parameters(model), build_s=time.perf_counter() - t0)
    done = dict(row)

    def partial(d: dict) -> None:
        report({**done, **d})

    for size, suffix in ((1, "_b1"), (cfg.batch_size, "")):
        batch = synthetic_batch(size, num_nodes, cfg, seed=cfg.seed + size).to(device)
        done.update(measure_batch(model, batch, cfg, suffix, partial))
        del batch
    done["latency_batch"] = cfg.batch_size
    return done


def is_oom(exc: BaseException) -> bool:
    """True for an allocation failure (numpy/Python MemoryError, torch's CPU or CUDA allocator)."""
    import torch

    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


def _write_json(path: Path, data: dict) -> None:
    from benchmark.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data))


def child_main(model_name: str, num_nodes: int, cfg: ScalingConfig, result: Path) -> None:
    """The child's side: measure under the memory limit, write the row to ``result`` (also after
    every stage, so that a timed-out child leaves what it measured)."""
    import resource

    import torch

    from benchmark.models import registry

    registry()  # import every model module before the limit
    try:
        uses_sparse = graph_plan(model_name, cfg.supports)[0] == "sparse"
    except (DenseByDesign, KeyError):  # the row says so below
        uses_sparse = False
    if uses_sparse:  # and torch-geometric, which the sparse supports are built with
        from baselines.sparse_graph import _pyg

        _pyg()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    limit = None
    if cfg.memory_limit_gb is not None and not cfg.device.startswith("cuda"):
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = int(cfg.memory_limit_gb * 2**30)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    state: dict = {}

    def report(d: dict) -> None:
        state.clear()
        state.update(d)
        _write_json(result, {**d, "status": "running"})

    try:
        row = {**measure(model_name, num_nodes, cfg, report), "status": OK}
    except DenseByDesign as e:
        row = {"supports": "dense", "status": SKIPPED,
               "error": f"not attempted: dense by design: {e}"}
    except Exception as e:  # noqa: BLE001 - every failure becomes a row
        if limit is not None:  # lift the soft limit up to the hard one to write the row
            hard = resource.getrlimit(resource.RLIMIT_AS)[1]
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        status = OOM if is_oom(e) else ERROR
        msg = f"{type(e).__name__}: {str(e).strip()[:500]}"
        row = {**state, "status": status,
               "error": f"during {state.get('stage', 'start')}: {msg}"}
    row.pop("stage", None)
    _write_json(result, row)


# ------------------------------------------------------------------------------ the parent


def _tail(path: Path, chars: int = 800) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


def _settings(cfg: ScalingConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k != "keep_going"}


def run_one(model_name: str, num_nodes: int, cfg: ScalingConfig, device: str) -> dict:
    """Measure one (model, N) in a child process; always returns a row (see module docstring)."""
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        result, log = Path(tmp) / "row.json", Path(tmp) / "stderr.txt"
        env = module_env()  # the child runs this checkout's code, or the installed package
        if cfg.threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(cfg.threads)
        cmd = [sys.executable, "-m", "perf.scaling", "--child", model_name,
               str(num_nodes), json.dumps(asdict(cfg)), str(result)]
        t0 = time.perf_counter()
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=cfg.timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
                timed_out = True
        wall = time.perf_counter() - t0
        row: dict = {}
        if result.exists():
            try:
                row = json.loads(result.read_text())
            except json.JSONDecodeError:
                row = {}
        stage = row.pop("stage", None)
        if timed_out:
            row.update(status=ERROR, error=f"timeout after {cfg.timeout_s:g} s"
                       + (f" (during {stage})" if stage else " (before the model was built)"))
        elif row.get("status") in (None, "running"):
            if rc == -signal.SIGKILL:
                row.update(status=OOM, error="killed by SIGKILL (the kernel's OOM killer?)"
                           + (f" during {stage}" if stage else ""))
            else:
                row.update(status=ERROR, error=f"child exited with {rc}"
                           + (f" during {stage}" if stage else "") + f": {_tail(log)}")
    return {"model": model_name, "num_nodes": int(num_nodes), "status": row.pop("status"),
            "device": device, **row, "wall_s": round(wall, 2), "settings": _settings(cfg),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def load_rows(path: Path) -> list[dict]:
    """Rows already in ``path`` (``{"rows": [...]}`` or a list); [] when it does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read scaling rows ({e})") from e
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "model" in r
                                             and "num_nodes" in r for r in rows):
        raise ValueError(f"{path}: expected {{'rows': [...]}} with model and num_nodes in each")
    return rows


def _write_rows(path: Path, rows: list[dict], commands: list[str],
                sessions: list[dict] | None = None) -> None:
    from benchmark.atomic import atomic_write_text

    data = {"commands": commands, "sessions": sessions or [], "rows": rows}
    atomic_write_text(Path(path), json.dumps(data, indent=1))


def new_session(command: str | None) -> dict:
    """This invocation's session: a unique id (UTC start time, host, pid and a random token),
    the command, the host and the start time."""
    import datetime
    import uuid

    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    host = platform.node() or "host"
    return {"id": f"{started}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            "command": command or "", "host": host, "started": started}


def run_scaling(models: Iterable[str], nodes: Iterable[int], cfg: ScalingConfig, out: Path,
                redo_failed: bool = False, progress: bool = True, command: str | None = None,
                runner: Callable[[str, int, ScalingConfig, str], dict] = run_one) -> list[dict]:
    """Measure every (model, N) not yet in ``out`` (smallest N first), writing ``out`` after each.

    Returns all rows of ``out``.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    device = device_label(cfg.device, cfg.threads)
    rows = load_rows(out)
    commands, sessions = [], []
    if out.exists():
        data = json.loads(out.read_text())
        if isinstance(data, dict):
            commands = list(data.get("commands", []))
            sessions = list(data.get("sessions", []))
    if command and command not in commands:
        commands.append(command)
    session = new_session(command)
    index = {_key(r): i for i, r in enumerate(rows)}

    def done(m: str, n: int) -> bool:
        i = index.get((m, n, device, cfg.supports))
        return i is not None and (not redo_failed or rows[i].get("status") in (OK, SKIPPED))

    models, nodes = list(models), sorted(set(int(n) for n in nodes))
    todo = [(m, n) for n in nodes for m in models if not done(m, n)]
    skipped = len(models) * len(nodes) - len(todo)
    if skipped:
        print(f"{out}: {skipped} (model, N) rows already there for {device}, {cfg.supports} "
              "supports; skipped")
    failed_at: dict[str, tuple[int, str, str]] = {}
    for r in rows:  # failures from an earlier run also stop larger N
        if _key(r)[2:] == (device, cfg.supports) and r.get("status") in (OOM, ERROR):
            m, n = r["model"], int(r["num_nodes"])
            if _is_limit(r) and (m not in failed_at or n < failed_at[m][0]):
                failed_at[m] = (n, r["status"], r.get("supports", ""))
    bar = tqdm(todo, desc="scaling", disable=not progress)
    for m, n in bar:
        bar.set_postfix_str(f"{m} N={n}")
        prior = failed_at.get(m)
        if prior is not None and prior[0] < n and not cfg.keep_going:
            what = "out of memory" if prior[1] == OOM else "out of time"
            row = {"model": m, "num_nodes": n, "status": prior[1], "device": device,
                   "supports": prior[2], "error": f"not run: {what} at N={prior[0]} already",
                   "settings": _settings(cfg)}
        else:
            row = runner(m, n, cfg, device)
            if _is_limit(row):
                failed_at.setdefault(m, (n, row["status"], row.get("supports", "")))
        row["session"] = session["id"]
        if session not in sessions:  # listed once it has measured something
            sessions.append(session)
        key = (m, n, device, cfg.supports)
        if key in index:
            rows[index[key]] = row
        else:
            index[key] = len(rows)
            rows.append(row)
        _write_rows(out, rows, commands, sessions)
        tqdm.write(_summary(row))
    bar.close()
    if not todo and command:
        _write_rows(out, rows, commands, sessions)
    return rows


def _key(row: dict) -> tuple[str, int, str, str]:
    """(model, N, device, supports setting) of a row; rows written before ``--supports``
    existed ran dense."""
    settings = row.get("settings") or {}
    return (row["model"], int(row["num_nodes"]), row.get("device", ""),
            settings.get("supports", "dense"))


def _is_limit(row: dict) -> bool:
    """An out-of-memory or out-of-time row (larger N would fail as well)."""
    return row.get("status") == OOM or (row.get("status") == ERROR
                                        and str(row.get("error", "")).startswith("timeout"))


def _summary(row: dict) -> str:
    head = f"{row['model']:>12} N={row['num_nodes']:<6} {row['status']:<5}"
    if row["status"] != OK:
        return f"{head} {row.get('error', '')[:160]}"
    return (f"{head} b1 {row['latency_ms_b1_median']:.2f} ms, "
            f"b{row['latency_batch']} {row['latency_ms_median']:.2f} ms, "
            f"{row['peak_memory_mb_inference']:.1f} MB")


def _csv(text: str, kind: type = str) -> list:
    items = [kind(t.strip()) for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def build_parser() -> argparse.ArgumentParser:
    d = ScalingConfig()
    p = argparse.ArgumentParser(prog="python -m perf.scaling", description=(
        "Latency and peak inference memory vs the number of nodes on synthetic kNN graphs; "
        "each (model, N) runs in a child process under memory and time limits."))
    p.add_argument("--models", type=_csv, default=["flowdistill", "gwnet", "stgcn"],
                   help="registered model names, comma-separated")
    p.add_argument("--nodes", type=lambda s: _csv(s, int),
                   default=[69, 500, 1000, 2000, 5000, 10000], help="values of N, comma-separated")
    p.add_argument("--out", type=Path, required=True, help="rows file (results/scaling/*.json)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="the fixed batch size")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed passes (>= 1)")
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed passes")
    p.add_argument("--max-latency-s", type=float, default=d.max_latency_s,
                   help="cap on the timed passes' time per batch size (fewer repeats if slow)")
    p.add_argument("--memory-limit-gb", type=float, default=d.memory_limit_gb,
                   help="child address-space limit, RLIMIT_AS (CPU); 0 for none")
    p.add_argument("--timeout-s", type=float, default=d.timeout_s,
                   help="wall-clock limit per (model, N)")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch threads in the child (default: torch's choice)")
    p.add_argument("--device", default=d.device, help="cpu, cuda or cuda:K")
    p.add_argument("--supports", choices=SUPPORTS, default=d.supports,
                   help="graph supports of the fixed-graph models: dense [N, N] matrices (as "
                        "they always ran) or sparse ones (sparse_supports=True; models whose "
                        "graph is dense by design are recorded as skipped)")
    p.add_argument("--neighbours", type=int, default=d.neighbours, help="k of the kNN graph")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--keep-going", action="store_true",
                   help="also run larger N of a model that ran out of memory or time")
    p.add_argument("--redo-failed", action="store_true",
                   help="rerun rows of the output whose status is not ok")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _, model_name, num_nodes, cfg_json, result = argv
        cfg = ScalingConfig(**json.loads(cfg_json))
        child_main(model_name, int(num_nodes), cfg, Path(result))
        return 0
    args = build_parser().parse_args(argv)
    known = {f.name for f in fields(ScalingConfig)}
    values = {k: v for k, v in vars(args).items() if k in known}
    if values["memory_limit_gb"] is not None and values["memory_limit_gb"] <= 0:
        values["memory_limit_gb"] = None
    try:
        cfg = ScalingConfig(**values)
    except ValueError as e:
        build_parser().error(str(e))
    command = "python -m perf.scaling " + shlex.join(argv)
    rows = run_scaling(args.models, args.nodes, cfg, args.out, redo_failed=args.redo_failed,
                       progress=not args.no_progress, command=command)
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
