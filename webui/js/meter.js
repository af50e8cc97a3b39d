// Client-side throughput: every streamed chunk is counted as one token while
// it arrives (servers send one chunk per token); the final `usage` chunk
// gives the exact count for the finished generation.

const WINDOW_MS = 2000;
const listeners = new Set();
const active = new Set();
let ticks = []; // [time, tokens]
let burstStart = 0;
let last = null; // {tokens, seconds, tps}
let timer = 0;

const now = () => performance.now();

function notify() {
  const snapshot = stats();
  for (const fn of listeners) fn(snapshot);
  if (!active.size && !ticks.length) {
    clearInterval(timer);
    timer = 0;
  }
}

function prune(t) {
  while (ticks.length && t - ticks[0][0] > WINDOW_MS) ticks.shift();
  if (!ticks.length) burstStart = 0;
}

/** {live: tokens/s over the last 2 s, streams: active count, last: {tokens, seconds, tps} | null} */
export function stats() {
  const t = now();
  prune(t);
  let live = 0;
  if (ticks.length) {
    const span = Math.max(250, Math.min(WINDOW_MS, t - burstStart));
    live = (ticks.reduce((sum, [, n]) => sum + n, 0) / span) * 1000;
  }
  return { live, streams: active.size, last };
}

export function subscribe(fn) {
  listeners.add(fn);
  fn(stats());
  return () => listeners.delete(fn);
}

/**
 * Start measuring one generation. Call tick() per chunk, finish(usage) at the end.
 * finish() returns {tokens, seconds, tps} for this generation (decode phase only).
 */
export function startGeneration() {
  const gen = { started: now(), first: 0, lastAt: 0, chunks: 0 };
  active.add(gen);
  if (!timer) timer = setInterval(notify, 250);
  return {
    tick(n = 1) {
      const t = now();
      if (!gen.first) gen.first = t;
      gen.lastAt = t;
      gen.chunks += n;
      if (!ticks.length) burstStart = t;
      ticks.push([t, n]);
    },
    finish(usage) {
      active.delete(gen);
      const tokens = usage && Number.isFinite(usage.completion_tokens) ? usage.completion_tokens : gen.chunks;
      // Time from the first token to the last one: the decode rate, excluding prompt processing.
      const decodeMs = gen.first && gen.lastAt > gen.first ? gen.lastAt - gen.first : 0;
      const seconds = (gen.lastAt || now()) - gen.started;
      const tps = decodeMs > 0 && tokens > 1 ? ((tokens - 1) / decodeMs) * 1000 : 0;
      const result = { tokens, seconds: seconds / 1000, tps };
      if (tokens > 0) last = result;
      notify();
      return result;
    },
  };
}

export const formatRate = (tps) =>
  !(tps > 0) ? "0" : tps >= 100 ? tps.toFixed(0) : tps >= 10 ? tps.toFixed(1) : tps.toFixed(2);
