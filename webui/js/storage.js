// localStorage with JSON values, a key prefix, and no exceptions
// (private windows and full quotas just mean "not remembered").

const PREFIX = "ai00-trio:";

export function load(key, fallback) {
  try {
    const raw = localStorage.getItem(PREFIX + key);
    return raw == null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

export function save(key, value) {
  try {
    localStorage.setItem(PREFIX + key, JSON.stringify(value));
  } catch {
    /* quota exceeded or storage disabled: ignore */
  }
}

/** A random id kept under `key`: the same for this browser until its storage is cleared. */
export function lastingId(key) {
  let id = load(key, "");
  if (typeof id !== "string" || !id) {
    id = crypto.randomUUID ? crypto.randomUUID() : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
    save(key, id);
  }
  return id;
}

export function remove(key) {
  try {
    localStorage.removeItem(PREFIX + key);
  } catch {
    /* ignore */
  }
}
