// The sampler panel (remembered in localStorage), the initial-state picker and
// the model picker: everything that goes into every generation request.
// Chat conversations keep their own copy of the sampler values and state
// (snapshot / apply below); the panel shows the active one's.

import { listStates, setApiKey } from "./api.js";
import { h, byTestId } from "./dom.js";
import { load, save } from "./storage.js";

const ALL = ["Nucleus", "Typical", "Mirostat"];
const NT = ["Nucleus", "Typical"];

// key: request field (or override field), label, default, bounds, which samplers use it.
const FIELDS = [
  { key: "temperature", label: "Temperature", def: 1, min: 0, max: 5, step: 0.05, samplers: NT },
  { key: "top_p", label: "Top p", def: 0.5, min: 0, max: 1, step: 0.01, samplers: ["Nucleus"] },
  { key: "top_k", label: "Top k", def: 128, min: 0, max: 65536, step: 1, int: true, samplers: NT },
  { key: "typical_tau", label: "Tau", def: 0.5, min: 0, max: 1, step: 0.01, samplers: ["Typical"] },
  { key: "mirostat_tau", label: "Tau", def: 3, min: 0, max: 20, step: 0.1, samplers: ["Mirostat"] },
  { key: "mirostat_rate", label: "Rate", def: 0.1, min: 0, max: 1, step: 0.01, samplers: ["Mirostat"] },
  { key: "presence_penalty", label: "Presence penalty", def: 0.3, min: -2, max: 2, step: 0.05, samplers: NT },
  { key: "frequency_penalty", label: "Frequency penalty", def: 0.3, min: -2, max: 2, step: 0.05, samplers: NT },
  { key: "penalty_decay", label: "Penalty decay", def: 0.99654026, min: 0, max: 1, step: 0.0001, samplers: NT },
  { key: "max_tokens", label: "Max tokens", def: 128, min: 1, max: 1000000, step: 1, int: true, samplers: ALL },
];
const DEFAULTS = { sampler: "Nucleus", stop: "", ...Object.fromEntries(FIELDS.map((f) => [f.key, f.def])) };
const testId = (key) => `setting-${key.replace(/_/g, "-")}`;

let values = { ...DEFAULTS, ...load("settings", {}) };
let model = "";
let statePicker, modelPicker;
const inputs = new Map();
const listeners = new Set();

function store() {
  save("settings", values);
  for (const fn of listeners) fn();
}

/** Called after every change of a sampler value or of the state picked. */
export function onSettingsChange(fn) {
  listeners.add(fn);
}

/** {sampler: {...values}, state}: what a conversation keeps. */
export const settingsSnapshot = () => ({ settings: { ...values }, state: statePicker ? statePicker.value : "" });

/** Show (and use) a conversation's values; missing ones are the current panel's. */
export function applySettings({ settings, state } = {}) {
  if (settings) values = { ...DEFAULTS, ...settings };
  save("settings", values);
  fillInputs();
  if (typeof state === "string") {
    save("state", state);
    if (statePicker) statePicker.value = [...statePicker.options].some((o) => o.value === state) ? state : "";
  }
}

function clean(field, raw) {
  let n = Number(raw);
  if (raw === "" || !Number.isFinite(n)) return field.def;
  n = Math.min(field.max, Math.max(field.min, n));
  return field.int ? Math.round(n) : n;
}

function showSamplerFields() {
  for (const field of FIELDS) {
    inputs.get(field.key).closest(".field").hidden = !field.samplers.includes(values.sampler);
  }
}

function fillInputs() {
  for (const field of FIELDS) inputs.get(field.key).value = String(values[field.key]);
  byTestId("setting-sampler").value = values.sampler;
  byTestId("setting-stop").value = values.stop;
  showSamplerFields();
}

/** "a, b\n\\n\\nUser:" → ["a", "b", "\n\nUser:"]; "\," is a literal comma. */
export function parseStops(text) {
  return String(text || "")
    .split(/(?<!\\),|\n/)
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => s.replace(/\\(n|t|r|,|\\)/g, (_, c) => ({ n: "\n", t: "\t", r: "\r", ",": ",", "\\": "\\" })[c]));
}

export function initSettings() {
  const key = byTestId("setting-api-key");
  key.value = load("apiKey", "");
  setApiKey(key.value);
  key.addEventListener("input", () => {
    setApiKey(key.value);
    save("apiKey", key.value.trim());
  });
  key.addEventListener("change", () => loadStates());
  key.form.addEventListener("submit", (e) => e.preventDefault());

  const grid = byTestId("sampler-fields");
  for (const field of FIELDS) {
    const input = h("input", {
      type: "number",
      inputmode: field.min >= 0 ? "decimal" : null,
      min: String(field.min),
      max: String(field.max),
      step: String(field.step),
      id: testId(field.key),
      "data-testid": testId(field.key),
      oninput: () => {
        values[field.key] = clean(field, input.value);
        store();
      },
      onchange: () => {
        values[field.key] = clean(field, input.value);
        input.value = String(values[field.key]);
        store();
      },
    });
    inputs.set(field.key, input);
    grid.append(h("div", { class: "field" }, h("label", { for: input.id }, field.label), input));
  }

  const sampler = byTestId("setting-sampler");
  sampler.addEventListener("change", () => {
    values.sampler = ALL.includes(sampler.value) ? sampler.value : "Nucleus";
    showSamplerFields();
    store();
  });
  const stop = byTestId("setting-stop");
  stop.addEventListener("input", () => {
    values.stop = stop.value;
    store();
  });
  byTestId("setting-reset").addEventListener("click", () => {
    values = { ...DEFAULTS };
    store();
    fillInputs();
  });
  fillInputs();

  statePicker = byTestId("state-picker");
  statePicker.addEventListener("change", () => {
    save("state", statePicker.value);
    for (const fn of listeners) fn();
  });
  modelPicker = byTestId("model-picker");
  modelPicker.addEventListener("change", () => {
    model = modelPicker.value;
    save("model", model);
    for (const fn of modelListeners) fn(model);
  });
  loadStates();
}

const modelListeners = new Set();

/** Called with the model id when the user picks another one. */
export function onModelChange(fn) {
  modelListeners.add(fn);
}

/** Fill the model picker with the served ids; keeps the stored choice when it is still served. */
export function setModels(ids, detail = "") {
  const wanted = load("model", "");
  modelPicker.replaceChildren(...ids.map((id) => h("option", { value: id }, id)));
  model = ids.includes(wanted) ? wanted : ids[0] || "";
  modelPicker.value = model;
  modelPicker.disabled = !ids.length;
  byTestId("model-hint").textContent = ids.length
    ? `${ids.length} served${detail ? ` · ${detail}` : ""}`
    : "The server serves no model right now.";
  return model;
}

/** Fill the initial-state picker from GET /api/states. */
export async function loadStates() {
  const hint = byTestId("state-hint");
  const wanted = load("state", "");
  let states = [];
  try {
    const body = await listStates();
    states = Array.isArray(body && body.data) ? body.data : [];
    hint.textContent = states.length ? "" : "The server offers no saved states.";
  } catch (err) {
    hint.textContent = err.status === 404 ? "The server offers no saved states." : `Could not load states: ${err.message}`;
  }
  const options = [];
  if (!states.some((s) => s.default)) options.push(h("option", { value: "" }, "Model default (no state)"));
  for (const s of states) {
    const name = s.name || s.id;
    options.push(h("option", { value: s.default ? "" : String(s.id) }, s.default ? `${name} (default)` : name));
  }
  statePicker.replaceChildren(...options);
  statePicker.value = options.some((o) => o.value === wanted) ? wanted : "";
}

export const modelId = () => model || "rwkv";

/** Sampling fields shared by every request (chat, continuation, paper). */
export function samplerParams() {
  const v = values;
  const params = {
    temperature: v.temperature,
    top_p: v.top_p,
    top_k: v.top_k,
    presence_penalty: v.presence_penalty,
    frequency_penalty: v.frequency_penalty,
    penalty_decay: v.penalty_decay,
    max_tokens: v.max_tokens,
  };
  const stop = parseStops(v.stop);
  if (stop.length) params.stop = stop;
  if (v.sampler === "Typical") {
    params.sampler_override = {
      type: "Typical",
      tau: v.typical_tau,
      top_k: v.top_k,
      temperature: v.temperature,
      presence_penalty: v.presence_penalty,
      frequency_penalty: v.frequency_penalty,
      penalty_decay: v.penalty_decay,
    };
  } else if (v.sampler === "Mirostat") {
    params.sampler_override = { type: "Mirostat", tau: v.mirostat_tau, rate: v.mirostat_rate };
  }
  return params;
}

/** {model, ...sampler fields, state?} — the common part of every request body. */
export function requestBase(overrides = {}) {
  const body = { model: modelId(), ...samplerParams(), ...overrides };
  const state = statePicker ? statePicker.value : "";
  if (state) body.state = state;
  return body;
}
