// The Models card of the status page, for whoever holds an admin key: the loaded model and
// what is attached to it, kept current by the SSE feed /api/models/state while the status
// view is open; the models folder (GET /api/models/list); AI00's load and unload
// (/admin/models/load with a ReloadRequest, /admin/models/unload); states attached and
// detached while serving (/admin/states/load|unload); LoRAs applied and removed while serving
// (/admin/loras/load|unload, listed by GET /admin/loras).

import { adminRequest, modelsList, watchEvents } from "./api.js";
import { byTestId, h } from "./dom.js";
import { formatCount } from "./status.js";

const KEY = "ai00-trio:adminKey"; // sessionStorage: an admin key is not kept past the tab
const RETRY_MS = 2000; // the feed is opened again this long after it ends or fails

let el = {};
let info = null; // the last InfoResponse (/api/models/info), or null with no model
let unavailable = ""; // why there is no model, as the server said
let lastReload = null; // the last reload request seen: a Load after an Unload keeps its options
let hot = []; // LoRAs applied while serving: [{id, path, alpha}]
let lorasAsked = 0; // an answer to an earlier GET /admin/loras than the last is dropped
let files = [];
let busy = null; // {label, started} while an action of this tab runs
let serverLoading = 0; // performance.now() when the feed first said "loading", else 0
let outcome = "";
let feed = null; // the AbortController of the open feed
let retry = 0;
let ticker = 0;
let shown = false;
let onChange = () => {};

const adminKey = () => el.key.value.trim();
const admin = (method, path, body) => adminRequest(method, path, adminKey(), body);
const seconds = (since) => `${((performance.now() - since) / 1000).toFixed(1)} s`;

function showError(message) {
  el.error.textContent = message || "";
  el.error.hidden = !message;
}

function describe(model) {
  return `${model.version}, ${model.num_layer} layers, ${model.num_emb} channels, vocab ${model.num_vocab}`;
}

function button(testId, label, onclick, extra = {}) {
  return h("button", { type: "button", class: "btn small-btn", "data-testid": testId, disabled: Boolean(busy), onclick,
    ...extra }, label);
}

function renderLoaded() {
  el.unload.disabled = !info || Boolean(busy);
  if (!info) {
    el.loaded.textContent = unavailable ? `No model loaded: ${unavailable}` : "No model loaded.";
    el.attached.replaceChildren();
    return;
  }
  const r = info.reload;
  const extras = [r.precision, r.quant ? `${r.quant_type} in ${r.quant} layers` : "", `batch ${r.max_batch}`];
  el.loaded.replaceChildren(
    h("strong", { "data-testid": "models-loaded-path" }, r.model_path),
    ` · ${describe(info.model)} · ${extras.filter(Boolean).join(" · ")}`,
  );
  const states = info.states.map((s) => {
    const spec = r.state.find((entry) => entry.id === s.id);
    return h("li", { "data-testid": "models-state" },
      h("span", { class: "kind" }, "State"),
      h("strong", { "data-testid": "models-state-name" }, s.name),
      h("span", { class: "muted mono" }, spec ? spec.path : s.id),
      spec && spec.default ? h("span", { class: "muted" }, "default") : null,
      button("models-state-detach", "Detach", () => detachState(s)));
  });
  const loras = r.lora.map((lora) => {
    const live = hot.find((entry) => entry.path === lora.path);
    return h("li", { "data-testid": "models-lora" },
      h("span", { class: "kind" }, "LoRA"),
      h("strong", { "data-testid": "models-lora-path" }, lora.path),
      h("span", { class: "muted" }, `alpha ${lora.alpha} · ${live ? "applied while serving" : "merged at load"}`),
      button("models-lora-remove", live ? "Remove" : "Remove (reload)", () => removeLora(lora, live),
        { title: live ? "Take it out of the serving weights" : "Reload the model without it" }));
  });
  el.attached.replaceChildren(...states, ...loras);
}

function fileRow(file) {
  const cells = [
    h("td", { class: "mono", "data-testid": "models-file-name" }, file.path),
    h("td", { class: "num" }, formatCount(file.size) + "B"),
    h("td", {}, file.info ? file.info.version : h("span", { class: "muted" }, "not a model")),
  ];
  if (file.info) {
    const loaded = info && info.reload.model_path === file.path;
    cells.push(h("td", {}, button("models-load", loaded ? "Reload" : "Load", () => load(file.path, loaded))));
  } else {
    const extra = { disabled: Boolean(busy) || !info };
    cells.push(h("td", {}, h("div", { class: "actions" },
      button("models-state-attach", "Attach state", () => attachState(file.path), extra),
      button("models-lora-apply", "Apply LoRA", () => applyLora(file.path), extra))));
  }
  return h("tr", { "data-testid": "models-file" }, cells);
}

function renderFiles() {
  el.files.replaceChildren(
    h("tr", {}, h("th", {}, "File"), h("th", {}, "Size"), h("th", {}, "Model"), h("th", {}, "")),
    ...files.map(fileRow),
  );
}

function renderProgress() {
  const loading = busy || serverLoading;
  el.bar.hidden = !loading;
  if (busy) el.progressText.textContent = `${busy.label} ${seconds(busy.started)}`;
  else if (serverLoading) {
    const serving = info ? ` (${info.reload.model_path} serves meanwhile)` : "";
    el.progressText.textContent = `The server is loading a model${serving}… ${seconds(serverLoading)}`;
  } else el.progressText.textContent = outcome;
  el.progress.hidden = !el.progressText.textContent;
  if (loading && !ticker) ticker = setInterval(renderProgress, 100);
  if (!loading && ticker) {
    clearInterval(ticker);
    ticker = 0;
  }
}

function render() {
  renderLoaded();
  renderFiles();
  renderProgress();
}

async function readLoras() {
  const asked = ++lorasAsked;
  let found = [];
  try {
    found = info ? (await admin("GET", "/admin/loras")).loras : [];
  } catch (err) {
    showError(err.message);
  }
  if (asked === lorasAsked) hot = found;
}

/** One event of /api/models/state: the model's description, or why there is none. */
async function onEvent({ event, data }) {
  const served = info ? info.reload.model_path : null;
  if (event === "unavailable") {
    info = null;
    unavailable = data && data.error ? data.error.message : "";
  } else {
    info = data;
    unavailable = "";
    lastReload = data.reload;
  }
  const loading = Boolean(info && info.status === "loading");
  if (loading && !serverLoading) serverLoading = performance.now();
  if (!loading && serverLoading) {
    if (!busy) outcome = info ? `Now serving ${info.reload.model_path} (the load took ${seconds(serverLoading)}).` : "";
    serverLoading = 0;
  }
  await readLoras();
  render();
  if (!busy && (info ? info.reload.model_path : null) !== served) onChange(); // another client changed it
}

function closeFeed() {
  clearTimeout(retry);
  retry = 0;
  if (feed) feed.abort();
  feed = null;
}

async function openFeed() {
  closeFeed();
  if (!shown || document.hidden || !adminKey()) return;
  const mine = new AbortController();
  feed = mine;
  try {
    await watchEvents("/api/models/state", { signal: mine.signal, onEvent });
  } catch (err) {
    showError(`The model feed failed: ${err.message}`);
  }
  if (feed === mine && !mine.signal.aborted) {
    feed = null;
    retry = setTimeout(openFeed, RETRY_MS);
  }
}

async function refresh() {
  if (!adminKey()) {
    el.body.hidden = true;
    closeFeed();
    return;
  }
  el.body.hidden = false;
  try {
    files = await modelsList();
  } catch (err) {
    files = [];
    showError(`Could not list the models folder: ${err.message}`);
  }
  await readLoras();
  render();
  if (!feed) openFeed();
}

/** A fresh look: old messages gone, the feed opened again, the folder listed again. */
function reopen() {
  showError("");
  outcome = "";
  closeFeed();
  refresh();
}

/** The ReloadRequest for `path`: the current options; a Reload keeps the states and LoRAs. */
function reloadRequest(path, keep, loras) {
  const base = info ? info.reload : lastReload || {};
  return {
    ...base,
    model_path: path,
    lora: keep ? loras || base.lora || [] : [],
    state: keep ? base.state || [] : [],
  };
}

async function run(label, action) {
  busy = { label, started: performance.now() };
  outcome = "";
  showError("");
  render();
  try {
    outcome = (await action()) + ` (${seconds(busy.started)})`;
  } catch (err) {
    showError(err.message);
  } finally {
    busy = null;
    serverLoading = 0; // our own outcome told of this load; its last event can come after the answer
    await refresh();
    onChange();
  }
}

function load(path, keep, loras) {
  return run(`Loading ${path}… (requests wait for it or go to the serving model)`, async () => {
    info = await admin("POST", "/admin/models/load", reloadRequest(path, keep, loras));
    lastReload = info.reload;
    return `Loaded ${path}`;
  });
}

function unload() {
  return run("Unloading (running requests finish first)…", async () => {
    await admin("GET", "/admin/models/unload");
    info = null;
    return "Unloaded";
  });
}

function attachState(path) {
  return run(`Attaching ${path}…`, async () => {
    const state = await admin("POST", "/admin/states/load", { path });
    return `Attached state ${state.name}`;
  });
}

function detachState(state) {
  return run(`Detaching ${state.name}…`, async () => {
    await admin("POST", "/admin/states/unload", { id: state.id });
    return `Detached state ${state.name}`;
  });
}

function applyLora(path) {
  const alpha = Number(el.alpha.value);
  if (!Number.isFinite(alpha)) return showError("LoRA alpha: enter a number.");
  return run(`Applying ${path} (alpha ${alpha})…`, async () => {
    await admin("POST", "/admin/loras/load", { path, alpha });
    return `Applied LoRA ${path}`;
  });
}

function removeLora(lora, live) {
  if (!live) return load(info.reload.model_path, true, info.reload.lora.filter((l) => l.path !== lora.path));
  return run(`Removing ${lora.path}…`, async () => {
    await admin("POST", "/admin/loras/unload", { id: live.id });
    return `Removed LoRA ${lora.path}`;
  });
}

/** `onChange` runs after each action (the header and pickers re-read the server). The card
 * follows the server's feed while shown (the status view is open and the page visible). */
export function initModelsPanel(options = {}) {
  onChange = options.onChange || onChange;
  el = {
    key: byTestId("admin-key"),
    body: byTestId("models-body"),
    loaded: byTestId("models-loaded"),
    unload: byTestId("models-unload"),
    attached: byTestId("models-attached"),
    files: byTestId("models-files"),
    progress: byTestId("models-progress"),
    bar: byTestId("models-progress-bar"),
    progressText: byTestId("models-progress-text"),
    error: byTestId("models-error"),
    alpha: byTestId("models-lora-alpha"),
  };
  try {
    el.key.value = sessionStorage.getItem(KEY) || "";
  } catch {
    /* storage disabled: the key is typed again */
  }
  el.key.addEventListener("change", () => {
    try {
      sessionStorage.setItem(KEY, adminKey());
    } catch {
      /* not remembered */
    }
    reopen();
  });
  el.key.form.addEventListener("submit", (e) => {
    e.preventDefault();
    reopen();
  });
  el.unload.addEventListener("click", unload);
  byTestId("models-refresh").addEventListener("click", reopen);
  document.addEventListener("visibilitychange", () => (document.hidden ? closeFeed() : shown && refresh()));
  return {
    show() {
      shown = true;
      refresh();
    },
    hide() {
      shown = false;
      closeFeed();
    },
  };
}
