// Forward Pass: chapter 4's training charts (train a tiny GPT, distillation), live and final.
(() => {
  "use strict";
  const draw = (window.FP_CHARTS = window.FP_CHARTS || {});
  const { dataFor } = window.FP;
  const PALETTE = ["#4263eb", "#e8590c", "#2f9e44", "#868e96"];
  const line = (label, data, i, extra = {}) => ({ label, data, borderColor: PALETTE[i % 4],
    backgroundColor: PALETTE[i % 4], pointRadius: 2, borderWidth: 2, ...extra });
  const lossAxes = (ylabel) => ({
    x: { type: "linear", title: { display: true, text: "step" } },
    y: { title: { display: true, text: ylabel } },
  });
  const options = (ylabel) => ({ maintainAspectRatio: false, animation: false, scales: lossAxes(ylabel) });

  // Streamed evaluation points (<li data-loss-point data-series data-x data-y>) join the live
  // chart of their run, one dataset per series, in the order the series first appear.
  function plotPoints(live) {
    const canvas = live.querySelector("canvas[data-chart=train-live]");
    const chart = canvas && Chart.getChart(canvas);
    if (!chart) return;
    const fresh = [...live.querySelectorAll("li[data-loss-point]:not([data-plotted])")];
    fresh.forEach((li) => {
      li.dataset.plotted = "1";
      let ds = chart.data.datasets.find((d) => d.label === li.dataset.series);
      if (!ds) {
        ds = line(li.dataset.series, [], chart.data.datasets.length);
        if (li.dataset.series.includes("teacher")) Object.assign(ds, { borderDash: [5, 4], pointRadius: 0 });
        chart.data.datasets.push(ds);
      }
      ds.data.push({ x: +li.dataset.x, y: +li.dataset.y });
    });
    if (fresh.length) chart.update("none");
  }

  function drawNew(live) {
    live.querySelectorAll("canvas[data-chart]:not([data-drawn])").forEach((canvas) => {
      canvas.dataset.drawn = "1";
      draw[canvas.dataset.chart]?.(canvas);
    });
    plotPoints(live);
  }

  Object.assign(draw, {
    // Empty at first; the points arrive with the run's events (plotPoints). Out-of-band swaps
    // land beside it, so a MutationObserver on its panel picks them up, whatever htmx fires.
    "train-live"(canvas) {
      new Chart(canvas, { type: "line", data: { datasets: [] }, options: options(canvas.dataset.ylabel || "loss") });
      const live = canvas.closest("[data-train-live], .train-live, .distill-live");
      if (!live || live.dataset.observed) return;
      live.dataset.observed = "1";
      new MutationObserver(() => drawNew(live)).observe(live, { childList: true, subtree: true });
      drawNew(live);
    },

    // One head's attention (T x T, causal: the upper triangle is blank).
    "attention-head"(canvas) {
      const d = dataFor(canvas);
      const a = d.attention || d;
      if (!a || !a.weights) return;
      const n = a.tokens.length;
      canvas.style.width = "100%";
      window.FP.matrix(canvas, {
        n, m: n, rows: a.tokens, cols: a.tokens, tokens: true,
        rowTitle: "token attending", colTitle: "attended to",
        value: (i, j) => (j > i ? null : a.weights[i][j]),
        tip: (i, j) => (j > i ? "masked" : `${a.tokens[i]} → ${a.tokens[j]}: ${a.weights[i][j]}`),
      });
    },

    // A finished run: every step's loss (grey) and the fixed-batch train/validation losses.
    "train-curves"(canvas) {
      const r = dataFor(canvas);
      const steps = r.step_loss.steps.map((x, i) => ({ x, y: r.step_loss.loss[i] }));
      new Chart(canvas, {
        type: "line",
        data: { datasets: [
          line("each step's batch", steps, 3, { pointRadius: 0, borderWidth: 1 }),
          line("training", r.evals.map((e) => ({ x: e.step, y: e.train })), 0),
          line("validation", r.evals.map((e) => ({ x: e.step, y: e.val })), 1),
        ] },
        options: options("loss (nats per token)"),
      });
    },

    // Distillation: both students' validation curves, and the teacher's loss as a line.
    "distill-curves"(canvas) {
      const r = dataFor(canvas);
      const curve = (name) => r.students[name].evals.map((e) => ({ x: e.step, y: e.val }));
      const datasets = [line("soft labels (SmolLM2)", curve("soft"), 0), line("hard labels (text)", curve("hard"), 1)];
      if (r.teacher_val !== null) {
        const last = r.students.soft.evals.at(-1).step;
        datasets.push(line("SmolLM2 itself", [{ x: 0, y: r.teacher_val }, { x: last, y: r.teacher_val }], 3,
          { borderDash: [5, 4], pointRadius: 0 }));
      }
      new Chart(canvas, { type: "line", data: { datasets }, options: options("validation loss (nats per token)") });
    },
  });
})();
