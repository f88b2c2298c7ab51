"""Where the suite's default outputs go, in a source checkout and when installed from a wheel.

In a source checkout (the directory holding ``pyproject.toml`` beside these packages, an editable
install included) the workspace is the checkout itself: ``results/`` (run records, tables,
figures, leaderboard), ``runs/`` (checkpoints) and ``cache/labels`` (soft-label stores).
Installed from a wheel there is no checkout, and the same layout lives under the flowdistill
home: ``$FLOWDISTILL_HOME``, else the user data directory (platformdirs;
``~/.local/share/flowdistill`` on Linux), the home of ad-hoc runs too
(:func:`benchmark.cli_args.user_runs_dir`). Nothing is ever written into site-packages.

Only the standard library and platformdirs here: the scaling script's parent process imports
this module without torch.
"""

from __future__ import annotations

import os
from pathlib import Path

# the directory holding the benchmark, baselines, flowdistill, paper and perf packages: a
# checkout's root, or site-packages when installed
PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def source_checkout() -> Path | None:
    """The source checkout these packages run from, or None when they are installed."""
    return PACKAGE_PARENT if (PACKAGE_PARENT / "pyproject.toml").is_file() else None


def flowdistill_home() -> Path:
    """``$FLOWDISTILL_HOME``, else ``<platformdirs user data dir>/flowdistill``."""
    home = os.environ.get("FLOWDISTILL_HOME")
    if not home:
        from platformdirs import user_data_dir

        home = user_data_dir("flowdistill")
    return Path(home).expanduser()


def workspace_root() -> Path:
    """Root of ``results/``, ``runs/`` and ``cache/labels``: the source checkout, else
    :func:`flowdistill_home`."""
    return source_checkout() or flowdistill_home()


# The on-disk layout of the LLM teacher's artifacts, here because both the teacher
# (flowdistill.teacher) and the campaign's snapshots (benchmark.campaign.llm_carry) use it and
# benchmark never imports flowdistill: the runs directory's folder of LLM teacher checkpoints,
# and an unfinished labelling run's folder suffix, manifest file and manifest format.
LLM_TEACHER_DIR = "llm-teacher"
LABELS_PARTIAL_SUFFIX = ".partial"
LABELS_PARTIAL_MANIFEST = "manifest.json"
LABELS_PARTIAL_FORMAT = "flowdistill-soft-labels-partial"


def default_label_root() -> Path:
    """Where soft-label stores go: ``$FLOWDISTILL_LABELS``, else ``<workspace>/cache/labels``
    (ignored by git)."""
    return Path(os.environ.get("FLOWDISTILL_LABELS", workspace_root() / "cache" / "labels"))


def module_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child ``python -m <suite module>``: ``env`` (default
    ``os.environ``), with the source checkout first on ``PYTHONPATH`` so that the child runs
    this checkout's code whatever its working directory (an installed package needs nothing)."""
    env = dict(os.environ if env is None else env)
    checkout = source_checkout()
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(checkout), env.get("PYTHONPATH")) if p)
    return env
