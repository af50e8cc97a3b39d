// The conversation list beside the chat: new, search, rename, delete, export and import.

import { downloadText } from "./clipboard.js";
import {
  conversations,
  createConversation,
  current,
  deleteConversation,
  exportJSON,
  importJSON,
  matches,
  onConversationsChange,
  renameConversation,
  selectConversation,
  titleOf,
} from "./conversations.js";
import { byTestId, h } from "./dom.js";

const CONFIRM_MS = 3000;
let listEl, searchBox, errorBox, snapshot;
let renaming = "";
let confirming = "";
let confirmTimer = 0;

function showError(message) {
  errorBox.textContent = message || "";
  errorBox.hidden = !message;
}

function when(time) {
  const date = new Date(time);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : date.toLocaleDateString();
}

function renameField(conversation) {
  const field = h("input", {
    type: "text",
    class: "conv-rename",
    "data-testid": "conversation-rename-input",
    "aria-label": "Conversation name",
    value: titleOf(conversation),
  });
  const finish = (keep) => {
    if (!renaming) return;
    renaming = "";
    if (keep) renameConversation(conversation.id, field.value);
    else render();
  };
  field.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      finish(true);
    } else if (e.key === "Escape") {
      e.preventDefault(); // cancels the rename only, not a running answer
      finish(false);
    }
  });
  field.addEventListener("blur", () => finish(true));
  return field;
}

function item(conversation, activeId) {
  const active = conversation.id === activeId;
  const del = h(
    "button",
    {
      type: "button",
      class: `icon-btn${confirming === conversation.id ? " confirm" : ""}`,
      "data-testid": "conversation-delete",
      title: "Delete this conversation",
      "aria-label": confirming === conversation.id ? "Click again to delete" : "Delete",
      onclick: () => {
        if (confirming !== conversation.id) {
          confirming = conversation.id;
          clearTimeout(confirmTimer);
          confirmTimer = setTimeout(() => {
            confirming = "";
            render();
          }, CONFIRM_MS);
          return render();
        }
        confirming = "";
        deleteConversation(conversation.id, snapshot());
      },
    },
    confirming === conversation.id ? "Delete?" : "×",
  );
  const rename = h(
    "button",
    {
      type: "button",
      class: "icon-btn",
      "data-testid": "conversation-rename",
      title: "Rename",
      "aria-label": "Rename",
      onclick: () => {
        renaming = conversation.id;
        render();
      },
    },
    "✎",
  );
  const head =
    renaming === conversation.id
      ? renameField(conversation)
      : h(
          "button",
          {
            type: "button",
            class: "conv-title",
            "data-testid": "conversation-title",
            "aria-current": active ? "true" : null,
            onclick: () => selectConversation(conversation.id),
          },
          h("span", { class: "conv-name" }, titleOf(conversation)),
          h("span", { class: "conv-meta" }, `${conversation.messages.length} msg · ${when(conversation.updated)}`),
        );
  return h(
    "li",
    { class: `conv${active ? " active" : ""}`, "data-testid": "conversation-item", "data-id": conversation.id },
    head,
    h("span", { class: "conv-actions" }, rename, del),
  );
}

function render() {
  const activeId = current() ? current().id : "";
  const shown = conversations().filter((c) => matches(c, searchBox.value));
  listEl.replaceChildren(
    ...(shown.length ? shown.map((c) => item(c, activeId)) : [h("li", { class: "muted small conv-none" }, "No conversation matches.")]),
  );
  const field = listEl.querySelector(".conv-rename");
  if (field) {
    field.focus();
    field.select();
  }
}

async function importFile(file) {
  try {
    const count = importJSON(await file.text());
    showError("");
    byTestId("conversation-note").textContent = `Imported ${count} conversation${count === 1 ? "" : "s"}.`;
  } catch (err) {
    showError(`Import failed: ${err.message}`);
  }
}

/** `setup()` gives what a new conversation starts from (the panels' current set-up). */
export function initSidebar(setup) {
  snapshot = setup;
  listEl = byTestId("conversation-list");
  searchBox = byTestId("conversation-search");
  errorBox = byTestId("conversation-error");
  byTestId("conversation-new").addEventListener("click", () => {
    searchBox.value = "";
    createConversation(snapshot());
    byTestId("chat-input").focus();
  });
  searchBox.addEventListener("input", render);
  byTestId("conversation-export").addEventListener("click", () => {
    const stamp = new Date().toISOString().slice(0, 10);
    downloadText(`ai00-trio-conversations-${stamp}.json`, exportJSON(), "application/json");
  });
  const file = byTestId("conversation-import-file");
  byTestId("conversation-import").addEventListener("click", () => file.click());
  file.addEventListener("change", () => {
    if (file.files && file.files[0]) importFile(file.files[0]);
    file.value = "";
  });
  onConversationsChange(render);
  render();
  return { refresh: render };
}
