// Entry point: wires the modes, the tabs, the settings drawer and global keys.

import { getStatus, listModels } from "./api.js";
import { initChat, setupSnapshot } from "./chat.js";
import { copyText } from "./clipboard.js";
import { initContinuation } from "./continuation.js";
import { byTestId, flashLabel, h } from "./dom.js";
import { initGrammar } from "./grammar.js";
import { formatRate, subscribe } from "./meter.js";
import { initPaper } from "./paper.js";
import { initModelsPanel } from "./models_panel.js";
import { initSettings, loadStates, onModelChange, setModels } from "./settings.js";
import { initSidebar } from "./sidebar.js";
import { formatCount, initStatus } from "./status.js";
import { load, save } from "./storage.js";

const TABS = ["chat", "continue", "paper", "status"];
const TOY_PARAMETERS = 20e6; // below this a model is a test fixture, not one to talk to
const narrow = matchMedia("(max-width: 900px)");
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

/**
 * A side panel (settings, conversations): a drawer over the page on narrow screens
 * (closed by default), a column on wide ones (open unless collapsed, remembered).
 */
function sidePanel(name, toggle) {
  const isOpen = () =>
    narrow.matches ? document.body.classList.contains(`${name}-open`) : !document.body.classList.contains(`${name}-collapsed`);
  const sync = () => byTestId(toggle).setAttribute("aria-expanded", String(isOpen()));
  const set = (open) => {
    if (narrow.matches) document.body.classList.toggle(`${name}-open`, open);
    else {
      document.body.classList.toggle(`${name}-collapsed`, !open);
      save(`${name}Collapsed`, !open);
    }
    sync();
  };
  document.body.classList.toggle(`${name}-collapsed`, load(`${name}Collapsed`, false));
  narrow.addEventListener("change", sync);
  byTestId(toggle).addEventListener("click", () => set(!isOpen()));
  sync();
  return { set, isOpen, drawerOpen: () => narrow.matches && isOpen() };
}

function showBanner(message) {
  const banner = byTestId("server-banner");
  banner.textContent = message || "";
  banner.hidden = !message;
}

function showToyNotice(status) {
  const notice = byTestId("toy-notice");
  const m = status && status.model;
  const toy = m && typeof m.parameters === "number" && m.parameters < TOY_PARAMETERS;
  notice.hidden = !toy || load("toyNoticeHidden", "") === m.name;
  if (!toy) return;
  byTestId("toy-notice-text").replaceChildren(
    `Toy model: ${m.name} (${formatCount(m.parameters)} parameters) writes gibberish; it is here to test the server. ` +
      "For real answers serve an RWKV World model: ",
    h("code", {}, "python -m ai00_trio serve --model ~/models/rwkv7-1.5b.pth"),
  );
  byTestId("toy-notice-close").onclick = () => {
    save("toyNoticeHidden", m.name);
    notice.hidden = true;
  };
}

/** The header's model label and the banner: the model served, or why there is none. */
async function loadModel(attempt = 0) {
  const label = byTestId("header-model");
  const retry = () => setTimeout(() => loadModel(attempt + 1), Math.min(30_000, 3000 * (attempt + 1)));
  try {
    const body = await listModels();
    const ids = (Array.isArray(body && body.data) ? body.data : []).map((m) => m.id);
    let status = null;
    try {
      status = await getStatus();
    } catch {
      /* the list answered: the figures are a nicety */
    }
    const m = status && status.model;
    const kind = m ? `RWKV ${m.version}, ${formatCount(m.parameters)} parameters` : "";
    const chosen = setModels(ids, kind);
    label.textContent = chosen || "no model";
    label.title = chosen ? `Model: ${chosen}${kind ? ` (${kind})` : ""}` : "The server lists no model";
    label.dataset.state = chosen ? "ok" : "empty";
    showBanner("");
    showToyNotice(status);
    if (attempt > 0) loadStates();
  } catch (err) {
    setModels([]);
    if (err.status === 503) {
      // The server is up; the model is loading, failed to load, or the server is stopping.
      const loading = /still loading/.test(err.message);
      label.textContent = loading ? "loading model…" : "model not loaded";
      label.dataset.state = loading ? "loading" : "error";
      showBanner(loading ? "" : `The server is up but serves no model: ${err.message}`);
    } else if (err.status === 401) {
      label.textContent = "API key needed";
      label.dataset.state = "error";
      showBanner(err.message);
    } else {
      label.textContent = "offline";
      label.dataset.state = "error";
      showBanner("");
    }
    label.title = err.message;
    retry();
  }
}

function init() {
  initSettings();
  initGrammar();
  modes.chat = initChat({ onBusyChange: busyMarker("chat") });
  initSidebar(setupSnapshot);
  modes.continue = initContinuation({ onBusyChange: busyMarker("continue") });
  modes.paper = initPaper({ onBusyChange: busyMarker("paper") });
  const status = initStatus();
  const models = initModelsPanel({
    onChange() {
      loadModel();
      loadStates();
    },
  });
  modes.status = {
    stop: status.stop,
    show() {
      status.show();
      models.show();
    },
    hide() {
      status.hide();
      models.hide();
    },
  };

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

  const settings = sidePanel("settings", "settings-toggle");
  const chats = sidePanel("conversations", "conversations-toggle");
  byTestId("settings-close").addEventListener("click", () => settings.set(false));
  byTestId("settings-backdrop").addEventListener("click", () => {
    settings.set(false);
    chats.set(false);
  });
  onModelChange((id) => {
    const label = byTestId("header-model");
    label.textContent = id;
    label.title = `Model: ${id}`;
  });

  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape" || e.defaultPrevented) return;
    if (settings.drawerOpen()) return settings.set(false);
    if (chats.drawerOpen()) return chats.set(false);
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
