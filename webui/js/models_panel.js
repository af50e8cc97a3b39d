// The Models card of the status page, for whoever holds an admin key: the loaded model
// (GET /api/models/info), the models folder (GET /api/models/list), and AI00's
// load / unload (POST /admin/models/load with a ReloadRequest, GET /admin/models/unload).

import { adminRequest, modelsInfo, modelsList } from "./api.js";
import { byTestId, h } from "./dom.js";
import { formatCount } from "./status.js";

const KEY = "ai00-trio:adminKey"; // sessionStorage: an admin key is not kept past the tab
let el = {};
let info = null; // the last /api/models/info answer, or null
let busy = false;
let onChange = () => {};

const adminKey = () => el.key.value.trim();

function showError(message) {
  el.error.textContent = message || "";
  el.error.hidden = !message;
}

function describe(model) {
  if (!model) return "";
  return `${model.version}, ${model.num_layer} layers, ${model.num_emb} channels, vocab ${model.num_vocab}`;
}

function renderLoaded(error) {
  if (!info) {
    el.loaded.textContent = error ? `No model loaded: ${error}` : "No model loaded.";
    el.unload.disabled = true;
    return;
  }
  const r = info.reload;
  const extras = [
    r.precision,
    r.quant ? `${r.quant_type} in ${r.quant} layers` : "",
    r.lora.length ? `LoRA: ${r.lora.map((l) => l.path).join(", ")}` : "",
    info.states.length ? `states: ${info.states.map((s) => s.name).join(", ")}` : "",
  ].filter(Boolean);
  el.loaded.replaceChildren(
    h("strong", { "data-testid": "models-loaded-path" }, r.model_path),
    ` · ${describe(info.model)} · ${extras.join(" · ")}`,
  );
  el.unload.disabled = busy;
}

function fileRow(file) {
  const isModel = Boolean(file.info);
  const cells = [
    h("td", { class: "mono", "data-testid": "models-file-name" }, file.path),
    h("td", { class: "num" }, formatCount(file.size) + "B"),
    h("td", {}, isModel ? file.info.version : h("span", { class: "muted" }, "not a model")),
  ];
  if (isModel) {
    const loaded = info && info.reload.model_path === file.path;
    cells.push(
      h(
        "td",
        {},
        h(
          "button",
          {
            type: "button",
            class: "btn small-btn",
            "data-testid": "models-load",
            disabled: busy,
            onclick: () => load(file.path),
          },
          loaded ? "Reload" : "Load",
        ),
      ),
    );
  } else {
    // A state or LoRA file to attach on the next load.
    const pick = (kind) =>
      h("label", { class: "check" }, h("input", { type: "checkbox", "data-kind": kind, "data-path": file.path }), ` ${kind}`);
    cells.push(h("td", { class: "attach" }, pick("state"), pick("LoRA")));
  }
  return h("tr", { "data-testid": "models-file" }, cells);
}

async function refresh() {
  if (!adminKey()) {
    el.body.hidden = true;
    return;
  }
  el.body.hidden = false;
  showError("");
  let error = "";
  try {
    info = await modelsInfo();
  } catch (err) {
    info = null;
    error = err.message;
  }
  renderLoaded(error);
  try {
    const files = await modelsList();
    el.files.replaceChildren(
      h("tr", {}, h("th", {}, "File"), h("th", {}, "Size"), h("th", {}, "Model"), h("th", {}, "")),
      ...files.map(fileRow),
    );
  } catch (err) {
    el.files.replaceChildren();
    showError(`Could not list the models folder: ${err.message}`);
  }
}

/** AI00's ReloadRequest for `path`: the current options, the attachments ticked in the table. */
function reloadRequest(path) {
  const base = info ? { ...info.reload } : {};
  const ticked = (kind) =>
    [...el.files.querySelectorAll(`input[data-kind="${kind}"]:checked`)].map((box) => box.dataset.path);
  return {
    ...base,
    model_path: path,
    lora: ticked("LoRA").map((p) => ({ path: p, alpha: 1 })),
    state: ticked("state").map((p) => ({ path: p })),
  };
}

async function run(label, action) {
  busy = true;
  showError("");
  el.progress.textContent = label;
  el.progress.hidden = false;
  el.body.querySelectorAll("button").forEach((b) => (b.disabled = true));
  const started = performance.now();
  try {
    await action();
    el.progress.textContent = `Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`;
  } catch (err) {
    el.progress.hidden = true;
    showError(err.message);
  } finally {
    busy = false;
    await refresh();
    onChange();
  }
}

function load(path) {
  return run(`Loading ${path}… (requests wait until it is done)`, () =>
    adminRequest("POST", "/admin/models/load", adminKey(), reloadRequest(path)),
  );
}

function unload() {
  return run("Unloading…", () => adminRequest("GET", "/admin/models/unload", adminKey()));
}

/** `onChange` runs after a load or unload (the header and pickers re-read the server). */
export function initModelsPanel(options = {}) {
  onChange = options.onChange || onChange;
  el = {
    key: byTestId("admin-key"),
    body: byTestId("models-body"),
    loaded: byTestId("models-loaded"),
    unload: byTestId("models-unload"),
    files: byTestId("models-files"),
    progress: byTestId("models-progress"),
    error: byTestId("models-error"),
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
    refresh();
  });
  el.key.form.addEventListener("submit", (e) => {
    e.preventDefault();
    refresh();
  });
  el.unload.addEventListener("click", unload);
  byTestId("models-refresh").addEventListener("click", refresh);
  refresh();
  return { refresh };
}
