"""benchmark.allocator: the CLI's glibc malloc settings, and the record naming them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SNIPPET = ("from benchmark.allocator import tune_malloc, malloc_settings; "
           "print(tune_malloc()); print(malloc_settings())")


def _run(env_extra: dict) -> list[str]:
    env = {**os.environ, **env_extra}
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.split("\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tuned_process_says_so():
    tuned, settings = _run({})[:2]
    assert tuned == "True"
    assert "M_MMAP_MAX=0" in settings


def test_opt_out_leaves_defaults():
    tuned, settings = _run({"FLOWDISTILL_MALLOC_TUNING": "0"})[:2]
    assert tuned == "False"
    assert settings == "default"


def test_hardware_info_names_the_malloc_settings():
    from benchmark.records import hardware_info

    assert "malloc" in hardware_info("cpu")
