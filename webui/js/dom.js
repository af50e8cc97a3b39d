// Tiny DOM helpers: element creation without innerHTML, autosizing, scrolling.

/**
 * h("button", {class: "btn", "data-testid": "x", onclick: fn}, "Label", child)
 * Strings become text nodes; null/false children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const byTestId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

/** Grow a textarea with its content, up to its CSS max-height. */
export function autosize(textarea) {
  textarea.style.height = "auto";
  textarea.style.height = `${textarea.scrollHeight + 2}px`;
}

/** True when the scroll container is (nearly) at its bottom. */
export const nearBottom = (el, slack = 80) => el.scrollHeight - el.scrollTop - el.clientHeight < slack;

/** Run fn at most once per animation frame; returns a scheduler. */
export function frameThrottle(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}

/** Briefly swap a button's label (e.g. "Copied"). */
export function flashLabel(button, label, ms = 1200) {
  const original = button.dataset.label || button.textContent;
  button.dataset.label = original;
  button.textContent = label;
  clearTimeout(button._flash);
  button._flash = setTimeout(() => {
    button.textContent = original;
  }, ms);
}
