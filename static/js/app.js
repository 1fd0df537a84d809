// Forward Pass: the small amount of JavaScript the pages need.
// Charts are drawn from JSON the server renders next to a <canvas data-chart="…">,
// whenever htmx puts new content on the page (a form result, a streamed event).
(() => {
  "use strict";

  // Swap 422 (form errors) into the page like a success; keep other errors out.
  htmx.config.responseHandling = [
    { code: "204", swap: false },
    { code: "[23]..", swap: true },
    { code: "422", swap: true },
    { code: "[45]..", swap: false, error: true },
  ];

  // Other refusals (403, 413, 415, 429, 503) come as the API's JSON problem: show its
  // message where the run would have appeared, so a form never fails silently.
  document.addEventListener("htmx:responseError", (event) => {
    const { xhr, target } = event.detail;
    let message = `The server answered ${xhr.status}.`;
    try { message = JSON.parse(xhr.responseText).message || message; } catch { /* not JSON */ }
    const retry = xhr.getResponseHeader("Retry-After");
    const box = document.createElement("div");
    box.className = "form-error";
    box.setAttribute("role", "alert");
    box.textContent = retry ? `${message} (try again in ${retry} s)` : message;
    target?.replaceChildren(box);
  });

  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const dataFor = (canvas) => JSON.parse(document.getElementById(canvas.dataset.source).textContent);
  window.FP = { css: (n) => css(n), dataFor: (c) => dataFor(c) };
  const short = (text, n = 60) => (text.length > n ? text.slice(0, n - 1) + "…" : text);

  // Writes each point's label beside it (Chart.js has no built-in data labels): to the right,
  // else left, above or below, whichever stays inside the chart and clear of labels already
  // written; a label with no free place is left to the tooltip.
  const pointLabels = {
    id: "pointLabels",
    afterDatasetsDraw(chart) {
      const { ctx, width, height } = chart;
      ctx.save();
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillStyle = css("--ink");
      ctx.textBaseline = "middle";
      const taken = []; // the points themselves first, so no label covers one
      chart.data.datasets.forEach((ds, i) => chart.getDatasetMeta(i).data.forEach((pt) =>
        taken.push({ x: pt.x - 5, y: pt.y - 5, w: 10, h: 10 })));
      const clear = (b) => b.x >= 0 && b.y >= 0 && b.x + b.w <= width && b.y + b.h <= height &&
        taken.every((t) => b.x + b.w <= t.x || t.x + t.w <= b.x || b.y + b.h <= t.y || t.y + t.h <= b.y);
      chart.data.datasets.forEach((ds, i) => {
        if (!ds.labels) return;
        chart.getDatasetMeta(i).data.forEach((pt, j) => {
          const text = ds.labels[j], w = ctx.measureText(text).width, h = 13;
          const spots = [[pt.x + 7, pt.y - h / 2], [pt.x - 7 - w, pt.y - h / 2],
            [pt.x - w / 2, pt.y - 8 - h], [pt.x - w / 2, pt.y + 8]];
          const box = spots.map(([x, y]) => ({ x, y, w, h })).find(clear);
          if (!box) return;
          taken.push(box);
          ctx.fillText(text, box.x, box.y + h / 2);
        });
      });
      ctx.restore();
    },
  };

  // A matrix drawn cell by cell on a square canvas, its row and column labels in a margin
  // (every one when they fit, else every k-th) and the two axis titles outside them.
  // value(i, j) in [0, 1] sets a cell's shade (null: leave it blank); tip(i, j) is its hover text.
  // tokens: labels are tokens, whose spaces and newlines are shown (␣, ↵), as the lessons do.
  const visible = (t) => String(t).replace(/ /g, "\u2423").replace(/\n/g, "\u21b5");
  function matrix(canvas, { n, m, value, hue = 228, tip = () => "", rows, cols, rowTitle, colTitle, tokens = false }) {
    const size = canvas.clientWidth || 360, ratio = window.devicePixelRatio || 1;
    canvas.width = size * ratio; canvas.height = size * ratio;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, size, size);
    const font = 10, title = 15, room = size * 0.26;
    ctx.font = `${font}px system-ui, sans-serif`;
    const fit = (t) => { // shorten a label to the margin's width
      let s = tokens ? visible(t) : String(t).replace(/\s+/g, " ");
      while (s.length > 2 && ctx.measureText(s).width > room) s = s.slice(0, -2) + "…";
      return s;
    };
    const rowText = rows.map(fit), colText = cols.map(fit);
    const widest = (ts) => Math.max(0, ...ts.map((t) => ctx.measureText(t).width));
    const left = title + widest(rowText) + 4, top = title + widest(colText) + 4;
    const w = (size - left - 2) / m, h = (size - top - 2) / n;
    for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) {
      const v = value(i, j);
      if (v === null) continue;
      ctx.fillStyle = `hsl(${hue}, 70%, ${Math.round(97 - 65 * Math.max(0, Math.min(1, v)))}%)`;
      ctx.fillRect(left + j * w, top + i * h, Math.ceil(w), Math.ceil(h));
    }
    ctx.fillStyle = css("--ink");
    const rowStep = Math.ceil((font + 1) / h), colStep = Math.ceil((font + 1) / w);
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (let i = 0; i < n; i += rowStep) ctx.fillText(rowText[i], left - 3, top + (i + 0.5) * h);
    ctx.save(); ctx.rotate(-Math.PI / 2); ctx.textAlign = "left";
    for (let j = 0; j < m; j += colStep) ctx.fillText(colText[j], -(top - 3), left + (j + 0.5) * w);
    ctx.restore();
    ctx.font = `600 11px system-ui, sans-serif`; ctx.fillStyle = css("--muted"); ctx.textAlign = "center";
    ctx.fillText(colTitle, left + (size - left) / 2, title / 2);
    ctx.save(); ctx.translate(title / 2, top + (size - top) / 2); ctx.rotate(-Math.PI / 2);
    ctx.fillText(rowTitle, 0, 0);
    ctx.restore();
    // What a test or a screen reader can read of the picture.
    canvas.dataset.rowLabels = String(Math.ceil(n / rowStep));
    canvas.dataset.colLabels = String(Math.ceil(m / colStep));
    canvas.dataset.margin = JSON.stringify({ left, top });
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `${rowTitle} (rows) by ${colTitle} (columns)`);
    canvas.onmousemove = (e) => {
      const i = Math.floor((e.offsetY - top) / h), j = Math.floor((e.offsetX - left) / w);
      canvas.title = i >= 0 && j >= 0 && i < n && j < m ? tip(i, j) : "";
    };
  }
  window.FP.matrix = matrix;

  const draw = (window.FP_CHARTS = window.FP_CHARTS || {});
  Object.assign(draw, {
    // PCA scatter of embedded texts; clicking a point asks the server for its neighbours.
    scatter(canvas) {
      const r = dataFor(canvas);
      const points = r.points.map(([x, y]) => ({ x, y }));
      // Few points: their text beside them; many: their line number (the tooltip has the text).
      const labels = r.texts.map((t, i) => (r.texts.length <= 12 ? short(t, 24) : String(i + 1)));
      new Chart(canvas, {
        type: "scatter",
        data: { datasets: [{ data: points, labels: r.texts.length <= 60 ? labels : null,
          backgroundColor: css("--accent"), pointRadius: 5, pointHoverRadius: 8 }] },
        options: {
          maintainAspectRatio: false, animation: false, layout: { padding: { right: 90 } },
          plugins: { legend: { display: false },
            tooltip: { callbacks: { label: (c) => `${c.dataIndex + 1}. ${short(r.texts[c.dataIndex], 80)}` } } },
          scales: { x: { title: { display: true, text: `PC1 (${(100 * r.explained[0]).toFixed(1)}%)` } },
                    y: { title: { display: true, text: `PC2 (${(100 * r.explained[1]).toFixed(1)}%)` } } },
          onClick: (_event, elements) => {
            if (!elements.length) return;
            const position = elements[0].index;
            htmx.ajax("GET", `${canvas.dataset.neighboursUrl}?position=${position}`,
                      { target: canvas.dataset.target, swap: "innerHTML" });
          },
        },
        plugins: [pointLabels],
      });
    },

    // Cosine-similarity heatmap (n ≤ 256 cells a side), rows and columns labelled with their
    // texts (or line numbers when there are many). Colours span the smallest similarity
    // present to 1, so differences stay visible.
    heatmap(canvas) {
      const r = dataFor(canvas);
      const sim = r.similarity, n = sim.length;
      const low = Math.min(...sim.map((row) => Math.min(...row)));
      const legend = document.getElementById(canvas.dataset.legend);
      if (legend) legend.textContent = `light = ${low.toFixed(2)}, dark = 1.00`;
      const names = r.texts.map((t, i) => (n <= 24 ? short(t, 18) : String(i + 1)));
      matrix(canvas, { n, m: n, value: (i, j) => (sim[i][j] - low) / (1 - low || 1), rows: names, cols: names,
        rowTitle: "text", colTitle: "text (cosine similarity)",
        tip: (i, j) => `${sim[i][j].toFixed(3)}\n${short(r.texts[i])}\n${short(r.texts[j])}` });
    },

    // The analogy's four words and its target, with the two parallel offsets drawn.
    analogy(canvas) {
      const r = dataFor(canvas);
      const p = r.plot;
      const line = (from, to, color) => ({ type: "line", data: [from, to].map((i) => ({ x: p[i].x, y: p[i].y })),
        borderColor: color, borderWidth: 2, pointRadius: 0, showLine: true });
      new Chart(canvas, {
        type: "scatter",
        data: { datasets: [
          { data: p.map(({ x, y }) => ({ x, y })), labels: p.map((q) => q.label),
            backgroundColor: ["#3b5bdb", "#868e96", "#2b8a3e", "#e67700", "#c92a2a"], pointRadius: 7 },
          line(1, 0, "#3b5bdb88"), line(2, 4, "#2b8a3e88"),
        ] },
        options: { maintainAspectRatio: false, animation: false, layout: { padding: { right: 110 } },
          plugins: { legend: { display: false } },
          scales: { x: { title: { display: true, text: "PC1 of the five vectors" } },
                    y: { title: { display: true, text: "PC2 of the five vectors" } } } },
        plugins: [pointLabels],
      });
    },

    // Bars: exact Jaccard against each estimate.
    bars(canvas) {
      const r = dataFor(canvas);
      const bars = [
        ["exact", r.exact_jaccard], ["Bloom (counts)", r.bloom.estimate], ["Bloom (bits)", r.bloom.bit_jaccard],
        ["MinHash (ours)", r.minhash.estimate], ["MinHash (datasketch)", r.datasketch.estimate],
      ];
      new Chart(canvas, {
        type: "bar",
        data: { labels: bars.map((b) => b[0]),
          datasets: [{ data: bars.map((b) => b[1]), backgroundColor: bars.map((_, i) => (i ? "#748ffc" : "#2b8a3e")) }] },
        options: { maintainAspectRatio: false, animation: false, plugins: { legend: { display: false } },
          scales: { x: { title: { display: true, text: "estimate" } },
                    y: { min: 0, max: 1, title: { display: true, text: "Jaccard similarity" } } } },
      });
    },

    // Two Bloom filters as strips of bits (or of bit density when m is large), labelled
    // A and B, with the bit positions along the bottom.
    bits(canvas) {
      const r = dataFor(canvas);
      const rows = [r.bits.a, r.bits.b];
      const width = canvas.clientWidth || 600, rowH = 28, left = 22, axisH = 16;
      const ratio = window.devicePixelRatio || 1;
      canvas.width = width * ratio; canvas.height = (rowH * 2 + 8 + axisH) * ratio;
      const ctx = canvas.getContext("2d");
      ctx.scale(ratio, ratio);
      ctx.font = "12px system-ui, sans-serif";
      ctx.fillStyle = css("--ink");
      rows.forEach((bits, row) => {
        const w = (width - left) / bits.length, y = row * (rowH + 8);
        ctx.fillStyle = css("--ink");
        ctx.fillText(row ? "B" : "A", 4, y + rowH / 2 + 4);
        bits.forEach((v, i) => {
          ctx.fillStyle = v ? `rgba(59, 91, 219, ${Math.max(0.15, v)})` : "#eef0f6";
          ctx.fillRect(left + i * w, y, Math.max(1, w - (w > 3 ? 1 : 0)), rowH);
        });
      });
      const m = r.params?.m ?? r.bits.a.length, y = rowH * 2 + 8 + 12;
      ctx.fillStyle = css("--muted");
      ctx.fillText("bit 0", left, y);
      const end = `bit ${(m - 1).toLocaleString()}`;
      ctx.fillText(end, width - ctx.measureText(end).width, y);
      const mid = "bit position →";
      ctx.fillText(mid, left + (width - left - ctx.measureText(mid).width) / 2, y);
    },
  });

  Object.assign(draw, {
    // Empty at first: merges streamed by the BPE trainer are added point by point (below).
    "live-merges"(canvas) {
      new Chart(canvas, {
        type: "scatter",
        data: { datasets: [{ data: [], backgroundColor: css("--accent"), pointRadius: 2 }] },
        options: { maintainAspectRatio: false, animation: false, plugins: { legend: { display: false } },
          scales: { x: { title: { display: true, text: "merge rank" } },
                    y: { type: "logarithmic", ticks: window.FP.logTicks, title: { display: true, text: "pair count (log scale)" } } } },
      });
    },

    // Pair count at merge time vs merge rank, for a finished training run.
    "merge-counts"(canvas) {
      const r = dataFor(canvas);
      new Chart(canvas, {
        type: "line",
        data: { datasets: [{ data: r.ranks.map((x, i) => ({ x, y: r.counts[i] })), borderColor: css("--accent"),
          pointRadius: 0, borderWidth: 2 }] },
        options: { maintainAspectRatio: false, animation: false, plugins: { legend: { display: false } },
          scales: { x: { type: "linear", title: { display: true, text: "merge rank" } },
                    y: { type: "logarithmic", ticks: window.FP.logTicks, title: { display: true, text: "pair count (log scale)" } } } },
      });
    },

    // Tokens each tokenizer needs for the same text.
    "token-counts"(canvas) {
      const r = dataFor(canvas);
      new Chart(canvas, {
        type: "bar",
        data: { labels: r.tokenizers.map((t) => t.name),
          datasets: [{ data: r.tokenizers.map((t) => t.stats.tokens), backgroundColor: "#748ffc" }] },
        options: { maintainAspectRatio: false, animation: false, indexAxis: "y",
          plugins: { legend: { display: false } },
          scales: { x: { title: { display: true, text: "tokens for the text" } },
                    y: { title: { display: true, text: "tokenizer" } } } },
      });
    },
  });

  // `root` itself and everything inside it that matches (htmx loads swapped nodes one by one)
  const within = (root, selector) =>
    root.matches?.(selector) ? [root] : [...(root.querySelectorAll?.(selector) ?? [])];

  const PALETTE = ["#4263eb", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#c2255c", "#5c940d"];
  const colour = (i) => PALETTE[i % PALETTE.length];
  // Log-axis ticks at 1, 2 and 5 of each decade only, written short ("20k"): Chart.js labels
  // every 1-9 step, and at the top of a decade "90,000" and "100,000" run into each other.
  const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });
  const logTicks = { autoSkip: true, maxRotation: 0, callback: (v, _i, ticks) => {
    const lead = Math.round(v / 10 ** Math.floor(Math.log10(v)));
    const decades = Math.log10(ticks.at(-1).value / ticks[0].value);
    return decades < 1 || [1, 2, 5].includes(lead) ? compact.format(v) : "";
  } };
  window.FP.logTicks = logTicks;
  const recallAxes = (k) => ({
    x: { type: "logarithmic", ticks: logTicks, title: { display: true, text: "queries per second (log scale)" } },
    y: { min: 0, max: 1, title: { display: true, text: `recall@${k}` } },
  });

  Object.assign(draw, {
    // Recall against speed, one dataset per index, points arriving while the run measures them.
    "live-points"(canvas) {
      new Chart(canvas, {
        type: "line", data: { datasets: [] },
        options: { maintainAspectRatio: false, animation: false, parsing: false,
          plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label} ${c.raw.label}: recall ${c.raw.y.toFixed(3)}, ${Math.round(c.raw.x)} q/s` } } },
          scales: recallAxes("k") },
      });
    },

    // The finished index lab: the same curves, from the stored result.
    "recall-qps"(canvas) {
      const r = dataFor(canvas);
      new Chart(canvas, {
        type: "line",
        data: { datasets: r.indexes.map((ix, i) => ({ label: ix.label, borderColor: colour(i), backgroundColor: colour(i),
          data: ix.points.map((p) => ({ x: p.qps, y: p.recall, label: p.param ? `${p.param}=${p.value}` : "" })) })) },
        options: { maintainAspectRatio: false, animation: false, parsing: false,
          plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label} ${c.raw.label}: recall ${c.raw.y.toFixed(3)}, ${Math.round(c.raw.x)} q/s` } } },
          scales: recallAxes(r.k) },
      });
    },

    // One query's path: HNSW hops per layer, or IVF's answer and the neighbours it missed.
    trace(canvas) {
      const r = dataFor(canvas);
      const at = (id) => { const [x, y] = r.coords[String(id)]; return { x, y, id }; };
      const datasets = [];
      if (r.index === "hnsw") {
        r.trace.layers.forEach((layer, i) => datasets.push({ type: "line", label: `layer ${layer.layer}`,
          data: layer.hops.map((h) => at(h.node)), borderColor: colour(i), backgroundColor: colour(i), pointRadius: 3 }));
      } else {
        datasets.push({ type: "scatter", label: "returned", data: r.trace.ids.filter((i) => i >= 0).map(at),
          backgroundColor: colour(0), pointRadius: 3 });
        const missed = r.trace.neighbours.filter((n) => !n.probed).map((n) => at(n.id));
        datasets.push({ type: "scatter", label: "missed (cell not probed)", data: missed, pointRadius: 8,
          pointStyle: "circle", borderColor: "#e03131", backgroundColor: "transparent", borderWidth: 2 });
      }
      datasets.push({ type: "scatter", label: "true neighbours", data: r.true_ids.map(at), pointRadius: 6,
        borderColor: css("--ink"), backgroundColor: "transparent", borderWidth: 1 });
      datasets.push({ type: "scatter", label: "query", data: [{ x: r.query_xy[0], y: r.query_xy[1] }],
        pointStyle: "star", pointRadius: 12, borderColor: "#e8590c", borderWidth: 2 });
      new Chart(canvas, { type: "scatter", data: { datasets },
        options: { maintainAspectRatio: false, animation: false,
          scales: { x: { title: { display: true, text: "PC1 of the data set" } },
                    y: { title: { display: true, text: "PC2 of the data set" } } } } });
    },

    // Memory against recall for each codec.
    compression(canvas) {
      const r = dataFor(canvas);
      new Chart(canvas, {
        type: "scatter",
        data: { datasets: [{ data: r.points.map((p) => ({ x: p.bytes_per_vector, y: p.recall })),
          labels: r.points.map((p) => p.method + (p.params.dims ? ` ${p.params.dims}d` : p.params.m ? ` m=${p.params.m}` : "")),
          backgroundColor: css("--accent"), pointRadius: 5 }] },
        options: { maintainAspectRatio: false, animation: false, layout: { padding: { right: 60 } },
          plugins: { legend: { display: false } },
          scales: { x: { type: "logarithmic", ticks: logTicks, title: { display: true, text: "bytes per vector (log scale)" } },
                    y: { min: 0, max: 1, title: { display: true, text: `recall@${r.k}` } } } },
        plugins: [pointLabels],
      });
    },
  });

  // Streamed index-lab points: each <li> names its series and coordinates.
  function addLivePoints(root) {
    within(root, "li[data-series]").forEach((li) => {
      const canvas = li.closest(".run")?.querySelector("canvas[data-chart=live-points]");
      const chart = canvas && Chart.getChart(canvas);
      if (!chart || li.dataset.plotted) return;
      li.dataset.plotted = "1";
      let ds = chart.data.datasets.find((d) => d.label === li.dataset.series);
      if (!ds) {
        const c = colour(chart.data.datasets.length);
        ds = { label: li.dataset.series, data: [], borderColor: c, backgroundColor: c };
        chart.data.datasets.push(ds);
      }
      ds.data.push({ x: +li.dataset.x, y: +li.dataset.y, label: li.dataset.label });
      chart.update("none");
    });
  }

  // Streamed merges: each batch adds its points to the live chart of its run. htmx loads the
  // batch's <li> one by one; the first one plots the whole batch, later ones find it done.
  function addLiveMerges(root) {
    const first = within(root, "li[data-rank]")[0];
    const list = first?.parentElement;
    const canvas = list?.closest(".run")?.querySelector("canvas[data-chart=live-merges]");
    const chart = canvas && Chart.getChart(canvas);
    if (!chart) return;
    const fresh = [...list.querySelectorAll("li[data-rank]:not([data-plotted])")];
    fresh.forEach((li) => {
      li.dataset.plotted = "1";
      chart.data.datasets[0].data.push({ x: +li.dataset.rank, y: +li.dataset.count });
    });
    if (!fresh.length) return;
    chart.update("none");
    setTimeout(() => { // after htmx has loaded the batch: keep the newest 40 in the list
      while (list.children.length > 40) list.firstElementChild.remove();
    });
  }

  // The BPE walk-through: show one step at a time.
  function setUpStepper(stepper) {
    const steps = [...stepper.querySelectorAll(".step")];
    const pos = stepper.querySelector(".stepper-pos");
    let at = 0;
    const show = (i) => {
      at = Math.max(0, Math.min(steps.length - 1, i));
      steps.forEach((s, j) => (s.hidden = j !== at));
      if (pos) pos.textContent = `merge ${at + 1} of ${steps.length}`;
    };
    stepper.querySelectorAll("[data-step]").forEach((b) => b.addEventListener("click", () => show(at + +b.dataset.step)));
    show(0);
  }

  // Fields marked data-only="<dataset>" apply to that dataset alone: greyed out (and not
  // sent) while another is chosen.
  function followDataset(form) {
    const update = () => {
      const chosen = form.querySelector("input[name=dataset]:checked")?.value;
      form.querySelectorAll("[data-only]").forEach((el) => { el.disabled = el.dataset.only !== chosen; });
    };
    form.querySelectorAll("input[name=dataset]").forEach((r) => r.addEventListener("change", update));
    update();
  }

  htmx.onLoad((root) => {
    within(root, "form").forEach((form) => {
      if (form.querySelector("input[name=dataset]") && !form.dataset.followsDataset) {
        form.dataset.followsDataset = "1";
        followDataset(form);
      }
    });
    addLiveMerges(root);
    addLivePoints(root);
    within(root, "[data-stepper]").forEach((el) => {
      if (!el.dataset.ready) { el.dataset.ready = "1"; setUpStepper(el); }
    });
    within(root, "canvas[data-chart]").forEach((canvas) => {
      if (canvas.dataset.drawn) return;
      canvas.dataset.drawn = "1";
      draw[canvas.dataset.chart]?.(canvas);
    });
  });
})();

// "Run again with these settings" (learn_tags.rerun_link): the chapter opens at
// #pg-<slug> with the run's parameters in the query string; fill that form from it.
// A list arrives as repeated names: ticks for checkboxes and multi-selects, one item a
// line in a textarea, comma-separated in a text box. Share links copy on a click.
document.addEventListener("DOMContentLoaded", () => {
  "use strict";
  document.querySelectorAll("button[data-copy]").forEach((button) => button.addEventListener("click", async () => {
    const input = document.getElementById(button.dataset.copy);
    input.select();
    try { await navigator.clipboard.writeText(input.value); } catch { document.execCommand("copy"); }
    button.textContent = "Copied";
  }));
  const query = new URLSearchParams(window.location.search);
  const section = window.location.hash.startsWith("#pg-") && document.getElementById(window.location.hash.slice(1));
  const form = section && section.querySelector("form");
  if (!form || ![...query.keys()].length) return;
  const filled = [];
  for (const name of new Set(query.keys())) {
    const values = query.getAll(name);
    const fields = [...form.elements].filter((el) => el.name === name);
    if (!fields.length) continue;
    for (const el of fields) {
      if (el.type === "checkbox" && ["on", "true", ""].includes(el.getAttribute("value") ?? "")) {
        el.checked = values[0] === "true";
      } else if (el.type === "checkbox" || el.type === "radio") {
        el.checked = values.includes(el.value);
      } else if (el.tagName === "SELECT" && el.multiple) {
        [...el.options].forEach((o) => { o.selected = values.includes(o.value); });
      } else if (el.tagName === "SELECT") {
        if ([...el.options].some((o) => o.value === values[0])) el.value = values[0];
      } else if (el.type !== "file" && el.type !== "hidden") {
        el.value = values.join(el.tagName === "TEXTAREA" ? "\n" : ", ");
      }
      el.dispatchEvent(new Event("change", { bubbles: true }));
    }
    filled.push(name);
  }
  if (filled.length) {
    form.dataset.prefilled = filled.join(" ");
    const note = document.createElement("p");
    note.className = "hint prefilled";
    note.textContent = query.get("run") === "1"
      ? "Filled in from the link you followed, and run."
      : "Filled in from the run you opened: check the settings, then press Run.";
    form.prepend(note);
  }
  // "Try it" links (…&run=1#pg-x) also press Run for the learner.
  if (query.get("run") === "1") form.requestSubmit();
});
