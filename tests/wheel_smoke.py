"""``tox -e wheel``: the distribution runs its own pipeline with no checkout.

tox builds the wheel and installs it (torch pinned first) into a fresh environment; this script,
run with that environment's Python, then checks that every package ``flowdistill`` runs comes
from site-packages and runs ``flowdistill reproduce --profile smoke --out <tmp>/out`` from an
empty directory outside the checkout, with ``FLOWDISTILL_HOME`` pointing at a directory that must
stay unwritten (everything goes under ``--out``). The data come from ``FLOWDISTILL_DATA``, else
the ``shared/data`` mirror beside the checkout. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
PACKAGES = ("benchmark", "baselines", "flowdistill", "paper", "perf")


def main() -> int:
    data = os.environ.get("FLOWDISTILL_DATA") or str(CHECKOUT.parent / "shared" / "data")
    if not Path(data, "nyc_taxi_manhattan").is_dir():
        print(f"error: {data}: no nyc_taxi_manhattan; set FLOWDISTILL_DATA to the datasets",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="flowdistill-wheel-") as tmp:
        tmp = Path(tmp)
        if CHECKOUT in tmp.resolve().parents:
            raise SystemExit(f"error: {tmp} is inside the checkout; set TMPDIR elsewhere")
        empty, home, out = tmp / "empty", tmp / "home", tmp / "out"
        empty.mkdir()
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "FLOWDISTILL_RECORDS", "FLOWDISTILL_RUNS",
                            "FLOWDISTILL_LABELS")}
        env.update(FLOWDISTILL_DATA=data, FLOWDISTILL_HOME=str(home))

        where = subprocess.run(
            [sys.executable, "-c", f"import {', '.join(PACKAGES)}; "
             f"print(*[m.__file__ for m in ({', '.join(PACKAGES)})], sep='\\n')"],
            cwd=empty, env=env, check=True, capture_output=True, text=True).stdout.split()
        site = Path(sysconfig.get_paths()["purelib"]).resolve()
        for name, path in zip(PACKAGES, where, strict=True):
            if Path(path).resolve().parent != site / name:
                raise SystemExit(f"error: {name} imported from {path}, not from {site}")
        print(f"packages from {site}")

        script = Path(sys.executable).parent / "flowdistill"
        t0 = time.perf_counter()
        subprocess.run([str(script), "reproduce", "--profile", "smoke", "--out", str(out)],
                       cwd=empty, env=env, check=True)
        seconds = time.perf_counter() - t0

        check = subprocess.run(
            [sys.executable, "-c", "from flowdistill.pipeline import load_profile\n"
             "for s in load_profile('smoke').steps:\n"
             "    sw = getattr(s, 'students', None) or getattr(s, 'sweep', None)\n"
             "    if sw is not None: print(sw.name, len(sw.grid()))"],
            cwd=empty, env=env, check=True, capture_output=True, text=True).stdout.split()
        records = [p.name for p in (out / "records").glob("*.json")]
        for name, runs in zip(check[::2], map(int, check[1::2]), strict=True):
            got = sum(r.startswith(f"{name}-") for r in records)
            if got != runs:
                raise SystemExit(f"error: sweep {name}: {got} records, expected {runs}")
        for table in ("accuracy.md", "fraction.md", "ablation.md"):
            if not (out / "tables" / table).is_file():
                raise SystemExit(f"error: {out / 'tables' / table} was not written")
        if any(empty.iterdir()) or home.exists():
            raise SystemExit(f"error: wrote outside --out: {sorted(empty.iterdir())} "
                             f"{home if home.exists() else ''}")
        print(f"wheel smoke: {len(records)} records, tables and figures in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
