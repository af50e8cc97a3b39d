// Chat mode: a streamed multi-turn conversation kept in localStorage.

import { streamChat } from "./api.js";
import { copyText } from "./clipboard.js";
import { autosize, byTestId, flashLabel, frameThrottle, h, nearBottom } from "./dom.js";
import { checkGrammar } from "./grammar.js";
import { renderMarkdown } from "./markdown.js";
import { formatRate, startGeneration } from "./meter.js";
import { requestBase } from "./settings.js";
import { load, save } from "./storage.js";

let messages = []; // {role, content, stats?: {tokens, tps, finish}}
let controller = null;
let editing = -1;
let list, input, sendButton, stopButton, errorBox, onBusy;
let saveTimer = 0;

const persist = () => {
  clearTimeout(saveTimer);
  saveTimer = 0;
  save("chat", { messages });
};
const persistSoon = () => {
  if (!saveTimer) saveTimer = setTimeout(persist, 1000);
};

function showError(message) {
  errorBox.textContent = message || "";
  errorBox.hidden = !message;
}

function statsText(stats) {
  if (!stats) return "";
  const parts = [`${stats.tokens} token${stats.tokens === 1 ? "" : "s"}`];
  if (stats.tps > 0) parts.push(`${formatRate(stats.tps)} tok/s`);
  const notes = { length: "max tokens reached", stopped: "stopped", incomplete: "connection closed", error: "error" };
  if (notes[stats.finish]) parts.push(notes[stats.finish]);
  return parts.join(" · ");
}

const lastUserIndex = () => messages.map((m) => m.role).lastIndexOf("user");

function editor(index) {
  const area = h("textarea", { class: "edit-input", "data-testid": "chat-edit-input", rows: 3 });
  area.value = messages[index].content;
  const cancel = () => {
    editing = -1;
    render();
  };
  const saveEdit = () => {
    const text = area.value.trim();
    if (!text) return;
    const grammar = checkGrammar();
    if (grammar.error) return showError(grammar.error);
    messages = messages.slice(0, index);
    messages.push({ role: "user", content: text });
    editing = -1;
    generate(grammar.params);
  };
  area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      saveEdit();
    } else if (e.key === "Escape") {
      e.stopPropagation();
      cancel();
    }
  });
  area.addEventListener("input", () => autosize(area));
  return h(
    "div",
    { class: "msg-edit" },
    area,
    h(
      "div",
      { class: "row end" },
      h("button", { type: "button", class: "btn ghost", "data-testid": "chat-edit-cancel", onclick: cancel }, "Cancel"),
      h("button", { type: "button", class: "btn primary", "data-testid": "chat-edit-save", onclick: saveEdit }, "Save & send"),
    ),
  );
}

function bubble(message, index) {
  const busy = Boolean(controller);
  const last = index === messages.length - 1;
  const actions = [];
  let body;
  if (message.role === "user") {
    if (editing === index) {
      return h("div", { class: "msg msg-user editing", "data-testid": "message-user" }, editor(index));
    }
    body = h("div", { class: "msg-body plain", "data-testid": "message-content" }, message.content);
    if (!busy && index === lastUserIndex()) {
      actions.push(
        h("button", { type: "button", class: "link", "data-testid": "chat-edit", onclick: () => startEdit(index) }, "Edit"),
      );
      if (last) {
        actions.push(h("button", { type: "button", class: "link", "data-testid": "chat-regenerate", onclick: regenerate }, "Retry"));
      }
    }
  } else {
    const streaming = busy && last;
    body = h("div", { class: `msg-body markdown${streaming ? " streaming" : ""}`, "data-testid": "message-content" });
    body.innerHTML = message.content ? renderMarkdown(message.content) : streaming ? '<span class="typing"><i></i><i></i><i></i></span>' : "";
    actions.push(h("span", { class: "msg-stats", "data-testid": "message-stats" }, statsText(message.stats)));
    if (!streaming) {
      const copy = h("button", { type: "button", class: "link", "data-testid": "message-copy" }, "Copy");
      copy.addEventListener("click", async () => flashLabel(copy, (await copyText(message.content)) ? "Copied" : "Copy failed"));
      actions.push(copy);
    }
    if (!busy && last) {
      actions.push(h("button", { type: "button", class: "link", "data-testid": "chat-regenerate", onclick: regenerate }, "Regenerate"));
    }
  }
  return h(
    "div",
    { class: `msg msg-${message.role === "user" ? "user" : "assistant"}`, "data-testid": `message-${message.role === "user" ? "user" : "assistant"}` },
    body,
    h("div", { class: "msg-foot" }, actions),
  );
}

function render() {
  if (!messages.length) {
    list.replaceChildren(
      h(
        "div",
        { class: "empty", "data-testid": "chat-empty" },
        h("p", { class: "empty-title" }, "Start a conversation"),
        h("p", {}, "Enter sends · Shift+Enter adds a line · Esc stops the answer"),
      ),
    );
    return;
  }
  list.replaceChildren(...messages.map(bubble));
  list.scrollTop = list.scrollHeight;
  const area = list.querySelector(".edit-input");
  if (area) {
    autosize(area);
    area.focus();
  }
}

function setBusy(busy) {
  sendButton.hidden = busy;
  stopButton.hidden = !busy;
  onBusy(busy);
}

async function generate(grammarParams) {
  showError("");
  const history = messages.map(({ role, content }) => ({ role, content }));
  const reply = { role: "assistant", content: "" };
  messages.push(reply);
  const mine = new AbortController();
  controller = mine;
  setBusy(true);
  render();
  persist();

  const body = {
    ...requestBase(),
    messages: history,
    stream: true,
    stream_options: { include_usage: true },
    ...grammarParams,
  };
  const bodyEl = list.lastElementChild.querySelector(".msg-body");
  const paint = frameThrottle(() => {
    const stick = nearBottom(list);
    bodyEl.innerHTML = renderMarkdown(reply.content);
    if (stick) list.scrollTop = list.scrollHeight;
  });
  const gen = startGeneration();
  try {
    const result = await streamChat(body, {
      signal: mine.signal,
      onText(piece) {
        reply.content += piece;
        gen.tick();
        paint();
        persistSoon();
      },
    });
    const s = gen.finish(result.usage);
    const finish = result.aborted ? "stopped" : result.finishReason || (result.complete ? "stop" : "incomplete");
    reply.stats = { tokens: s.tokens, tps: s.tps, finish };
  } catch (err) {
    const s = gen.finish(null);
    reply.stats = { tokens: s.tokens, tps: s.tps, finish: "error" };
    showError(err.message);
  }
  reply.content = reply.content.replace(/^\s+/, "");
  if (!reply.content) {
    const at = messages.indexOf(reply);
    if (at >= 0) messages.splice(at, 1);
  }
  if (controller === mine) {
    controller = null;
    setBusy(false);
  }
  persist();
  render();
}

function send() {
  if (controller) return;
  const text = input.value.trim();
  if (!text) return;
  const grammar = checkGrammar();
  if (grammar.error) return showError(grammar.error);
  editing = -1;
  messages.push({ role: "user", content: text });
  input.value = "";
  autosize(input);
  generate(grammar.params);
}

function regenerate() {
  if (controller || !messages.length) return;
  const grammar = checkGrammar();
  if (grammar.error) return showError(grammar.error);
  if (messages[messages.length - 1].role === "assistant") messages.pop();
  if (!messages.length) return render();
  editing = -1;
  generate(grammar.params);
}

function startEdit(index) {
  if (controller) return;
  editing = index;
  render();
}

function clear() {
  if (controller) controller.abort();
  messages = [];
  editing = -1;
  showError("");
  persist();
  render();
}

export function initChat({ onBusyChange = () => {} } = {}) {
  onBusy = onBusyChange;
  list = byTestId("chat-messages");
  input = byTestId("chat-input");
  sendButton = byTestId("chat-send");
  stopButton = byTestId("chat-stop");
  errorBox = byTestId("chat-error");
  const stored = load("chat", {});
  messages = Array.isArray(stored.messages)
    ? stored.messages.filter((m) => m && typeof m.content === "string" && (m.role === "user" || m.role === "assistant"))
    : [];
  if (messages.length && messages[messages.length - 1].role === "assistant" && !messages[messages.length - 1].content) messages.pop();

  sendButton.addEventListener("click", send);
  stopButton.addEventListener("click", () => controller && controller.abort());
  byTestId("chat-clear").addEventListener("click", clear);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      send();
    }
  });
  input.addEventListener("input", () => autosize(input));
  render();

  return {
    stop() {
      if (!controller) return false;
      controller.abort();
      return true;
    },
    show() {
      list.scrollTop = list.scrollHeight;
      if (matchMedia("(pointer: fine)").matches) input.focus({ preventScroll: true });
    },
  };
}
