// Continuation (write) mode: the model extends the text in place.

import { streamText } from "./api.js";
import { byTestId, frameThrottle } from "./dom.js";
import { formatRate, startGeneration } from "./meter.js";
import { requestBase } from "./settings.js";
import { lastingId, load, save } from "./storage.js";

let controller = null;
let text, goButton, stopButton, undoButton, statsBox, errorBox, onBusy;
let before = null; // text before the last continuation, for Undo
let saveTimer = 0;

const persist = () => {
  clearTimeout(saveTimer);
  saveTimer = 0;
  save("continuation", text.value);
};

function showError(message) {
  errorBox.textContent = message || "";
  errorBox.hidden = !message;
}

function setBusy(busy) {
  goButton.hidden = busy;
  stopButton.hidden = !busy;
  text.readOnly = busy;
  text.classList.toggle("generating", busy);
  undoButton.disabled = busy || before == null;
  onBusy(busy);
}

async function go() {
  if (controller) return;
  const prompt = text.value;
  if (!prompt.trim()) {
    showError("Write something first: the model continues your text.");
    return;
  }
  showError("");
  before = prompt;
  const mine = new AbortController();
  controller = mine;
  setBusy(true);
  statsBox.textContent = "Waiting for the first token…";

  const body = { ...requestBase(), prompt, stream: true, stream_options: { include_usage: true } };
  const gen = startGeneration();
  let count = 0;
  let pending = ""; // text not yet in the textarea: written at most once per frame
  const flush = () => {
    if (!pending) return;
    const follow = text.scrollHeight - text.scrollTop - text.clientHeight < 60;
    text.value += pending;
    pending = "";
    if (follow) text.scrollTop = text.scrollHeight;
    statsBox.textContent = `${count} tokens…`;
  };
  const paint = frameThrottle(flush);
  try {
    const result = await streamText(body, {
      signal: mine.signal,
      conversationId: lastingId("continuation-id"), // the text grows in place: keep it on one server
      onText(piece) {
        pending += piece;
        gen.tick();
        count++;
        paint();
        if (!saveTimer) saveTimer = setTimeout(persist, 1000);
      },
    });
    flush();
    const s = gen.finish(result.usage);
    const parts = [`${s.tokens} tokens`];
    if (s.tps > 0) parts.push(`${formatRate(s.tps)} tok/s`);
    if (result.aborted) parts.push("stopped");
    else if (result.finishReason === "length") parts.push("max tokens reached");
    else if (!result.complete) parts.push("connection closed");
    statsBox.textContent = parts.join(" · ");
  } catch (err) {
    flush();
    gen.finish(null);
    statsBox.textContent = "";
    showError(err.message);
  }
  if (text.value === before) before = null;
  if (controller === mine) {
    controller = null;
    setBusy(false);
  }
  persist();
}

export function initContinuation({ onBusyChange = () => {} } = {}) {
  onBusy = onBusyChange;
  text = byTestId("continue-text");
  goButton = byTestId("continue-go");
  stopButton = byTestId("continue-stop");
  undoButton = byTestId("continue-undo");
  statsBox = byTestId("continue-stats");
  errorBox = byTestId("continue-error");
  text.value = load("continuation", "");

  goButton.addEventListener("click", go);
  stopButton.addEventListener("click", () => controller && controller.abort());
  undoButton.addEventListener("click", () => {
    if (controller || before == null) return;
    text.value = before;
    before = null;
    undoButton.disabled = true;
    statsBox.textContent = "";
    persist();
  });
  text.addEventListener("input", () => {
    before = null;
    undoButton.disabled = true;
    if (!saveTimer) saveTimer = setTimeout(persist, 1000);
  });
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      go();
    }
  });
  undoButton.disabled = true;

  return {
    stop() {
      if (!controller) return false;
      controller.abort();
      return true;
    },
    show() {
      if (!matchMedia("(pointer: fine)").matches) return; // no keyboard pop-up on phones
      text.focus({ preventScroll: true });
      text.setSelectionRange(text.value.length, text.value.length);
    },
  };
}
