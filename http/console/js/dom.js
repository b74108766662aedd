// Small DOM helpers. Data only ever reaches the page as text (textContent, attribute values,
// option labels): nothing here parses HTML.

/**
 * Makes an element: `h("td", {class: "num", dataset: {testid: "x"}}, "text", child, ...)`.
 * Children are nodes or strings (inserted as text); null/undefined/false are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "testid") el.dataset.testid = value;
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "text") el.textContent = value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** A cell's text for any JSON value of a result. */
export function cellText(value) {
  if (value === null || value === undefined) return "NULL";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A table of `rows` (arrays) under `headers`; cells of numbers are right-aligned. */
export function table(headers, rows, attrs = {}) {
  return h(
    "table",
    { class: "grid", ...attrs },
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h(
          "tr",
          {},
          row.map((value) => {
            if (value instanceof Node) return h("td", {}, value);
            return h(
              "td",
              {
                class: [
                  typeof value === "number" ? "num" : "",
                  value === null || value === undefined ? "null" : "",
                ]
                  .join(" ")
                  .trim(),
              },
              cellText(value),
            );
          }),
        ),
      ),
    ),
  );
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function formatNumber(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}

/** "12 s ago", "3 min ago", "2 h ago", "4 d ago" for an RFC 3339 instant. */
export function age(at, now = Date.now()) {
  if (!at) return "–";
  const t = Date.parse(at);
  if (Number.isNaN(t)) return String(at);
  return duration((now - t) / 1000) + " ago";
}

export function duration(seconds) {
  const s = Math.max(0, seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 36 * 3600) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

/** An instant as "2026-11-23 10:00:00 UTC". */
export function instant(at) {
  if (!at) return "–";
  const t = Date.parse(at);
  if (Number.isNaN(t)) return String(at);
  return new Date(t).toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC");
}

/** A `<time>` showing the instant with its age as a tooltip (or the reverse). */
export function timeEl(at, { relative = false } = {}) {
  if (!at) return h("span", { class: "muted" }, "–");
  return h(
    "time",
    { datetime: at, title: relative ? instant(at) : age(at) },
    relative ? age(at) : instant(at),
  );
}

/** A definition list from [label, value] pairs. */
export function facts(pairs, attrs = {}) {
  return h(
    "dl",
    { class: "facts", ...attrs },
    pairs.map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]),
  );
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}`.trim() }, text);
}

/** Quotes an identifier for SQL when it needs it. */
export function ident(name) {
  return /^[a-z_][a-z0-9_]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}
