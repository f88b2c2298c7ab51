"""Render the leaderboard site and photograph it in headless Chromium, so a reader sees the site
from the repository: ``python -m benchmark.leaderboard.screenshots [--root DIR] [--records DIR]``.

Writes ``<root>/screenshot-index.png``, ``<root>/screenshot-board.png`` (the board with the most
rows) and ``<root>/screenshot-entry.png`` (the page of that board's best row). Needs the
``playwright`` package and a Chromium binary (``--chromium``, default ``/usr/bin/chromium``, the
Debian package; ``playwright install`` is never needed). Requests that leave the file system are
blocked.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_CHROMIUM = os.environ.get("FLOWDISTILL_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 900}


def launch(playwright, chromium: str = DEFAULT_CHROMIUM):
    """Headless Chromium from ``chromium`` (a path), without sandbox when running as root."""
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=chromium, headless=True, args=args)


def block_network(page) -> list[str]:
    """Abort every request that is not ``file:`` (or ``data:``/``about:``); returns the list
    the blocked URLs are appended to."""
    blocked: list[str] = []

    def handle(route) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:", "about:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", handle)
    return blocked


def _targets(root: Path) -> tuple[Path, Path | None]:
    """The board page with the most rows and its best row's page (first link in the table)."""
    import re

    boards = sorted((root / "boards").glob("*.html"))
    if not boards:
        return root / "index.html", None

    def rows(p: Path) -> int:
        return p.read_text().count('<tr class="')

    board = max(boards, key=lambda p: (rows(p), p.name))
    m = re.search(r'<a href="\.\./(pages/[^"]+\.html)">', board.read_text())
    return board, (root / m.group(1)) if m else None


def take(root: Path, chromium: str = DEFAULT_CHROMIUM) -> list[Path]:
    from playwright.sync_api import sync_playwright

    root = Path(root).resolve()
    board, entry = _targets(root)
    shots = [("index", root / "index.html", True), ("board", board, False)]
    if entry is not None:
        shots.append(("entry", entry, False))
    out = []
    with sync_playwright() as pw:
        browser = launch(pw, chromium)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            blocked = block_network(page)
            for name, path, full in shots:
                page.goto(path.as_uri())
                dest = root / f"screenshot-{name}.png"
                page.screenshot(path=str(dest), full_page=full)
                out.append(dest)
            if blocked:
                raise RuntimeError(f"pages requested {blocked}")
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    from .store import default_records_dir, default_root, render

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, help="leaderboard directory (default "
                                              "results/leaderboard)")
    ap.add_argument("--records", type=Path, help="run records (default results/records)")
    ap.add_argument("--chromium", default=DEFAULT_CHROMIUM, help="Chromium executable")
    ap.add_argument("--no-render", action="store_true", help="photograph the pages as they are")
    args = ap.parse_args(argv)
    root = Path(args.root or default_root())
    if not args.no_render:
        render(root, Path(args.records or default_records_dir()))
    for p in take(root, args.chromium):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
