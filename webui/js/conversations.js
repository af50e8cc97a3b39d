// The conversations of chat mode, kept in localStorage. Each one carries its own
// system prompt, sampler settings, initial state and grammar next to its messages.

import { load, save } from "./storage.js";

const KEY = "conversations";
const ROLES = ["user", "assistant", "tool"];
const listeners = new Set();

let store = { active: "", items: [] };

const newId = () =>
  (crypto.randomUUID ? crypto.randomUUID() : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`);

/** A message as stored: role and text, plus the tool-call fields of assistant and tool turns. */
function cleanMessage(m) {
  if (!m || !ROLES.includes(m.role) || typeof m.content !== "string") return null;
  const out = { role: m.role, content: m.content };
  if (m.stats && typeof m.stats === "object") out.stats = m.stats;
  if (m.role === "assistant" && Array.isArray(m.tool_calls) && m.tool_calls.length) {
    out.tool_calls = m.tool_calls
      .filter((c) => c && c.function && typeof c.function.name === "string")
      .map((c) => ({
        id: String(c.id || ""),
        type: "function",
        function: { name: c.function.name, arguments: String(c.function.arguments ?? "") },
      }));
  }
  if (m.role === "tool") out.tool_call_id = String(m.tool_call_id || "");
  return out;
}

/** A conversation from storage or from an imported file; null when it is not one. */
function cleanConversation(c) {
  if (!c || typeof c !== "object" || !Array.isArray(c.messages)) return null;
  const now = Date.now();
  return {
    id: typeof c.id === "string" && c.id ? c.id : newId(),
    title: typeof c.title === "string" ? c.title.slice(0, 200) : "",
    created: Number.isFinite(c.created) ? c.created : now,
    updated: Number.isFinite(c.updated) ? c.updated : now,
    system: typeof c.system === "string" ? c.system : "",
    settings: c.settings && typeof c.settings === "object" ? c.settings : null,
    state: typeof c.state === "string" ? c.state : "",
    grammar: c.grammar && typeof c.grammar === "object" ? c.grammar : null,
    tools: typeof c.tools === "string" ? c.tools : "",
    messages: c.messages.map(cleanMessage).filter(Boolean),
  };
}

function notify() {
  for (const fn of listeners) fn();
}

function persist() {
  save(KEY, store);
}

export function onConversationsChange(fn) {
  listeners.add(fn);
}

/** Read the stored list; the single chat of earlier versions becomes the first conversation. */
export function initConversations(snapshot) {
  const stored = load(KEY, null);
  const items = stored && Array.isArray(stored.items) ? stored.items.map(cleanConversation).filter(Boolean) : [];
  store = { active: stored && typeof stored.active === "string" ? stored.active : "", items };
  if (!items.length) {
    const legacy = load("chat", null);
    const first = createConversation(snapshot, false);
    if (legacy && Array.isArray(legacy.messages)) first.messages = legacy.messages.map(cleanMessage).filter(Boolean);
  }
  if (!store.items.some((c) => c.id === store.active)) store.active = store.items[0].id;
  persist();
}

/** Conversations, most recently used first. */
export const conversations = () => [...store.items].sort((a, b) => b.updated - a.updated);

export const current = () => store.items.find((c) => c.id === store.active);

/** A new empty conversation with `snapshot` ({settings, state, grammar, system}) as its set-up. */
export function createConversation(snapshot = {}, announce = true) {
  const now = Date.now();
  const conversation = cleanConversation({ ...snapshot, id: newId(), title: "", created: now, updated: now, messages: [] });
  store.items.push(conversation);
  store.active = conversation.id;
  persist();
  if (announce) notify();
  return conversation;
}

export function selectConversation(id) {
  if (!store.items.some((c) => c.id === id) || store.active === id) return false;
  store.active = id;
  persist();
  notify();
  return true;
}

export function renameConversation(id, title) {
  const conversation = store.items.find((c) => c.id === id);
  if (!conversation) return;
  conversation.title = String(title || "").trim().slice(0, 200);
  persist();
  notify();
}

/** Delete one; the list is never empty (the last one deleted leaves a fresh one). */
export function deleteConversation(id, snapshot) {
  store.items = store.items.filter((c) => c.id !== id);
  if (!store.items.length) createConversation(snapshot, false);
  if (!store.items.some((c) => c.id === store.active)) store.active = conversations()[0].id;
  persist();
  notify();
}

/**
 * Change the active conversation (its messages, system prompt or set-up) and store it;
 * `touch` moves it to the top of the list, `announce` tells the listeners (the list).
 */
export function updateCurrent(patch, { touch = false, announce = false } = {}) {
  const conversation = current();
  if (!conversation) return;
  Object.assign(conversation, patch);
  if (touch) conversation.updated = Date.now();
  persist();
  if (announce || touch) notify();
}

/** The name shown in the list: the given title, else the first user message. */
export function titleOf(conversation) {
  if (conversation.title) return conversation.title;
  const first = conversation.messages.find((m) => m.role === "user");
  return first ? first.content.replace(/\s+/g, " ").slice(0, 60) : "New conversation";
}

export function matches(conversation, query) {
  const q = query.trim().toLowerCase();
  if (!q) return true;
  return [titleOf(conversation), conversation.system, ...conversation.messages.map((m) => m.content)].some((text) =>
    text.toLowerCase().includes(q),
  );
}

export const exportJSON = () =>
  JSON.stringify({ format: "ai00-trio-conversations", version: 1, conversations: store.items }, null, 2);

/**
 * Add the conversations of an exported file (or a bare list, or one conversation).
 * Ids already present get new ones, so importing twice duplicates rather than overwrites.
 * Returns how many were added; throws on a file that holds none.
 */
export function importJSON(text) {
  const data = JSON.parse(text);
  const list = Array.isArray(data) ? data : Array.isArray(data && data.conversations) ? data.conversations : [data];
  const taken = new Set(store.items.map((c) => c.id));
  const added = list.map(cleanConversation).filter(Boolean);
  if (!added.length) throw new Error("The file holds no conversation (expected an export of this page).");
  for (const conversation of added) {
    if (taken.has(conversation.id)) conversation.id = newId();
    taken.add(conversation.id);
    store.items.push(conversation);
  }
  store.active = added[0].id;
  persist();
  notify();
  return added.length;
}
