// Forward Pass: charts of the transformer and inference playgrounds (chapters 4 and 5).
// Registered into the same table app.js draws from: <canvas data-chart="name">.
(() => {
  "use strict";
  const draw = (window.FP_CHARTS = window.FP_CHARTS || {});
  const { css, dataFor } = window.FP;
  const PALETTE = ["#4263eb", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599"];
  const base = (extra = {}) => ({ maintainAspectRatio: false, animation: false, ...extra });
  const axis = (text, more = {}) => ({ title: { display: true, text }, ...more });

  // Heatmaps: app.js's FP.matrix draws the cells with their row and column labels.
  const matrix = (canvas, spec) => window.FP.matrix(canvas, spec);
  const count = (k) => Array.from({ length: k }, (_, i) => String(i));
  const logAxis = (text) => axis(text, { type: "logarithmic", ticks: window.FP.logTicks });

  Object.assign(draw, {
    "token-latency"(canvas) {
      const r = dataFor(canvas);
      new Chart(canvas, { type: "bar",
        data: { labels: r.token_ms.map((_, i) => i + 1), datasets: [{ data: r.token_ms, backgroundColor: css("--accent") }] },
        options: base({ plugins: { legend: { display: false } },
          scales: { x: axis("generated token (position)"), y: logAxis("milliseconds per token (log scale)") } }) });
    },

    // One head's attention weights; the head picker and temperature slider redraw in place.
    "attention-map"(canvas) {
      const r = dataFor(canvas);
      const view = canvas.closest("[data-attention]");
      const select = view.querySelector("[data-head]");
      const paint = () => {
        const a = r.attention[+select.value], n = a.length;
        matrix(canvas, { n, m: n, value: (i, j) => (j > i ? null : Math.sqrt(a[i][j])), rows: r.tokens, cols: r.tokens, tokens: true,
          rowTitle: "query: the token attending", colTitle: "key: the token attended to",
          tip: (i, j) => `${JSON.stringify(r.tokens[i])} → ${JSON.stringify(r.tokens[j])}: ${a[i][j].toFixed(3)}` });
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
      // Keys are str(T) from Python ("1.0"); the stored JSON does not keep their order
      // (Postgres jsonb sorts keys by length), so look each stop's key up by its value.
      const byT = new Map(Object.entries(r.next.probs).map(([k, v]) => [Number(k), v]));
      const probs = () => byT.get(temps[+slider.value]);
      if (temps.includes(1)) slider.value = temps.indexOf(1); // start at the model's own distribution
      label.textContent = temps[+slider.value].toFixed(2);
      const chart = new Chart(canvas, { type: "bar",
        data: { labels: r.next.tokens.map((t) => JSON.stringify(t)), datasets: [{ data: probs(), backgroundColor: PALETTE[0] }] },
        options: base({ indexAxis: "y", plugins: { legend: { display: false } },
          scales: { x: axis("probability of the next token", { min: 0, max: 1 }), y: axis("candidate next token") } }) });
      slider.addEventListener("input", () => {
        label.textContent = temps[+slider.value].toFixed(2);
        chart.data.datasets[0].data = probs();
        chart.update("none");
      });
    },

    "pe-heatmap"(canvas) {
      const r = dataFor(canvas), e = r.encoding;
      matrix(canvas, { n: e.length, m: e[0].length, value: (i, j) => (e[i][j] + 1) / 2, hue: 20,
        rows: count(e.length), cols: count(e[0].length), rowTitle: "position", colTitle: "dimension (value −1 to 1)",
        tip: (i, j) => `position ${i}, dim ${j}: ${e[i][j]}` });
    },

    "pe-similarity"(canvas) {
      const r = dataFor(canvas), s = r.similarity;
      matrix(canvas, { n: s.length, m: s.length, value: (i, j) => (s[i][j] + 1) / 2,
        rows: count(s.length), cols: count(s.length), rowTitle: "position", colTitle: "position (cosine similarity)",
        tip: (i, j) => `positions ${i} and ${j}: cosine ${s[i][j]}` });
    },

    "rope-distance"(canvas) {
      const r = dataFor(canvas);
      new Chart(canvas, { type: "line",
        data: { labels: r.rope_by_distance.map((_, i) => i),
          datasets: [{ data: r.rope_by_distance, borderColor: PALETTE[0], pointRadius: 0, borderWidth: 2 }] },
        options: base({ plugins: { legend: { display: false } },
          scales: { x: axis("distance between query and key (positions)"), y: axis("q · k (dot product, no unit)") } }) });
    },

    "kv-latency"(canvas) {
      const r = dataFor(canvas);
      const ds = (label, ms, c) => ({ label, data: ms.map((y, i) => ({ x: i + 1, y })), borderColor: c, backgroundColor: c, pointRadius: 0, borderWidth: 2 });
      new Chart(canvas, { type: "line",
        data: { datasets: [ds("no cache (recompute)", r.no_cache.token_ms, PALETTE[1]), ds("KV cache", r.cache.token_ms, PALETTE[0])] },
        options: base({ parsing: false, scales: { x: axis("token", { type: "linear" }), y: logAxis("milliseconds per token (log scale)") } }) });
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

    // The paged-KV playground's real decode: speed by concurrency, memory and blocks by step.
    "paged-decode-speed"(canvas) {
      const d = dataFor(canvas).decode;
      new Chart(canvas, { type: "bar",
        data: { labels: d.rows.map((x) => String(x.concurrency)),
          datasets: [{ label: "tokens/s (prefills included)", data: d.rows.map((x) => x.tokens_per_s), backgroundColor: PALETTE[0] },
                     { label: "one request at a time", data: d.rows.map(() => d.generate_tokens_per_s), backgroundColor: PALETTE[1] }] },
        options: base({ scales: { x: axis("requests decoded together"), y: axis("tokens per second", { beginAtZero: true }) } }) });
    },

    "paged-decode-memory"(canvas) {
      const t = dataFor(canvas).decode.timeline;
      const line = (label, ys, c) => ({ label, data: ys.map((y, i) => ({ x: i, y: y / 1048576 })), borderColor: c, backgroundColor: c, pointRadius: 0, borderWidth: 2 });
      new Chart(canvas, { type: "line",
        data: { datasets: [line("tokens held", t.tokens_bytes, PALETTE[2]), line("paged: blocks in use", t.kv_bytes, PALETTE[0]),
          line("contiguous per request", t.contiguous_bytes, PALETTE[1])] },
        options: base({ parsing: false, scales: { x: axis("step", { type: "linear", ticks: { precision: 0 } }), y: axis("MiB", { beginAtZero: true }) } }) });
    },

    // A grid: one row per block, one column per step, coloured by the request holding it.
    "paged-decode-blocks"(canvas) {
      const t = dataFor(canvas).decode.timeline, steps = t.owners.length, blocks = t.num_blocks;
      const left = 44, bottom = 20, ch = Math.min(14, (280 - bottom) / blocks);
      canvas.parentElement.style.height = `${Math.ceil(blocks * ch + bottom)}px`; // no empty band
      const w = canvas.clientWidth || 600, h = canvas.clientHeight || 280, ratio = window.devicePixelRatio || 1;
      canvas.width = w * ratio; canvas.height = h * ratio;
      const ctx = canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      const cw = (w - left) / steps;
      for (let s = 0; s < steps; s++) for (let b = 0; b < blocks; b++) {
        const who = t.owners[s][b];
        if (who < 0) continue;
        ctx.fillStyle = `hsl(${(who * 137.5) % 360}, 65%, 55%)`;
        ctx.fillRect(left + s * cw, b * ch, Math.ceil(cw), Math.ceil(ch));
      }
      ctx.fillStyle = css("--ink"); ctx.font = "11px system-ui, sans-serif";
      ctx.fillText("block", 0, 10); ctx.fillText(`0-${blocks - 1}`, 0, 24);
      ctx.fillText(`step 0 → ${steps - 1}`, left, blocks * ch + 14);
      canvas.addEventListener("mousemove", (e) => {
        const s = Math.floor((e.offsetX - left) / cw), b = Math.floor(e.offsetY / ch);
        const who = s >= 0 && s < steps && b < blocks ? t.owners[s][b] : undefined;
        canvas.title = who === undefined ? "" : `step ${s}, block ${b}: ${who < 0 ? "free" : "request " + who}`;
      });
    },

    "attn-time"(canvas) { attnChart(canvas, "ms", "milliseconds per call"); },
    "attn-memory"(canvas) { attnChart(canvas, "peak_bytes", "peak extra bytes"); },

    "window-mask"(canvas) {
      const r = dataFor(canvas);
      const smallest = Object.keys(r.masks).map(Number).sort((a, b) => a - b)[0];
      const m = r.masks[String(smallest)];
      matrix(canvas, { n: m.length, m: m.length, value: (i, j) => m[i][j] * 0.8, hue: 20,
        rows: count(m.length), cols: count(m.length), rowTitle: "query position", colTitle: "key position",
        tip: (i, j) => `query ${i}, key ${j}: ${m[i][j] ? "visible" : "masked"}` });
    },

    "moe-routing"(canvas) {
      const r = dataFor(canvas), p = r.routing.probs;
      const top = Math.max(...p.flat());
      matrix(canvas, { n: p.length, m: p[0].length, value: (i, j) => p[i][j] / top, hue: 280,
        rows: count(p.length), cols: count(p[0].length), rowTitle: "token", colTitle: "expert (router probability)",
        tip: (i, j) => `token ${i}, expert ${j}: p = ${p[i][j]}${r.routing.chosen[i].includes(j) ? " (chosen)" : ""}` });
    },

    "moe-load"(canvas) {
      const r = dataFor(canvas), load = r.stats.tokens_per_expert;
      new Chart(canvas, { type: "bar",
        data: { labels: load.map((_, i) => `expert ${i}`), datasets: [{ data: load, backgroundColor: PALETTE[3] }] },
        options: base({ plugins: { legend: { display: false } }, scales: { x: axis("expert"), y: axis("tokens routed") } }) });
    },

    "quant-tradeoff"(canvas) {
      const r = dataFor(canvas), rows = r.rows.filter((x) => !x.skipped);
      new Chart(canvas, { type: "bar",
        data: { labels: rows.map((x) => x.variant),
          datasets: [{ label: "smaller by (×)", data: rows.map((x) => x.size_ratio), backgroundColor: PALETTE[0] },
                     { label: "faster by (×)", data: rows.map((x) => x.speedup), backgroundColor: PALETTE[1] }] },
        options: base({ scales: { x: axis("variant"), y: axis("relative to fp32 (×)", { beginAtZero: true }) } }) });
    },

    "hist-pair"(canvas) {
      const r = dataFor(canvas);
      const centres = (h) => h.edges.slice(0, -1).map((e, i) => (e + h.edges[i + 1]) / 2);
      new Chart(canvas, { type: "bar",
        data: { datasets: [
          { type: "bar", label: "after", data: centres(r.after).map((x, i) => ({ x, y: r.after.counts[i] })), backgroundColor: PALETTE[1], barPercentage: 1, categoryPercentage: 1 },
          { type: "line", label: "before", data: centres(r.before).map((x, i) => ({ x, y: r.before.counts[i] })), borderColor: PALETTE[0], pointRadius: 0 }] },
        options: base({ parsing: false, scales: { x: axis("weight", { type: "linear" }), y: logAxis("weights in the bin (log scale)") } }) });
    },

    hist(canvas) {
      const r = dataFor(canvas), h = r[canvas.dataset.key];
      // small values keep their digits (1.2e-4, not 0.0); an all-zero error says so
      const tick = (e) => (e === 0 ? "0" : Math.abs(e) < 0.01 ? e.toExponential(1) : e.toPrecision(2));
      new Chart(canvas, { type: "bar",
        data: { labels: h.edges.slice(0, -1).map(tick), datasets: [{ data: h.counts, backgroundColor: PALETTE[2] }] },
        options: base({ plugins: { legend: { display: false } },
          scales: { x: axis(canvas.dataset.key === "scales" ? "scale (bin start)" : "error per weight (bin start)"), y: axis("count") } }) });
    },
  });

  function attnChart(canvas, key, label) {
    const r = dataFor(canvas);
    const methods = [...new Set(r.rows.map((x) => x.method))];  // + "triton" on a GPU
    const names = { sdpa: "PyTorch SDPA", triton: "our Triton kernel" };
    new Chart(canvas, { type: "line",
      data: { datasets: methods.map((m, i) => ({ label: names[m] || m,
        data: r.rows.filter((x) => x.method === m).map((x) => ({ x: x.seq_len, y: x[key] })),
        borderColor: PALETTE[i], backgroundColor: PALETTE[i] })) },
      options: base({ parsing: false, scales: { x: axis("sequence length (tokens, log scale)", { type: "logarithmic", ticks: window.FP.logTicks }), y: logAxis(`${label} (log scale)`) } }) });
  }
})();
