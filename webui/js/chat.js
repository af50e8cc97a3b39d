// Chat mode: the active conversation, streamed; its system prompt and tools box;
// a message typed while an answer streams waits in a visible queue.

import { streamChat } from "./api.js";
import { copyText } from "./clipboard.js";
import {
  current,
  initConversations,
  onConversationsChange,
  updateCurrent,
} from "./conversations.js";
import { autosize, byTestId, flashLabel, frameThrottle, h, nearBottom } from "./dom.js";
import { applyGrammar, checkGrammar, grammarSnapshot, onGrammarChange } from "./grammar.js";
import { renderMarkdown } from "./markdown.js";
import { formatRate, startGeneration } from "./meter.js";
import { applySettings, onSettingsChange, requestBase, settingsSnapshot } from "./settings.js";

let messages = []; // {role, content, stats?: {tokens, tps, finish}, tool_calls?, tool_call_id?}
let controller = null;
let editing = -1;
let queued = ""; // a message sent while an answer streams: it goes out when that answer ends
let list, input, sendButton, stopButton, errorBox, onBusy, systemBox, toolsBox, queueBox, setupSummary;
let saveTimer = 0;
let shownId = "";

const persist = ({ touch = false, announce = false } = {}) => {
  clearTimeout(saveTimer);
  saveTimer = 0;
  updateCurrent({ messages }, { touch, announce });
};
const persistSoon = () => {
  if (!saveTimer) saveTimer = setTimeout(persist, 1000);
};

/** What a new conversation starts from: the set-up now in the panels, no system prompt. */
export const setupSnapshot = () => ({ ...settingsSnapshot(), grammar: grammarSnapshot() });

function showError(message) {
  errorBox.textContent = message || "";
  errorBox.hidden = !message;
}

function statsText(stats) {
  if (!stats) return "";
  const parts = [`${stats.tokens} token${stats.tokens === 1 ? "" : "s"}`];
  if (stats.tps > 0) parts.push(`${formatRate(stats.tps)} tok/s`);
  const notes = {
    length: "max tokens reached",
    stopped: "stopped",
    incomplete: "connection closed",
    error: "error",
    tool_calls: "tool call",
  };
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
    const request = checkRequest();
    if (request.error) return showError(request.error);
    messages = messages.slice(0, index);
    messages.push({ role: "user", content: text });
    editing = -1;
    generate(request.params);
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

function prettyArguments(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text; // still streaming, or not JSON: shown as the model wrote it
  }
}

/** The calls an assistant turn made, each with the tool message that answered it, if any. */
function toolCallCards(message, index) {
  return (message.tool_calls || []).map((call) => {
    const result = messages.slice(index + 1).find((m) => m.role === "tool" && m.tool_call_id && m.tool_call_id === call.id);
    return h(
      "div",
      { class: "tool-call", "data-testid": "tool-call" },
      h("div", { class: "tool-call-head" }, h("span", { class: "muted small" }, "Tool call"), " ",
        h("code", { "data-testid": "tool-call-name" }, call.function.name)),
      h("pre", { class: "tool-call-args", "data-testid": "tool-call-arguments" }, prettyArguments(call.function.arguments)),
      result
        ? h("div", { class: "tool-call-result" }, h("span", { class: "muted small" }, "Result"),
          h("pre", { "data-testid": "tool-call-result" }, result.content))
        : null,
    );
  });
}

function bubble(message, index) {
  const busy = Boolean(controller);
  const last = index === messages.length - 1;
  const actions = [];
  let body;
  if (message.role === "tool") {
    // Shown inside the call it answers; a result without its call gets its own line.
    const answered = messages.slice(0, index).some((m) => (m.tool_calls || []).some((c) => c.id === message.tool_call_id));
    if (answered) return null;
    return h("div", { class: "msg msg-tool", "data-testid": "message-tool" },
      h("pre", { class: "tool-call-result" }, message.content));
  }
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
    const waiting = streaming && !(message.tool_calls || []).length;
    body.innerHTML = message.content ? renderMarkdown(message.content) : waiting ? '<span class="typing"><i></i><i></i><i></i></span>' : "";
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
    { class: `msg msg-${message.role}`, "data-testid": `message-${message.role}` },
    body,
    message.role === "assistant" ? h("div", { class: "tool-calls" }, toolCallCards(message, index)) : null,
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
  list.replaceChildren(...messages.map(bubble).filter(Boolean));
  list.scrollTop = list.scrollHeight;
  const area = list.querySelector(".edit-input");
  if (area) {
    autosize(area);
    area.focus();
  }
}

function renderQueue() {
  queueBox.hidden = !queued;
  byTestId("chat-queued-text").textContent = queued;
}

function setBusy(busy) {
  sendButton.hidden = busy;
  stopButton.hidden = !busy;
  input.placeholder = busy ? "Type the next message: Enter queues it until this answer ends" : "Message the model…";
  onBusy(busy);
}

/** The system prompt and tools boxes, checked: {params} for the request, or {error}. */
function checkRequest() {
  const grammar = checkGrammar();
  if (grammar.error) return grammar;
  const params = { ...grammar.params };
  const tools = toolsBox.value.trim();
  if (tools) {
    let parsed;
    try {
      parsed = JSON.parse(tools);
    } catch (err) {
      return { error: `Invalid JSON in the tools box: ${err.message}` };
    }
    if (!Array.isArray(parsed)) return { error: "The tools box must hold a JSON list of tools." };
    params.tools = parsed;
  }
  return { params };
}

/** The history as the API takes it: {role, content}, with tool calls and their answers. */
function historyForRequest() {
  const system = systemBox.value.trim();
  const out = system ? [{ role: "system", content: system }] : [];
  for (const m of messages) {
    const entry = { role: m.role, content: m.content };
    if (m.tool_calls && m.tool_calls.length) entry.tool_calls = m.tool_calls;
    if (m.role === "tool") entry.tool_call_id = m.tool_call_id;
    out.push(entry);
  }
  return out;
}

/** Fold a chunk's tool-call deltas (or a whole message's calls) into the reply. */
function addToolCalls(reply, chunk) {
  const choice = chunk && Array.isArray(chunk.choices) ? chunk.choices[0] : null;
  if (!choice) return false;
  if (choice.message && Array.isArray(choice.message.tool_calls)) {
    reply.tool_calls = choice.message.tool_calls;
    return true;
  }
  const deltas = choice.delta && Array.isArray(choice.delta.tool_calls) ? choice.delta.tool_calls : [];
  for (const d of deltas) {
    reply.tool_calls ||= [];
    const at = Number.isInteger(d.index) ? d.index : reply.tool_calls.length;
    const call = (reply.tool_calls[at] ||= { id: "", type: "function", function: { name: "", arguments: "" } });
    if (d.id) call.id = d.id;
    if (d.function && d.function.name) call.function.name += d.function.name;
    if (d.function && d.function.arguments) call.function.arguments += d.function.arguments;
  }
  return deltas.length > 0;
}

async function generate(params) {
  showError("");
  const history = historyForRequest();
  const reply = { role: "assistant", content: "" };
  messages.push(reply);
  const mine = new AbortController();
  controller = mine;
  setBusy(true);
  render();
  persist({ touch: true });

  const body = {
    ...requestBase(),
    messages: history,
    stream: true,
    stream_options: { include_usage: true },
    ...params,
  };
  const bubbleEl = list.lastElementChild;
  const bodyEl = bubbleEl.querySelector(".msg-body");
  const paint = frameThrottle(() => {
    if (controller !== mine) return;
    const stick = nearBottom(list);
    bodyEl.innerHTML = renderMarkdown(reply.content);
    bubbleEl.querySelector(".tool-calls").replaceChildren(...toolCallCards(reply, messages.indexOf(reply)));
    if (stick) list.scrollTop = list.scrollHeight;
  });
  const gen = startGeneration();
  try {
    const result = await streamChat(body, {
      signal: mine.signal,
      conversationId: shownId,
      onChunk(chunk) {
        if (addToolCalls(reply, chunk)) paint();
      },
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
    if (controller === mine) showError(err.message);
  }
  reply.content = reply.content.replace(/^\s+/, "");
  if (!reply.content && !(reply.tool_calls || []).length) {
    const at = messages.indexOf(reply);
    if (at >= 0) messages.splice(at, 1);
  }
  if (controller !== mine) return; // the conversation was switched away from meanwhile
  controller = null;
  setBusy(false);
  persist({ announce: true });
  render();
  if (queued) {
    const next = queued;
    queued = "";
    renderQueue();
    sendText(next);
  }
}

function sendText(text) {
  const request = checkRequest();
  if (request.error) return showError(request.error);
  editing = -1;
  messages.push({ role: "user", content: text });
  generate(request.params);
}

function send() {
  const text = input.value.trim();
  if (!text) return;
  if (controller) {
    queued = queued ? `${queued}\n\n${text}` : text;
    renderQueue();
  } else {
    sendText(text);
  }
  input.value = "";
  autosize(input);
}

function regenerate() {
  if (controller || !messages.length) return;
  const request = checkRequest();
  if (request.error) return showError(request.error);
  if (messages[messages.length - 1].role === "assistant") messages.pop();
  if (!messages.length) return render();
  editing = -1;
  generate(request.params);
}

function startEdit(index) {
  if (controller) return;
  editing = index;
  render();
}

function abortCurrent() {
  if (!controller) return false;
  const aborted = controller;
  controller = null;
  aborted.abort();
  setBusy(false);
  return true;
}

function clear() {
  abortCurrent();
  queued = "";
  renderQueue();
  messages = [];
  editing = -1;
  showError("");
  persist({ announce: true });
  render();
}

function showSetupSummary() {
  const system = systemBox.value.trim();
  const tools = toolsBox.value.trim();
  setupSummary.textContent = system ? `System: ${system.replace(/\s+/g, " ").slice(0, 80)}` : "No system prompt";
  if (tools) setupSummary.textContent += " · tools";
}

/** Show the active conversation: its messages, prompt, tools, and its set-up in the panels. */
function showConversation() {
  const conversation = current();
  if (!conversation) return;
  if (conversation.id === shownId) return;
  if (controller) {
    // Leaving an answer mid-stream: it is cut where it is and kept in its conversation.
    const last = messages[messages.length - 1];
    abortCurrent();
    if (last && last.role === "assistant") last.stats = { ...(last.stats || { tokens: 0, tps: 0 }), finish: "stopped" };
    clearTimeout(saveTimer);
    saveTimer = 0;
  }
  shownId = conversation.id;
  queued = "";
  renderQueue();
  editing = -1;
  messages = conversation.messages.map((m) => ({ ...m }));
  if (messages.length && messages[messages.length - 1].role === "assistant" && !messages[messages.length - 1].content &&
      !(messages[messages.length - 1].tool_calls || []).length) {
    messages.pop();
  }
  systemBox.value = conversation.system;
  toolsBox.value = conversation.tools || "";
  showSetupSummary();
  applySettings({ settings: conversation.settings, state: conversation.state });
  if (conversation.grammar) applyGrammar(conversation.grammar);
  showError("");
  render();
}

export function initChat({ onBusyChange = () => {} } = {}) {
  onBusy = onBusyChange;
  list = byTestId("chat-messages");
  input = byTestId("chat-input");
  sendButton = byTestId("chat-send");
  stopButton = byTestId("chat-stop");
  errorBox = byTestId("chat-error");
  systemBox = byTestId("system-prompt");
  toolsBox = byTestId("chat-tools");
  queueBox = byTestId("chat-queued");
  setupSummary = byTestId("chat-setup-summary");

  initConversations(setupSnapshot());
  onConversationsChange(showConversation);
  onSettingsChange(() => updateCurrent(settingsSnapshot()));
  onGrammarChange(() => updateCurrent({ grammar: grammarSnapshot() }));
  systemBox.addEventListener("input", () => {
    updateCurrent({ system: systemBox.value });
    showSetupSummary();
  });
  toolsBox.addEventListener("input", () => {
    updateCurrent({ tools: toolsBox.value });
    showSetupSummary();
  });

  sendButton.addEventListener("click", send);
  stopButton.addEventListener("click", () => controller && controller.abort());
  byTestId("chat-clear").addEventListener("click", clear);
  byTestId("chat-queued-cancel").addEventListener("click", () => {
    queued = "";
    renderQueue();
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      send();
    }
  });
  input.addEventListener("input", () => autosize(input));
  showConversation();

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
