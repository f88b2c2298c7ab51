"""Structural rules of issue 12, checked on the source: one atomic writer, one ``resolve_device``
(one training loop: tests/test_trainer_loop.py; no import cycles: tests/test_import_graph.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("benchmark", "baselines", "flowdistill", "paper", "perf")


def _sources():
    for pkg in LIBRARY:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if not path.name.startswith("test_") and path.name != "conftest.py":
                yield path.relative_to(ROOT).as_posix(), path.read_text()


def _calls(attr: str) -> dict[str, int]:
    """file -> number of calls ``<anything>.<attr>(...)`` in it."""
    out: dict[str, int] = {}
    for rel, text in _sources():
        n = sum(1 for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == attr)
        if n:
            out[rel] = n
    return out


def test_one_resolve_device():
    defs = [rel for rel, text in _sources()
            if re.search(r"^def resolve_device\(", text, re.MULTILINE)]
    assert defs == ["benchmark/device.py"]


def test_files_are_replaced_only_by_the_atomic_writer():
    renames = {f for attr in ("replace", "rename") for f in _calls(attr)
               if any(f"os.{attr}(" in line for line in (ROOT / f).read_text().splitlines())}
    assert renames <= {"benchmark/atomic.py"}
    mkstemp = [rel for rel, text in _sources() if "mkstemp(" in text]
    assert mkstemp == ["benchmark/atomic.py"]
