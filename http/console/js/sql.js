// The SQL editor: CodeMirror 5 with completion of the catalog's tables and columns; queries
// run as async queries (POST /v1/queries, polled, DELETE to cancel), their results read one
// page at a time, downloaded as CSV or Parquet, and charted.

import { cancelQuery, queryStatus, resultFile, resultPage, submitQuery } from "./api.js";
import { $, cellText, fill, formatBytes, formatNumber, h } from "./dom.js";
import { clearError, guarded, showError, state } from "./state.js";
import * as chart from "./chart.js";

/* global CodeMirror */

const PAGE_SIZE = 100;
const HISTORY_ITEM = "tarn.console.history";
const HISTORY_MAX = 20;
const DRAFT_ITEM = "tarn.console.draft";

let cm = null;
/** The query shown: `{id, status, columns, total, tokens, page, next}`. */
let result = null;
/** The query running: `{id, cancelled}`; null when none. */
let running = null;
let resultTab = "grid";

export function init() {
  cm = CodeMirror($("#sql-editor"), {
    value: "SELECT 1 AS one",
    mode: "text/x-sql",
    lineNumbers: true,
    indentWithTabs: false,
    smartIndent: true,
    matchBrackets: true,
    viewportMargin: Infinity,
    extraKeys: {
      "Ctrl-Enter": run,
      "Cmd-Enter": run,
      "Ctrl-Space": "autocomplete",
      Esc: (editor) => editor.state.completionActive && editor.state.completionActive.close(),
    },
    hintOptions: { completeSingle: false, hint: hint },
  });
  cm.getInputField().setAttribute("aria-label", "SQL");
  cm.getInputField().dataset.testid = "sql-input";
  // Table and column names after a dot; keywords only when asked (Ctrl+Space).
  cm.on("inputRead", (editor, change) => {
    if (change.text.length === 1 && change.text[0] === "." && !editor.state.completionActive) {
      editor.showHint({ completeSingle: false });
    }
  });
  $("#run").addEventListener("click", run);
  $("#cancel").addEventListener("click", cancel);
  $("#prev-page").addEventListener("click", () => turn(-1));
  $("#next-page").addEventListener("click", () => turn(+1));
  $("#download-csv").addEventListener("click", () => download("text/csv", "csv"));
  $("#download-parquet").addEventListener("click", () =>
    download("application/vnd.apache.parquet", "parquet"),
  );
  $("#history").addEventListener("change", (event) => {
    const sqlText = event.target.value;
    if (sqlText) {
      cm.setValue(sqlText);
      cm.focus();
    }
    event.target.selectedIndex = 0;
  });
  for (const tab of document.querySelectorAll("[data-result-tab]")) {
    const { resultTab: name } = /** @type {HTMLElement} */ (tab).dataset;
    tab.addEventListener("click", () => showResultTab(name));
  }
  chart.init(() => result);
  renderHistory();
  const last = history()[0];
  if (last) cm.setValue(last);
}

export function reset() {
  result = null;
  renderEmpty();
}

export function show() {
  const draft = sessionStorage.getItem(DRAFT_ITEM);
  if (draft) {
    sessionStorage.removeItem(DRAFT_ITEM);
    cm.setValue(draft);
  }
  // CodeMirror measures itself; it was hidden until now.
  setTimeout(() => {
    cm.refresh();
    cm.focus();
    cm.setCursor(cm.lineCount(), 0);
  }, 0);
  if (resultTab === "chart") chart.redraw();
}

export function hide() {}

// --- completion -------------------------------------------------------------------------

/** The `tables` map of sql-hint: every table as `ns.table`, and `table` alone in `default`. */
function completionTables() {
  const tables = {};
  for (const t of state.tables) {
    const full = t.qualified_name || `${t.namespace}.${t.name}`;
    const columns = (state.columns.get(full) || []).map((c) => c.name);
    tables[full] = columns;
    if (t.namespace === "default") tables[t.name] = columns;
  }
  return tables;
}

/** sql-hint, with the table after FROM as the default table (its columns complete bare). */
function hint(editor, options) {
  const tables = completionTables();
  const text = editor.getValue();
  const from = /\b(?:from|join)\s+([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)?)/i.exec(text);
  let defaultTable;
  if (from) {
    const name = Object.keys(tables).find((k) => k.toLowerCase() === from[1].toLowerCase());
    if (name) defaultTable = name;
  }
  return CodeMirror.hint.sql(editor, { ...options, tables, defaultTable });
}

// --- history ----------------------------------------------------------------------------

/** The last queries' SQL (only the SQL: keys and results are never kept). */
function history() {
  try {
    const list = JSON.parse(localStorage.getItem(HISTORY_ITEM) || "[]");
    return Array.isArray(list) ? list.filter((s) => typeof s === "string") : [];
  } catch {
    return [];
  }
}

function remember(sqlText) {
  const list = [sqlText, ...history().filter((s) => s !== sqlText)].slice(0, HISTORY_MAX);
  try {
    localStorage.setItem(HISTORY_ITEM, JSON.stringify(list));
  } catch {
    // storage full or disabled: history is a convenience
  }
  renderHistory();
}

function renderHistory() {
  const list = history();
  fill(
    $("#history"),
    h("option", { value: "" }, list.length ? `${list.length} recent…` : "none yet"),
    list.map((s) => {
      const oneLine = s.replace(/\s+/g, " ").trim();
      return h("option", { value: s, title: s }, oneLine.length > 80 ? oneLine.slice(0, 79) + "…" : oneLine);
    }),
  );
}

// --- running ----------------------------------------------------------------------------

function setStatus(...parts) {
  fill($("#query-status"), ...parts);
}

function setRunning(on) {
  $("#run").disabled = on;
  $("#cancel").disabled = !on;
  $("#sql-editor").classList.toggle("busy", on);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function run() {
  if (running) return;
  const selection = cm.getSelection();
  const sqlText = (selection.trim() ? selection : cm.getValue()).trim();
  if (!sqlText) return;
  clearError();
  remember(sqlText);
  const started = performance.now();
  running = { id: null, cancelled: false };
  const mine = running;
  setRunning(true);
  setStatus(h("span", { class: "spinner" }), " starting…");
  try {
    let status = await submitQuery(sqlText);
    mine.id = status.id;
    let wait = 100;
    while (status.state === "queued" || status.state === "running") {
      if (mine.cancelled) break;
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      setStatus(h("span", { class: "spinner" }), ` ${status.state} · ${seconds} s`);
      await sleep(wait);
      wait = Math.min(wait * 1.5, 1000);
      if (mine.cancelled) break;
      status = await queryStatus(status.id);
    }
    if (mine.cancelled) {
      status = await queryStatus(mine.id).catch(() => ({ ...status, state: "cancelled" }));
    }
    if (status.state === "succeeded") {
      await showResult(status);
    } else if (status.state === "cancelled") {
      setStatus(h("span", { class: "state cancelled", testid: "query-state" }, "cancelled"));
    } else {
      const error = status.error || { code: "failed", message: "the query failed" };
      setStatus(h("span", { class: "state failed", testid: "query-state" }, "failed"), ` · ${error.code}`);
      showError({ status: null, code: error.code, message: error.message }, "Query failed");
    }
  } catch (e) {
    setStatus(h("span", { class: "state failed", testid: "query-state" }, "failed"));
    showError(e, "Query");
  } finally {
    running = null;
    setRunning(false);
  }
}

async function cancel() {
  if (!running) return;
  running.cancelled = true;
  if (running.id) {
    await guarded("Cancel", () =>
      cancelQuery(running.id),
    );
  }
}

function summary(status) {
  const bits = [`${formatNumber(status.rows ?? 0)} row${status.rows === 1 ? "" : "s"}`];
  if (status.run_ms !== undefined) bits.push(`${(status.run_ms / 1000).toFixed(2)} s`);
  if (status.bytes_scanned !== undefined) bits.push(`${formatBytes(status.bytes_scanned)} scanned`);
  if (status.reused) bits.push("reused result");
  if ((status.tables || []).length) {
    bits.push(status.tables.map((t) => `${t.table}@v${t.version}`).join(", "));
  }
  return bits.join(" · ");
}

async function showResult(status) {
  result = {
    id: status.id,
    status,
    columns: status.columns || [],
    total: status.rows ?? 0,
    tokens: [""],
    page: 0,
    next: null,
    rows: [],
  };
  setStatus(h("span", { class: "state succeeded", testid: "query-state" }, "succeeded"), " · ", summary(status));
  await loadPage();
  $("#download-csv").disabled = false;
  $("#download-parquet").disabled = false;
  chart.resultChanged();
}

async function loadPage() {
  const r = result;
  const page = await resultPage(r.id, PAGE_SIZE, r.tokens[r.page]);
  if (result !== r) return;
  r.columns = page.columns || r.columns;
  r.rows = page.rows || [];
  r.next = page.next_page_token || null;
  if (r.next) r.tokens[r.page + 1] = r.next;
  renderGrid();
}

async function turn(step) {
  if (!result) return;
  const target = result.page + step;
  if (target < 0 || (step > 0 && !result.next)) return;
  result.page = target;
  $("#prev-page").disabled = true;
  $("#next-page").disabled = true;
  await guarded("Reading the result", loadPage);
}

function renderEmpty() {
  fill($("#results"), h("p", { class: "muted pad" }, "Run a query to see its result here."));
  fill($("#page-info"));
  $("#prev-page").disabled = true;
  $("#next-page").disabled = true;
  $("#download-csv").disabled = true;
  $("#download-parquet").disabled = true;
}

function renderGrid() {
  const r = result;
  const first = r.page * PAGE_SIZE;
  const numeric = r.columns.map((c) => /^(u?int|float|decimal|double)/.test(c.type || ""));
  const grid = h(
    "table",
    { class: "grid results-grid" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { class: "rownum" }, "#"),
        r.columns.map((c) =>
          h("th", { scope: "col", title: c.type }, c.name, h("span", { class: "type" }, c.type)),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      r.rows.map((row, i) =>
        h(
          "tr",
          {},
          h("td", { class: "rownum" }, String(first + i + 1)),
          row.map((value, j) =>
            h(
              "td",
              {
                class: [numeric[j] ? "num" : "", value === null ? "null" : ""].join(" ").trim(),
              },
              cellText(value),
            ),
          ),
        ),
      ),
    ),
  );
  fill(
    $("#results"),
    r.rows.length ? grid : h("p", { class: "muted pad", testid: "no-rows" }, "The query answered no rows."),
  );
  const last = first + r.rows.length;
  fill(
    $("#page-info"),
    r.total
      ? `rows ${formatNumber(first + 1)}–${formatNumber(last)} of ${formatNumber(r.total)} · page ${r.page + 1} of ${Math.max(1, Math.ceil(r.total / PAGE_SIZE))}`
      : "0 rows",
  );
  $("#prev-page").disabled = r.page === 0;
  $("#next-page").disabled = !r.next;
}

async function download(accept, extension) {
  if (!result) return;
  const r = result;
  const button = extension === "csv" ? $("#download-csv") : $("#download-parquet");
  button.disabled = true;
  try {
    const response = await resultFile(r.id, accept);
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: `tarn-result-${r.id.slice(0, 12)}.${extension}` });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (e) {
    showError(e, `Download as ${extension.toUpperCase()}`);
  } finally {
    button.disabled = false;
  }
}

function showResultTab(name) {
  resultTab = name;
  for (const tab of document.querySelectorAll("[data-result-tab]")) {
    const on = /** @type {HTMLElement} */ (tab).dataset.resultTab === name;
    tab.classList.toggle("active", on);
    tab.setAttribute("aria-selected", on ? "true" : "false");
  }
  $("#result-grid").hidden = name !== "grid";
  $("#result-chart").hidden = name !== "chart";
  if (name === "chart") chart.redraw();
}
