// Status mode: model, adapter, throughput and queue, polled from /api/status
// every 2 s while the panel is visible (and the page is not in the background);
// each poll is also a sample of the live chart.

import { getStatus, listModels } from "./api.js";
import { createChart } from "./chart.js";
import { byTestId, h } from "./dom.js";
import { formatRate, subscribe } from "./meter.js";

const POLL_MS = 2000;
let visible = false;
let timer = 0;
let inflight = null;
let el = {};
let chart = null;

const dash = "—";
const show = (v) => (v === null || v === undefined || v === "" ? dash : String(v));

export function formatCount(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return show(n);
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e8 ? 0 : 1)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} K`;
  return String(n);
}

function fill(dl, prefix, rows) {
  dl.replaceChildren(
    ...rows.flatMap(([key, label, value]) => [
      h("dt", {}, label),
      h("dd", { "data-testid": `${prefix}-${key}`, title: show(value) }, show(value)),
    ]),
  );
}

function render(status) {
  const m = (status && status.model) || {};
  const a = (status && status.adapter) || {};
  const q = (status && status.queue) || {};
  fill(el.modelList, "status-model", [
    ["name", "Name", m.name],
    ["version", "Version", m.version],
    ["layers", "Layers", m.n_layer],
    ["embd", "Embedding", m.n_embd],
    ["heads", "Heads", m.n_head],
    ["vocab", "Vocabulary", typeof m.n_vocab === "number" ? m.n_vocab.toLocaleString() : m.n_vocab],
    ["parameters", "Parameters", formatCount(m.parameters)],
    ["precision", "Precision", m.precision],
    ["quant", "Quantization", m.quant === null || m.quant === "" || m.quant === undefined ? (status && status.model ? "none" : null) : m.quant],
    ["path", "File", m.path],
  ]);
  const adapterRows = [
    ["name", "GPU", a.name],
    ["backend", "Backend", a.backend],
  ];
  // several executors ([adapter] gpus / count): each one's busy slots, in order
  const executors = (status && status.executors) || [];
  if (executors.length > 1) {
    const busy = executors.map((e) => `${e.queue.active}/${e.queue.max_batch}`).join(" · ");
    adapterRows.push(["executors", `Executors (${executors.length})`, `${busy} slots busy`]);
  }
  fill(el.adapterList, "status-adapter", adapterRows);
  const active = typeof q.active === "number" ? q.active : null;
  // The server's figure is its last step's rate: it stays put when nothing runs, so idle says idle.
  const tps = status && typeof status.tokens_per_second === "number" ? status.tokens_per_second : null;
  const idle = active === 0;
  el.serverTps.textContent = tps === null ? dash : idle ? "idle" : formatRate(tps);
  el.serverUnit.hidden = tps === null || idle;
  const max = typeof q.max_batch === "number" ? q.max_batch : null;
  el.queueActive.textContent = show(active);
  el.queueMax.textContent = show(max);
  el.queueWaiting.textContent = show(q.waiting);
  const ratio = active !== null && max ? Math.min(1, active / max) : 0;
  el.queueBar.value = ratio;
  el.queueBar.textContent = `${Math.round(ratio * 100)}%`;
  if (status && max) chart.push({ t: performance.now(), tps: idle ? null : tps, active, max });
}

function showError(message) {
  el.error.textContent = message || "";
  el.error.hidden = !message;
}

async function poll() {
  timer = 0;
  if (!visible || document.hidden || inflight) return;
  const mine = new AbortController();
  inflight = mine;
  try {
    const status = await getStatus({ signal: mine.signal });
    render(status);
    showError("");
    el.updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (mine.signal.aborted) return;
    render(null);
    showError(err.status === 503 ? `The server is up but serves no model: ${err.message}` : err.message);
    el.updated.textContent = `Tried ${new Date().toLocaleTimeString()}`;
  } finally {
    if (inflight === mine) {
      inflight = null;
      if (visible && !document.hidden && !timer) timer = setTimeout(poll, POLL_MS);
    }
  }
}

function stopPolling() {
  clearTimeout(timer);
  timer = 0;
  if (inflight) inflight.abort();
  inflight = null;
}

async function loadModels() {
  try {
    const body = await listModels();
    const ids = (Array.isArray(body && body.data) ? body.data : []).map((m) => m.id);
    el.models.textContent = ids.length ? ids.join(", ") : "none";
  } catch (err) {
    el.models.textContent = err.message;
  }
}

export function initStatus() {
  el = {
    modelList: byTestId("status-model-list"),
    adapterList: byTestId("status-adapter-list"),
    serverTps: byTestId("status-tps-server"),
    serverUnit: byTestId("status-tps-unit"),
    clientUnit: byTestId("status-tps-client-unit"),
    clientTps: byTestId("status-tps-client"),
    clientLast: byTestId("status-tps-last"),
    queueActive: byTestId("status-queue-active"),
    queueMax: byTestId("status-queue-max"),
    queueWaiting: byTestId("status-queue-waiting"),
    queueBar: byTestId("status-queue-bar"),
    error: byTestId("status-error"),
    updated: byTestId("status-updated"),
    models: byTestId("status-models"),
  };
  chart = createChart(byTestId("status-chart"), { gapMs: POLL_MS * 2.5 });
  render(null);
  subscribe(({ live, streams, last }) => {
    const running = streams > 0 || live > 0;
    el.clientTps.textContent = running ? formatRate(live) : "no generation running";
    el.clientUnit.textContent = running ? "tok/s (streamed chunks)" : "";
    el.clientLast.textContent = last
      ? `Last generation: ${last.tokens} tokens${last.tps > 0 ? ` at ${formatRate(last.tps)} tok/s` : ""}`
      : "No generation yet in this tab.";
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) stopPolling();
    else if (visible) poll();
  });
  return {
    stop: () => false,
    show() {
      visible = true;
      loadModels();
      stopPolling();
      poll();
    },
    hide() {
      visible = false;
      stopPolling();
    },
  };
}
