"""Fixtures of the browser tests: a small leaderboard site built in a temporary directory (suite
records of several sweeps, fractions, machine kinds and stopping reasons, plus the hostile
corpus's valid and script-in-metadata submissions) and a headless Chromium (Debian's
``/usr/bin/chromium``, or ``$FLOWDISTILL_CHROMIUM``) whose pages may not reach beyond the file
system."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from benchmark.data.protocol import protocol_hash
from benchmark.data.registry import get_dataset_spec
from benchmark.leaderboard import load_entries, render, submit
from benchmark.leaderboard.boards import entry_row, record_rows
from benchmark.leaderboard.screenshots import DEFAULT_CHROMIUM
from benchmark.records import RunRecord, load_records, write_record

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "hostile_submissions"
OPTIONS = {"num_nodes": 4, "num_days": 7, "steps_per_day": 24}
CPU = {"device": "cpu", "machine": "x86_64", "cpus": 2}
GPU = {"device": "cuda", "gpu": "NVIDIA H200", "cpus": 16}


def _summary(mae: float) -> dict:
    per = {"mae": [mae - 0.3 + 0.05 * h for h in range(12)],
           "rmse": [2 * mae + 0.1 * h for h in range(12)], "mape": [10.0 + h for h in range(12)]}
    block = {"overall": {"mae": mae, "rmse": 2 * mae, "mape": 12.0},
             "mean_of_horizons": {"mae": mae, "rmse": 2 * mae, "mape": 12.0},
             **{f"@{h}": {k: per[k][h - 1] for k in per} for h in (3, 6, 12)},
             "per_horizon": per}
    return {**block, "per_channel": {"inflow": block, "outflow": block},
            "all_targets": {"overall": {"mae": mae + 0.1, "rmse": 2 * mae, "mape": 15.0}}}


# (model, sweep, fraction, seeds, MAE, latency ms, hardware, fit)
SUITE = [
    ("flowdistill", "student", 0.1, 2, 1.8, 0.3, CPU, {"stopped_by": "early_stopping",
                                                         "epochs_run": 20}),
    ("flowdistill", "student", 1.0, 2, 1.5, 0.3, CPU, {"stopped_by": "early_stopping",
                                                         "epochs_run": 40}),
    ("gwnet", "baselines", 1.0, 1, 1.4, 4.0, GPU, {"stopped_by": "time_budget",
                                                    "epochs_run": 7}),
    ("stgcn", "baselines", 1.0, 1, 1.6, 2.0, GPU, {"stopped_by": "max_epochs",
                                                    "epochs_run": 100}),
    ("ridge", "foundation", 1.0, 1, 2.5, 0.05, CPU, {"stopped_by": "max_epochs",
                                                      "epochs_run": 0}),
]


def suite_records() -> list[RunRecord]:
    spec = get_dataset_spec("synthetic")
    proto = spec.default_protocol
    out = []
    for model, sweep, frac, seeds, mae, lat, hw, fit in SUITE:
        for seed in range(seeds):
            run_id = f"{sweep}-synthetic-{model}-f{frac:g}-s{seed}".replace(".", "p")
            summ = _summary(mae + 0.01 * seed)
            out.append(RunRecord(
                run_id=run_id, model=model, dataset="synthetic",
                protocol={**proto.with_(train_fraction=frac).to_dict(),
                          "dataset_options": dict(OPTIONS)},
                protocol_hash=protocol_hash("synthetic", proto), seed=seed, train_fraction=frac,
                hparams={}, train_config={}, objective={}, metrics={"val": summ, "test": summ},
                params=1000 + len(model), efficiency={"latency_ms_b1_median": lat,
                                                      "peak_memory_mb_inference": 2.0},
                fit=fit, sweep=sweep, recipe={"name": "paper"}, hardware=hw,
                command=f"flowdistill sweep paper/experiments/{sweep}.toml",
                git_sha="0123456789abcdef0123"))
    return out


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The rendered site's root directory (read-only for the tests)."""
    base = tmp_path_factory.mktemp("site")
    root, records = base / "results" / "leaderboard", base / "results" / "records"
    for r in suite_records():
        write_record(r, records)
    for name in ("valid", "script_in_metadata"):
        submit(CORPUS / f"{name}.json", root, records)
    render(root, records)
    # the site opens from anywhere: the docs link points two levels up, as in the repository
    (base / "docs").mkdir()
    shutil.copy(REPO / "docs" / "leaderboard.md", base / "docs")
    return root


@pytest.fixture(scope="session")
def site_rows(site):
    """The rows the site was rendered from (what each filter must select)."""
    records = load_records(site.parent / "records")  # results/records beside it
    return [entry_row(e) for e in load_entries(site)] + record_rows(records)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium; missing playwright or Chromium skips, or fails where
    ``FLOWDISTILL_REQUIRE_BROWSER`` is set (``tox -e browser``, so CI cannot pass by skipping)."""
    missing = pytest.fail if os.environ.get("FLOWDISTILL_REQUIRE_BROWSER") else pytest.skip
    try:
        from playwright import sync_api
    except ImportError:
        missing("playwright is not installed (pip install playwright)")
    chromium = Path(DEFAULT_CHROMIUM)
    if not chromium.is_file():
        missing(f"no Chromium at {chromium} (apt-get install chromium)")
    from benchmark.leaderboard.screenshots import launch

    with sync_api.sync_playwright() as pw:
        b = launch(pw, str(chromium))
        yield b
        b.close()


class Watched:
    """A page with its console errors, uncaught exceptions, dialogs and blocked requests."""

    def __init__(self, page) -> None:
        from benchmark.leaderboard.screenshots import block_network

        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.blocked = block_network(page)
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

        def dialog(d) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)

    def open(self, path: Path):
        self.page.goto(path.as_uri())
        self.page.wait_for_load_state("load")
        return self.page


@pytest.fixture
def watch():
    """:class:`Watched` itself, for tests that open many pages."""
    return Watched


@pytest.fixture
def watched(browser):
    """A fresh page; after the test it must have logged no error, opened no dialog and sent no
    request beyond the file system."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    w = Watched(context.new_page())
    yield w
    context.close()
    assert w.blocked == [], f"requests left the file system: {w.blocked}"
    assert w.errors == [], f"console errors: {w.errors}"
    assert w.dialogs == [], f"dialogs opened: {w.dialogs}"
