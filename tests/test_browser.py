"""A learner in headless Chromium: open chapter 1, run the playgrounds, see the results
arrive without a reload. Screenshots go to test-artifacts/.

Every playground is driven the same way, by :class:`Playground`: fill its form, press Run,
wait for the run to succeed, look at the result, take a screenshot."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from typing import Any
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


class Playground:
    """One playground (``#pg-<slug>``) on the open page, used as a learner would."""

    def __init__(self, page: Any, slug: str) -> None:
        self.slug = slug
        self.root = page.locator(f"#pg-{slug}")

    def locator(self, selector: str, **options: Any) -> Any:
        return self.root.locator(selector, **options)

    def start(self, **fields: object) -> Playground:
        """Type each of ``fields`` into the form's input of that name, then press Run."""
        for name, value in fields.items():
            self.root.locator(f"input[name={name}]").fill(str(value))
        self.root.get_by_role("button", name="Run").click()
        return self

    def succeeded(self, timeout: float = 120_000) -> Playground:
        """Wait (``timeout`` in ms) until the run's status says it succeeded."""
        self.root.locator(".status.succeeded").wait_for(timeout=timeout)
        return self

    def run(self, timeout: float = 120_000, **fields: object) -> Playground:
        return self.start(**fields).succeeded(timeout)

    def screenshot(self) -> None:
        """The playground's card. Playwright never counts an element taller than the window
        as "stable" for a screenshot, so the window grows to fit the card for the shot."""
        page = self.root.page
        size = page.viewport_size
        height = math.ceil(self.root.evaluate("e => e.getBoundingClientRect().height"))
        if height > size["height"]:
            page.set_viewport_size({"width": size["width"], "height": min(height + 16, 12_000)})
        try:
            self.root.scroll_into_view_if_needed()
            save_screenshot(self.root, f"{self.slug}-playground")
        finally:
            page.set_viewport_size(size)


class Chapter:
    """A chapter page, opened in the test's browser page."""

    def __init__(self, page: Any, site: str, slug: str, *, mark: bool = False) -> None:
        self.page, self.slug = page, slug
        page.goto(f"{site}/chapters/{slug}/")
        if mark:  # tag the window: the tag is gone if the page reloads
            page.evaluate("window.__marker = 'same page'")

    def playground(self, slug: str) -> Playground:
        return Playground(self.page, slug)

    def finish(self, *, screenshot: bool = False) -> None:
        """The last check of a test: no request left the site and no script failed. With
        ``screenshot``, the whole chapter is saved first."""
        if screenshot:
            save_screenshot(self.page, f"{self.slug}-chapter", full_page=True)
        assert not self.page.foreign_hosts and not self.page.console_errors


def save_screenshot(target: Any, name: str, **options: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    target.screenshot(path=str(ARTIFACTS / f"{name}.png"), **options)


def test_home_lists_six_chapters(page, site: str) -> None:
    page.goto(site + "/")
    assert page.locator(".chapter-card").count() == 6
    assert page.get_by_text("No playgrounds yet").count() == 0
    save_screenshot(page, "home", full_page=True)
    assert not page.foreign_hosts


def test_embed_playground_streams_a_scatter_plot_and_neighbours(page, site: str) -> None:
    chapter = Chapter(page, site, "embeddings", mark=True)
    embed = chapter.playground("embed").run(timeout=120_000)
    scatter = embed.locator("canvas[data-chart=scatter]")
    scatter.wait_for()
    assert embed.locator("canvas[data-chart=heatmap]").count() == 1
    assert "variance" in embed.locator("figcaption").first.inner_text()
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
    neighbours = embed.locator(".neighbour-list li")
    neighbours.first.wait_for(timeout=10_000)
    assert "kitten" in neighbours.first.inner_text().lower()
    embed.screenshot()
    chapter.finish()


def test_bad_input_shows_an_actionable_message(page, site: str) -> None:
    chapter = Chapter(page, site, "embeddings")
    analogy = chapter.playground("analogy").start(c="qwertyuiop")
    error = analogy.locator(".form-error")
    error.wait_for(timeout=10_000)
    assert "qwertyuiop" in error.inner_text() and "vocabulary" in error.inner_text()


def test_hash_vectors_playground_shows_the_estimates(page, site: str) -> None:
    chapter = Chapter(page, site, "embeddings")
    hashing = chapter.playground("hash-vectors").run(timeout=60_000)
    result = shown_run(site, hashing)["result"]
    rows = hashing.locator("table.numbers tbody tr")
    assert rows.first.locator("td").nth(1).inner_text() == f"{result['exact_jaccard']:.4f}"
    minhash = rows.filter(has_text="MinHash (ours").locator("td")
    assert minhash.nth(1).inner_text() == f"{result['minhash']['estimate']:.4f}"
    hashing.screenshot()
    chapter.finish()


def test_bpe_training_streams_merges_then_tokenizes_with_the_result(page, site: str) -> None:
    chapter = Chapter(page, site, "tokenization", mark=True)
    train = chapter.playground("bpe-train").start(vocab_size=1500, name="browser-docs")
    train.locator(".merges-live li").first.wait_for(timeout=60_000)  # live, mid-run
    train.succeeded(timeout=180_000)
    assert train.locator("canvas[data-chart=merge-counts]").count() == 1
    assert "browser-docs" in train.locator(".bpe-result").inner_text()
    plotted = page.evaluate(
        """() => {
          const canvas = document.querySelector('#pg-bpe-train canvas[data-chart=live-merges]');
          return Chart.getChart(canvas).data.datasets[0].data.map((p) => p.x);
        }"""
    )
    merges = int(train.locator(".bpe-result").inner_text().split("(")[1].split()[0])
    assert plotted == list(range(1, merges + 1))  # every streamed merge, in order
    train.screenshot()

    # the tokenizer it made is offered by the tokenize playground, through its share link
    train.root.get_by_role("link", name="Try it in the tokenize playground").click()
    page.wait_for_load_state()
    tokenize = chapter.playground("tokenize")
    trained = tokenize.locator("select[name=trained] option:checked")
    assert "browser-docs" in trained.inner_text()
    tokenize.succeeded(timeout=60_000)  # "Try it" runs it: no second click needed
    assert tokenize.locator(".token-view").count() == 2
    assert "browser-docs" in tokenize.locator(".token-view").last.inner_text()
    tokenize.screenshot()
    chapter.finish()


def test_bpe_step_through_moves_merge_by_merge(page, site: str) -> None:
    chapter = Chapter(page, site, "tokenization")
    step = chapter.playground("bpe-step").run(timeout=60_000)
    visible = step.locator("section.step:visible h4")
    assert "Merge 1" in visible.inner_text() and "(9 times)" in visible.inner_text()
    step.root.get_by_role("button", name="next →").click()
    assert "Merge 2" in step.locator("section.step:visible h4").inner_text()
    step.screenshot()
    chapter.finish(screenshot=True)


def test_unigram_vs_bpe_trains_both_on_pasted_text_and_tables_ten_languages(
    page, site: str
) -> None:
    import pydoc_data.topics

    chapter = Chapter(page, site, "tokenization")
    unigram = chapter.playground("unigram")
    unigram.locator("input[name=source][value=pasted]").check()
    corpus = "\n\n".join(list(pydoc_data.topics.topics.values())[:12])[:20_000]
    unigram.locator("textarea[name=corpus]").fill(corpus[:10_000])
    unigram.run(timeout=120_000, vocab_size=400, words="tokenization")
    result = unigram.locator(".unigram-result")
    assert result.locator("table.fairness tbody tr").count() == 10
    assert "our Unigram" in result.locator("table.numbers").first.inner_text()
    chips = result.locator("table.splits tbody tr").first.locator(".tok-chip")
    assert chips.count() >= 2  # a rare word, split into pieces
    unigram.screenshot()
    chapter.finish()


def test_index_lab_draws_recall_against_speed_while_it_runs(page, site: str) -> None:
    chapter = Chapter(page, site, "vector-search")
    lab = chapter.playground("index-lab").run(timeout=180_000, n=3000, d=16, queries=50, nlist=32)
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
    assert lab.locator("canvas[data-chart=recall-qps]").count() == 1
    assert "HNSW (ours)" in lab.locator("table.numbers").inner_text()
    lab.screenshot()
    chapter.finish()


def test_query_trace_and_pgvector_show_their_results(page, site: str) -> None:
    chapter = Chapter(page, site, "vector-search")
    trace = chapter.playground("query-trace").run(timeout=120_000)
    assert trace.locator("canvas[data-chart=trace]").count() == 1
    layers = shown_run(site, trace)["result"]["trace"]["layers"]
    cells = trace.locator("table.numbers tbody tr").all()
    shown = [[td.inner_text() for td in row.locator("td").all()[:2]] for row in cells]
    assert shown == [[str(layer["layer"]), str(len(layer["hops"]))] for layer in layers]
    trace.screenshot()

    pgv = chapter.playground("pgvector").run(timeout=180_000)
    result = shown_run(site, pgv)["result"]
    assert pgv.locator("pre.explain").inner_text().strip() == result["explain"].strip()
    assert "Index Scan" in result["explain"]
    recall = pgv.locator("table.numbers tbody tr").first.locator("td").nth(1).inner_text()
    assert recall == f"{result['recall']:.3f}"
    pgv.screenshot()
    chapter.finish(screenshot=True)


def test_generate_streams_tokens_into_the_page(page, site: str) -> None:
    chapter = Chapter(page, site, "transformers")
    generate = chapter.playground("generate").start(max_new_tokens=12)
    # tokens arrive while it runs (then give way to the final text, shown once)
    generate.locator(".generated .tok-new").first.wait_for(state="attached", timeout=60_000)
    generate.succeeded(timeout=120_000)
    assert generate.locator("canvas[data-chart=token-latency]").count() == 1
    final = generate.locator(".generated-final").inner_text().split()
    assert final and final == shown_run(site, generate)["result"]["text"].split()
    generate.screenshot()
    chapter.finish()


def test_attention_heads_and_temperature_redraw_in_place(page, site: str) -> None:
    chapter = Chapter(page, site, "transformers")
    attention = chapter.playground("attention").run(timeout=120_000)
    probs = """() => {
      const canvas = document.querySelector('#pg-attention canvas[data-chart=next-token]');
      return Chart.getChart(canvas).data.datasets[0].data[0];
    }"""
    at_one = page.evaluate(probs)
    attention.locator("[data-temperature]").fill("0")  # the coolest temperature
    assert page.evaluate(probs) > at_one
    attention.locator("[data-head]").select_option("4")
    attention.screenshot()
    chapter.finish(screenshot=True)


def test_inference_chapter_kv_cache_and_tiled_attention(page, site: str) -> None:
    chapter = Chapter(page, site, "inference")
    kv = chapter.playground("kv-cache").run(timeout=180_000, max_new_tokens=8)
    assert "Same tokens both ways: yes" in kv.root.inner_text()
    kv.screenshot()

    tiled = chapter.playground("tiled-attention").run(timeout=120_000, seq_lens="128, 256")
    assert tiled.locator("canvas[data-chart=attn-time]").count() == 1
    tiled.screenshot()

    paged = chapter.playground("paged-kv").run(
        timeout=120_000, decode_concurrency="1, 2", decode_tokens=4
    )
    assert paged.locator(".block.shared").count() > 0  # the shared prefix, drawn
    assert paged.locator("table.paged-decode tr").count() == 3  # header + 2 concurrencies
    assert paged.locator("canvas[data-chart=paged-decode-blocks]").count() == 1
    paged.screenshot()
    chapter.finish(screenshot=True)


def test_noughts_and_crosses_against_mcts(page, site: str) -> None:
    chapter = Chapter(page, site, "rag-agents")
    game = chapter.playground("mcts").run(timeout=60_000, simulations=300)
    first = game.locator("form.ttt .cell").all_inner_texts()
    assert first.count("X") == 1
    game.locator("form.ttt button.cell").first.click()  # our O; a new run replies
    game.locator("form.ttt .cell", has_text="O").wait_for(timeout=60_000)
    marks = game.locator("form.ttt .cell").all_inner_texts()
    assert marks.count("X") == 2 and marks.count("O") == 1
    game.screenshot()
    chapter.finish()


def test_quantize_moe_and_speculative_render_their_results(page, site: str) -> None:
    chapter = Chapter(page, site, "inference")
    quant = chapter.playground("quantize")
    quant.locator("select[name=model]").select_option("minilm")
    quant.locator("input[value=bf16]").uncheck()
    quant.locator("input[value=int4-weight]").uncheck()
    quant.start(sentences=32)
    quant.locator(".quant-live tr").first.wait_for(timeout=120_000)  # rows arrive one by one
    quant.succeeded(timeout=180_000)
    tables = quant.locator("table.numbers")
    assert any("int8 weight-only" in t for t in tables.all_inner_texts())
    outliers = tables.filter(has_text="activation scales").inner_text()  # the fix, side by side
    assert "PyTorch" in outliers and "SmoothQuant" in outliers
    quant.screenshot()

    moe = chapter.playground("moe").run(timeout=60_000)
    assert moe.locator("canvas[data-chart=moe-routing]").count() == 1
    moe.screenshot()

    spec = chapter.playground("speculative").run(timeout=180_000, max_new_tokens=16)
    assert spec.locator(".spec-text .accepted").count() > 0
    assert spec.locator(".spec-steps [data-drafted]").count() > 0  # the draft length per step
    spec.screenshot()
    chapter.finish()


def test_ask_the_course_streams_a_cited_answer_and_the_cache_hits_a_paraphrase(
    page, site: str
) -> None:
    chapter = Chapter(page, site, "rag-agents")
    ask = chapter.playground("rag-ask")
    ask.locator("input[name=question]").fill("What does a KV cache keep between steps?")
    ask.start(k=3, max_new_tokens=40)
    ask.locator("#rag-grounded-live").filter(has_text=" ").wait_for(timeout=600_000)  # streams
    ask.succeeded(timeout=600_000)
    assert ask.locator("table.rag-chunks tr.chosen").count() == 3
    assert ask.locator(".rag-final .generated-final").first.inner_text().strip()
    citations = ask.locator(".rag-final .generated-final a[href^='#rag-chunk-']")
    if citations.count():  # SmolLM2 does not always cite; when it does, links reach the chunk
        target = citations.first.get_attribute("href")
        assert page.locator(target).count() == 1
    ask.screenshot()

    cache = chapter.playground("semantic-cache")
    cache.locator("input[name=question]").fill("Why is attention softmax scaled by sqrt d?")
    cache.run(timeout=300_000, max_new_tokens=16)
    assert "Miss" in cache.locator(".cache-verdict").inner_text()
    cache.locator("input[name=question]").fill("Why is the attention softmax scaled by sqrt d?")
    cache.run(timeout=300_000, max_new_tokens=16)
    cache.locator(".cache-verdict.hit").wait_for(timeout=10_000)
    cache.locator(".cache-stats").filter(has_text="precision").wait_for()  # slider wired up
    slider = cache.locator("[data-cache-threshold]")
    slider.fill("0")  # the lowest threshold: the false hits it would serve are listed
    cache.locator(".cache-slider output").filter(has_text="0.50").wait_for(timeout=5_000)
    assert cache.locator(".false-hits li").count() >= 1
    assert cache.locator("canvas[data-chart=cache-sweep]").count() == 1
    cache.screenshot()
    chapter.finish()  # (the chapter is too tall for a quick full-page shot)


def test_the_prompt_lab_streams_rows_then_charts_styles_and_opens_each_prompt(
    page, site: str
) -> None:
    chapter = Chapter(page, site, "rag-agents")
    lab = chapter.playground("prompt-lab")
    lab.locator("input[name=styles][value=chain-of-thought]").uncheck()
    lab.start(items=2, shots=1, answer_tokens=3)
    lab.locator(".prompt-live tbody tr").nth(3).wait_for(timeout=300_000)  # 2 items × 2 styles
    lab.succeeded(timeout=300_000)
    rows = lab.locator("table.prompt-styles tbody tr")
    assert rows.count() == 2 and "zero-shot" in rows.first.inner_text()
    assert lab.locator("svg[data-chart-svg=accuracy] rect").count() == 2
    assert lab.locator("svg[data-chart-svg=prompt] rect").count() == 2
    item = lab.locator("details.prompt-item").first
    item.locator("summary").first.click()
    run = item.locator("details.prompt-run").nth(1)  # few-shot: the example is in the prompt
    run.locator("summary").click()
    prompt = run.locator("pre").first.inner_text()
    assert "[assistant]" in prompt and "Review:" in prompt
    lab.screenshot()
    chapter.finish()


def test_structured_output_streams_both_sides_and_marks_each_answer(page, site: str) -> None:
    chapter = Chapter(page, site, "rag-agents")
    so = chapter.playground("structured-output")
    with page.expect_navigation():  # an example link reloads the chapter, form filled in
        so.locator("a[data-example=review]").click()
    assert '"verdict"' in so.locator("textarea[name=answer_schema]").input_value()
    so.start(n=1, max_new_tokens=128, temperature=0.7)
    so.locator("#so-constrained-0").wait_for(timeout=300_000)  # cards appear as answers start
    so.succeeded(timeout=300_000)
    rows = so.locator("table.so-answers tbody tr")
    assert rows.count() == 2
    assert "✓" in so.locator("tr.so-constrained td.verdict").inner_text()
    assert so.locator(".so-bars li").count() == 2
    assert "ms per token" in so.locator(".so-cost").inner_text()
    so.screenshot()
    chapter.finish()


def test_a_refused_run_shows_the_servers_message_in_the_form(page, site: str) -> None:
    """A 429 (or 403, 413…) answers with the API's JSON problem: the page shows its words."""
    chapter = Chapter(page, site, "embeddings")
    body = '{"message": "You have 4 runs still running; wait for one to finish.", "detail": []}'
    page.route(
        "**/api/playgrounds/hash-vectors/runs",
        lambda route: route.fulfill(
            status=429, body=body, headers={"Retry-After": "7", "Content-Type": "application/json"}
        ),
    )
    hashing = chapter.playground("hash-vectors").start()
    alert = hashing.locator(".run-out .form-error")
    alert.wait_for(timeout=10_000)
    assert "4 runs still running" in alert.inner_text() and "7 s" in alert.inner_text()
    chapter.finish()


def test_dataset_fields_that_do_not_apply_are_greyed_out(page, site: str) -> None:
    chapter = Chapter(page, site, "vector-search")
    trace = chapter.playground("query-trace")
    n, texts = trace.locator("input[name=n]"), trace.locator("textarea[name=texts]")
    assert n.is_enabled() and texts.is_disabled()  # clustered: its sizes, no texts
    trace.locator("input[name=dataset][value=texts]").check()
    assert n.is_disabled() and texts.is_enabled()
    trace.locator("input[name=dataset][value=digits]").check()
    assert n.is_disabled() and texts.is_disabled()
    chapter.finish()


def test_the_agent_draws_its_steps_as_a_timeline(page, site: str) -> None:
    chapter = Chapter(page, site, "rag-agents")
    agent = chapter.playground("agent")
    agent.locator("select[name=task_id]").select_option("calculator-1")
    agent.start(max_steps=2)
    agent.locator(".agent-live tr.agent-step").first.wait_for(timeout=300_000)  # streamed
    agent.succeeded(timeout=300_000)
    final = agent.locator(".agent-final")
    steps = final.locator("table.agent-steps tr.agent-step")
    assert 1 <= steps.count() <= 2
    assert "347 * 29" in final.inner_text() and "Answer:" in final.inner_text()
    assert final.locator("tr.agent-step td").nth(1).inner_text().startswith('{"tool"')
    chapter.finish()


def test_injection_streams_each_variant_and_pii_marks_catches_and_misses(page, site: str) -> None:
    chapter = Chapter(page, site, "rag-agents")
    inj = chapter.playground("injection")
    inj.locator("select[name=doc]").select_option("refunds")
    for variant in ("delimited", "schema"):
        inj.locator(f"input[name=variants][value={variant}]").uncheck()
    inj.start(max_new_tokens=8)
    inj.locator("#inj-plain-answer-live").filter(has_text=" ").wait_for(timeout=300_000)
    inj.succeeded(timeout=300_000)
    final = inj.locator(".inj-final")
    assert final.locator("table.inj-summary tbody tr").count() == 3  # plain, checked, allowlist
    assert "send_email" in final.inner_text() and "refused" in final.inner_text()
    inj.screenshot()

    redact = chapter.playground("pii-redact").run(timeout=60_000)
    scores = redact.locator("table.pii-scores")
    assert scores.locator("tr[data-kind]").count() == 4
    assert redact.locator(".pii-samples mark.caught").count() > 0
    assert redact.locator(".pii-samples mark.missed").count() > 0  # it says what it missed
    redact.screenshot()
    chapter.finish()


def shown_run(site: str, playground: Playground) -> dict:
    """The stored run (GET /api/runs/<id>) whose panel the playground shows."""
    import httpx

    panel_id = playground.locator(".run").first.get_attribute("id")  # "run-<uuid>"
    return httpx.get(f"{site}/api/runs/{panel_id.removeprefix('run-')}").json()


def test_train_a_tiny_gpt_draws_its_curves_and_head_live_then_generates(page, site: str) -> None:
    chapter = Chapter(page, site, "transformers")
    train = chapter.playground("train-gpt")
    train.locator("input[name=source][value=text]").check()
    train.locator("textarea[name=text]").fill("the quick brown fox jumps over the lazy dog. " * 60)
    for name, value in {"steps": 10, "batch_size": 4}.items():  # sliders: set, then announce
        train.locator(f"input[name={name}]").evaluate(
            f"(e) => {{ e.value = '{value}'; e.dispatchEvent(new Event('input')); }}"
        )
    train.run(timeout=120_000, n_layer=1, n_head=2, n_embd=32, context=16, warmup=2)
    live = page.evaluate(
        """() => {
          const canvas = document.querySelector('#pg-train-gpt canvas[data-chart=train-live]');
          return Chart.getChart(canvas).data.datasets.map((d) => [d.label, d.data.length]);
        }"""
    )
    assert live == [["training", 11], ["validation", 11]]  # step 0, then every step
    final = train.locator(".train-final")
    assert final.locator("canvas[data-chart=train-curves]").count() == 1
    head = final.locator("canvas[data-chart=attention-head]")
    assert int(head.get_attribute("data-row-labels") or 0) > 0  # the heatmap was drawn
    assert final.locator(".train-samples li").count() == 10
    train.screenshot()
    final.get_by_role("button", name="Generate").click()
    text = final.locator(".run-out .generated-final")
    text.wait_for(timeout=60_000)
    assert len(text.inner_text()) > len("The ")
    chapter.finish()


def test_lora_fine_tuning_draws_its_loss_live_then_answers_before_and_after(
    page, site: str
) -> None:
    chapter = Chapter(page, site, "transformers")
    tune = chapter.playground("lora-finetune")
    tune.locator("textarea[name=prompts]").fill("What is a rainbow?")
    tune.run(timeout=180_000, steps=2, batch_size=1, rank=2, max_new_tokens=8)
    live = tune.locator(".lora-live svg[data-chart-svg=lora-loss]")
    assert live.get_attribute("data-points") == "2"  # redrawn at each step
    assert len(live.locator("polyline").get_attribute("points").split()) == 2
    result = tune.locator(".lora-result")
    assert len(result.locator("polyline").get_attribute("points").split()) == 2
    assert result.locator("table.lora-answers tbody tr").count() == 1
    assert "of the model's weights" in result.locator("table.lora-sizes").inner_text()
    href = result.get_by_role("link", name="Download the adapter (safetensors)").get_attribute(
        "href"
    )
    assert page.request.get(f"{site}{href}").status == 200
    tune.screenshot()
    chapter.finish()
