// Paper mode: a title → an outline (one request) → every section written by
// its own request, all in parallel (the server batches them) → one document.

import { streamChat } from "./api.js";
import { copyText, downloadText, slug } from "./clipboard.js";
import { byTestId, flashLabel, frameThrottle, h } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { formatRate, startGeneration } from "./meter.js";
import { requestBase } from "./settings.js";
import { load, save } from "./storage.js";

const MAX_SECTIONS = 12;
let controller = null;
let el = {};
let sections = []; // {heading, body, status}
let onBusy;

const stored = () => load("paper", {});
const persist = () =>
  save("paper", {
    title: el.title.value,
    count: el.count.value,
    outline: el.outline.value,
    sections: sections.map(({ heading, body, status }) => ({ heading, body, status })),
  });

function showError(message) {
  el.error.textContent = message || "";
  el.error.hidden = !message;
}

/** Clean one outline line: drop numbering, bullets, markdown and filler; "" if not a heading. */
export function cleanHeading(line) {
  let s = String(line).trim();
  s = s.replace(/^#{1,6}\s*/, "").replace(/^[-*+•]\s+/, "");
  s = s.replace(/^(section|chapter|part)\s+[\w.]+\s*[:.\-–—)]\s*/i, "");
  s = s.replace(/^(\d+(\.\d+)*|[ivxlcdm]+|[a-z])[.)]\s+/i, "").replace(/^\d+(\.\d+)*\s+/, "");
  s = s.replace(/^(\*\*|__)(.*)\1$/, "$2").replace(/^["'“”](.*)["'“”]$/, "$1");
  s = s.replace(/[:：]\s*$/, "").replace(/\s+/g, " ").trim();
  if (!s || s.length > 120) return "";
  if (/^(here|sure|outline|certainly|the following)\b/i.test(s)) return "";
  return s;
}

/** Model output → up to n distinct headings, one per line. */
export function parseOutline(text, n, title = "") {
  const seen = new Set([title.trim().toLowerCase()]);
  const headings = [];
  for (const line of String(text).split(/\r?\n/)) {
    const heading = cleanHeading(line);
    const key = heading.toLowerCase();
    if (!heading || seen.has(key)) continue;
    seen.add(key);
    headings.push(heading);
    if (headings.length >= n) break;
  }
  return headings;
}

const count = () => Math.min(MAX_SECTIONS, Math.max(1, parseInt(el.count.value, 10) || 5));

function setBusy(busy) {
  el.outlineButton.disabled = busy;
  el.writeButton.disabled = busy;
  el.stop.hidden = !busy;
  el.title.readOnly = busy;
  el.outline.readOnly = busy;
  onBusy(busy);
}

function chatBody(prompt, overrides = {}) {
  return {
    ...requestBase(overrides),
    messages: [{ role: "user", content: prompt }],
    stream: true,
    stream_options: { include_usage: true },
  };
}

async function outline() {
  if (controller) return;
  const title = el.title.value.trim();
  if (!title) return showError("Give the paper a title first.");
  showError("");
  const n = count();
  const prompt =
    `Write an outline for a paper titled "${title}".\n` +
    `Reply with exactly ${n} section headings, one per line, and nothing else.`;
  const mine = new AbortController();
  controller = mine;
  setBusy(true);
  el.stats.textContent = "Writing the outline…";
  el.outline.value = "";
  const gen = startGeneration();
  try {
    const result = await streamChat(chatBody(prompt, { max_tokens: 32 * n + 64 }), {
      signal: mine.signal,
      onText(piece) {
        el.outline.value += piece;
        gen.tick();
      },
    });
    gen.finish(result.usage);
    const headings = parseOutline(result.text, n, title);
    el.outline.value = headings.join("\n");
    el.stats.textContent = headings.length
      ? `${headings.length} section${headings.length === 1 ? "" : "s"}: edit them freely, then Write.`
      : "The model gave no usable headings: try again or type them in.";
  } catch (err) {
    gen.finish(null);
    el.stats.textContent = "";
    showError(err.message);
  }
  if (controller === mine) {
    controller = null;
    setBusy(false);
  }
  persist();
}

function card(section, index) {
  const body = h("div", { class: "markdown section-body", "data-testid": "paper-section-body" });
  const badge = h("span", { class: "badge", "data-testid": "paper-section-status" });
  const stats = h("span", { class: "muted small", "data-testid": "paper-section-stats" });
  const node = h(
    "article",
    { class: "card section-card", "data-testid": "paper-section", "data-index": String(index) },
    h("header", { class: "section-head" }, h("h3", {}, `${index + 1}. ${section.heading}`), badge),
    body,
    h("footer", {}, stats),
  );
  const update = () => {
    badge.textContent = section.status;
    badge.dataset.status = section.status;
    node.classList.toggle("streaming", section.status === "writing");
    body.innerHTML = section.body ? renderMarkdown(section.body) : "";
    stats.textContent = section.stats || "";
  };
  update();
  return { node, update, paint: frameThrottle(update) };
}

function assemble() {
  const title = el.title.value.trim() || "Untitled";
  const parts = [`# ${title}`];
  for (const s of sections) parts.push(`## ${s.heading}\n\n${s.body.trim()}`);
  return parts.join("\n\n") + "\n";
}

function showDocument() {
  const ready = sections.some((s) => s.body.trim());
  el.docWrap.hidden = !ready;
  el.doc.innerHTML = ready ? renderMarkdown(assemble()) : "";
}

async function writeSection(section, view, title, headings, index, signal) {
  const list = headings.map((x, i) => `${i + 1}. ${x}`).join("\n");
  const prompt =
    `You are writing a paper titled "${title}". Its sections are:\n${list}\n\n` +
    `Write section ${index + 1}, "${section.heading}". Write only the body of this section in Markdown, ` +
    `without repeating its heading.`;
  const gen = startGeneration();
  try {
    const result = await streamChat(chatBody(prompt), {
      signal,
      onText(piece) {
        if (section.status !== "writing") section.status = "writing";
        section.body += piece;
        gen.tick();
        view.paint();
      },
    });
    const s = gen.finish(result.usage);
    section.status = result.aborted ? "stopped" : result.finishReason === "length" ? "max tokens" : "done";
    section.stats = `${s.tokens} tokens${s.tps > 0 ? ` · ${formatRate(s.tps)} tok/s` : ""}`;
    return s.tokens;
  } catch (err) {
    gen.finish(null);
    section.status = "error";
    section.stats = err.message;
    return 0;
  } finally {
    section.body = section.body.replace(/^\s+/, "");
    view.update();
  }
}

async function write() {
  if (controller) return;
  const title = el.title.value.trim();
  if (!title) return showError("Give the paper a title first.");
  const headings = parseOutline(el.outline.value, MAX_SECTIONS, title);
  if (!headings.length) return showError("Make an outline first (or type one heading per line).");
  showError("");
  el.outline.value = headings.join("\n");
  sections = headings.map((heading) => ({ heading, body: "", status: "queued", stats: "" }));
  const views = sections.map(card);
  el.sections.replaceChildren(...views.map((v) => v.node));
  el.docWrap.hidden = true;

  const mine = new AbortController();
  controller = mine;
  setBusy(true);
  el.stats.textContent = `Writing ${sections.length} sections in parallel…`;
  const started = performance.now();
  const tokens = await Promise.all(
    sections.map((s, i) => writeSection(s, views[i], title, headings, i, mine.signal)),
  );
  const seconds = (performance.now() - started) / 1000;
  const total = tokens.reduce((a, b) => a + b, 0);
  const failed = sections.filter((s) => s.status === "error").length;
  el.stats.textContent =
    `${sections.length} sections in parallel · ${total} tokens in ${seconds.toFixed(1)} s` +
    (seconds > 0 && total ? ` · ${formatRate(total / seconds)} tok/s overall` : "") +
    (failed ? ` · ${failed} failed` : "");
  if (controller === mine) {
    controller = null;
    setBusy(false);
  }
  showDocument();
  persist();
}

export function initPaper({ onBusyChange = () => {} } = {}) {
  onBusy = onBusyChange;
  el = {
    title: byTestId("paper-title"),
    count: byTestId("paper-count"),
    outlineButton: byTestId("paper-outline"),
    outline: byTestId("paper-outline-text"),
    writeButton: byTestId("paper-write"),
    stop: byTestId("paper-stop"),
    stats: byTestId("paper-stats"),
    error: byTestId("paper-error"),
    sections: byTestId("paper-sections"),
    docWrap: byTestId("paper-document-panel"),
    doc: byTestId("paper-document"),
  };
  const saved = stored();
  el.title.value = saved.title || "";
  el.count.value = saved.count || "5";
  el.outline.value = saved.outline || "";
  if (Array.isArray(saved.sections)) {
    sections = saved.sections
      .filter((s) => s && typeof s.heading === "string")
      .map((s) => ({ heading: s.heading, body: String(s.body || ""), status: s.status === "writing" ? "stopped" : s.status || "done", stats: "" }));
    el.sections.replaceChildren(...sections.map((s, i) => card(s, i).node));
    showDocument();
  }

  el.outlineButton.addEventListener("click", outline);
  el.writeButton.addEventListener("click", write);
  el.stop.addEventListener("click", () => controller && controller.abort());
  el.title.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.isComposing) {
      e.preventDefault();
      outline();
    }
  });
  for (const input of [el.title, el.count, el.outline]) input.addEventListener("change", persist);
  const copyButton = byTestId("paper-copy");
  copyButton.addEventListener("click", async () => {
    flashLabel(copyButton, (await copyText(assemble())) ? "Copied" : "Copy failed");
  });
  byTestId("paper-download").addEventListener("click", () => {
    downloadText(`${slug(el.title.value.trim() || "paper")}.md`, assemble());
  });

  return {
    stop() {
      if (!controller) return false;
      controller.abort();
      return true;
    },
    show() {},
  };
}
