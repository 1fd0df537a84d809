"""The layout on a desktop (1280×900) and on a phone (390×844), measured in headless Chromium.

Every page: the body never scrolls sideways (wide tables, code and charts scroll in their
own box). One playground per chapter, run at phone size: its charts and tables stay inside
the playground's card, side-by-side figures do not overlap, heatmaps carry their row and
column labels, and every chart has axis titles. Screenshots of each page at both sizes
go to test-artifacts/ (``<page>-desktop.png``, ``<page>-phone.png``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.test_browser import Chapter, browser, save_screenshot  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser

VIEWPORTS = {"desktop": (1280, 900), "phone": (390, 844)}
CHAPTERS = [
    "embeddings", "vector-search", "tokenization", "transformers", "inference", "rag-agents",
]  # fmt: skip

# Everything in a run's result that could poke out of its card, and where it is: inside the
# card, or inside a box that scrolls sideways (itself inside the card).
ESCAPES = """(root) => {
  const card = root.getBoundingClientRect();
  const scrolls = (el) => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  const inside = (r) => r.left >= card.left - 1 && r.right <= card.right + 1;
  const out = [];
  const parts = ['canvas', 'table', 'pre', 'ol', 'ul', '.figures > *'].map((s) => `.run-out ${s}`);
  for (const el of root.querySelectorAll(parts.join(', '))) {
    const r = el.getBoundingClientRect();
    if (!r.width || inside(r)) continue;
    let box = el.parentElement;
    while (box && box !== root && !scrolls(box)) box = box.parentElement;
    if (box && box !== root && inside(box.getBoundingClientRect())) continue;
    out.push(`${el.tagName}.${el.className} spans ${Math.round(r.left)}-${Math.round(r.right)}`);
  }
  return out;
}"""

# Pairs of side-by-side figures whose boxes intersect (a table drawn over its chart).
OVERLAPS = """(root) => {
  const out = [];
  for (const grid of root.querySelectorAll('.figures')) {
    const kids = [...grid.children].filter((k) => k.getBoundingClientRect().width);
    kids.forEach((a, i) => kids.slice(i + 1).forEach((b) => {
      const p = a.getBoundingClientRect(), q = b.getBoundingClientRect();
      const apart = p.right <= q.left + 1 || q.right <= p.left + 1
        || p.bottom <= q.top + 1 || q.bottom <= p.top + 1;
      if (!apart)
        out.push(`${a.tagName}.${a.className} / ${b.tagName}.${b.className}`);
    }));
  }
  return out;
}"""

# Each heatmap: how many row and column labels it drew, and whether its label margins hold
# ink (pixels drawn left of and above the cells).
HEATMAPS = """(root) => [...root.querySelectorAll('canvas[data-row-labels]')].map((c) => {
  const { left, top } = JSON.parse(c.dataset.margin), k = c.width / c.clientWidth;
  const ink = (x, y, w, h) => c.getContext('2d').getImageData(x * k, y * k, w * k, h * k).data
    .some((v, i) => i % 4 === 3 && v > 0);
  return { chart: c.dataset.chart, rows: +c.dataset.rowLabels, cols: +c.dataset.colLabels,
           inkLeft: ink(0, top, left - 1, c.clientHeight - top),
           inkTop: ink(left, 0, c.clientWidth - left, top - 1) };
})"""

# Every Chart.js chart in the card: the axes that have no title.
UNTITLED = """(root) => Object.values(Chart.instances).filter((ch) => root.contains(ch.canvas))
  .flatMap((ch) => Object.entries(ch.options.scales)
    .filter(([, s]) => !(s.title?.display && s.title.text))
    .map(([id]) => `${ch.canvas.dataset.chart}: axis ${id}`))"""


@pytest.fixture(params=list(VIEWPORTS))
def sized(request, browser) -> Iterator[tuple[str, Any]]:  # noqa: F811 (the fixture imported above)
    """A browser page at one viewport size; yields (size name, page)."""
    width, height = VIEWPORTS[request.param]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.console_errors = []
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    yield request.param, page
    context.close()


def body_overflow(page: Any) -> int:
    """Pixels the page body is wider than the window (0 when nothing scrolls sideways)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


@pytest.mark.parametrize("path", ["/", *(f"/chapters/{slug}/" for slug in CHAPTERS)])
def test_no_page_scrolls_sideways(sized, site: str, path: str) -> None:
    size, page = sized
    response = page.goto(site + path)
    assert response is not None and response.ok, f"{path} answered {response and response.status}"
    page.wait_for_load_state("load")
    assert body_overflow(page) <= 0, f"{path} is wider than the {size} window"
    name = path.strip("/").split("/")[-1] or "home"
    # the first screen of a chapter: a full-page shot of chapter 6 (27,000 px) takes Chromium
    # 20 s or more here, for a picture the scrollWidth check above already summarises
    save_screenshot(page, f"{name}-{size}", full_page=path == "/")
    assert not page.console_errors


# (chapter, playground, fields to type, selector that appears in the result)
RUNS = [
    ("embeddings", "embed", {}, "canvas[data-chart=heatmap]"),
    ("vector-search", "compression", {"n": 2000, "queries": 50}, "table.numbers"),
    ("tokenization", "token-cost", {}, "canvas[data-chart=token-counts]"),
    ("transformers", "positions", {}, "canvas[data-chart=pe-similarity]"),
    ("inference", "moe", {}, "canvas[data-chart=moe-routing]"),
    ("rag-agents", "mcts", {"simulations": 200}, "form.ttt"),
]


@pytest.mark.parametrize(("chapter", "slug", "fields", "shown"), RUNS, ids=[r[1] for r in RUNS])
def test_a_result_fits_its_card_on_a_phone_and_a_desktop(
    browser,  # noqa: F811 (the fixture imported above)
    site: str,
    chapter: str,
    slug: str,
    fields: dict[str, object],
    shown: str,
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.foreign_hosts, page.console_errors = set(), []
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    try:
        pg = Chapter(page, site, chapter).playground(slug).run(timeout=120_000, **fields)
        pg.locator(shown).first.wait_for()
        page.wait_for_timeout(200)  # charts draw on htmx's load event
        card = pg.root.element_handle()
        for width, height in (VIEWPORTS["phone"], VIEWPORTS["desktop"], VIEWPORTS["phone"]):
            page.set_viewport_size({"width": width, "height": height})  # charts follow the box
            page.wait_for_timeout(300)
            assert page.evaluate(ESCAPES, card) == [], f"at {width} px"
            assert page.evaluate(OVERLAPS, card) == [], f"at {width} px"
        assert page.evaluate(UNTITLED, card) == []
        for heatmap in page.evaluate(HEATMAPS, card):
            assert heatmap["rows"] >= 2 and heatmap["cols"] >= 2, heatmap
            assert heatmap["inkLeft"] and heatmap["inkTop"], heatmap
        assert body_overflow(page) <= 0
        pg.root.scroll_into_view_if_needed()
        save_screenshot(pg.root, f"{slug}-phone-result")
        assert not page.console_errors
    finally:
        context.close()


def test_heatmaps_are_labelled_with_their_texts(browser, site: str) -> None:  # noqa: F811
    """The embed heatmap's rows and columns carry the texts themselves (a few texts)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        embed = Chapter(page, site, "embeddings").playground("embed")
        texts = embed.locator("textarea[name=texts]").input_value().splitlines()
        embed.run(timeout=120_000)
        canvas = embed.locator("canvas[data-chart=heatmap]")
        canvas.wait_for()
        rows = int(canvas.get_attribute("data-row-labels") or 0)
        assert rows == len([t for t in texts if t.strip()])  # every row labelled
        assert "text" in (canvas.get_attribute("aria-label") or "")
    finally:
        context.close()
