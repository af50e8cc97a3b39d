// A small Markdown renderer for model output. Everything is HTML-escaped
// first; only the tags produced here reach the page. Supports headings,
// paragraphs, bold/italic/strikethrough, inline code, fenced code blocks
// (with a copy button), nested lists, block quotes, tables, rules and links.
// Unterminated fences render as code, so partial streams look right.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}>/;
const ITEM = /^([ \t]*)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*)|[ \t]*)$/;
const TABLE_SEP = /^ *\|? *:?-+:? *(?:\| *:?-+:? *)*\|? *$/;
const BLANK = /^\s*$/;

const indentOf = (line) => line.replace(/\t/g, "    ").match(/^ */)[0].length;

/* ---------- inline ---------- */

function safeHref(raw) {
  // `raw` is already escaped; entities stay inert, so a colon means a scheme.
  const href = raw.trim();
  if (/^(https?:\/\/|mailto:|#|\/|\.{1,2}\/)/i.test(href)) return href;
  return href.includes(":") ? null : href;
}

// Spans are capped in length so that unmatched markers cost linear time.
function emphasis(s) {
  return s
    .replace(/\*\*(?=\S)([\s\S]{0,2000}?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^\w])__(?=\S)([\s\S]{0,2000}?\S)__(?!\w)/g, "$1<strong>$2</strong>")
    .replace(/\*(?=[^\s*])([^*]{0,2000}?[^\s*])\*/g, "<em>$1</em>")
    .replace(/(^|[^\w])_(?=[^\s_])([^_]{0,2000}?[^\s_]|[^\s_])_(?!\w)/g, "$1<em>$2</em>")
    .replace(/~~(?=\S)([\s\S]{0,2000}?\S)~~/g, "<del>$1</del>");
}

/** Replace `code` spans (a run of n backticks closed by a run of exactly n) via fn(body). */
function codeSpans(s, fn) {
  let out = "";
  let i = 0;
  const unmatched = new Set(); // run lengths with no closing run further on
  while (i < s.length) {
    const start = s.indexOf("`", i);
    if (start < 0) break;
    let end = start;
    while (s[end] === "`") end++;
    const n = end - start;
    let close = -1;
    if (!unmatched.has(n)) {
      for (let j = s.indexOf("`", end); j >= 0; ) {
        let e = j;
        while (s[e] === "`") e++;
        if (e - j === n) {
          close = j;
          break;
        }
        j = s.indexOf("`", e);
      }
      if (close < 0) unmatched.add(n);
    }
    if (close < 0) {
      out += s.slice(i, end);
      i = end;
      continue;
    }
    let body = s.slice(end, close).replace(/\n/g, " ");
    if (/^ .* $/.test(body) && body.trim()) body = body.slice(1, -1);
    out += s.slice(i, start) + fn(body);
    i = close + n;
  }
  return out + s.slice(i);
}

export function renderInline(text) {
  const slots = [];
  const stash = (html) => `\uE000${slots.push(html) - 1}\uE001`;
  let s = escapeHtml(String(text).replace(/[\uE000\uE001]/g, ""));

  s = codeSpans(s, (body) => stash(`<code>${body}</code>`));
  s = s.replace(/\\([\\`*_{}[\]()#+\-.!~|>])/g, (_, c) => stash(c));
  s = s.replace(/!?\[([^\]\n]{1,500})\]\(\s*([^\s)]{1,2000})(?:\s+&quot;[^)]*&quot;)?\s*\)/g, (whole, label, target) => {
    const href = safeHref(target);
    if (!href) return stash(label);
    return stash(`<a href="${href}" target="_blank" rel="noopener noreferrer">${emphasis(label)}</a>`);
  });
  s = s.replace(/\bhttps?:\/\/(?:[^\s&<>\uE000]|&amp;)+/g, (link) => {
    const trail = link.match(/[.,;:!?)\]*_~]+$/);
    const bare = trail ? link.slice(0, -trail[0].length) : link;
    return stash(`<a href="${bare}" target="_blank" rel="noopener noreferrer">${bare}</a>`) + (trail ? trail[0] : "");
  });
  s = emphasis(s).replace(/\n/g, "<br>");
  for (let depth = 0; depth < 4 && s.includes("\uE000"); depth++) {
    s = s.replace(/\uE000(\d+)\uE001/g, (_, i) => slots[Number(i)]);
  }
  return s;
}

/* ---------- blocks ---------- */

function codeBlock(lang, lines) {
  const language = (lang || "").replace(/[^\w+#.-]/g, "").slice(0, 24);
  const cls = language ? ` class="language-${escapeHtml(language)}"` : "";
  return (
    `<div class="code-block"><div class="code-head"><span class="code-lang">${escapeHtml(language || "text")}</span>` +
    `<button type="button" class="copy-code" data-testid="code-copy">Copy</button></div>` +
    `<pre><code${cls}>${escapeHtml(lines.join("\n"))}</code></pre></div>`
  );
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
}

function table(lines, i, out) {
  const head = splitRow(lines[i]);
  const aligns = splitRow(lines[i + 1]).map((c) =>
    c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "",
  );
  const cell = (tag, text, k) => `<${tag}${aligns[k] ? ` class="align-${aligns[k]}"` : ""}>${renderInline(text)}</${tag}>`;
  let html = `<div class="table-wrap"><table><thead><tr>${head.map((c, k) => cell("th", c, k)).join("")}</tr></thead><tbody>`;
  i += 2;
  while (i < lines.length && !BLANK.test(lines[i]) && lines[i].includes("|")) {
    const cells = splitRow(lines[i]);
    html += `<tr>${head.map((_, k) => cell("td", cells[k] || "", k)).join("")}</tr>`;
    i++;
  }
  out.push(html + "</tbody></table></div>");
  return i;
}

const startsBlock = (line) =>
  FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);

function list(lines, i, out, depth) {
  const items = [];
  let fenced = false;
  for (; i < lines.length; i++) {
    const line = lines[i];
    const current = items[items.length - 1];
    const m = fenced ? null : line.match(ITEM);
    if (m && !RULE.test(line)) {
      const indent = indentOf(m[1]);
      const ordered = /\d/.test(m[2]);
      const contentIndent = indent + m[2].length + 1;
      items.push({ indent, ordered, start: ordered ? parseInt(m[2], 10) : 1, contentIndent, lines: [m[3] || ""] });
      continue;
    }
    if (BLANK.test(line) && !fenced) {
      let j = i + 1;
      while (j < lines.length && BLANK.test(lines[j])) j++;
      if (j < lines.length && ITEM.test(lines[j]) && !RULE.test(lines[j])) continue;
      if (j < lines.length && indentOf(lines[j]) >= Math.min(current.contentIndent, 4)) {
        current.lines.push("");
        continue;
      }
      break;
    }
    const indent = indentOf(line);
    const lazy = !BLANK.test(lines[i - 1]) && !startsBlock(line);
    if (!fenced && indent < current.contentIndent && !lazy && indent < 2) break;
    const text = line.replace(/\t/g, "    ").slice(Math.min(indent, current.contentIndent));
    if (FENCE.test(text)) fenced = !fenced;
    current.lines.push(text);
  }

  let html = "";
  const stack = [];
  const open = (it) => {
    const tag = it.ordered ? "ol" : "ul";
    html += `<${tag}${it.ordered && it.start !== 1 ? ` start="${it.start}"` : ""}>`;
    stack.push({ indent: it.indent, tag });
  };
  for (const it of items) {
    while (stack.length > 1 && it.indent < stack[stack.length - 1].indent) html += `</li></${stack.pop().tag}>`;
    const top = stack[stack.length - 1];
    if (!top || it.indent > top.indent) open(it);
    else if (top.tag !== (it.ordered ? "ol" : "ul")) {
      html += `</li></${stack.pop().tag}>`;
      open(it);
    } else html += "</li>";
    while (it.lines.length && BLANK.test(it.lines[it.lines.length - 1])) it.lines.pop();
    const simple = !it.lines.some((l) => BLANK.test(l) || startsBlock(l));
    html += `<li>${simple ? renderInline(it.lines.join("\n")) : renderBlocks(it.lines, depth + 1)}`;
  }
  while (stack.length) html += `</li></${stack.pop().tag}>`;
  out.push(html);
  return i;
}

const MAX_DEPTH = 8; // nesting of quotes / list items, to keep recursion shallow

function renderBlocks(lines, depth = 0) {
  if (depth > MAX_DEPTH) return `<p>${renderInline(lines.join("\n"))}</p>`;
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (BLANK.test(line)) {
      i++;
    } else if ((m = line.match(FENCE))) {
      const fence = m[1];
      const body = [];
      const strip = indentOf(line);
      for (i++; i < lines.length; i++) {
        const close = lines[i].trim();
        if (close.startsWith(fence[0].repeat(fence.length)) && /^([`~])\1*$/.test(close)) {
          i++;
          break;
        }
        body.push(lines[i].replace(new RegExp(`^ {0,${strip}}`), ""));
      }
      out.push(codeBlock(m[2], body));
    } else if ((m = line.match(HEADING))) {
      const level = m[1].length;
      out.push(`<h${level}>${renderInline(m[2] || "")}</h${level}>`);
      i++;
    } else if (RULE.test(line)) {
      out.push("<hr>");
      i++;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && QUOTE.test(lines[i])) inner.push(lines[i++].replace(/^ {0,3}> ?/, ""));
      out.push(`<blockquote>${renderBlocks(inner, depth + 1)}</blockquote>`);
    } else if (ITEM.test(line)) {
      i = list(lines, i, out, depth);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      i = table(lines, i, out);
    } else {
      const para = [];
      while (i < lines.length && !BLANK.test(lines[i]) && (para.length === 0 || !startsBlock(lines[i]))) {
        para.push(lines[i++].trim());
      }
      out.push(`<p>${renderInline(para.join("\n"))}</p>`);
    }
  }
  return out.join("");
}

/** Markdown source → safe HTML string. */
export function renderMarkdown(src) {
  return renderBlocks(String(src || "").replace(/\r\n?/g, "\n").split("\n"));
}
