"""The leaderboard site in a real browser (headless Chromium through Playwright): every page
loads without console errors or requests beyond the file system, filters narrow the rows as the
data says, sorting orders them, and a hostile submission's text shows as text.

Run with ``tox -e browser`` or ``pytest -m browser tests/browser`` (needs ``playwright`` and
Debian's ``chromium``)."""

from __future__ import annotations

import json
import math

import pytest

from benchmark.leaderboard.site import board_path, item_path

pytestmark = pytest.mark.browser

XSS_DESCRIPTION = "<img src=x onerror=alert(1)> | `code` *bold* [x](javascript:alert(4))"


def _board(site) -> str:
    (path,) = sorted((site / "boards").glob("*.html"))
    return path


def _visible_items(page) -> list[str]:
    """The page paths the visible rows link to, in table order."""
    return page.eval_on_selector_all(
        "#board tbody tr:not([hidden]) td:nth-child(2) a",
        "links => links.map(a => a.getAttribute('href').replace('../', ''))")


def test_every_page_loads_cleanly(site, browser, watch):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 1 + 1 + 7  # index, a board, a page per row
    context = browser.new_context()
    try:
        for path in pages:
            w = watch(context.new_page())
            page = w.open(path)
            assert page.title(), path
            if page.locator("table.lb").count():
                # the inline script ran (its hash is in the Content-Security-Policy)
                assert page.get_attribute("body", "data-ready") == "yes", path
            links = page.eval_on_selector_all("a", "a => a.map(x => x.getAttribute('href'))")
            for href in links:  # the site's own pages are relative links that exist
                if not href.startswith("https:"):
                    assert (path.parent / href).resolve().is_file(), (path, href)
            assert w.blocked == [] and w.errors == [] and w.dialogs == [], \
                (path, w.blocked, w.errors, w.dialogs)
            page.close()
    finally:
        context.close()


def test_index_links_to_the_board_and_its_best_row(site, watched, site_rows):
    page = watched.open(site / "index.html")
    page.click(f"a[href='{board_path('synthetic', site_rows[0].board)}']")
    page.wait_for_load_state("load")
    assert page.url.endswith(board_path("synthetic", site_rows[0].board))
    assert page.locator("#board tbody tr").count() == len(site_rows)
    page.locator("#board tbody tr").first.locator("td:nth-child(2) a").click()
    page.wait_for_load_state("load")
    best = min(site_rows, key=lambda r: r.metrics["mae"])
    assert page.url.endswith(item_path(best))
    assert "1.000" in page.inner_text("body")  # the offset-one submission: recomputed MAE 1


@pytest.mark.parametrize("control, value, keep", [
    ("fraction", "0.1", lambda r: r.train_fraction == 0.1),
    ("fraction", "1", lambda r: r.train_fraction == 1.0),
    ("source", "submission", lambda r: r.source == "submission"),
    ("source", "suite", lambda r: r.source == "suite"),
    ("sweep", "baselines", lambda r: r.sweep == "baselines"),
    ("machine", "NVIDIA H200", lambda r: r.machine == "NVIDIA H200"),
    ("machine", "cpu", lambda r: r.machine == "cpu"),
    ("converged", True, lambda r: r.converged is True),
    ("model", "FLOW", lambda r: "flow" in r.model.lower()),
])
def test_each_filter_narrows_rows_as_the_data_says(site, watched, site_rows, control, value,
                                                   keep):
    page = watched.open(_board(site))
    everything = _visible_items(page)
    assert len(everything) == len(site_rows)
    expected = sorted(item_path(r) for r in site_rows if keep(r))
    assert 0 < len(expected) < len(site_rows)  # the data makes each filter matter
    field = page.locator(f"#f-{control}")
    if value is True:
        field.check()
    elif control == "model":
        field.fill(value)
    else:
        field.select_option(value)
    assert sorted(_visible_items(page)) == expected
    assert page.inner_text("#shown") == str(len(expected))
    # clearing the filter brings every row back
    if value is True:
        field.uncheck()
    elif control == "model":
        field.fill("")
    else:
        field.select_option("")
    assert sorted(_visible_items(page)) == sorted(everything)


def test_filters_combine(site, watched, site_rows):
    page = watched.open(_board(site))
    page.select_option("#f-machine", "cpu")
    page.check("#f-converged")
    page.fill("#f-model", "flowdistill")
    expected = sorted(item_path(r) for r in site_rows if r.machine == "cpu" and r.converged
                      and "flowdistill" in r.model)
    assert len(expected) == 2 and sorted(_visible_items(page)) == expected


def _column(page, index: int) -> list[str]:
    return page.eval_on_selector_all(
        f"#board tbody tr td:nth-child({index})",
        "tds => tds.map(td => td.getAttribute('data-v') === null ? td.textContent "
        ": td.getAttribute('data-v'))")


@pytest.mark.parametrize("label", ["MAE", "latency ms", "train data", "params"])
def test_sorting_orders_numeric_columns(site, watched, label):
    page = watched.open(_board(site))
    heads = page.eval_on_selector_all("#board thead th", "ths => ths.map(t => t.textContent)")
    col = heads.index(label) + 1
    header = page.locator("#board thead th").nth(col - 1)
    header.click()
    vals = [float(v) if v else math.inf for v in _column(page, col)]
    assert vals == sorted(vals)
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    vals = [float(v) for v in _column(page, col) if v]
    assert vals == sorted(vals, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"


def test_sorting_orders_text_columns(site, watched):
    page = watched.open(_board(site))
    page.locator("#board thead th", has_text="model").first.click()
    names = _column(page, 2)
    assert names == sorted(names) and len(set(names)) > 2


def test_hostile_submission_shows_as_text(site, watched, site_rows):
    row = next(r for r in site_rows if r.model == "xss-test")
    page = watched.open(site / item_path(row))
    facts = dict(zip(page.eval_on_selector_all("dl.facts dt", "d => d.map(x => x.textContent)"),
                     page.eval_on_selector_all("dl.facts dd", "d => d.map(x => x.textContent)"),
                     strict=True))
    assert facts["description"] == XSS_DESCRIPTION
    assert facts["hardware"] == '<script>alert("hardware")</script>'
    assert facts["contact"] == '"><script>alert(2)</script>'
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 0  # entry pages need no script at all
    # the only links: the site's own pages and the submitter's paper_url (never javascript:)
    hrefs = page.eval_on_selector_all("a", "a => a.map(x => x.getAttribute('href'))")
    outside = [h for h in hrefs if not h.endswith(".html")]
    assert outside == ['https://example.org/p?a="><script>alert(3)</script>']
    assert page.get_attribute("a[href^='https:']", "rel") == "nofollow noopener noreferrer"
    # on the board, the hostile hardware is plain text in the machine column (shortened, the
    # whole text in the cell's tooltip)
    board = watched.open(_board(site))
    assert board.locator("script").count() == 1
    assert '<script>alert("hard' in board.inner_text("#board")
    assert board.get_attribute("#board td[title^='<script>']", "title") == \
        '<script>alert("hardware")</script>'
    board.select_option("#f-machine", '<script>alert("hardware")</script>')
    assert _visible_items(board) == [item_path(row)]


def test_entry_page_shows_records_and_metrics(site, watched, site_rows):
    row = next(r for r in site_rows if r.model == "flowdistill" and r.train_fraction == 1.0)
    page = watched.open(site / item_path(row))
    text = page.inner_text("body")
    for rec in row.records:
        assert rec.run_id in text
    assert "flowdistill sweep paper/experiments/student.toml" in text
    assert "0123456789ab" in text  # git SHA
    assert "Per horizon step" in text and "Per channel" in text and "inflow" in text
    assert f"{row.metrics['mae']:.3f}" in text
    assert json.dumps(row.protocol["input_len"]) in text


def test_scatter_marks_the_pareto_front(site, watched, site_rows):
    page = watched.open(_board(site))
    svgs = page.locator("figure svg")
    assert svgs.count() >= 2  # one scatter per machine kind (+ claimed), error per horizon
    ringed = page.locator("figure svg circle[stroke='black'], figure svg rect[stroke='black']")
    assert ringed.count() >= 2
    # every point links to a page that exists
    hrefs = page.eval_on_selector_all("figure svg a", "a => a.map(x => x.getAttribute('href'))")
    assert hrefs and all((site / "boards" / h).resolve().is_file() for h in hrefs)
