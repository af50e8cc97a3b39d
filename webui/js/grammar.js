// The grammar box for chat: none / JSON object / JSON schema / BNF.
// Produces response_format or bnf_schema, or an error that blocks sending.

import { byTestId } from "./dom.js";
import { load, save } from "./storage.js";

const KINDS = ["none", "json_object", "json_schema", "bnf"];

const EXAMPLES = {
  json_schema: JSON.stringify(
    {
      type: "object",
      properties: { name: { type: "string" }, age: { type: "integer" } },
      required: ["name", "age"],
    },
    null,
    2,
  ),
  bnf: 'start::=answer;\nanswer::="yes"|"no";',
};

const PLACEHOLDERS = {
  json_schema: '{"type": "object", "properties": {…}}',
  bnf: 'start::=answer;\nanswer::="yes"|"no";',
};

const EMPTY = { kind: "none", texts: { json_schema: "", bnf: "" } };
let state = { ...EMPTY, ...load("grammar", {}) };
let kindSelect, textArea, errorBox, exampleButton;
let timer = 0;
const listeners = new Set();

function store() {
  save("grammar", state);
  for (const fn of listeners) fn();
}

/** Called after every change of the grammar kind or text. */
export function onGrammarChange(fn) {
  listeners.add(fn);
}

/** {kind, texts}: what a chat conversation keeps. */
export const grammarSnapshot = () => ({ kind: state.kind, texts: { ...state.texts } });

/** Show (and use) a conversation's grammar. */
export function applyGrammar(snapshot) {
  const texts = snapshot && typeof snapshot.texts === "object" && snapshot.texts ? snapshot.texts : {};
  state = { kind: KINDS.includes(snapshot && snapshot.kind) ? snapshot.kind : "none", texts: { ...EMPTY.texts, ...texts } };
  save("grammar", state);
  render();
}

/** {params} with the fields to add to a chat request, or {error}. */
export function grammarParams() {
  const kind = state.kind;
  if (textArea && !textArea.closest(".grammar-body").hidden) state.texts[kind] = textArea.value;
  const text = (state.texts[kind] || "").trim();
  if (kind === "json_object") return { params: { response_format: { type: "json_object" } } };
  if (kind === "json_schema") {
    if (!text) return { error: "The JSON schema box is empty." };
    let schema;
    try {
      schema = JSON.parse(text);
    } catch (err) {
      return { error: `Invalid JSON in the schema: ${err.message}` };
    }
    if (!schema || typeof schema !== "object" || Array.isArray(schema)) {
      return { error: "The JSON schema must be a JSON object." };
    }
    return { params: { response_format: { type: "json_schema", json_schema: { name: "ui", schema } } } };
  }
  if (kind === "bnf") {
    if (!text) return { error: "The BNF grammar box is empty." };
    return { params: { bnf_schema: text } };
  }
  return { params: {} };
}

function showError(message) {
  errorBox.textContent = message || "";
  errorBox.hidden = !message;
  textArea.classList.toggle("invalid", Boolean(message));
}

/** Validate now and show the result; returns the same thing as grammarParams(). */
export function checkGrammar() {
  const result = grammarParams();
  showError(result.error);
  return result;
}

function render() {
  const kind = state.kind;
  kindSelect.value = kind;
  const hasText = kind === "json_schema" || kind === "bnf";
  textArea.closest(".grammar-body").hidden = !hasText;
  if (hasText) {
    textArea.value = state.texts[kind] || "";
    textArea.placeholder = PLACEHOLDERS[kind];
  }
  showError("");
}

export function initGrammar() {
  kindSelect = byTestId("grammar-kind");
  textArea = byTestId("grammar-text");
  errorBox = byTestId("grammar-error");
  exampleButton = byTestId("grammar-example");
  if (!KINDS.includes(state.kind)) state.kind = "none";

  kindSelect.addEventListener("change", () => {
    state.kind = KINDS.includes(kindSelect.value) ? kindSelect.value : "none";
    store();
    render();
  });
  textArea.addEventListener("input", () => {
    state.texts[state.kind] = textArea.value;
    store();
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (textArea.value.trim()) checkGrammar();
      else showError("");
    }, 400);
  });
  exampleButton.addEventListener("click", () => {
    textArea.value = EXAMPLES[state.kind] || "";
    state.texts[state.kind] = textArea.value;
    store();
    checkGrammar();
  });
  render();
}
