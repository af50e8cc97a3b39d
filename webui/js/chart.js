// The status page's live chart: the server's tokens/s and its batch occupancy (active slots /
// max batch) over the last two minutes (less on a page opened since), drawn as inline SVG from the /api/status samples.
// A sample with no active slot is idle: it gets no rate point, so the line breaks there.

const NS = "http://www.w3.org/2000/svg";
const SPAN_MS = 120_000; // the most the chart shows
const MIN_SPAN_MS = 30_000;
const H = 150; // px, as the CSS gives it; the width is the element's own
const PAD = { left: 70, right: 40, top: 12, bottom: 18 };

function svg(tag, attrs = {}, text = "") {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text) node.textContent = text;
  return node;
}

/** 1, 2 or 5 times a power of ten, at least `value`: a round top for the rate axis. */
export function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((top) => top >= value);
}

/** Runs of consecutive samples that `keep` accepts, split where polling paused (`gapMs`). */
function runs(samples, gapMs, keep) {
  const found = [];
  let run = [];
  let previous = null;
  for (const sample of samples) {
    if (!keep(sample) || (previous && sample.t - previous.t > gapMs)) {
      if (run.length) found.push(run);
      run = [];
    }
    if (keep(sample)) run.push(sample);
    previous = sample;
  }
  if (run.length) found.push(run);
  return found;
}

/**
 * A chart drawn into `root` (an <svg>); push({t, tps, active, max}) per poll, where tps is null
 * while idle. `gapMs`: samples further apart than this are not joined (polling was paused).
 */
export function createChart(root, { gapMs = 5000 } = {}) {
  let samples = [];
  const y0 = H - PAD.bottom;
  const y1 = PAD.top;

  function draw() {
    const W = Math.max(200, root.clientWidth || 600); // drawn in pixels: the labels keep their shape
    root.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const x0 = PAD.left;
    const x1 = W - PAD.right;
    const now = samples.length ? samples[samples.length - 1].t : 0;
    // The window grows from MIN_SPAN_MS to SPAN_MS as samples come, so a new page is not all margin.
    const span = Math.min(SPAN_MS, Math.max(MIN_SPAN_MS, samples.length ? now - samples[0].t : 0));
    const start = now - span;
    const busy = samples.filter((s) => s.tps !== null);
    const top = niceCeiling(Math.max(0, ...busy.map((s) => s.tps)));
    const x = (t) => x0 + ((t - start) / span) * (x1 - x0);
    const yRate = (v) => y0 - (v / top) * (y0 - y1);
    const yShare = (f) => y0 - Math.min(1, Math.max(0, f)) * (y0 - y1);
    const fmt = (n) => n.toFixed(0);

    // Occupancy: a filled step area, one step per sample interval.
    let area = "";
    for (const run of runs(samples, gapMs, (s) => s.max > 0)) {
      area += `M${fmt(x(run[0].t))},${y0}`;
      run.forEach((s, i) => {
        const next = i + 1 < run.length ? run[i + 1].t : s.t;
        area += ` L${fmt(x(s.t))},${fmt(yShare(s.active / s.max))} L${fmt(x(next))},${fmt(yShare(s.active / s.max))}`;
      });
      area += ` L${fmt(x(run[run.length - 1].t))},${y0} Z`;
    }
    const rateRuns = runs(samples, gapMs, (s) => s.tps !== null);
    const rate = rateRuns
      .map((run) => run.map((s, i) => `${i ? "L" : "M"}${fmt(x(s.t))},${fmt(yRate(s.tps))}`).join(" "))
      .join(" ");
    const dots = rateRuns.filter((run) => run.length === 1).map(([s]) =>
      svg("circle", { class: "chart-rate-dot", cx: fmt(x(s.t)), cy: fmt(yRate(s.tps)), r: 2.5 }));

    root.replaceChildren(
      svg("line", { class: "chart-axis", x1: x0, y1: y0, x2: x1, y2: y0 }),
      svg("line", { class: "chart-grid", x1: x0, y1: y1, x2: x1, y2: y1 }),
      svg("line", { class: "chart-grid", x1: x0, y1: (y0 + y1) / 2, x2: x1, y2: (y0 + y1) / 2 }),
      svg("path", { class: "chart-occupancy", "data-testid": "chart-occupancy", d: area }),
      svg("path", { class: "chart-rate", "data-testid": "chart-rate", d: rate }),
      ...dots,
      svg("text", { class: "chart-label chart-rate-label", x: x0 - 6, y: y1 + 4, "text-anchor": "end" }, busy.length ? `${top} tok/s` : "tok/s"),
      svg("text", { class: "chart-label chart-rate-label", x: x0 - 6, y: y0 + 4, "text-anchor": "end" }, "0"),
      svg("text", { class: "chart-label chart-occupancy-label", x: x1 + 6, y: y1 + 4 }, "100%"),
      svg("text", { class: "chart-label chart-occupancy-label", x: x1 + 6, y: y0 + 4 }, "0%"),
      svg("text", { class: "chart-label", x: x0, y: H - 3 }, span >= SPAN_MS ? "2 min ago" : `${Math.round(span / 1000)} s ago`),
      svg("text", { class: "chart-label", x: x1, y: H - 3, "text-anchor": "end" }, "now"),
      ...(busy.length ? [] : [svg("text", { class: "chart-label chart-idle", "data-testid": "chart-idle",
        x: (x0 + x1) / 2, y: (y0 + y1) / 2 + 4, "text-anchor": "middle" },
      samples.length ? "idle: no generation running" : "waiting for the first sample")]),
    );
    root.dataset.samples = String(samples.length);
    root.dataset.busySamples = String(busy.length);
  }

  draw();
  new ResizeObserver(draw).observe(root);
  return {
    push(sample) {
      samples.push(sample);
      samples = samples.filter((s) => s.t >= sample.t - SPAN_MS);
      draw();
    },
  };
}
