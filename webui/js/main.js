// Entry point: wires the modes, the tabs, the settings drawer and global keys.

import { listModels } from "./api.js";
import { initChat } from "./chat.js";
import { copyText } from "./clipboard.js";
import { initContinuation } from "./continuation.js";
import { byTestId, flashLabel, h } from "./dom.js";
import { initGrammar } from "./grammar.js";
import { formatRate, subscribe } from "./meter.js";
import { initPaper } from "./paper.js";
import { initSettings, loadStates, setModel } from "./settings.js";
import { initStatus } from "./status.js";
import { load, save } from "./storage.js";

const TABS = ["chat", "continue", "paper", "status"];
const modes = {};
let active = null;

const tabButton = (name) => byTestId(`tab-${name}`);
const view = (name) => document.getElementById(`view-${name}`);

function busyMarker(name) {
  return (busy) => tabButton(name).classList.toggle("busy", busy);
}

function activate(name) {
  if (!TABS.includes(name)) name = "chat";
  if (active === name) return;
  const previous = active;
  active = name;
  for (const tab of TABS) {
    const selected = tab === name;
    tabButton(tab).setAttribute("aria-selected", String(selected));
    tabButton(tab).tabIndex = selected ? 0 : -1;
    view(tab).hidden = !selected;
  }
  document.body.dataset.mode = name;
  if (previous && modes[previous].hide) modes[previous].hide();
  modes[name].show();
  save("tab", name);
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}

function setDrawer(open) {
  document.body.classList.toggle("settings-open", open);
  byTestId("settings-toggle").setAttribute("aria-expanded", String(open));
}

async function loadModel(attempt = 0) {
  const label = byTestId("header-model");
  try {
    const body = await listModels();
    const first = Array.isArray(body && body.data) && body.data[0];
    setModel(first ? first.id : "");
    label.textContent = first ? first.id : "no model";
    label.title = first ? `Model: ${first.id}` : "The server lists no model";
    label.dataset.state = first ? "ok" : "empty";
    if (attempt > 0) loadStates();
  } catch (err) {
    label.textContent = "offline";
    label.title = err.message;
    label.dataset.state = "error";
    setTimeout(() => loadModel(attempt + 1), Math.min(30_000, 3000 * (attempt + 1)));
  }
}

function init() {
  initSettings();
  initGrammar();
  modes.chat = initChat({ onBusyChange: busyMarker("chat") });
  modes.continue = initContinuation({ onBusyChange: busyMarker("continue") });
  modes.paper = initPaper({ onBusyChange: busyMarker("paper") });
  modes.status = initStatus();

  const tablist = document.querySelector("[role=tablist]");
  for (const name of TABS) tabButton(name).addEventListener("click", () => activate(name));
  tablist.addEventListener("keydown", (e) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
    if (!step) return;
    const next = TABS[(TABS.indexOf(active) + step + TABS.length) % TABS.length];
    activate(next);
    tabButton(next).focus();
  });
  window.addEventListener("hashchange", () => activate(location.hash.slice(1)));

  byTestId("settings-toggle").addEventListener("click", () =>
    setDrawer(!document.body.classList.contains("settings-open")),
  );
  byTestId("settings-close").addEventListener("click", () => setDrawer(false));
  byTestId("settings-backdrop").addEventListener("click", () => setDrawer(false));

  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape" || e.defaultPrevented) return;
    if (document.body.classList.contains("settings-open")) return setDrawer(false);
    if (!modes[active].stop()) TABS.some((name) => modes[name].stop());
  });

  // Copy buttons inside rendered code blocks (markdown.js emits them).
  document.addEventListener("click", async (e) => {
    const button = e.target instanceof Element && e.target.closest(".copy-code");
    if (!button) return;
    const code = button.closest(".code-block")?.querySelector("code");
    flashLabel(button, (await copyText(code ? code.textContent : "")) ? "Copied" : "Copy failed");
  });

  const pill = byTestId("live-tps");
  subscribe(({ live, streams }) => {
    pill.hidden = !streams;
    pill.textContent = `${formatRate(live)} tok/s`;
    if (streams > 1) pill.append(h("span", { class: "extra" }, ` · ${streams} streams`));
  });

  const fromHash = location.hash.slice(1);
  activate(TABS.includes(fromHash) ? fromHash : load("tab", "chat"));
  loadModel();
}

init();
