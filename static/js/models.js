// Forward Pass: charts of the transformer and inference playgrounds (chapters 4 and 5).
// Registered into the same table app.js draws from: <canvas data-chart="name">.
(() => {
  "use strict";
  const draw = (window.FP_CHARTS = window.FP_CHARTS || {});
  const { css, dataFor } = window.FP;
  const PALETTE = ["#4263eb", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599"];
  const base = (extra = {}) => ({ maintainAspectRatio: false, animation: false, ...extra });
  const axis = (text, more = {}) => ({ title: { display: true, text }, ...more });

  // A matrix drawn cell by cell on a square canvas; value(i, j) in [0, 1] sets the shade.
  function matrix(canvas, n, m, value, hue = 228, title = () => "") {
    const size = canvas.clientWidth || 360, ratio = window.devicePixelRatio || 1;
    canvas.width = size * ratio; canvas.height = size * ratio;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, size, size);
    const h = size / n, w = size / m;
    for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) {
      const v = value(i, j);
      if (v === null) continue;
      ctx.fillStyle = `hsl(${hue}, 70%, ${Math.round(97 - 65 * Math.max(0, Math.min(1, v)))}%)`;
      ctx.fillRect(j * w, i * h, Math.ceil(w), Math.ceil(h));
    }
    canvas.onmousemove = (e) => {
      const i = Math.floor(e.offsetY / h), j = Math.floor(e.offsetX / w);
      if (i < n && j < m) canvas.title = title(i, j);
    };
  }

  Object.assign(draw, {
    "token-latency"(canvas) {
      const r = dataFor(canvas);
      new Chart(canvas, { type: "bar",
        data: { labels: r.token_ms.map((_, i) => i + 1), datasets: [{ data: r.token_ms, backgroundColor: css("--accent") }] },
        options: base({ plugins: { legend: { display: false } },
          scales: { x: axis("token"), y: axis("ms", { type: "logarithmic" }) } }) });
    },

    // One head's attention weights; the head picker and temperature slider redraw in place.
    "attention-map"(canvas) {
      const r = dataFor(canvas);
      const view = canvas.closest("[data-attention]");
      const select = view.querySelector("[data-head]");
      const paint = () => {
        const a = r.attention[+select.value], n = a.length;
        matrix(canvas, n, n, (i, j) => (j > i ? null : Math.sqrt(a[i][j])), 228,
          (i, j) => `${JSON.stringify(r.tokens[i])} → ${JSON.stringify(r.tokens[j])}: ${a[i][j].toFixed(3)}`);
      };
      select.addEventListener("change", paint);
      paint();
    },

    "next-token"(canvas) {
      const r = dataFor(canvas);
      const view = canvas.closest("[data-attention]");
      const slider = view.querySelector("[data-temperature]");
      const label = view.querySelector("[data-temperature-label]");
      const temps = r.next.temperatures;
      const probs = () => Object.values(r.next.probs)[+slider.value]; // in temperature order
      const chart = new Chart(canvas, { type: "bar",
        data: { labels: r.next.tokens.map((t) => JSON.stringify(t)), datasets: [{ data: probs(), backgroundColor: PALETTE[0] }] },
        options: base({ indexAxis: "y", plugins: { legend: { display: false } },
          scales: { x: axis("probability", { min: 0, max: 1 }) } }) });
      slider.addEventListener("input", () => {
        label.textContent = temps[+slider.value].toFixed(2);
        chart.data.datasets[0].data = probs();
        chart.update("none");
      });
    },

    "pe-heatmap"(canvas) {
      const r = dataFor(canvas), e = r.encoding;
      matrix(canvas, e.length, e[0].length, (i, j) => (e[i][j] + 1) / 2, 20,
        (i, j) => `position ${i}, dim ${j}: ${e[i][j]}`);
    },

    "pe-similarity"(canvas) {
      const r = dataFor(canvas), s = r.similarity;
      matrix(canvas, s.length, s.length, (i, j) => (s[i][j] + 1) / 2, 228,
        (i, j) => `positions ${i} and ${j}: cosine ${s[i][j]}`);
    },

    "rope-distance"(canvas) {
      const r = dataFor(canvas);
      new Chart(canvas, { type: "line",
        data: { labels: r.rope_by_distance.map((_, i) => i),
          datasets: [{ data: r.rope_by_distance, borderColor: PALETTE[0], pointRadius: 0, borderWidth: 2 }] },
        options: base({ plugins: { legend: { display: false } },
          scales: { x: axis("distance between query and key (positions)"), y: axis("q · k") } }) });
    },

    "kv-latency"(canvas) {
      const r = dataFor(canvas);
      const ds = (label, ms, c) => ({ label, data: ms.map((y, i) => ({ x: i + 1, y })), borderColor: c, backgroundColor: c, pointRadius: 0, borderWidth: 2 });
      new Chart(canvas, { type: "line",
        data: { datasets: [ds("no cache (recompute)", r.no_cache.token_ms, PALETTE[1]), ds("KV cache", r.cache.token_ms, PALETTE[0])] },
        options: base({ parsing: false, scales: { x: axis("token", { type: "linear" }), y: axis("ms per token", { type: "logarithmic" }) } }) });
    },

    "kv-bytes"(canvas) {
      const r = dataFor(canvas);
      new Chart(canvas, { type: "line",
        data: { datasets: [{ data: r.cache_bytes_by_position.map((y, i) => ({ x: r.prompt_tokens + i + 1, y: y / 1048576 })),
          borderColor: PALETTE[2], pointRadius: 0, borderWidth: 2 }] },
        options: base({ parsing: false, plugins: { legend: { display: false } },
          scales: { x: axis("positions in the cache", { type: "linear" }), y: axis("MiB") } }) });
    },

    "paged-steps"(canvas) {
      const r = dataFor(canvas);
      const line = (label, key, c) => ({ label, data: r.steps.map((s, i) => ({ x: i, y: s[key] })), borderColor: c, backgroundColor: c, pointRadius: 0, borderWidth: 2 });
      new Chart(canvas, { type: "line",
        data: { datasets: [line("tokens held", "logical_tokens", PALETTE[2]), line("paged: slots allocated", "allocated_slots", PALETTE[0]),
          line("contiguous: slots reserved", "contiguous_slots", PALETTE[1])] },
        options: base({ parsing: false, scales: { x: axis("step", { type: "linear" }), y: axis("token slots", { beginAtZero: true }) } }) });
    },

    "attn-time"(canvas) { attnChart(canvas, "ms", "milliseconds per call"); },
    "attn-memory"(canvas) { attnChart(canvas, "peak_bytes", "peak extra bytes"); },

    "window-mask"(canvas) {
      const r = dataFor(canvas);
      const smallest = Object.keys(r.masks).map(Number).sort((a, b) => a - b)[0];
      const m = r.masks[String(smallest)];
      matrix(canvas, m.length, m.length, (i, j) => m[i][j] * 0.8, 20, (i, j) => `query ${i}, key ${j}: ${m[i][j] ? "visible" : "masked"}`);
    },

    "moe-routing"(canvas) {
      const r = dataFor(canvas), p = r.routing.probs;
      const top = Math.max(...p.flat());
      matrix(canvas, p.length, p[0].length, (i, j) => p[i][j] / top, 280,
        (i, j) => `token ${i}, expert ${j}: p = ${p[i][j]}${r.routing.chosen[i].includes(j) ? " (chosen)" : ""}`);
    },

    "moe-load"(canvas) {
      const r = dataFor(canvas), load = r.stats.tokens_per_expert;
      new Chart(canvas, { type: "bar",
        data: { labels: load.map((_, i) => `expert ${i}`), datasets: [{ data: load, backgroundColor: PALETTE[3] }] },
        options: base({ plugins: { legend: { display: false } }, scales: { y: axis("tokens routed") } }) });
    },

    "quant-tradeoff"(canvas) {
      const r = dataFor(canvas), rows = r.rows.filter((x) => !x.skipped);
      new Chart(canvas, { type: "bar",
        data: { labels: rows.map((x) => x.variant),
          datasets: [{ label: "smaller by (×)", data: rows.map((x) => x.size_ratio), backgroundColor: PALETTE[0] },
                     { label: "faster by (×)", data: rows.map((x) => x.speedup), backgroundColor: PALETTE[1] }] },
        options: base({ scales: { y: axis("relative to fp32 (×)", { beginAtZero: true }) } }) });
    },

    "hist-pair"(canvas) {
      const r = dataFor(canvas);
      const centres = (h) => h.edges.slice(0, -1).map((e, i) => (e + h.edges[i + 1]) / 2);
      new Chart(canvas, { type: "bar",
        data: { datasets: [
          { type: "bar", label: "after", data: centres(r.after).map((x, i) => ({ x, y: r.after.counts[i] })), backgroundColor: PALETTE[1], barPercentage: 1, categoryPercentage: 1 },
          { type: "line", label: "before", data: centres(r.before).map((x, i) => ({ x, y: r.before.counts[i] })), borderColor: PALETTE[0], pointRadius: 0 }] },
        options: base({ parsing: false, scales: { x: axis("weight", { type: "linear" }), y: axis("count", { type: "logarithmic" }) } }) });
    },

    hist(canvas) {
      const r = dataFor(canvas), h = r[canvas.dataset.key];
      new Chart(canvas, { type: "bar",
        data: { labels: h.edges.slice(0, -1).map((e) => e.toPrecision(2)), datasets: [{ data: h.counts, backgroundColor: PALETTE[2] }] },
        options: base({ plugins: { legend: { display: false } }, scales: { y: axis("count") } }) });
    },
  });

  function attnChart(canvas, key, label) {
    const r = dataFor(canvas);
    const methods = ["naive", "tiled", "sdpa"];
    new Chart(canvas, { type: "line",
      data: { datasets: methods.map((m, i) => ({ label: m === "sdpa" ? "PyTorch SDPA" : m,
        data: r.rows.filter((x) => x.method === m).map((x) => ({ x: x.seq_len, y: x[key] })),
        borderColor: PALETTE[i], backgroundColor: PALETTE[i] })) },
      options: base({ parsing: false, scales: { x: axis("sequence length", { type: "logarithmic" }), y: axis(label, { type: "logarithmic" }) } }) });
  }
})();
