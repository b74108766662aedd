// Send records: for keys that may ingest (`ingest:<table>`, `ingest:*`), a form that posts
// NDJSON or a JSON array to POST /v1/ingest/{table}.

import { ingestRecords } from "./api.js";
import { $ } from "./dom.js";
import { clearError, showError, state } from "./state.js";

export function init() {
  $("#send-form").addEventListener("submit", send);
}

export function reset() {
  $("#send-result").hidden = true;
}

export function show() {
  const scopes = (state.who && state.who.scopes) || [];
  const tables = scopes.filter((s) => s.startsWith("ingest:")).map((s) => s.slice("ingest:".length));
  $("#send-scopes").textContent = state.who && state.who.open
    ? "This server is open: any table may be written (tables are created by their first records when auto-create is on)."
    : tables.includes("*") || scopes.includes("admin")
      ? "This key may ingest into any table."
      : `This key may ingest into: ${tables.join(", ")}.`;
  const input = $("#send-table");
  if (!input.value && tables.length && !tables.includes("*")) input.value = tables[0];
}

export function hide() {}

async function send(event) {
  event.preventDefault();
  const table = $("#send-table").value.trim();
  const body = $("#send-body").value.trim();
  if (!table || !body) return;
  const wait = $("#send-wait").checked;
  const out = $("#send-result");
  const button = $("#send-form button[type=submit]");
  button.disabled = true;
  clearError();
  try {
    const answer = await ingestRecords(table, body, wait);
    out.textContent = JSON.stringify(answer, null, 2);
    out.hidden = false;
  } catch (e) {
    out.hidden = true;
    showError(e, `Ingest into ${table}`);
  } finally {
    button.disabled = false;
  }
}
