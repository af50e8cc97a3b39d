// Talking to the server: JSON GETs, and OpenAI-style streaming completions
// read as Server-Sent Events over fetch + ReadableStream (abortable).

export class ApiError extends Error {
  constructor(message, { status = 0, type = "", code = null, param = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = param;
  }
}

let apiKey = "";

/** Set the bearer token sent with every request (for servers started with API keys). */
export function setApiKey(key) {
  apiKey = String(key || "").trim();
}

function headers(extra) {
  return apiKey ? { ...extra, Authorization: `Bearer ${apiKey}` } : extra;
}

/** Resolve an API path against the page, so a reverse-proxy prefix keeps working. */
function url(path) {
  return new URL(path.replace(/^\//, ""), document.baseURI).href;
}

/** Turn a non-2xx response into an ApiError, using OpenAI's {"error": {...}} body when present. */
async function errorFrom(response) {
  let text = "";
  try {
    text = await response.text();
  } catch {
    /* body unreadable */
  }
  let error = null;
  try {
    const body = JSON.parse(text);
    error = body && typeof body.error === "object" && body.error ? body.error : null;
    if (!error && body && typeof body.error === "string") error = { message: body.error };
    if (!error && body && typeof body.message === "string") error = { message: body.message };
  } catch {
    /* not JSON */
  }
  if (response.status === 401 && error) {
    const which = error.code === "invalid_admin_key" ? "admin key in the Models card" : "API key in Settings";
    error.message = `${error.message || "Unauthorized"} (set the ${which})`;
  }
  const fallback = `${response.status} ${response.statusText || "error"}${text ? `: ${text.slice(0, 300)}` : ""}`;
  return new ApiError((error && error.message) || fallback, {
    status: response.status,
    type: (error && error.type) || "",
    code: error ? error.code ?? null : null,
    param: error ? error.param ?? null : null,
  });
}

function networkError(err) {
  return new ApiError(`Could not reach the server (${err && err.message ? err.message : err}).`, {
    type: "network",
  });
}

export async function getJSON(path, { signal } = {}) {
  let response;
  try {
    response = await fetch(url(path), { headers: headers({ Accept: "application/json" }), signal, cache: "no-store" });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw networkError(err);
  }
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

export const listModels = (opts) => getJSON("/v1/models", opts);
export const listStates = (opts) => getJSON("/api/states", opts);
export const getStatus = (opts) => getJSON("/api/status", opts);

/**
 * Parse a text/event-stream body into {event, data} records.
 * Handles CRLF/LF, multi-line data fields, comments, and a last event without a blank line.
 */
export async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  let event = "";
  const take = (line) => {
    if (line === "") {
      if (!data.length) return null;
      const record = { event: event || "message", data: data.join("\n") };
      data = [];
      event = "";
      return record;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    return null;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        const record = take(line);
        if (record) yield record;
      }
    }
    buffer += decoder.decode();
    for (const line of [...buffer.split(/\r?\n/), ""]) {
      const record = take(line);
      if (record) yield record;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** The text a chunk adds: chat deltas, completion text, or a whole non-streamed message. */
function chunkText(choice) {
  if (!choice) return "";
  if (choice.delta && typeof choice.delta.content === "string") return choice.delta.content;
  if (typeof choice.text === "string") return choice.text;
  if (choice.message && typeof choice.message.content === "string") return choice.message.content;
  return "";
}

/**
 * POST a streaming completion and feed its text to onText(piece, fullText).
 * Resolves to {text, finishReason, usage, aborted, complete}; an abort through
 * `signal` resolves (aborted: true) rather than throwing. Throws ApiError.
 * `conversationId` goes out as X-Conversation-Id: a load balancer in front of several
 * servers sends every request of one conversation to the server that has its history cached.
 */
export async function streamCompletion(path, body, { signal, onText, onChunk, conversationId } = {}) {
  const result = { text: "", finishReason: null, usage: null, aborted: false, complete: false };
  const feed = (chunk) => {
    if (chunk && chunk.error) {
      const e = typeof chunk.error === "object" ? chunk.error : { message: String(chunk.error) };
      throw new ApiError(e.message || "The server reported an error.", { type: e.type, code: e.code, param: e.param });
    }
    if (onChunk) onChunk(chunk);
    if (chunk && chunk.usage) result.usage = chunk.usage;
    const choice = chunk && Array.isArray(chunk.choices) ? chunk.choices[0] : null;
    const piece = chunkText(choice);
    if (piece) {
      result.text += piece;
      if (onText) onText(piece, result.text);
    }
    if (choice && choice.finish_reason) result.finishReason = choice.finish_reason;
  };

  let response;
  try {
    response = await fetch(url(path), {
      method: "POST",
      headers: headers({
        "Content-Type": "application/json",
        Accept: "text/event-stream",
        ...(conversationId ? { "X-Conversation-Id": conversationId } : {}),
      }),
      body: JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (signal && signal.aborted) return { ...result, aborted: true };
    throw networkError(err);
  }
  if (!response.ok) throw await errorFrom(response);

  try {
    const type = response.headers.get("content-type") || "";
    if (type.includes("application/json")) {
      // The server answered without streaming: take the whole body as one chunk.
      feed(await response.json());
      result.complete = true;
      return result;
    }
    for await (const { event, data } of sseEvents(response.body)) {
      if (data.trim() === "[DONE]") {
        result.complete = true;
        break;
      }
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch {
        continue; // keep-alives or junk lines
      }
      if (event === "error" && chunk && !chunk.error) chunk = { error: chunk };
      feed(chunk);
    }
  } catch (err) {
    if (signal && signal.aborted) return { ...result, aborted: true };
    if (err instanceof ApiError) throw err;
    throw new ApiError(`The stream broke off (${err && err.message ? err.message : err}).`, { type: "network" });
  }
  if (result.finishReason) result.complete = true;
  return result;
}

export const streamChat = (body, opts) => streamCompletion("/v1/chat/completions", body, opts);
export const streamText = (body, opts) => streamCompletion("/v1/completions", body, opts);

/**
 * Read the Server-Sent Events of a GET route, calling onEvent({event, data}) with `data` parsed
 * as JSON, until the stream ends (resolves) or `signal` aborts it. Throws ApiError.
 */
export async function watchEvents(path, { signal, onEvent }) {
  let response;
  try {
    response = await fetch(url(path), { headers: headers({ Accept: "text/event-stream" }), signal, cache: "no-store" });
  } catch (err) {
    if (signal && signal.aborted) return;
    throw networkError(err);
  }
  if (!response.ok) throw await errorFrom(response);
  try {
    for await (const { event, data } of sseEvents(response.body)) {
      let body;
      try {
        body = JSON.parse(data);
      } catch {
        continue;
      }
      onEvent({ event, data: body });
    }
  } catch (err) {
    if (signal && signal.aborted) return;
    throw new ApiError(`The event stream broke off (${err && err.message ? err.message : err}).`, { type: "network" });
  }
}

export const modelsInfo = (opts) => getJSON("/api/models/info", opts);
export const modelsList = (opts) => getJSON("/api/models/list", opts);

/** An /admin/ route: the admin key goes in Authorization (those routes do not take the API key). */
export async function adminRequest(method, path, adminKey, body) {
  const init = {
    method,
    headers: { Accept: "application/json", Authorization: `Bearer ${String(adminKey || "").trim()}` },
    cache: "no-store",
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url(path), init);
  } catch (err) {
    throw networkError(err);
  }
  if (!response.ok) throw await errorFrom(response);
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return text;
  }
}
