"""A learner in headless Chromium: open chapter 1, run the playgrounds, see the results
arrive without a reload. Screenshots go to test-artifacts/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, site: str) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.foreign_hosts = set()  # every request must stay on this site: no CDN

    def check(request) -> None:
        host = urlparse(request.url).hostname
        if host not in {"127.0.0.1", "localhost", None}:
            page.foreign_hosts.add(host)

    page.on("request", check)
    page.console_errors = []
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    yield page
    context.close()


def test_home_lists_six_chapters(page, site: str) -> None:
    page.goto(site + "/")
    assert page.locator(".chapter-card").count() == 6
    assert page.get_by_text("No playgrounds yet").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
    assert not page.foreign_hosts


def test_embed_playground_streams_a_scatter_plot_and_neighbours(page, site: str) -> None:
    page.goto(site + "/chapters/embeddings/")
    page.evaluate("window.__marker = 'same page'")  # gone if the page reloads
    playground = page.locator("#pg-embed")
    playground.get_by_role("button", name="Run").click()
    playground.locator(".status.succeeded").wait_for(timeout=120_000)
    scatter = playground.locator("canvas[data-chart=scatter]")
    scatter.wait_for()
    assert playground.locator("canvas[data-chart=heatmap]").count() == 1
    assert "variance" in playground.locator("figcaption").first.inner_text()
    assert page.evaluate("window.__marker") == "same page"

    # click the first point: its neighbours come back from pgvector
    point = page.evaluate(
        """() => {
          const canvas = document.querySelector('#pg-embed canvas[data-chart=scatter]');
          const chart = Chart.getChart(canvas);
          const p = chart.getDatasetMeta(0).data[0];
          const box = chart.canvas.getBoundingClientRect();
          return {x: box.left + p.x, y: box.top + p.y};
        }"""
    )
    page.mouse.click(point["x"], point["y"])
    neighbours = playground.locator(".neighbour-list li")
    neighbours.first.wait_for(timeout=10_000)
    assert "kitten" in neighbours.first.inner_text().lower()
    playground.scroll_into_view_if_needed()
    playground.screenshot(path=str(ARTIFACTS / "embed-playground.png"))
    assert not page.foreign_hosts and not page.console_errors


def test_bad_input_shows_an_actionable_message(page, site: str) -> None:
    page.goto(site + "/chapters/embeddings/")
    playground = page.locator("#pg-analogy")
    playground.locator("input[name=c]").fill("qwertyuiop")
    playground.get_by_role("button", name="Run").click()
    error = playground.locator(".form-error")
    error.wait_for(timeout=10_000)
    assert "qwertyuiop" in error.inner_text() and "vocabulary" in error.inner_text()


def test_hash_vectors_playground_shows_the_estimates(page, site: str) -> None:
    page.goto(site + "/chapters/embeddings/")
    playground = page.locator("#pg-hash-vectors")
    playground.get_by_role("button", name="Run").click()
    playground.locator(".status.succeeded").wait_for(timeout=60_000)
    assert "exact" in playground.locator("table.numbers").inner_text()
    playground.scroll_into_view_if_needed()
    playground.screenshot(path=str(ARTIFACTS / "hash-vectors-playground.png"))
    assert not page.console_errors


def test_bpe_training_streams_merges_then_tokenizes_with_the_result(page, site: str) -> None:
    page.goto(site + "/chapters/tokenization/")
    page.evaluate("window.__marker = 'same page'")
    playground = page.locator("#pg-bpe-train")
    playground.locator("input[name=vocab_size]").fill("1500")
    playground.locator("input[name=name]").fill("browser-docs")
    playground.get_by_role("button", name="Run").click()
    playground.locator(".merges-live li").first.wait_for(timeout=60_000)  # live, mid-run
    playground.locator(".status.succeeded").wait_for(timeout=180_000)
    assert playground.locator("canvas[data-chart=merge-counts]").count() == 1
    assert "browser-docs" in playground.locator(".bpe-result").inner_text()
    plotted = page.evaluate(
        """() => {
          const canvas = document.querySelector('#pg-bpe-train canvas[data-chart=live-merges]');
          return Chart.getChart(canvas).data.datasets[0].data.map((p) => p.x);
        }"""
    )
    merges = int(playground.locator(".bpe-result").inner_text().split("(")[1].split()[0])
    assert plotted == list(range(1, merges + 1))  # every streamed merge, in order
    playground.scroll_into_view_if_needed()
    playground.screenshot(path=str(ARTIFACTS / "bpe-train-playground.png"))

    # the tokenizer it made is offered by the tokenize playground, through its share link
    playground.get_by_role("link", name="Try it in the tokenize playground").click()
    page.wait_for_load_state()
    tokenize = page.locator("#pg-tokenize")
    assert "browser-docs" in tokenize.locator("select[name=trained] option:checked").inner_text()
    tokenize.get_by_role("button", name="Run").click()
    tokenize.locator(".status.succeeded").wait_for(timeout=60_000)
    assert tokenize.locator(".token-view").count() == 2
    assert "browser-docs" in tokenize.locator(".token-view").last.inner_text()
    tokenize.scroll_into_view_if_needed()
    tokenize.screenshot(path=str(ARTIFACTS / "tokenize-playground.png"))
    assert not page.foreign_hosts and not page.console_errors


def test_bpe_step_through_moves_merge_by_merge(page, site: str) -> None:
    page.goto(site + "/chapters/tokenization/")
    playground = page.locator("#pg-bpe-step")
    playground.get_by_role("button", name="Run").click()
    playground.locator(".status.succeeded").wait_for(timeout=60_000)
    visible = playground.locator("section.step:visible h4")
    assert "Merge 1" in visible.inner_text() and "(9 times)" in visible.inner_text()
    playground.get_by_role("button", name="next →").click()
    assert "Merge 2" in playground.locator("section.step:visible h4").inner_text()
    playground.scroll_into_view_if_needed()
    playground.screenshot(path=str(ARTIFACTS / "bpe-step-playground.png"))
    page.screenshot(path=str(ARTIFACTS / "tokenization-chapter.png"), full_page=True)
    assert not page.console_errors


def test_index_lab_draws_recall_against_speed_while_it_runs(page, site: str) -> None:
    page.goto(site + "/chapters/vector-search/")
    playground = page.locator("#pg-index-lab")
    playground.locator("input[name=n]").fill("3000")
    playground.locator("input[name=d]").fill("16")
    playground.locator("input[name=queries]").fill("50")
    playground.locator("input[name=nlist]").fill("32")
    playground.get_by_role("button", name="Run").click()
    playground.locator(".status.succeeded").wait_for(timeout=180_000)
    live = page.evaluate(
        """() => {
          const canvas = document.querySelector('#pg-index-lab canvas[data-chart=live-points]');
          return Chart.getChart(canvas).data.datasets.map((d) => [d.label, d.data.length]);
        }"""
    )
    assert {label for label, _ in live} == {
        "exact (ours, torch)",
        "HNSW (ours)",
        "hnswlib",
        "IVF-Flat (ours)",
        "FAISS IVF-Flat",
    }
    assert dict(live)["HNSW (ours)"] == 5  # one point per ef_search value
    assert playground.locator("canvas[data-chart=recall-qps]").count() == 1
    assert "HNSW (ours)" in playground.locator("table.numbers").inner_text()
    playground.scroll_into_view_if_needed()
    playground.screenshot(path=str(ARTIFACTS / "index-lab-playground.png"))
    assert not page.foreign_hosts and not page.console_errors


def test_query_trace_and_pgvector_show_their_results(page, site: str) -> None:
    page.goto(site + "/chapters/vector-search/")
    trace = page.locator("#pg-query-trace")
    trace.get_by_role("button", name="Run").click()
    trace.locator(".status.succeeded").wait_for(timeout=120_000)
    assert trace.locator("canvas[data-chart=trace]").count() == 1
    assert "layer" in trace.locator("table.numbers").inner_text()
    trace.scroll_into_view_if_needed()
    trace.screenshot(path=str(ARTIFACTS / "query-trace-playground.png"))

    pgv = page.locator("#pg-pgvector")
    pgv.get_by_role("button", name="Run").click()
    pgv.locator(".status.succeeded").wait_for(timeout=180_000)
    assert "Index Scan" in pgv.locator("pre.explain").inner_text()
    pgv.scroll_into_view_if_needed()
    pgv.screenshot(path=str(ARTIFACTS / "pgvector-playground.png"))
    page.screenshot(path=str(ARTIFACTS / "vector-search-chapter.png"), full_page=True)
    assert not page.console_errors


def test_generate_streams_tokens_into_the_page(page, site: str) -> None:
    page.goto(site + "/chapters/transformers/")
    playground = page.locator("#pg-generate")
    playground.locator("input[name=max_new_tokens]").fill("12")
    playground.get_by_role("button", name="Run").click()
    playground.locator(".generated .tok-new").first.wait_for(timeout=60_000)  # while running
    playground.locator(".status.succeeded").wait_for(timeout=120_000)
    assert playground.locator("canvas[data-chart=token-latency]").count() == 1
    assert playground.locator(".generated-final").inner_text().strip()
    playground.scroll_into_view_if_needed()
    playground.screenshot(path=str(ARTIFACTS / "generate-playground.png"))
    assert not page.foreign_hosts and not page.console_errors


def test_attention_heads_and_temperature_redraw_in_place(page, site: str) -> None:
    page.goto(site + "/chapters/transformers/")
    playground = page.locator("#pg-attention")
    playground.get_by_role("button", name="Run").click()
    playground.locator(".status.succeeded").wait_for(timeout=120_000)
    probs = """() => {
      const canvas = document.querySelector('#pg-attention canvas[data-chart=next-token]');
      return Chart.getChart(canvas).data.datasets[0].data[0];
    }"""
    at_one = page.evaluate(probs)
    playground.locator("[data-temperature]").fill("0")  # the coolest temperature
    assert page.evaluate(probs) > at_one
    playground.locator("[data-head]").select_option("4")
    playground.scroll_into_view_if_needed()
    playground.screenshot(path=str(ARTIFACTS / "attention-playground.png"))
    page.screenshot(path=str(ARTIFACTS / "transformers-chapter.png"), full_page=True)
    assert not page.console_errors


def test_inference_chapter_kv_cache_and_tiled_attention(page, site: str) -> None:
    page.goto(site + "/chapters/inference/")
    kv = page.locator("#pg-kv-cache")
    kv.locator("input[name=max_new_tokens]").fill("8")
    kv.get_by_role("button", name="Run").click()
    kv.locator(".status.succeeded").wait_for(timeout=180_000)
    assert "Same tokens both ways: yes" in kv.inner_text()
    kv.scroll_into_view_if_needed()
    kv.screenshot(path=str(ARTIFACTS / "kv-cache-playground.png"))

    tiled = page.locator("#pg-tiled-attention")
    tiled.locator("input[name=seq_lens]").fill("128, 256")
    tiled.get_by_role("button", name="Run").click()
    tiled.locator(".status.succeeded").wait_for(timeout=120_000)
    assert tiled.locator("canvas[data-chart=attn-time]").count() == 1
    tiled.scroll_into_view_if_needed()
    tiled.screenshot(path=str(ARTIFACTS / "tiled-attention-playground.png"))

    paged = page.locator("#pg-paged-kv")
    paged.get_by_role("button", name="Run").click()
    paged.locator(".status.succeeded").wait_for(timeout=60_000)
    assert paged.locator(".block.shared").count() > 0  # the shared prefix, drawn
    paged.scroll_into_view_if_needed()
    paged.screenshot(path=str(ARTIFACTS / "paged-kv-playground.png"))
    page.screenshot(path=str(ARTIFACTS / "inference-chapter.png"), full_page=True)
    assert not page.foreign_hosts and not page.console_errors


def test_noughts_and_crosses_against_mcts(page, site: str) -> None:
    page.goto(site + "/chapters/rag-agents/")
    playground = page.locator("#pg-mcts")
    playground.locator("input[name=simulations]").fill("300")
    playground.get_by_role("button", name="Run").click()
    playground.locator(".status.succeeded").wait_for(timeout=60_000)
    first = playground.locator("form.ttt .cell").all_inner_texts()
    assert first.count("X") == 1
    playground.locator("form.ttt button.cell").first.click()  # our O; a new run replies
    playground.locator("form.ttt .cell", has_text="O").wait_for(timeout=60_000)
    marks = playground.locator("form.ttt .cell").all_inner_texts()
    assert marks.count("X") == 2 and marks.count("O") == 1
    playground.scroll_into_view_if_needed()
    playground.screenshot(path=str(ARTIFACTS / "mcts-playground.png"))
    assert not page.console_errors


def test_quantize_moe_and_speculative_render_their_results(page, site: str) -> None:
    page.goto(site + "/chapters/inference/")
    quant = page.locator("#pg-quantize")
    quant.locator("select[name=model]").select_option("minilm")
    quant.locator("input[name=sentences]").fill("32")
    quant.locator("input[value=bf16]").uncheck()
    quant.locator("input[value=int4-weight]").uncheck()
    quant.get_by_role("button", name="Run").click()
    quant.locator(".quant-live tr").first.wait_for(timeout=120_000)  # rows arrive one by one
    quant.locator(".status.succeeded").wait_for(timeout=180_000)
    assert "int8 weight-only" in quant.locator("table.numbers").last.inner_text()
    quant.scroll_into_view_if_needed()
    quant.screenshot(path=str(ARTIFACTS / "quantize-playground.png"))

    moe = page.locator("#pg-moe")
    moe.get_by_role("button", name="Run").click()
    moe.locator(".status.succeeded").wait_for(timeout=60_000)
    assert moe.locator("canvas[data-chart=moe-routing]").count() == 1
    moe.scroll_into_view_if_needed()
    moe.screenshot(path=str(ARTIFACTS / "moe-playground.png"))

    spec = page.locator("#pg-speculative")
    spec.locator("input[name=max_new_tokens]").fill("16")
    spec.get_by_role("button", name="Run").click()
    spec.locator(".status.succeeded").wait_for(timeout=180_000)
    assert spec.locator(".spec-text .accepted").count() > 0
    spec.scroll_into_view_if_needed()
    spec.screenshot(path=str(ARTIFACTS / "speculative-playground.png"))
    assert not page.foreign_hosts and not page.console_errors
