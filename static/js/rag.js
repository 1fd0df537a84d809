// Forward Pass: chapter 6's charts (retrieval evaluation, semantic-cache threshold sweep).
(() => {
  "use strict";
  const draw = (window.FP_CHARTS = window.FP_CHARTS || {});
  const { dataFor } = window.FP;
  const PALETTE = ["#4263eb", "#e8590c", "#2f9e44"];

  Object.assign(draw, {
    // Recall@5 for each chunker (groups) and retriever (bars).
    "rag-eval"(canvas) {
      const r = dataFor(canvas);
      const chunkers = [...new Set(r.rows.map((row) => row.chunker))];
      const retrievers = [...new Set(r.rows.map((row) => row.retriever))];
      const value = (c, m) => r.rows.find((row) => row.chunker === c && row.retriever === m)?.recall_at_5;
      new Chart(canvas, {
        type: "bar",
        data: { labels: chunkers, datasets: retrievers.map((m, i) => ({
          label: m, data: chunkers.map((c) => value(c, m)), backgroundColor: PALETTE[i % 3] })) },
        options: { maintainAspectRatio: false, animation: false,
          scales: { x: { title: { display: true, text: "chunker" } },
                    y: { min: 0, max: 1, title: { display: true, text: "recall@5" } } } },
      });
    },

    // Precision, recall and hit rate against the similarity threshold, with the word check
    // (solid) and by cosine alone (dashed); the slider beside it marks a threshold and lists
    // the false hits there: those the check let through, and those it caught.
    "cache-sweep"(canvas) {
      const r = dataFor(canvas).sweep, v = r.verified;
      const line = (label, ys, c, dash) => ({ label, data: r.thresholds.map((x, i) => ({ x, y: ys[i] })),
        borderColor: c, backgroundColor: c, pointRadius: 0, borderWidth: 2, borderDash: dash ? [5, 4] : [] });
      const marker = { label: "chosen", data: [], borderColor: "#868e96", borderDash: [2, 3], pointRadius: 0 };
      const chart = new Chart(canvas, {
        type: "line",
        data: { datasets: [
          line("precision, checked", v.precision, PALETTE[0]), line("recall, checked", v.recall, PALETTE[1]),
          line("hit rate, checked", v.hit_rate, PALETTE[2]),
          line("precision, cosine alone", r.precision, PALETTE[0], true),
          line("recall, cosine alone", r.recall, PALETTE[1], true),
          line("hit rate, cosine alone", r.hit_rate, PALETTE[2], true), marker] },
        options: { maintainAspectRatio: false, animation: false, parsing: false,
          scales: { x: { type: "linear", min: r.thresholds[0], max: r.thresholds.at(-1),
                         title: { display: true, text: "cosine similarity threshold" } },
                    y: { min: 0, max: 1, title: { display: true, text: "share of pairs" } } } },
      });
      const box = canvas.closest(".cache-final")?.querySelector(".cache-slider");
      const slider = box?.querySelector("[data-cache-threshold]");
      if (!slider) return;
      const item = (text) => Object.assign(document.createElement("li"), { textContent: text });
      const fill = (list, items) => list.replaceChildren(...(items.length ? items : [item("none")]));
      const pair = (p) => `“${p.a}” ≈ “${p.b}” (similarity ${p.similarity.toFixed(3)})`;
      const words = (ws) => (ws.length ? ws.join(" ") : "nothing");
      const show = () => {
        const i = +slider.value, t = r.thresholds[i];
        box.querySelector("output").textContent = t.toFixed(2);
        box.querySelector(".cache-stats").textContent =
          `with the check: precision ${v.precision[i].toFixed(3)} · recall ${v.recall[i].toFixed(3)} · ` +
          `hit rate ${v.hit_rate[i].toFixed(3)} — cosine alone: precision ${r.precision[i].toFixed(3)} · ` +
          `recall ${r.recall[i].toFixed(3)} · hit rate ${r.hit_rate[i].toFixed(3)}`;
        fill(box.querySelector(".false-hits"), v.false_hits[i].slice(0, 12).map((j) => {
          const p = r.pairs[j], [a, b] = p.differing;
          return item(`${pair(p)}: no number, negation, swap or near-copy replacement found; ` +
            `the words that differ (${words(a)} / ${words(b)}) are left to the embedding`);
        }));
        const kept = new Set(v.false_hits[i]);
        fill(box.querySelector(".caught-hits"), r.false_hits[i].filter((j) => !kept.has(j)).slice(0, 12)
          .map((j) => item(`${pair(r.pairs[j])}: ${r.pairs[j].reasons.join("; ")}`)));
        marker.data = [{ x: t, y: 0 }, { x: t, y: 1 }];
        chart.update("none");
      };
      slider.value = String(Math.max(0, r.thresholds.indexOf(r.default_threshold)));
      slider.addEventListener("input", show);
      show();
    },
  });
})();
