// What the console knows about the server and the key: who am I, and the catalog.

import { $, fill, h } from "./dom.js";

export const state = {
  /** `GET /v1/whoami`: `{open, key, scopes}`. */
  who: null,
  /** `GET /v1/tables`'s tables. */
  tables: [],
  /** qualified name → columns (`GET /v1/tables/{t}`), filled as they are read. */
  columns: new Map(),
};

/** Whether the key may do `need`: `query`, `admin`, or `ingest:<table>` / `ingest:*`. */
export function can(need) {
  const who = state.who;
  if (!who) return false;
  if (who.open) return true;
  const scopes = who.scopes || [];
  if (scopes.includes("admin")) return true;
  if (need === "ingest") return scopes.some((s) => s.startsWith("ingest:"));
  if (need.startsWith("ingest:")) {
    const table = need.slice("ingest:".length);
    const qualified = table.includes(".") ? table : `default.${table}`;
    return scopes.some(
      (s) => s === "ingest:*" || s === `ingest:${qualified}` || s === `ingest:${table}`,
    );
  }
  return scopes.includes(need);
}

/** Shows an error (an ApiError or any Error) in the console's error bar. */
export function showError(error, context) {
  const bar = $("#error");
  const status = error && error.status ? `${error.status}${error.code ? " " + error.code : ""}` : "";
  fill(
    $("#error-text"),
    context ? h("strong", {}, context + ": ") : null,
    status ? h("span", { class: "code", testid: "error-status" }, status) : null,
    status ? " " : null,
    h("span", { testid: "error-message" }, (error && error.message) || String(error)),
  );
  bar.hidden = false;
}

export function clearError() {
  $("#error").hidden = true;
  $("#error-text").replaceChildren();
}

/** Reports errors of a promise-returning `fn` instead of throwing them. */
/**
 * Runs `fn`; an error is shown (with `context`) and answers `undefined`.
 * @template T
 * @param {string} context
 * @param {() => Promise<T>} fn
 * @returns {Promise<T | undefined>}
 */
export async function guarded(context, fn) {
  try {
    return await fn();
  } catch (e) {
    if (e && e.name === "AbortError") return undefined;
    showError(e, context);
    return undefined;
  }
}

/** Listeners of catalog changes (the editor's completion, the sidebar). */
const tableListeners = new Set();
export function onTables(listener) {
  tableListeners.add(listener);
}
export function setTables(tables) {
  state.tables = tables;
  for (const listener of tableListeners) listener(tables);
}
