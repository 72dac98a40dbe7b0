// A small, safe markdown renderer for package READMEs.
//
// Safety: the source is HTML-escaped *first*; the renderer then only adds its own
// tags around escaped text. Raw HTML in a README is shown as text, links are kept
// only for http(s): and mailto: URLs (and #anchors), and images are never loaded
// (they appear as "[image: alt]"). Supported: headings, paragraphs, emphasis,
// strong, strike, inline code, fenced and indented code, block quotes, ordered and
// unordered lists (nested by indentation), pipe tables, horizontal rules, links.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function safeHref(escapedUrl) {
  if (/&(quot|#39|lt|gt);/.test(escapedUrl)) return null; // quotes or brackets: not a URL we link
  const url = escapedUrl.replace(/&amp;/g, "&");
  if (/^(https?:\/\/|mailto:)[^\s]+$/i.test(url) || /^#[\w\-.]*$/.test(url)) return escapedUrl;
  return null;
}

function inline(escaped) {
  const codes = [];
  let text = escaped.replace(/(`+)([\s\S]*?[^`])\1(?!`)/g, (_, _ticks, code) => {
    codes.push(code.trim());
    return `\u0000${codes.length - 1}\u0000`;
  });
  text = text.replace(/!\[([^\]]*)\]\(([^)\s]*)(?:\s+&quot;[^)]*&quot;)?\)/g, (_, alt) =>
    `<span class="md-image">[image${alt ? `: ${alt}` : ""}]</span>`,
  );
  text = text.replace(/\[([^\]]+)\]\(([^)\s]+)(?:\s+&quot;[^)]*&quot;)?\)/g, (_, label, url) => {
    const href = safeHref(url);
    return href ? `<a href="${href}" rel="noopener noreferrer nofollow" target="_blank">${label}</a>` : label;
  });
  text = text.replace(/(^|[\s(])(https?:\/\/(?:(?!&(?:quot|#39|lt|gt);)[^\s)])+)/g, (_, lead, url) => {
    const href = safeHref(url);
    return href ? `${lead}<a href="${href}" rel="noopener noreferrer nofollow" target="_blank">${url}</a>` : lead + url;
  });
  text = text
    .replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^\w])__(?=\S)([\s\S]*?\S)__(?!\w)/g, "$1<strong>$2</strong>")
    .replace(/(^|[^*])\*(?=[^\s*])([^*]*?[^\s*])\*(?!\*)/g, "$1<em>$2</em>")
    .replace(/(^|[^\w])_(?=[^\s_])([^_]*?[^\s_])_(?!\w)/g, "$1<em>$2</em>")
    .replace(/~~(?=\S)([\s\S]*?\S)~~/g, "<del>$1</del>");
  return text.replace(/\u0000(\d+)\u0000/g, (_, i) => `<code>${codes[Number(i)]}</code>`);
}

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}&gt;\s?/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;

function isBlockStart(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim());
}

function blocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const fence = line.match(FENCE);
    if (fence) {
      const marker = fence[1];
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(marker)) body.push(lines[i++]);
      i += 1;
      const lang = fence[2] ? ` class="language-${fence[2]}"` : "";
      out.push(`<pre><code${lang}>${body.join("\n")}</code></pre>`);
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      const level = heading[1].length;
      out.push(`<h${level}>${inline(heading[2])}</h${level}>`);
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      out.push("<hr>");
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && lines[i].trim() && QUOTE.test(lines[i])) body.push(lines[i++].replace(QUOTE, ""));
      out.push(`<blockquote>${blocks(body)}</blockquote>`);
      continue;
    }
    if (ITEM.test(line)) {
      const [html, next] = list(lines, i);
      out.push(html);
      i = next;
      continue;
    }
    if (/^( {4}|\t)/.test(line)) {
      const body = [];
      while (i < lines.length && (/^( {4}|\t)/.test(lines[i]) || !lines[i].trim())) {
        body.push(lines[i++].replace(/^( {4}|\t)/, ""));
      }
      while (body.length && !body[body.length - 1].trim()) body.pop();
      out.push(`<pre><code>${body.join("\n")}</code></pre>`);
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      const head = splitRow(line);
      i += 2;
      const rows = [];
      while (i < lines.length && lines[i].trim() && lines[i].includes("|")) rows.push(splitRow(lines[i++]));
      const th = head.map((cell) => `<th>${inline(cell)}</th>`).join("");
      const trs = rows.map((row) => `<tr>${row.map((cell) => `<td>${inline(cell)}</td>`).join("")}</tr>`).join("");
      out.push(`<table><thead><tr>${th}</tr></thead><tbody>${trs}</tbody></table>`);
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && !(para.length && isBlockStart(lines[i]))) para.push(lines[i++].trim());
    out.push(`<p>${inline(para.join("\n"))}</p>`);
  }
  return out.join("\n");
}

function list(lines, start) {
  const first = lines[start].match(ITEM);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const items = [];
  let i = start;
  while (i < lines.length) {
    const match = lines[i].match(ITEM);
    if (!match || match[1].length !== indent || /\d/.test(match[2]) !== ordered) break;
    const body = [match[3]];
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      const nested = line.match(ITEM);
      if (!line.trim()) {
        const next = lines[i + 1];
        if (next !== undefined && next.trim() && /^\s+/.test(next) && (next.match(/^\s*/)[0].length > indent)) {
          body.push("");
          i += 1;
          continue;
        }
        break;
      }
      if (nested && nested[1].length <= indent) break;
      const lead = line.match(/^\s*/)[0].length;
      if (lead <= indent && !nested && isBlockStart(line)) break;
      body.push(line.slice(Math.min(lead, indent + 2)));
      i += 1;
    }
    let html = blocks(body);
    if (!body.includes("")) html = html.replace(/^<p>([\s\S]*?)<\/p>/, "$1");
    items.push(`<li>${html}</li>`);
  }
  const tag = ordered ? "ol" : "ul";
  return [`<${tag}>${items.join("")}</${tag}>`, i];
}

/** Markdown source -> HTML string that contains only the renderer's own tags. */
export function renderMarkdown(source) {
  const text = escapeHtml(String(source || "").replace(/\u0000/g, "").replace(/\r\n?/g, "\n"));
  return blocks(text.split("\n"));
}
